//! `mysql` sources: MySQL and MariaDB.
//!
//! # Snapshot
//!
//! One stream, `dump.sql`: the SQL text of `mariadb-dump` (or `mysqldump`,
//! whichever is installed; `mariadb-dump` first) run with
//! `--single-transaction --routines --triggers --events --hex-blob
//! --default-character-set=utf8mb4` on the one configured database, *without*
//! `--databases`: the dump holds no `CREATE DATABASE` or `USE`, so it loads
//! into a database of any name (`--to-database`, `coffer dump ... | mysql
//! neworders`). The tool's stdout is streamed into the archive; nothing is
//! written to local disk and only a chunk is held in memory.
//!
//! A dump is stored only when the tool exited 0 *and* its output ends with
//! the `-- Dump completed` line that mysqldump writes last (`--comments` is
//! passed so that an option file cannot switch it off). Only the last few
//! hundred bytes are kept to check this. A tool that fails, is killed, or
//! stops early therefore never yields a good-looking archive.
//!
//! Passwords never appear on a command line or in a message: they reach the
//! tools as `MYSQL_PWD` in their environment, from `password_file`,
//! `password_env` or the URL (in that order; without any, the tools' own
//! defaults apply: `MYSQL_PWD`, `~/.my.cnf`). URLs in messages and manifests
//! are written without the password.
//!
//! The manifest details record the dump tool and its version, the client,
//! the server version, the database's character set and collation, the
//! format (`sql`), the main stream, and `tables`: `{"name": rows}` for every
//! base table. The row counts are counted *in the dump itself* while it is
//! stored (a small state machine follows `CREATE TABLE` and `INSERT INTO ...
//! VALUES (...),(...);` statements outside `DELIMITER` blocks, quotes and
//! escapes included). They are thus exactly what the dump holds, also while
//! the application writes during the snapshot, which `SELECT COUNT(*)` in a
//! second transaction could not promise (MySQL cannot share a snapshot
//! between connections).
//!
//! # Restore
//!
//! Into the configured database only with `--force`; `--to-database URL`
//! restores into another database, created if missing, and needs `--force`
//! when that database already holds tables, views, routines or events.
//!
//! * Target database missing: it is created (with the snapshot's character
//!   set and collation where the server knows them) and the dump is loaded
//!   into it; if the load fails, the database is dropped again.
//! * Target database exists: the dump is first loaded into a temporary
//!   database on the same server, `<db>_coffer_<random>`. The archive is
//!   authenticated to its last byte before the client sees its end, so a
//!   damaged archive, a dump the server rejects, or a lost connection all
//!   fail here, and the target is left exactly as it was. Only then is the
//!   target dropped and created again (keeping its character set and
//!   collation; grants on it survive `DROP DATABASE`), and the temporary
//!   database copied into it with the dump tool piped into the client
//!   (streamed, never on disk), and the temporary database dropped. So the
//!   target afterwards holds exactly the snapshot's objects: tables, views,
//!   triggers, routines and events created since are gone.
//!
//!   Why not `RENAME TABLE tmp.t TO db.t`, which is atomic and faster? It
//!   cannot move tables that have triggers to another database, nor views,
//!   routines or events; re-creating those by hand would duplicate what the
//!   dump tool does correctly. The price is loading the data twice. If the
//!   second step fails (server gone, disk full), the target may be
//!   incomplete: the error says so, and the temporary database, which holds
//!   the snapshot's complete copy, is kept for the user to copy from.
//!
//! `DROP DATABASE` waits at most 60 s for locks held by other sessions; stop
//! the application first (`before_restore` hook).
//!
//! A restore or drill killed on the way leaves its temporary database. Its
//! name carries its maker, `<db>_coffer_<pid>_<host tag>_<random>`; the next
//! restore of `<db>` (a drill: the next drill on that server) drops the ones
//! made on this host by a process that no longer runs, and says so;
//! `coffer check` reports the others (an older coffer's
//! `<db>_coffer_<random>` names no maker, so nothing drops it). Dropping
//! one loses nothing: it holds a snapshot that is in the repository.
//!
//! # Drill
//!
//! Creates `coffer_drill_<snapshot id>_<random>` on the `--scratch-url`
//! server (else the configured one; `CREATE DATABASE` without `IF NOT
//! EXISTS`, so it never reuses an existing database), loads the dump, times
//! the load, counts the rows of every base table and compares them with the
//! recorded `tables`, and drops the scratch database in every case.
//!
//! Events in a restored dump are live as soon as they are created, in the
//! temporary and scratch databases too, where the server's event scheduler
//! is on. `jobs` has no effect: the tools load and dump on one connection.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::stream::{ToolSpec, feed_tool, tool_stream};
use super::{
    DbRestore, DbRestored, Details, DrillRequest, DrillResult, DumpStream, Dumper, SourceError,
    Streams,
};
use crate::config::SourceConfig;

