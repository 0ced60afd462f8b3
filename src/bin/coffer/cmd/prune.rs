//! `coffer prune`: forget what no retention rule keeps.

use coffer::{Error, Outcome};

use crate::cli::{Global, PruneArgs};
use crate::output::{human_bytes, print_json};
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
        print_json(&serde_json::to_value(&rep).expect("report serialises"));
        return Ok(Outcome::Ok);
    }
    let mut out = format!(
        "{:<16}  {:<20}  {:<6}  {}\n",
        "ID", "TIME (UTC)", "ACTION", "KEPT BY"
    );
    for v in &rep.snapshots {
        out.push_str(&format!(
            "{:<16}  {:<20}  {:<6}  {}\n",
            v.id,
            v.time.replace('T', " ").trim_end_matches('Z'),
            v.action,
            v.reasons.join(", ")
        ));
    }
    for l in &rep.leftovers {
        out.push_str(&format!(
            "left-over data/{}/ ({} objects, {}, newest {}): {}: {}\n",
            l.id,
            l.objects,
            human_bytes(l.bytes),
            l.newest,
            l.action,
            l.why
        ));
    }
    let verb = if rep.dry_run {
        "dry run, nothing deleted: would remove"
    } else {
        "removed"
    };
    let t = &rep.temp_files;
    if t.removed + t.kept > 0 {
        out.push_str(&format!(
            "{verb} {} upload temp files of interrupted writes ({}); kept {} ({}) younger than the grace period\n",
            t.removed,
            human_bytes(t.removed_bytes),
            t.kept,
            human_bytes(t.kept_bytes)
        ));
    }
    if let Some(m) = &rep.multipart_uploads
        && m.aborted + m.kept > 0
    {
        let verb = if rep.dry_run {
            "dry run, nothing deleted: would abort"
        } else {
            "aborted"
        };
        out.push_str(&format!(
            "{verb} {} multipart uploads of interrupted writes; kept {} younger than the grace period\n",
            m.aborted, m.kept
        ));
    }
    out.push_str(&format!(
        "{verb} {} of {} snapshots ({} objects) and {} left-over objects; kept {} ({})\n",
        rep.removed,
        rep.snapshots.len(),
        rep.removed_objects,
        rep.leftovers_removed,
        rep.kept,
        rep.policy
    ));
    print!("{out}");
    Ok(Outcome::Ok)
}
