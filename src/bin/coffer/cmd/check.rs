//! `coffer check`: the pre-flight checks.

use coffer::{Error, Outcome};

use crate::cli::{CheckArgs, Global};
use crate::output::print_doc;
use crate::settings::{credential, load_settings, open_store};

/// `coffer check`. A config file that cannot be parsed is still exit 2, as
/// everywhere, after its FAIL line; every other failed check is exit 1.
pub async fn run(g: &Global, a: CheckArgs) -> Result<Outcome, Error> {
    let max_age = a.max_age;
    use coffer::check::{self, CheckInputs, CheckItem, CheckReport};
    let print = |rep: &CheckReport| {
        if g.json {
            print_doc(rep);
        } else {
            let _ = coffer::report::check_text(&mut std::io::stdout().lock(), rep);
        }
    };
    let max_age = match max_age {
        Some(t) => Some((
            coffer::retention::parse_duration("--max-age", &t)?,
            t.trim().to_string(),
        )),
        None => None,
    };
    let s = match load_settings(g) {
        Ok(s) => s,
        Err(e) => {
            print(&CheckReport {
                ok: false,
                checks: vec![CheckItem {
                    name: "config valid".into(),
                    ok: false,
                    detail: e.to_string(),
                    warning: false,
                }],
            });
            return Ok(Outcome::Failed(e.kind()));
        }
    };
    let rep = check::check(CheckInputs {
        config: &s.config,
        store: open_store(&s, false),
        credential: credential(g, &s),
        max_age,
        key_file: g.key_file.as_deref(),
        now: chrono::Utc::now(),
    })
    .await;
    print(&rep);
    if !rep.ok && !g.json {
        let _ = coffer::report::check_failed(&mut std::io::stderr().lock(), &rep);
    }
    Ok(rep.outcome())
}
