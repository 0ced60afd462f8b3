//! `coffer show`: one snapshot's manifest, optionally with every file.

use coffer::manifest::{Manifest, SourceStatus};
use coffer::repo::Repository;
use coffer::{Error, Outcome, restore};
use serde_json::json;

use crate::cli::{Global, ShowArgs};
use crate::output::{human_bytes, print_json, snapshot_json, status_word};
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: ShowArgs) -> Result<Outcome, Error> {
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    let m = r.resolve(&a.snapshot, a.tag.as_deref()).await?;
    show(g, &r, &m, a.files).await
}

async fn show(g: &Global, r: &Repository, m: &Manifest, files: bool) -> Result<Outcome, Error> {
    let mut listings = Vec::new();
    if files {
        for s in &m.sources {
            listings.push(restore::list_files(r, m, s).await?);
        }
    }
    if g.json {
        let mut v = snapshot_json(m);
        v["tool_version"] = json!(m.tool_version);
        v["parent"] = json!(m.parent);
        let srcs = v["sources"].as_array_mut().expect("array");
        for (i, s) in m.sources.iter().enumerate() {
            srcs[i]["origin"] = json!(s.origin);
            srcs[i]["archive"] = json!(s.archive);
            srcs[i]["index"] = json!(s.index);
            srcs[i]["details"] = json!(s.details);
            if files {
                // Times are RFC 3339 UTC, here with the stored nanoseconds.
                let entries: Vec<serde_json::Value> = listings[i]
                    .iter()
                    .map(|e| {
                        let mut v = json!(e);
                        v["mtime"] = json!(
                            chrono::DateTime::from_timestamp(e.mtime, e.mtime_nsec)
                                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                        );
                        if let Some(o) = v.as_object_mut() {
                            o.remove("mtime_nsec");
                        }
                        v
                    })
                    .collect();
                srcs[i]["files"] = json!(entries);
                srcs[i]["file_count"] = json!(s.files);
            }
        }
        print_json(&v);
        return Ok(Outcome::Ok);
    }
    let mut out = String::new();
    out.push_str(&format!("snapshot   {}\n", m.id));
    out.push_str(&format!(
        "time       {} UTC\n",
        m.time.format("%Y-%m-%d %H:%M:%S")
    ));
    out.push_str(&format!("host       {}\n", m.host));
    out.push_str(&format!("status     {}\n", status_word(m.status)));
    out.push_str(&format!("tags       {}\n", m.tags.join(", ")));
    for (k, v) in &m.labels {
        out.push_str(&format!("label      {k}={v}\n"));
    }
    out.push_str(&format!("coffer     {}\n", m.tool_version));
    out.push_str(&format!("stored     {}\n", human_bytes(m.bytes_stored())));
    for (i, s) in m.sources.iter().enumerate() {
        out.push_str(&format!(
            "\nsource {} ({}), {}\n",
            s.name,
            s.kind,
            match s.status {
                SourceStatus::Ok => "ok",
                SourceStatus::Failed => "FAILED",
            }
        ));
        if let Some(o) = &s.origin {
            out.push_str(&format!("  from      {o}\n"));
        }
        out.push_str(&format!(
            "  files     {}\n  read      {}\n  stored    {}\n  took      {:.1} s\n",
            s.files,
            human_bytes(s.bytes_read),
            human_bytes(s.bytes_stored),
            s.duration_ms as f64 / 1000.0
        ));
        if let Some(a) = &s.archive {
            out.push_str(&format!("  archive   {} sha256:{}\n", a.object, a.sha256));
        }
        if let Some(e) = &s.error {
            out.push_str(&format!("  error     {e}\n"));
        }
        for v in &s.vanished {
            out.push_str(&format!(
                "  vanished  {v} (deleted during the snapshot, not stored)\n"
            ));
        }
        for (k, v) in &s.details {
            out.push_str(&format!("  {k:<9} {v}\n"));
        }
        if files {
            for e in &listings[i] {
                let t = chrono::DateTime::from_timestamp(e.mtime, e.mtime_nsec)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                    .unwrap_or_default();
                let kind = match e.kind {
                    coffer::manifest::EntryKind::File => "-",
                    coffer::manifest::EntryKind::Dir => "d",
                    coffer::manifest::EntryKind::Symlink => "l",
                    coffer::manifest::EntryKind::Hardlink => "h",
                };
                let mut line = format!(
                    "  {kind} {:04o} {:>12} {} {} {}",
                    e.mode,
                    e.size,
                    t,
                    e.sha256.as_deref().unwrap_or("-"),
                    e.path
                );
                if let Some(tg) = &e.target {
                    line.push_str(&format!(" -> {tg}"));
                }
                if let Some(err) = &e.error {
                    line.push_str(&format!("  [{err}]"));
                }
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    print!("{out}");
    Ok(Outcome::Ok)
}
