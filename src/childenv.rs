//! The environment of every child process coffer starts: hooks, dump and
//! restore tools, command sources, `passphrase_command`.
//!
//! Contract guarantee 10 ("Private", issue 10 item 5): children get none of
//! coffer's secrets in their environment, except the one a tool needs (a
//! dump tool's own database password, which its module sets explicitly) or
//! what the config passes on by name (`[hooks] env`, a command source's
//! `env`). So a child starts from coffer's environment minus every variable
//! [`is_secret`] names:
//!
//! - `COFFER_PASSPHRASE`, `COFFER_NEW_PASSPHRASE`;
//! - the variables named by any `password_env` of a config this process has
//!   read ([`protect`]; [`crate::config::Config::parse`] registers them);
//! - the database passwords libpq, the MySQL client and redis-cli read
//!   (`PGPASSWORD`, `MYSQL_PWD`, `REDISCLI_AUTH`): coffer uses them for its
//!   sources, so a hook must not see them; each tool gets its own back;
//! - the cloud credentials `object_store` reads: every `AWS_*`, `GOOGLE_*`
//!   and `AZURE_*` variable whose name holds `KEY`, `SECRET`, `TOKEN`,
//!   `PASSWORD`, `CREDENTIAL`, `SAS`, `CONNECTION_STRING` or
//!   `SERVICE_ACCOUNT` (a key, or the path of a key file). Region, endpoint
//!   and profile names stay.
//!
//! Everything else (`PATH`, `HOME`, `LANG`, `TMPDIR`, ...) is inherited as
//! before. Every spawn site builds its command with [`command`], so there is
//! no second list to keep in step.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::sync::{Mutex, OnceLock};

/// Variables that are secrets whatever the config says.
const FIXED: &[&str] = &[
    "COFFER_PASSPHRASE",
    "COFFER_NEW_PASSPHRASE",
    "PGPASSWORD",
    "MYSQL_PWD",
    "REDISCLI_AUTH",
];

/// Prefixes of the cloud credential variables `object_store` reads.
const CLOUD_PREFIXES: &[&str] = &["AWS_", "GOOGLE_", "AZURE_"];

/// Parts of a cloud variable's name that mark it as a credential.
const CLOUD_SECRET_PARTS: &[&str] = &[
    "KEY",
    "SECRET",
    "TOKEN",
    "PASSWORD",
    "CREDENTIAL",
    "SAS",
    "CONNECTION_STRING",
    "SERVICE_ACCOUNT",
];

/// Names registered by [`protect`]. A process-wide set that only grows:
/// a stale entry can only strip one variable too many, never leak one.
fn registered() -> &'static Mutex<BTreeSet<String>> {
    static SET: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    SET.get_or_init(Default::default)
}

/// Makes `names` (a config's `password_env` variables) secrets for every
/// child started from now on.
pub fn protect<I, S>(names: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut set = registered().lock().unwrap_or_else(|e| e.into_inner());
    set.extend(names.into_iter().map(Into::into));
}

/// True when `name` is one of coffer's secrets, kept from children.
pub fn is_secret(name: &str) -> bool {
    if FIXED.contains(&name) {
        return true;
    }
    let upper = name.to_ascii_uppercase();
    if CLOUD_PREFIXES.iter().any(|p| upper.starts_with(p))
        && CLOUD_SECRET_PARTS.iter().any(|part| upper.contains(part))
    {
        return true;
    }
    registered()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(name)
}

/// `program` with coffer's environment minus its secrets, except those named
/// in `pass` (a config's `env` allow-list, or a tool's own password variable).
/// Callers add what the child needs on top (`PGPASSWORD` for `pg_dump`).
pub fn command<S: AsRef<str>>(program: impl AsRef<OsStr>, pass: &[S]) -> std::process::Command {
    let mut c = std::process::Command::new(program);
    c.env_clear();
    for (k, v) in std::env::vars_os() {
        let keep = match k.to_str() {
            Some(name) => !is_secret(name) || pass.iter().any(|p| p.as_ref() == name),
            // A name that is not UTF-8 is none of the names above.
            None => true,
        };
        if keep {
            c.env(k, v);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_named_and_ordinary_variables_are_not() {
        for s in [
            "COFFER_PASSPHRASE",
            "COFFER_NEW_PASSPHRASE",
            "PGPASSWORD",
            "MYSQL_PWD",
            "REDISCLI_AUTH",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_CLIENT_SECRET",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_CONNECTION_STRING",
        ] {
            assert!(is_secret(s), "{s} is a secret");
        }
        for s in [
            "PATH",
            "HOME",
            "LANG",
            "TMPDIR",
            "COFFER_KEY_FILE",
            "COFFER_HOOK",
            "AWS_REGION",
            "AWS_ENDPOINT",
            "AWS_PROFILE",
            "AZURE_STORAGE_ACCOUNT_NAME",
            "PGHOST",
        ] {
            assert!(!is_secret(s), "{s} is not a secret");
        }
    }

    #[test]
    fn registered_names_are_stripped_unless_passed() {
        protect(["CHILDENV_TEST_DB_PW"]);
        assert!(is_secret("CHILDENV_TEST_DB_PW"));
        let env_of = |c: &std::process::Command, name: &str| {
            c.get_envs()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.map(|v| v.to_os_string()))
        };
        // A command built now carries no inherited variable that is a secret.
        let c = command("true", &[] as &[&str]);
        assert!(
            c.get_envs()
                .all(|(k, _)| k.to_str().is_none_or(|k| !is_secret(k)))
        );
        // PATH is kept whenever coffer has one.
        if let Some(path) = std::env::var_os("PATH") {
            assert_eq!(env_of(&c, "PATH"), Some(path));
        }
    }
}
