//! How an operation ended, and what kind of failure an error is.
//!
//! Every error of the library knows its [`ErrorKind`] (`kind()` on each
//! module's error type); an operation ends in an [`Outcome`], which hooks
//! (`COFFER_STATUS`, `COFFER_EXIT_CODE`), the metrics file, pings and the
//! binary's exit code all read. [`Outcome::exit_code`] is the one place
//! where an outcome becomes a number of the contract; nothing else in the
//! library compares exit codes.

use serde::Serialize;

/// What kind of failure an error is: what the user does about it differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// What the user asked or configured cannot be done as asked: a bad
    /// flag, config key or value, an unknown snapshot (exit 2).
    Usage,
    /// The world failed: I/O, the network, a store, a database tool, a hook
    /// (exit 1). Running again once the cause is fixed can succeed.
    Operational,
    /// Stored data is wrong: wrong key, tampered, corrupted or truncated
    /// data, a checksum mismatch, a failed drill check (exit 3). Running
    /// again cannot fix it.
    Integrity,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The snapshot was committed, but some sources or files failed.
    Partial,
    Failed(ErrorKind),
}

impl Outcome {
    /// The exit code of the contract: 0 ok, 1 operational failure, 2 usage,
    /// 3 integrity, 4 partial.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Ok => 0,
            Outcome::Failed(ErrorKind::Operational) => 1,
            Outcome::Failed(ErrorKind::Usage) => 2,
            Outcome::Failed(ErrorKind::Integrity) => 3,
            Outcome::Partial => 4,
        }
    }

    /// `ok`, `partial` or `failed`: hooks' `COFFER_STATUS`, pings.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Failed(_) => "failed",
        }
    }

    pub fn is_ok(self) -> bool {
        self == Outcome::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contracts_exit_codes() {
        assert_eq!(Outcome::Ok.exit_code(), 0);
        assert_eq!(Outcome::Failed(ErrorKind::Operational).exit_code(), 1);
        assert_eq!(Outcome::Failed(ErrorKind::Usage).exit_code(), 2);
        assert_eq!(Outcome::Failed(ErrorKind::Integrity).exit_code(), 3);
        assert_eq!(Outcome::Partial.exit_code(), 4);
    }
}
