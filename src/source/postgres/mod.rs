//! `postgres` sources (PostgreSQL): `pg_dump` at snapshot time, `pg_restore`
//! at restore and drill time.
//!
//! # Snapshot
//!
//! The dump is one `pg_dump --format=custom --compress=0` stream, read from
//! the tool's stdout straight into the archive (never to local disk), so
//! `coffer dump SNAPSHOT SOURCE | pg_restore -d DB` works as for any custom
//! archive. `--compress=0`: coffer compresses every archive with zstd, and
//! zlib inside the dump would only cost CPU and leave zstd nothing to do.
//!
//! Row counts consistent with the dump: a `psql` session opens a
//! `REPEATABLE READ, READ ONLY` transaction and exports its snapshot
//! (`pg_export_snapshot()`); `pg_dump --snapshot=ID` dumps exactly that
//! snapshot, and the same session counts every user table (`count(*) FROM
//! ONLY`, one query per table through `\gexec`) while `pg_dump` runs, so the
//! counting costs no extra wall time on a machine with a spare core. The
//! session stays open until `pg_dump` has finished (an exported snapshot is
//! importable only while its transaction lives). The manifest records
//! `tables: {"schema.table": rows}` (ordinary tables, partitions included,
//! partitioned parents and extension members left out), the server version,
//! the `pg_dump` version and format, and the database's encoding and locale.
//!
//! Before anything is read, `prepare` compares `pg_dump --version` with the
//! server's `server_version_num`: a `pg_dump` older than the server cannot
//! dump it, and the source fails saying which client tools to install.
//!
//! `globals = true` adds a first stream `globals.sql` from `pg_dumpall
//! --globals-only` (roles with their password hashes, tablespaces; needs a
//! superuser). Restore never applies it (it would reset every role's
//! password to its old value); it says where it is instead.
//!
//! `jobs = N` applies to restore only: a parallel `pg_dump -j` writes the
//! directory format, i.e. the whole dump to local disk, which coffer never
//! does at snapshot time, so the dump stays one stream. `pg_restore -j N`
//! needs a seekable file: the restore writes the authenticated dump to a
//! temporary file (under `$TMPDIR`, mode 0600) and deletes it afterwards.
//!
//! Passwords: `password_file` / `password_env`, else one in the URL (its
//! user info or a `?password=` parameter), reach the tools as `PGPASSWORD`;
//! the tools get the URL without it, and messages and manifests never show
//! it. `?sslpassword=` is refused: libpq reads it from nowhere but the
//! connection string, i.e. a command line. Without either, libpq's usual `~/.pgpass`
//! and trust rules apply. Tools run with `--no-password`: they fail rather
//! than prompt.
//!
//! # Restore
//!
//! `restore --force` (configured database) and `--to-database URL` both
//! restore into a new database on the target's server, `<db>_coffer_<id>`,
//! created from `template0` with the dump's encoding and locale, and only
//! when `pg_restore --exit-on-error` (in one transaction unless `jobs > 1`)
//! succeeded and the whole archive authenticated, swap it in: connections to
//! the target are refused and terminated, the target is renamed to
//! `<db>_coffer_old_<id>`, the new one to the target's name, and the old one
//! dropped. Afterwards the database holds exactly what the snapshot holds;
//! on any failure before the swap the new database is dropped and the target
//! is untouched. The database-level properties that `pg_dump` does not dump
//! (owner, privileges, `ALTER DATABASE/ROLE ... SET` settings, comment,
//! connection limit) are carried over from the database being replaced.
//! This needs a role that owns the target (or a superuser) with CREATEDB,
//! and the `postgres` maintenance database (`template1` when the target is
//! `postgres`). `--to-database` creates the database if missing, and
//! replaces an existing non-empty one only with `--force`.
//!
//! Every scratch database carries a marker comment (pid, host, start time)
//! while coffer works in it, cleared before a restored one takes the
//! target's name. A restore or drill killed meanwhile leaves it behind; the
//! next restore of that database (or drill) drops the ones provably
//! abandoned ([`crate::abandoned`]: this host, a pid that no longer runs,
//! the exact scratch name), never `<db>_coffer_old_<id>`, which may hold
//! the only copy of the replaced data after a kill mid-swap.
//!
//! # Drill
//!
//! Restores into `coffer_drill_<snapshot>_<random>` on the source's server
//! (or `--scratch-url`'s), with `--no-owner --no-privileges` (a scratch
//! server need not have the roles; the drill checks data, not grants),
//! compares every table's row count with the recorded one, and drops the
//! scratch database whatever happened.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stream::{ToolSpec, feed_tool, tool_stream};
use super::{
    DbRestore, DbRestored, Details, DrillRequest, DrillResult, DumpStream, Dumper, SourceError,
    Streams, TOOL_TIMEOUT, redact_url,
};
use crate::config::SourceConfig;

