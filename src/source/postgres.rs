//! `postgres` sources (PostgreSQL). Not implemented yet: every call fails clearly.

use super::{
    DbRestore, DbRestored, Details, DrillRequest, DrillResult, DumpStream, Dumper, SourceError,
    Streams,
};
use crate::config::SourceConfig;

fn not_yet() -> SourceError {
    SourceError::Failed("PostgreSQL sources are not supported by this build yet".into())
}

pub struct PgDumper;

impl PgDumper {
    pub fn new(_src: &SourceConfig) -> Result<Self, SourceError> {
        Err(not_yet())
    }
}

impl Dumper for PgDumper {
    fn prepare(&mut self, _details: &mut Details) -> Result<(), SourceError> {
        Err(not_yet())
    }
    fn next_stream(&mut self) -> Result<Option<DumpStream>, SourceError> {
        Err(not_yet())
    }
    fn finish(&mut self, _details: &mut Details) -> Result<(), SourceError> {
        Err(not_yet())
    }
}

pub fn destination(_req: &DbRestore) -> Result<String, SourceError> {
    Err(not_yet())
}

pub fn restore(_req: &DbRestore, _streams: &mut dyn Streams) -> Result<DbRestored, SourceError> {
    Err(not_yet())
}

#[allow(dead_code)]
pub fn drill(_req: &DrillRequest, _streams: &mut dyn Streams) -> Result<DrillResult, SourceError> {
    Err(not_yet())
}
