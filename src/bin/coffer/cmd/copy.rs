//! `coffer copy`: copy objects between two stores.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use coffer::copy::CopyError;
use coffer::{Error, ErrorKind, Outcome};

use crate::cli::{CopyArgs, Global};
use crate::output::{human_bytes, print_doc, println_out};

/// `--src-opt`/`--dst-opt` values: `KEY=VALUE`, or, so that a secret stays
/// out of argv (`ps`, shell history), `KEY=@FILE` (the file's content, one
/// final newline dropped) or `KEY=env:VAR` (that variable's value).
fn store_options(flag: &str, kvs: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut m = BTreeMap::new();
    for kv in kvs {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| {
                // Only the key: the value may be a secret given by mistake.
                let shown = kv.split_once('=').map_or("", |(k, _)| k);
                CopyError::StoreOptionSyntax {
                    flag: flag.to_string(),
                    shown: shown.to_string(),
                }
            })?;
        let value = if let Some(file) = v.strip_prefix('@') {
            let text = std::fs::read_to_string(file).map_err(|e| CopyError::StoreOptionFile {
                flag: flag.to_string(),
                key: k.to_string(),
                file: file.to_string(),
                source: e,
            })?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            text.strip_suffix('\r').unwrap_or(text).to_string()
        } else if let Some(var) = v.strip_prefix("env:") {
            std::env::var(var).map_err(|e| CopyError::StoreOptionEnv {
                flag: flag.to_string(),
                key: k.to_string(),
                var: var.to_string(),
                source: e,
            })?
        } else {
            v.to_string()
        };
        m.insert(k.to_string(), value);
    }
    Ok(m)
}

/// Draws the copy's progress bar and prints its per-object lines.
struct CopyProgress {
    bar: Option<indicatif::ProgressBar>,
    dry_run: bool,
    check: bool,
    json: bool,
    quiet: bool,
}

impl coffer::progress::Monitor for CopyProgress {
    fn event(&self, e: &coffer::progress::Event<'_>) {
        use coffer::progress::Event;
        let line = |s: String| match &self.bar {
            Some(b) => b.println(s),
            None => println_out(&s),
        };
        match e {
            Event::Queued { bytes, .. } => {
                if let Some(b) = &self.bar {
                    b.inc_length(*bytes);
                    b.set_message(format!("{} objects", b.position()));
                }
            }
            Event::Copied { .. } | Event::Skipped { .. } => {
                if let (Some(b), Event::Copied { bytes, .. }) = (&self.bar, e) {
                    b.inc(*bytes);
                }
            }
            Event::WouldCopy { key, bytes, why } if !self.json => {
                line(format!("would copy {key} ({}; {why})", human_bytes(*bytes)))
            }
            Event::WouldDelete { key, bytes } if !self.json => {
                line(format!("would delete {key} ({})", human_bytes(*bytes)))
            }
            Event::Differs { key, what } if !self.json && self.check => {
                line(format!("differs: {key}: {what}"))
            }
            Event::Failed { key, error } => {
                let s = format!("error: {key}: {error}");
                match &self.bar {
                    Some(b) => b.println(s),
                    None => eprintln!("{s}"),
                }
            }
            Event::Retrying {
                key,
                attempt,
                error,
            } if !self.quiet => {
                tracing::warn!("{key}: attempt {attempt} failed ({error}); retrying");
            }
            _ => {}
        }
        let _ = self.dry_run;
    }
}

pub async fn run(g: &Global, a: CopyArgs) -> Result<Outcome, Error> {
    let opts = coffer::copy::CopyOptions {
        src_options: store_options("--src-opt", &a.src_opt)?,
        dst_options: store_options("--dst-opt", &a.dst_opt)?,
        delete: a.delete,
        max_delete: a.max_delete,
        dry_run: a.dry_run,
        check: a.check,
        checksum: a.checksum,
        concurrency: a.concurrency,
        include: a.include,
        exclude: a.exclude,
    };
    let bar =
        (std::io::stderr().is_terminal() && !g.no_progress && !g.quiet && !a.check && !a.dry_run)
            .then(|| {
                let b = indicatif::ProgressBar::new(0);
                b.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("valid template"),
                );
                b.enable_steady_tick(std::time::Duration::from_millis(200));
                b
            });
    let progress = std::sync::Arc::new(CopyProgress {
        bar: bar.clone(),
        dry_run: a.dry_run,
        check: a.check,
        json: g.json,
        quiet: g.quiet,
    });
    let rep = coffer::copy::copy(&a.src, &a.dst, &opts, progress).await?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if g.json {
        print_doc(&rep);
    } else if !g.quiet || !rep.ok {
        let _ = coffer::report::copy_text(&mut std::io::stderr().lock(), &rep);
    }
    let _ = coffer::report::copy_errors(&mut std::io::stderr().lock(), &rep);
    Ok(if rep.ok {
        Outcome::Ok
    } else {
        Outcome::Failed(ErrorKind::Operational)
    })
}
