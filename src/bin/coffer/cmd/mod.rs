//! One module per subcommand: each calls its library operation and renders
//! the result as text or JSON.

pub mod check;
pub mod copy;
pub mod drill;
pub mod dump;
pub mod generated;
pub mod init;
pub mod key;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod show;
pub mod snapshot;
pub mod snapshots;
pub mod verify;
