//! `coffer snapshots`: list the complete snapshots.

use coffer::manifest;
use coffer::{Error, Outcome};
use serde_json::json;

use crate::cli::{Global, SnapshotsArgs};
use crate::output::{human_bytes, print_json, println_out, rfc3339, status_word};
use crate::settings::{load_settings, open_repo};

pub async fn run(g: &Global, a: SnapshotsArgs) -> Result<Outcome, Error> {
    let SnapshotsArgs {
        tag,
        source,
        latest,
    } = a;
    let s = load_settings(g)?;
    let r = open_repo(g, &s).await?;
    let (all, damaged) = r.manifests().await.map_err(Error::Repo)?;
    let list = manifest::filter(&all, tag.as_deref(), source.as_deref(), latest);
    if g.json {
        let mut v: Vec<_> = list
            .iter()
            .map(|m| {
                json!({"id": m.id, "time": rfc3339(&m.time), "host": m.host, "tags": m.tags,
                "labels": m.labels, "status": m.status,
                "sources": m.sources.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
                "bytes_stored": m.bytes_stored()})
            })
            .collect();
        // Unreadable ones last: any of them may be the newest.
        v.extend(damaged.iter().map(|d| match d.newer {
            Some(version) => json!({"id": d.id, "object": d.object,
                "error": d.reason, "newer_version": version}),
            None => json!({"id": d.id, "object": d.object,
                "error": d.reason, "damaged": true}),
        }));
        print_json(&serde_json::Value::Array(v));
    } else if list.is_empty() {
        eprintln!(
            "no {}snapshots",
            if damaged.is_empty() { "" } else { "readable " }
        );
    } else {
        println_out(&format!(
            "{:<16}  {:<20}  {:<16}  {:<7}  {:<20}  {:>10}  {}",
            "ID", "TIME (UTC)", "HOST", "STATUS", "TAGS", "SIZE", "SOURCES"
        ));
        for m in &list {
            println_out(&format!(
                "{:<16}  {:<20}  {:<16}  {:<7}  {:<20}  {:>10}  {}",
                m.id,
                m.time.format("%Y-%m-%d %H:%M:%S"),
                m.host,
                status_word(m.status),
                m.tags.join(","),
                human_bytes(m.bytes_stored()),
                m.sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
    }
    for d in &damaged {
        match d.newer {
            Some(_) => eprintln!("error: {}; it is not listed above", d.reason),
            None => eprintln!(
                "error: snapshot {}: manifest {} is damaged ({}); it is not listed above and cannot be restored; \
                 `restore latest` and `prune` refuse to run until it is repaired: \
                 run `coffer verify --all`, then put back a good copy of {} (from a copy of the repository) or delete it",
                d.id, d.object, d.reason, d.object
            ),
        }
    }
    Ok(coffer::repo::listing_outcome(&damaged))
}
