//! Which credential opens the repository: a key file, a passphrase file, a
//! passphrase command or `COFFER_PASSPHRASE`, by the documented precedence
//! (docs/CONFIG.md).

use std::path::Path;
use std::process::ExitStatus;

use zeroize::Zeroizing;

use crate::config::RepositoryConfig;
use crate::crypto::{self, Credential, CryptoError};
use crate::repo::RepoError;
use crate::{Error, ErrorKind};

/// Why a key file, passphrase file or passphrase command gives no
/// credential.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The key file is there but is not a key file.
    #[error(transparent)]
    KeyFile(CryptoError),
    #[error("cannot read key file {path}: {source}")]
    ReadKeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {what} {path}: {source}")]
    ReadSecret {
        what: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} is empty")]
    EmptySecret { what: String, path: String },
    #[error("passphrase_command {program:?} could not run: {source}")]
    CommandNotRun {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("passphrase_command {program:?} failed ({status})")]
    CommandFailed { program: String, status: ExitStatus },
    #[error("passphrase_command {program:?} printed nothing")]
    CommandSilent { program: String },
    #[error("{path} already exists; refusing to overwrite a key file")]
    KeyFileExists { path: String },
    /// `coffer key add` given no new key or passphrase.
    #[error(
        "say what to add: --new-key-file PATH, --new-passphrase-file PATH, or COFFER_NEW_PASSPHRASE"
    )]
    NothingToAdd,
    #[error("cannot write key file {path}: {source}")]
    WriteKeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl CredentialError {
    /// A key or passphrase file that cannot be used is the user's to fix; a
    /// passphrase command that fails, or a key file that cannot be
    /// written, is the world failing.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CredentialError::KeyFile(_)
            | CredentialError::ReadKeyFile { .. }
            | CredentialError::ReadSecret { .. }
            | CredentialError::EmptySecret { .. }
            | CredentialError::KeyFileExists { .. }
            | CredentialError::NothingToAdd => ErrorKind::Usage,
            CredentialError::CommandNotRun { .. }
            | CredentialError::CommandFailed { .. }
            | CredentialError::CommandSilent { .. }
            | CredentialError::WriteKeyFile { .. } => ErrorKind::Operational,
        }
    }
}

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
        return Ok(from_key_file(p)?);
    }
    if let Some(p) = env_passphrase
        && !p.is_empty()
    {
        return Ok(Credential::Passphrase(p.into()));
    }
    if let Some(p) = &repo.key_file {
        return Ok(from_key_file(p)?);
    }
    if let Some(p) = &repo.passphrase_file {
        return Ok(Credential::Passphrase(read_secret_file(
            p,
            "passphrase file",
        )?));
    }
    if let Some(cmd) = &repo.passphrase_command {
        return Ok(passphrase_command(cmd)?);
    }
    Err(RepoError::NoCredential.into())
}

/// Writes a new key file (mode 0600); an existing file is never
/// overwritten.
pub fn generate_key_file(p: &Path) -> Result<(), CredentialError> {
    crypto::generate_key_file(p).map_err(|e| {
        let path = p.display().to_string();
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CredentialError::KeyFileExists { path }
        } else {
            CredentialError::WriteKeyFile { path, source: e }
        }
    })
}

/// A key file's credential; a malformed file says what is wrong with it.
pub fn from_key_file(p: &Path) -> Result<Credential, CredentialError> {
    let key = crypto::read_key_file(p).map_err(|e| match crypto::integrity_error(&e) {
        Some(c) => CredentialError::KeyFile(c.clone()),
        None => CredentialError::ReadKeyFile {
            path: p.display().to_string(),
            source: e,
        },
    })?;
    Ok(Credential::KeyFile {
        path: p.display().to_string(),
        key,
    })
}

/// Reads a passphrase file without its final line ending; the passphrase
/// is wiped from memory when dropped.
pub fn read_secret_file(p: &Path, what: &str) -> Result<Zeroizing<String>, CredentialError> {
    let mut s =
        Zeroizing::new(
            std::fs::read_to_string(p).map_err(|e| CredentialError::ReadSecret {
                what: what.to_string(),
                path: p.display().to_string(),
                source: e,
            })?,
        );
    // In place: a trimmed copy would leave the original behind unwiped.
    let len = s.trim_end_matches(['\n', '\r']).len();
    s.truncate(len);
    if s.is_empty() {
        return Err(CredentialError::EmptySecret {
            what: what.to_string(),
            path: p.display().to_string(),
        });
    }
    Ok(s)
}

/// Runs `passphrase_command` (program and arguments) and takes its stdout.
fn passphrase_command(cmd: &[String]) -> Result<Credential, CredentialError> {
    let program = || cmd[0].clone();
    // Without coffer's secrets in its environment, like every child.
    let out = crate::childenv::command(&cmd[0], &[] as &[&str])
        .args(&cmd[1..])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| CredentialError::CommandNotRun {
            program: program(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(CredentialError::CommandFailed {
            program: program(),
            status: out.status,
        });
    }
    let stdout = Zeroizing::new(out.stdout);
    let p = String::from_utf8_lossy(&stdout)
        .trim_end_matches(['\n', '\r'])
        .to_string();
    if p.is_empty() {
        return Err(CredentialError::CommandSilent { program: program() });
    }
    Ok(Credential::Passphrase(p.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