/// The one stream a MySQL source stores.
pub const STREAM: &str = "dump.sql";

/// How long `DROP DATABASE` of a restore target waits for other sessions'
/// locks before it gives up (seconds).
const LOCK_WAIT_SECS: u32 = 60;

/// Dump options, besides the connection and the database name.
const DUMP_FLAGS: &[&str] = &[
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--no-tablespaces",
    "--comments",
    "--add-drop-table",
    "--quick",
    "--max-allowed-packet=1G",
];

mod conn;
mod drill;
mod restore;
mod scan;
mod snapshot;
mod tools;

use conn::*;
use drill::*;
use restore::*;
use scan::*;
use snapshot::*;
use tools::*;

// ------------------------------------------------------------ the kind

/// MySQL and MariaDB as a [`super::DatabaseSource`].
pub struct Mysql;

impl super::DatabaseSource for Mysql {
    fn kind(&self) -> crate::config::SourceKind {
        crate::config::SourceKind::Mysql
    }
    fn keys(&self) -> super::Keys {
        super::Keys {
            required: &["url"],
            allowed: &["url", "jobs", "password_file", "password_env"],
        }
    }
    fn dumper(&self, src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError> {
        Ok(Box::new(MysqlDumper::new(src)?))
    }
    fn destination(&self, req: &DbRestore) -> Result<String, SourceError> {
        destination(req)
    }
    fn restore(
        &self,
        req: &DbRestore,
        streams: &mut dyn Streams,
    ) -> Result<DbRestored, SourceError> {
        restore(req, streams)
    }
    fn has_drill(&self) -> bool {
        true
    }
    fn drill(
        &self,
        req: &DrillRequest,
        streams: &mut dyn Streams,
    ) -> Result<DrillResult, SourceError> {
        drill(req, streams)
    }
    /// Besides `prepare`, the dump tool must not be older than the
    /// server: a snapshot works, but its dump may not restore.
    fn check(&self, src: &SourceConfig) -> Result<String, SourceError> {
        use super::detail_str;
        let d = super::prepared(self, src)?;
        let server = detail_str(&d, "server_version");
        let tool = detail_str(&d, "tool_version");
        if let Some(why) = tool_too_old(&tool, &server) {
            return Err(SourceError::ToolTooOld {
                server: detail_str(&d, "url"),
                why,
            });
        }
        Ok(self.describe(&d))
    }
    fn describe(&self, d: &Details) -> String {
        use super::detail_str;
        format!(
            "{}: server {}, {} ({})",
            detail_str(d, "url"),
            detail_str(d, "server_version"),
            detail_str(d, "tool"),
            detail_str(d, "tool_version"),
        )
    }
    fn leftovers(&self, src: &SourceConfig) -> Result<Vec<String>, SourceError> {
        leftovers(src)
    }
}

/// The leading `major.minor` of a version text.
fn major_minor(s: &str) -> Option<(u32, u32)> {
    let mut it = s.trim().split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Why a MySQL/MariaDB dump tool is older than its server, if it is. The
/// tool's `--version` names the release it ships with after "Distrib" (or,
/// for MySQL 8, after "Ver"); tools of the other flavour are not compared
/// (their version numbers are unrelated).
pub fn tool_too_old(tool_version: &str, server_version: &str) -> Option<String> {
    if tool_version.contains("MariaDB") != server_version.contains("MariaDB") {
        return None;
    }
    let release = tool_version
        .split_once("Distrib ")
        .or_else(|| tool_version.split_once("Ver "))
        .map(|(_, r)| r)?;
    let tool = major_minor(release)?;
    let server = major_minor(server_version)?;
    (tool < server).then(|| {
        format!(
            "the dump tool ({}) is older than the server ({})",
            tool_version.trim(),
            server_version.trim()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(data: &[u8], piece: usize) -> DumpScan {
        let mut s = DumpScan::new();
        for c in data.chunks(piece) {
            s.feed(c);
        }
        s
    }

    const DUMP: &[u8] = b"/*M!999999\\- enable the sandbox mode */ \n\
-- MariaDB dump\n\
DROP TABLE IF EXISTS `empty`;\n\
CREATE TABLE `empty` (\n  `x` int\n);\n\
CREATE TABLE `we``ird` (\n  `x` int\n);\n\
INSERT INTO `we``ird` VALUES\n(1,'a\\'),(b;\\\\',0x00),\n(2,'(\"x\"',NULL);\n\
INSERT INTO `we``ird` (`a(`, `b`) VALUES (3,'it''s');\n\
/*!50001 CREATE TABLE `v` (\n  `x` int\n) */;\n\
DELIMITER ;;\n\
CREATE PROCEDURE `p`()\nBEGIN\nINSERT INTO `empty` VALUES (99),(100);\nEND ;;\n\
DELIMITER ;\n\
INSERT INTO `t2` VALUES (1);\n\
\n-- Dump completed on 2026-01-01  1:02:03\n";

    #[test]
    fn counts_rows_whatever_the_chunking() {
        for piece in [1, 2, 3, 7, 64, 4096] {
            let s = scan(DUMP, piece);
            let want: BTreeMap<String, u64> = [("empty", 0), ("we`ird", 3), ("t2", 1)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(s.tables, want, "piece {piece}");
            assert!(s.complete(), "piece {piece}");
        }
    }

    #[test]
    fn incomplete_dump_is_noticed() {
        let cut = &DUMP[..DUMP.len() - 45];
        assert!(!scan(cut, 100).complete());
        let mut more = DUMP.to_vec();
        more.extend_from_slice(b"INSERT INTO `x` VALUES (1);\n");
        assert!(!scan(&more, 100).complete());
        assert!(!scan(b"", 1).complete());
    }

    #[test]
    fn urls_parse_and_never_show_the_password() {
        let c = Conn::parse("mysql://app:s%40cret@db.example:3307/shop%2Dx", "url", true).unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.port, 3307);
        assert_eq!(c.database, "shop-x");
        assert_eq!(c.display(), "mysql://app@db.example:3307/shop-x");
        assert!(!c.args().join(" ").contains("s@cret"));
        assert_eq!(c.env(), vec![("MYSQL_PWD".into(), "s@cret".into())]);
        let e = Conn::parse("mysql://a:pw@h/", "url", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no database") && !e.contains("pw@"), "{e}");
        assert!(Conn::parse("postgres://h/db", "url", true).is_err());
        let s = Conn::parse("mariadb://root@localhost/db?socket=/run/m.sock", "u", true).unwrap();
        assert_eq!(s.socket.as_deref(), Some("/run/m.sock"));
        // Issue 10 item 7: `?password=` goes to MYSQL_PWD, never to a display.
        let q = Conn::parse("mysql://app@db/shop?password=q%26pw", "u", true).unwrap();
        assert_eq!(q.password.as_deref(), Some("q&pw"));
        assert_eq!(q.display(), "mysql://app@db:3306/shop");
        assert!(!q.args().join(" ").contains("pw"));
        let e = Conn::parse("mysql://app@db/shop?password=qpw&ssl=1", "u", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"ssl\"") && !e.contains("qpw"), "{e}");
    }

    #[test]
    fn fresh_names_name_their_maker() {
        let me = crate::abandoned::Owner {
            pid: std::process::id(),
            host: crate::abandoned::host_tag(),
        };
        for base in ["shop", &"x".repeat(80), &"é".repeat(40), "a_b_1"] {
            let n = fresh_name(base, "coffer");
            assert!(n.len() <= 64, "{n}");
            assert_eq!(
                fresh_name_owner(&n, base, "coffer"),
                Some(Some(me.clone())),
                "{n}"
            );
            assert_eq!(fresh_name_owner(&n, "sho", "coffer"), None, "{n}");
        }
        // An older coffer's name: coffer's, no owner.
        assert_eq!(
            fresh_name_owner("shop_coffer_0a1b2c3d", "shop", "coffer"),
            Some(None)
        );
        for not in [
            "shop_coffer_old",
            "shop_coffer_0a1b2c3",
            "shop_coffer_12_0a1b2c3d_0A1B2C3D",
            "shop_coffer__0a1b2c3d_0a1b2c3d",
            "shopx_coffer_12_0a1b2c3d_0a1b2c3d",
            "shop",
        ] {
            assert_eq!(fresh_name_owner(not, "shop", "coffer"), None, "{not}");
        }
        let d = fresh_name("coffer_drill", "ab12");
        assert_eq!(drill_name_owner(&d), Some(me));
        assert_eq!(drill_name_owner("coffer_drill_ab12_0a1b2c3d"), None);
        assert_eq!(drill_name_owner("coffer_drill__1_0a1b2c3d_0a1b2c3d"), None);
    }

    #[test]
    fn mysql_dump_tool_versions_compare_by_release() {
        let maria =
            "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)";
        assert_eq!(tool_too_old(maria, "10.11.19-MariaDB-0+deb12u1"), None);
        assert_eq!(tool_too_old(maria, "10.6.2-MariaDB"), None);
        assert!(
            tool_too_old(maria, "11.4.2-MariaDB")
                .unwrap()
                .contains("older than the server (11.4.2-MariaDB)")
        );
        let mysql8 = "mysqldump  Ver 8.0.36 for Linux on x86_64 (MySQL Community Server - GPL)";
        assert_eq!(tool_too_old(mysql8, "8.0.36"), None);
        assert!(tool_too_old(mysql8, "8.4.0").is_some());
        let mysql57 = "mysqldump  Ver 10.13 Distrib 5.7.44, for Linux (x86_64)";
        assert!(tool_too_old(mysql57, "8.0.36").is_some());
        // Other flavour: not compared.
        assert_eq!(tool_too_old(maria, "8.0.36"), None);
    }
}
