//! Files that hold secrets (key files, passphrase files, database password
//! files) must be private to their owner, as ssh demands of a private key
//! (issue 10 item 9): every command warns about one that its group or
//! others can access, and `coffer check` fails on it.
//!
//! Only the mode is looked at (`mode & 0o077`), not ACLs or the owner: it is
//! what `chmod 600` fixes, and what the warning tells the user to run. A
//! file that does not exist is not reported here; reading it fails with its
//! own error.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// A secret file that other users can access.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {} is {} by {} (mode {mode:04o}): chmod 600 {}", path.display(), verb(*mode), who(*mode), path.display())]
pub struct Exposed {
    /// "key file", "passphrase file", "password file of source db".
    pub what: String,
    pub path: PathBuf,
    /// The permission bits (`mode & 0o7777`).
    pub mode: u32,
}

fn verb(mode: u32) -> &'static str {
    if mode & 0o044 != 0 {
        "readable"
    } else if mode & 0o022 != 0 {
        "writable"
    } else {
        "accessible"
    }
}

fn who(mode: u32) -> &'static str {
    if mode & 0o007 != 0 {
        "others"
    } else {
        "its group"
    }
}

/// `Some` when the file at `path` exists and its group or others have any
/// permission on it. Symlinks are followed: the mode that matters is the
/// target's.
pub fn exposed(what: &str, path: &Path) -> Option<Exposed> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then(|| Exposed {
        what: what.to_string(),
        path: path.to_path_buf(),
        mode,
    })
}

/// A secret file a run uses.
#[derive(Debug, Clone)]
pub struct SecretFile {
    /// "key file", "passphrase file", "password file of source db".
    pub what: String,
    pub path: PathBuf,
    /// The source whose `password_file` it is; `None` for the repository's.
    pub source: Option<String>,
}

impl SecretFile {
    pub fn exposed(&self) -> Option<Exposed> {
        exposed(&self.what, &self.path)
    }
}

/// The secret files a run uses: `key_file` (from `--key-file` or
/// `COFFER_KEY_FILE`, which wins over the config's), the config's
/// `passphrase_file`, and each source's `password_file`.
pub fn configured(config: &Config, key_file: Option<&Path>) -> Vec<SecretFile> {
    let mut v = Vec::new();
    if let Some(k) = key_file.or(config.repository.key_file.as_deref()) {
        v.push(SecretFile {
            what: "key file".into(),
            path: k.to_path_buf(),
            source: None,
        });
    }
    if let Some(p) = &config.repository.passphrase_file {
        v.push(SecretFile {
            what: "passphrase file".into(),
            path: p.clone(),
            source: None,
        });
    }
    for s in &config.sources {
        if let Some(p) = &s.password_file {
            v.push(SecretFile {
                what: format!("password file of source {}", s.name),
                path: p.clone(),
                source: Some(s.name.clone()),
            });
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_mode(dir: &Path, name: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, "secret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn only_private_files_pass() {
        let d = tempfile::tempdir().unwrap();
        for mode in [0o600, 0o400, 0o700] {
            assert_eq!(exposed("key file", &with_mode(d.path(), "ok", mode)), None);
        }
        let p = with_mode(d.path(), "k", 0o644);
        let e = exposed("key file", &p).unwrap();
        assert_eq!(
            e.to_string(),
            format!(
                "key file {0} is readable by others (mode 0644): chmod 600 {0}",
                p.display()
            )
        );
        let p = with_mode(d.path(), "g", 0o640);
        assert!(
            exposed("passphrase file", &p)
                .unwrap()
                .to_string()
                .contains("readable by its group (mode 0640)")
        );
        let p = with_mode(d.path(), "w", 0o602);
        assert!(
            exposed("key file", &p)
                .unwrap()
                .to_string()
                .contains("writable by others (mode 0602)")
        );
        assert_eq!(exposed("key file", &d.path().join("missing")), None);
    }
}
