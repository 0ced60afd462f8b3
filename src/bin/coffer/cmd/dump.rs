//! `coffer dump`: a source, or one file of it, to stdout.

use std::io::IsTerminal;

use coffer::{Error, Outcome, restore};

use crate::cli::{DumpArgs, Global};
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: DumpArgs) -> Result<Outcome, Error> {
    let DumpArgs {
        snapshot,
        source,
        path,
    } = a;
    if path.is_none() && std::io::stdout().is_terminal() {
        return Err(restore::RestoreError::DumpToTerminal.into());
    }
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    let m = r.resolve(&snapshot, None).await?;
    restore::dump(&r, &m, &source, path, std::io::stdout()).await?;
    Ok(Outcome::Ok)
}
