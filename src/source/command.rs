//! `command` sources: any program whose stdout is the backup (`manage.py
//! dumpdata`, `mongodump --archive`, ...); restore runs the `restore` argv
//! with the backup on its stdin.
//!
//! Both commands start without coffer's secrets in their environment
//! ([`crate::childenv`]) except the variables the source's `env` names.

use super::stream::{ToolSpec, feed_tool, tool_stream};
use super::{DbRestore, DbRestored, Details, DumpStream, Dumper, SourceError, Streams};
use crate::config::SourceConfig;

/// The one stream a command source stores.
pub const STREAM: &str = "stdout";

pub struct CommandDumper {
    argv: Vec<String>,
    /// The source's `env` allow-list.
    pass: Vec<String>,
    started: bool,
}

impl CommandDumper {
    pub fn new(src: &SourceConfig) -> Result<Self, SourceError> {
        Ok(CommandDumper {
            argv: src.dump.clone().unwrap_or_default(),
            pass: src.env.clone().unwrap_or_default(),
            started: false,
        })
    }
}

impl Dumper for CommandDumper {
    fn prepare(&mut self, details: &mut Details) -> Result<(), SourceError> {
        details.insert("dump_command".into(), self.argv.clone().into());
        details.insert("main_stream".into(), STREAM.into());
        Ok(())
    }

    fn next_stream(&mut self) -> Result<Option<DumpStream>, SourceError> {
        if self.started {
            return Ok(None);
        }
        self.started = true;
        let spec = ToolSpec::new(
            format!("dump command {:?}", self.argv[0]),
            self.argv.clone(),
        )
        .pass(&self.pass);
        tool_stream(STREAM, &spec).map(Some)
    }

    fn finish(&mut self, _details: &mut Details) -> Result<(), SourceError> {
        Ok(())
    }
}

fn restore_argv(req: &DbRestore) -> Result<Vec<String>, SourceError> {
    if req.to_database.is_some() {
        return Err(SourceError::Usage(format!(
            "source {} is a command source: --to-database does not apply",
            req.source
        )));
    }
    let cfg = req.config.ok_or_else(|| {
        SourceError::NoLongerConfigured(format!(
            "source {} is not in the config any more: its `restore` command is unknown",
            req.source
        ))
    })?;
    cfg.restore.clone().ok_or_else(|| {
        SourceError::Usage(format!(
            "source {} has no `restore` command in the config; get the backup with `coffer dump {} {}` instead",
            req.source, req.snapshot, req.source
        ))
    })
}

pub fn destination(req: &DbRestore) -> Result<String, SourceError> {
    let argv = restore_argv(req)?;
    if !req.force {
        return Err(SourceError::NeedsForce(format!(
            "restoring source {} runs {:?} with the backup on its stdin, which replaces data; add --force",
            req.source, argv
        )));
    }
    Ok(format!("the restore command {argv:?}"))
}

pub fn restore(req: &DbRestore, streams: &mut dyn Streams) -> Result<DbRestored, SourceError> {
    let argv = restore_argv(req)?;
    let destination = destination(req)?;
    // The allow-list of the source as configured now: the one that runs.
    let pass = req.config.and_then(|c| c.env.clone()).unwrap_or_default();
    let spec = ToolSpec::new(format!("restore command {:?}", argv[0]), argv).pass(&pass);
    let mut bytes = 0;
    while let Some((name, mut r)) = streams.next_stream()? {
        if name == STREAM {
            bytes = feed_tool(&spec, &mut r)?;
        }
    }
    Ok(DbRestored {
        destination,
        bytes,
        next_steps: Vec::new(),
    })
}

// ------------------------------------------------------------ the kind

/// Any program whose stdout is the backup, as a [`super::DatabaseSource`].
pub struct Command;

impl super::DatabaseSource for Command {
    fn kind(&self) -> crate::config::SourceKind {
        crate::config::SourceKind::Command
    }
    fn keys(&self) -> super::Keys {
        super::Keys {
            required: &["dump"],
            allowed: &["dump", "restore", "env"],
        }
    }
    fn dumper(&self, src: &SourceConfig) -> Result<Box<dyn Dumper>, SourceError> {
        Ok(Box::new(CommandDumper::new(src)?))
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
    /// Running the dump program would take a backup: only check that it
    /// is there.
    fn check(&self, src: &SourceConfig) -> Result<String, SourceError> {
        let argv = src.dump.as_deref().unwrap_or(&[]);
        let prog = argv.first().map(String::as_str).unwrap_or("");
        if crate::check::program_found(prog) {
            Ok(format!("dump program {prog:?} found"))
        } else {
            Err(SourceError::NoDumpProgram(prog.to_string()))
        }
    }
    fn describe(&self, _: &Details) -> String {
        "dump program found".into()
    }
}
