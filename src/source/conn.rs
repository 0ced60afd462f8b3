//! Which password a database tool gets, shared by the kinds that connect
//! to a server: a configured source's `password_file` or `password_env`
//! beats the one in its URL; a connection the user names on the command
//! line (`--to-database`, `--scratch-url`) uses its own, else the
//! configured source's when it is the same account.

use super::{SourceError, configured_password};
use crate::config::SourceConfig;

/// A parsed connection of one kind, with its password kept apart from
/// the URL (passwords reach tools through their environment only).
pub trait Account {
    fn password(&self) -> Option<&String>;
    fn set_password(&mut self, password: Option<String>);
    /// Same server and user: the same password opens both.
    fn same_account(&self, other: &Self) -> bool;
}

/// The configured source's connection `conn` (parsed from its `url`) with
/// the password its config gives, if any.
pub fn configured<C: Account>(src: &SourceConfig, mut conn: C) -> Result<C, SourceError> {
    if let Some(p) = configured_password(src)? {
        conn.set_password(Some(p));
    }
    Ok(conn)
}

/// A connection the user named: without a password of its own, it takes
/// `configured`'s when that is the same account.
pub fn named<C: Account>(mut conn: C, configured: Option<&C>) -> C {
    if conn.password().is_none()
        && let Some(c) = configured
        && c.same_account(&conn)
    {
        conn.set_password(c.password().cloned());
    }
    conn
}
