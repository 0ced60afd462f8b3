//! `coffer prune`: forget what no retention rule keeps.

use coffer::{Error, Outcome};

use crate::cli::{Global, PruneArgs};
use crate::output::print_doc;
use crate::settings::{load_settings, open_repo};

fn prune_policy(
    cfg: &coffer::config::RetentionConfig,
    a: &PruneArgs,
) -> Result<coffer::retention::Policy, Error> {
    use coffer::retention::{Period, Policy, RetentionError, parse_duration};
    let mut p = Policy::from_config(cfg)?;
    if let Some(n) = a.keep_last {
        p.last = n;
    }
    for (period, n) in [
        (Period::Hourly, a.keep_hourly),
        (Period::Daily, a.keep_daily),
        (Period::Weekly, a.keep_weekly),
        (Period::Monthly, a.keep_monthly),
        (Period::Yearly, a.keep_yearly),
    ] {
        if let Some(n) = n {
            p.set_count(period, n);
        }
    }
    if let Some(w) = &a.keep_within {
        p.within = Some((parse_duration("--keep-within", w)?, w.trim().to_string()));
    }
    if !a.keep_tag.is_empty() {
        p.tags = a.keep_tag.clone();
    }
    if p.is_empty() {
        return Err(coffer::prune::PruneError::from(RetentionError::NoRule).into());
    }
    Ok(p)
}

pub async fn run(g: &Global, a: PruneArgs) -> Result<Outcome, Error> {
    use coffer::prune::{self, PruneOptions};
    let s = load_settings(g)?;
    let policy = prune_policy(&s.config.retention, &a)?;
    let grace = match &a.grace {
        Some(t) => coffer::retention::parse_duration("--grace", t)?,
        None => prune::DEFAULT_GRACE,
    };
    let r = open_repo(g, &s).await?;
    let opts = PruneOptions {
        policy,
        dry_run: a.dry_run,
        grace,
        now: chrono::Utc::now(),
    };
    let rep = prune::prune(&r, &opts).await?;
    if g.json {
        print_doc(&rep);
        return Ok(Outcome::Ok);
    }
    let _ = coffer::report::prune_text(&mut std::io::stdout().lock(), &rep);
    Ok(Outcome::Ok)
}