/// The `pg_dump` custom-format archive.
pub const MAIN_STREAM: &str = "pg_dump.custom";
/// `pg_dumpall --globals-only` output (with `globals = true`).
pub const GLOBALS_STREAM: &str = "globals.sql";
const FORMAT: &str = "custom";
/// PostgreSQL identifiers are at most 63 bytes.
const MAX_IDENT: usize = 63;

/// One `count(*)` per user table, run by psql's `\gexec`: rows of
/// `schema.table` and its count.
const COUNT_SQL: &str = "SELECT pg_catalog.format('SELECT %L, pg_catalog.count(*) FROM ONLY %I.%I', \
n.nspname || '.' || c.relname, n.nspname, c.relname) \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_' \
AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid AND d.deptype = 'e') \
ORDER BY 1\n\\gexec\n";

mod conn;
mod drill;
mod restore;
mod session;
mod snapshot;
mod versions;

use conn::*;
use drill::*;
use restore::*;
use session::*;
use snapshot::*;
use versions::*;

// ------------------------------------------------------------ the kind

/// PostgreSQL as a [`super::DatabaseSource`].
pub struct Postgres;

impl super::DatabaseSource for Postgres {
    fn kind(&self) -> crate::config::SourceKind {
        crate::config::SourceKind::Postgres
    }
    fn keys(&self) -> super::Keys {
        super::Keys {
            required: &["url"],
            allowed: &["url", "jobs", "globals", "password_file", "password_env"],
        }
    }
    fn dumper(&self, src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError> {
        Ok(Box::new(PgDumper::new(src)?))
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
    fn describe(&self, d: &Details) -> String {
        use super::detail_str;
        format!(
            "{}: server {}, pg_dump {} (not older than the server)",
            detail_str(d, "url"),
            detail_str(d, "server_version"),
            detail_str(d, "pg_dump_version")
        )
    }
    fn leftovers(&self, src: &SourceConfig) -> Result<Vec<String>, SourceError> {
        leftovers(src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        let c = Conn::parse(
            "postgres://app:s%40cret@db.example:6543/shop?sslmode=require",
            "t",
            None,
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.db, "shop");
        assert_eq!(
            c.display(),
            "postgres://app@db.example:6543/shop?sslmode=require"
        );
        let m = c.maintenance();
        assert_eq!(
            m.display(),
            "postgres://app@db.example:6543/postgres?sslmode=require"
        );
        assert_eq!(
            c.with_db("a b/c").display(),
            "postgres://app@db.example:6543/a%20b%2Fc?sslmode=require"
        );
        assert!(Conn::parse("postgres://app@h/", "t", None).is_err());
        assert_eq!(
            Conn::parse("postgres://app@h", "t", Some("postgres"))
                .unwrap()
                .db,
            "postgres"
        );
        assert!(Conn::parse("mysql://app@h/x", "t", None).is_err());
        let e = Conn::parse("postgres://u:pw@h", "t", None)
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("pw"), "{e}");
    }

    /// Issue 10 item 7: `?password=` leaked into argv, messages and manifests.
    #[test]
    fn password_parameter_moves_to_the_environment() {
        let c = Conn::parse(
            "postgres://app@db:5432/shop?sslmode=require&password=q%26pw&application_name=x",
            "t",
            None,
        )
        .unwrap();
        assert_eq!(c.password.as_deref(), Some("q&pw"));
        assert_eq!(
            c.display(),
            "postgres://app@db:5432/shop?sslmode=require&application_name=x"
        );
        assert!(!c.dbname_arg().contains("pw"), "{}", c.dbname_arg());
        assert!(c.env().contains(&("PGPASSWORD".into(), "q&pw".into())));
        // The user info's password wins; the parameter is dropped all the same.
        let c = Conn::parse("postgres://app:ui@db/shop?password=q", "t", None).unwrap();
        assert_eq!(c.password.as_deref(), Some("ui"));
        assert_eq!(c.display(), "postgres://app@db/shop");
        let e = Conn::parse("postgres://app@db/shop?sslpassword=kpw", "t", None)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslpassword") && !e.contains("kpw"), "{e}");
    }

    #[test]
    fn versions_compare_by_major() {
        assert_eq!(version_key("15.20 (Debian 15.20-0+deb12u1)"), Some(1500));
        assert_eq!(version_key("9.6.24"), Some(906));
        assert_eq!(version_key("17beta1"), Some(1700));
        assert_eq!(server_version_key(150020), 1500);
        assert_eq!(server_version_key(90624), 906);
        assert_eq!(server_version_key(160001), 1600);
        assert!(version_key("15.2").unwrap() < server_version_key(160001));
        assert_eq!(major_text(906), "9.6");
        assert_eq!(major_text(1600), "16");
    }

    #[test]
    fn records_and_quoting() {
        let r = parse_records(b"a\x1fb\0c\0part");
        assert_eq!(
            r,
            vec![
                vec!["a".to_string(), "b".to_string()],
                vec!["c".to_string()]
            ]
        );
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(lit("it's"), "'it''s'");
        assert_eq!(lit("a\\b'"), "E'a\\\\b'''");
        assert_eq!(crate::source::percent_decode("a%20b%zz%4"), "a b%zz%4");
    }

    #[test]
    fn guc_lists_split_like_postgres() {
        assert_eq!(
            split_guc_list("\"my schema\", public"),
            vec!["my schema", "public"]
        );
        assert_eq!(split_guc_list("\"$user\", public"), vec!["$user", "public"]);
        assert_eq!(split_guc_list("a"), vec!["a"]);
        let p = Prop::Setting {
            role: String::new(),
            name: "search_path".into(),
            value: "\"my schema\", public".into(),
        };
        assert_eq!(
            p.sql("d"),
            "ALTER DATABASE \"d\" SET \"search_path\" TO 'my schema', 'public'"
        );
    }

    #[test]
    fn scratch_names_and_markers_are_recognised() {
        let n = derived_name("shop", "_coffer_");
        assert!(is_derived_name(&n, "shop", "_coffer_"));
        assert!(!is_derived_name(&n, "shop", "_coffer_old_"));
        assert!(!is_derived_name("shop", "shop", "_coffer_"));
        assert!(!is_derived_name(
            "shop_coffer_old_0123abcd",
            "shop",
            "_coffer_"
        ));
        assert!(!is_derived_name(
            "shop_coffer_0123abcdx",
            "shop",
            "_coffer_"
        ));
        let long = "x".repeat(80);
        assert!(is_derived_name(
            &derived_name(&long, "_coffer_"),
            &long,
            "_coffer_"
        ));
        assert!(is_drill_name(&derived_name("coffer_drill_0a1b", "_")));
        assert!(!is_drill_name("coffer_drill_0a1b"));
        let o = marker_owner(&marker()).unwrap();
        assert_eq!(o.pid, std::process::id());
        assert_eq!(o.host, crate::repo::host_name());
        assert_eq!(marker_owner("a comment"), None);
    }

    #[test]
    fn derived_names_fit_identifiers() {
        let long = "x".repeat(80);
        let n = derived_name(&long, "_coffer_old_");
        assert_eq!(n.len(), MAX_IDENT);
        assert!(n.contains("_coffer_old_"));
        let n = derived_name("shop", "_coffer_");
        assert!(n.starts_with("shop_coffer_") && n.len() == "shop_coffer_".len() + 8);
    }
}
