//! `coffer completions` and `coffer man`: text generated from the clap
//! definitions.

use clap::CommandFactory;
use coffer::{Error, Outcome};

use crate::cli::Cli;
use crate::output::write_generated;

pub fn completions(shell: clap_complete::Shell) -> Result<Outcome, Error> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "coffer", &mut out);
    write_generated(&out, "shell completions")
}

pub fn man() -> Result<Outcome, Error> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command())
        .render(&mut out)
        .map_err(|e| Error::Output {
            doing: "render the man page".into(),
            source: e,
        })?;
    write_generated(&out, "the man page")
}
