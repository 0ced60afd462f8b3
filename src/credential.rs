//! Which credential opens the repository: a key file, a passphrase file, a
//! passphrase command or `COFFER_PASSPHRASE`, by the documented precedence
//! (docs/CONFIG.md).

use std::path::Path;

use zeroize::Zeroizing;

use crate::Error;
use crate::config::RepositoryConfig;
use crate::crypto::{self, Credential};
use crate::repo::RepoError;

/// The credential, by precedence: `key_file` (`--key-file` /
/// `COFFER_KEY_FILE`), then `env_passphrase` (`COFFER_PASSPHRASE`, ignored
/// when empty), then the config's `key_file`, `passphrase_file`,
/// `passphrase_command`.
pub fn resolve(
    key_file: Option<&Path>,
    env_passphrase: Option<String>,
    repo: &RepositoryConfig,
) -> Result<Credential, Error> {
    if let Some(p) = key_file {
        return from_key_file(p);
    }
    if let Some(p) = env_passphrase
        && !p.is_empty()
    {
        return Ok(Credential::Passphrase(p.into()));
    }
    if let Some(p) = &repo.key_file {
        return from_key_file(p);
    }
    if let Some(p) = &repo.passphrase_file {
        return Ok(Credential::Passphrase(read_secret_file(
            p,
            "passphrase file",
        )?));
    }
    if let Some(cmd) = &repo.passphrase_command {
        return passphrase_command(cmd);
    }
    Err(RepoError::NoCredential.into())
}

/// A key file's credential; a malformed file says what is wrong with it.
pub fn from_key_file(p: &Path) -> Result<Credential, Error> {
    let key = crypto::read_key_file(p).map_err(|e| match crypto::integrity_error(&e) {
        Some(c) => Error::Usage(c.to_string()),
        None => Error::Usage(format!("cannot read key file {}: {e}", p.display())),
    })?;
    Ok(Credential::KeyFile {
        path: p.display().to_string(),
        key,
    })
}

/// Reads a passphrase file without its final line ending; the passphrase
/// is wiped from memory when dropped.
pub fn read_secret_file(p: &Path, what: &str) -> Result<Zeroizing<String>, Error> {
    let mut s = Zeroizing::new(
        std::fs::read_to_string(p)
            .map_err(|e| Error::Usage(format!("cannot read {what} {}: {e}", p.display())))?,
    );
    // In place: a trimmed copy would leave the original behind unwiped.
    let len = s.trim_end_matches(['\n', '\r']).len();
    s.truncate(len);
    if s.is_empty() {
        return Err(Error::Usage(format!("{what} {} is empty", p.display())));
    }
    Ok(s)
}

/// Runs `passphrase_command` (program and arguments) and takes its stdout.
fn passphrase_command(cmd: &[String]) -> Result<Credential, Error> {
    // Without coffer's secrets in its environment, like every child.
    let out = crate::childenv::command(&cmd[0], &[] as &[&str])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| {
            Error::Failure(format!(
                "passphrase_command {:?} could not run: {e}",
                cmd[0]
            ))
        })?;
    if !out.status.success() {
        return Err(Error::Failure(format!(
            "passphrase_command {:?} failed ({})",
            cmd[0], out.status
        )));
    }
    let stdout = Zeroizing::new(out.stdout);
    let p = String::from_utf8_lossy(&stdout)
        .trim_end_matches(['\n', '\r'])
        .to_string();
    if p.is_empty() {
        return Err(Error::Failure(format!(
            "passphrase_command {:?} printed nothing",
            cmd[0]
        )));
    }
    Ok(Credential::Passphrase(p.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn repo_with(f: impl FnOnce(&mut RepositoryConfig)) -> RepositoryConfig {
        let mut r = RepositoryConfig::default();
        f(&mut r);
        r
    }

    fn passphrase(c: Credential) -> String {
        match c {
            Credential::Passphrase(p) => p.to_string(),
            Credential::KeyFile { path, .. } => {
                panic!("expected a passphrase, got key file {path}")
            }
        }
    }

    // Credential has no Debug (it holds secrets), so no unwrap_err.
    fn refused(r: &RepositoryConfig) -> Error {
        match resolve(None, None, r) {
            Ok(_) => panic!("expected no credential"),
            Err(e) => e,
        }
    }

    fn sh(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn key_file_flag_wins_over_everything() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        crypto::generate_key_file(&key).unwrap();
        let r = repo_with(|r| r.passphrase_command = Some(sh("echo never")));
        match resolve(Some(&key), Some("env".into()), &r).unwrap() {
            Credential::KeyFile { path, .. } => assert_eq!(path, key.display().to_string()),
            Credential::Passphrase(_) => panic!("expected the key file"),
        }
    }

    #[test]
    fn env_passphrase_wins_over_config_unless_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "from-file\r\n").unwrap();
        let r = repo_with(|r| r.passphrase_file = Some(f.clone()));
        assert_eq!(
            passphrase(resolve(None, Some("env".into()), &r).unwrap()),
            "env"
        );
        // An empty variable counts as unset; the file's final line ending goes.
        assert_eq!(
            passphrase(resolve(None, Some(String::new()), &r).unwrap()),
            "from-file"
        );
    }

    #[test]
    fn config_key_file_before_passphrase_file_and_command() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        crypto::generate_key_file(&key).unwrap();
        let r = repo_with(|r| {
            r.key_file = Some(key.clone());
            r.passphrase_file = Some(dir.path().join("missing"));
            r.passphrase_command = Some(sh("echo never"));
        });
        assert!(matches!(
            resolve(None, None, &r).unwrap(),
            Credential::KeyFile { .. }
        ));
    }

    #[test]
    fn empty_or_unreadable_passphrase_file_is_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p");
        std::fs::write(&f, "\n").unwrap();
        let e = read_secret_file(&f, "passphrase file").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(e.to_string().ends_with("is empty"), "{e}");
        let e = read_secret_file(&dir.path().join("none"), "passphrase file").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(
            e.to_string().starts_with("cannot read passphrase file"),
            "{e}"
        );
    }

    #[test]
    fn passphrase_command_output_without_line_ending() {
        let r = repo_with(|r| r.passphrase_command = Some(sh("printf 'secret\\n'")));
        assert_eq!(passphrase(resolve(None, None, &r).unwrap()), "secret");
    }

    #[test]
    fn passphrase_command_failing_or_silent_is_operational() {
        for (script, says) in [("exit 3", "failed"), ("true", "printed nothing")] {
            let r = repo_with(|r| r.passphrase_command = Some(sh(script)));
            let e = refused(&r);
            assert_eq!(e.kind(), ErrorKind::Operational, "{script}");
            assert!(e.to_string().contains(says), "{script}: {e}");
        }
        let r = repo_with(|r| r.passphrase_command = Some(vec!["/nonexistent/coffer-pass".into()]));
        let e = refused(&r);
        assert!(e.to_string().contains("could not run"), "{e}");
    }

    #[test]
    fn nothing_configured_is_no_credential() {
        let e = refused(&RepositoryConfig::default());
        assert!(matches!(e, Error::Repo(RepoError::NoCredential)), "{e}");
    }
}
