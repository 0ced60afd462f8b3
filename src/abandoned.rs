//! Proving that a left-over of a killed coffer process is abandoned.
//!
//! A restore killed at the wrong moment leaves a staging directory
//! (`.coffer-restore-*`) or a PostgreSQL scratch database behind (issue 11).
//! The next run may remove one only when it can prove the left-over is
//! coffer's and its maker is gone: it carries the maker's pid and host, the
//! host is this one, and no process with that pid runs here. Anything
//! without that proof (an older coffer's left-over, another host's, a pid
//! that still runs, perhaps reused) stays, and `coffer check` reports it.

use sha2::{Digest, Sha256};

/// Who made a left-over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub pid: u32,
    /// A short hash of the host name in a directory name (names stay short
    /// and free of odd characters), the host name itself elsewhere.
    pub host: String,
}

/// What is known about a left-over's maker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Made on this host by a process that no longer runs: safe to remove.
    Abandoned(Owner),
    /// Its maker still runs (or its pid was reused): leave it.
    Running(Owner),
    /// Made on another host (a shared filesystem or database server).
    OtherHost(Owner),
    /// No owner recorded (an older coffer's): it cannot be proved abandoned.
    Unknown,
}

impl Verdict {
    /// A clause for messages: why it is removed or left.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Abandoned(o) => format!(
                "made by coffer process {} on this host, which no longer runs",
                o.pid
            ),
            Verdict::Running(o) => format!(
                "made by process {} on this host, which still runs: perhaps a restore in progress",
                o.pid
            ),
            Verdict::OtherHost(o) => format!(
                "made by process {} on another host ({}): check there whether it still runs",
                o.pid, o.host
            ),
            Verdict::Unknown => "no owner recorded (left by an older coffer)".into(),
        }
    }
}

/// What this process removed as provably abandoned (a staging directory,
/// a scratch database), one line each, for the command's report.
static REMOVED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Records a left-over this process removed, and says so on stderr.
pub fn removed(what: String) {
    tracing::warn!("{what}");
    REMOVED.lock().unwrap().push(what);
}

/// The left-overs removed so far, taken (for `restore --json`).
pub fn take_removed() -> Vec<String> {
    std::mem::take(&mut *REMOVED.lock().unwrap())
}

/// This host's short tag: the first 8 hex digits of the SHA-256 of its name.
pub fn host_tag() -> String {
    hex::encode(&Sha256::digest(crate::repo::host_name().as_bytes())[..4])
}

/// Whether no process with `pid` runs here. A pid we may not signal
/// (another user's process) runs.
pub fn process_gone(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Err(e) if e == rustix::io::Errno::SRCH
    )
}

/// The verdict on a left-over made by `owner` (`None`: no owner recorded),
/// given this host's identity in the same form as `owner.host`.
pub fn judge(owner: Option<Owner>, this_host: &str) -> Verdict {
    match owner {
        None => Verdict::Unknown,
        Some(o) if o.host != this_host => Verdict::OtherHost(o),
        Some(o) if o.pid != std::process::id() && process_gone(o.pid) => Verdict::Abandoned(o),
        Some(o) => Verdict::Running(o),
    }
}

/// Prefix of every restore staging directory.
pub const STAGING_PREFIX: &str = ".coffer-restore-";

/// The prefix of this process's staging directory names:
/// `.coffer-restore-<pid>-<host tag>-`, a random suffix follows. The owner
/// is in the name, not in a file inside: the staging directory becomes the
/// destination when it is swapped in, and a file of ours there would be
/// restored with it (or clash with a file of the archive).
pub fn staging_prefix() -> String {
    format!("{STAGING_PREFIX}{}-{}-", std::process::id(), host_tag())
}

/// Where a restore into a mount point moves the mount point's old content
/// while it moves the new content in: `.coffer-old-<pid>-<host tag>-`. A
/// killed restore leaves it holding the old content, which is why nothing
/// removes it unasked (the next restore of the mount point replaces it
/// with the rest of the content); `check` reports it.
pub const OLD_PREFIX: &str = ".coffer-old-";

/// The prefix of this process's old-content directory names.
pub fn old_prefix() -> String {
    format!("{OLD_PREFIX}{}-{}-", std::process::id(), host_tag())
}

/// The verdict on a directory entry name; `None` when it is no staging
/// directory's name.
pub fn staging_verdict(name: &str) -> Option<Verdict> {
    verdict_after(name.strip_prefix(STAGING_PREFIX)?)
}

/// The verdict on an old-content directory's name (see [`OLD_PREFIX`]);
/// `None` when it is none.
pub fn old_verdict(name: &str) -> Option<Verdict> {
    verdict_after(name.strip_prefix(OLD_PREFIX)?)
}

/// The verdict on what follows the prefix: `<pid>-<host tag>-<random>`.
fn verdict_after(rest: &str) -> Option<Verdict> {
    let mut parts = rest.splitn(3, '-');
    let owner = match (parts.next(), parts.next(), parts.next()) {
        (Some(pid), Some(host), Some(random))
            if !random.is_empty()
                && host.len() == 8
                && host.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            pid.parse().ok().map(|pid| Owner {
                pid,
                host: host.to_string(),
            })
        }
        _ => None,
    };
    Some(judge(owner, &host_tag()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_carry_their_owner() {
        let mine = format!("{}abc123", staging_prefix());
        assert!(matches!(staging_verdict(&mine), Some(Verdict::Running(_))));
        assert_eq!(staging_verdict("other"), None);
        assert_eq!(
            staging_verdict(".coffer-restore-abc123"),
            Some(Verdict::Unknown)
        );
        assert!(matches!(
            staging_verdict(".coffer-restore-1-00000000-x"),
            Some(Verdict::OtherHost(_)) | Some(Verdict::Running(_))
        ));
    }
}
