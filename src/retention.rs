//! Retention rules: which snapshots a policy keeps, and why. Pure: no I/O,
//! no clock; `prune` applies the decisions to a repository.
//!
//! The semantics are restic's `forget` (docs/RETENTION.md has examples):
//! snapshots are walked newest first; `keep-last N` keeps the N newest;
//! `keep-hourly/daily/weekly/monthly/yearly N` keep the newest snapshot of
//! each of the N newest hours / days / ISO weeks / months / years that have
//! one; `keep-within D` keeps every snapshot taken at most D before the
//! *newest snapshot* (not before now, so a repository whose backups stopped
//! does not lose its last ones to the clock); `keep-tag T` keeps every
//! snapshot tagged T. A snapshot is kept when any rule keeps it. Calendar
//! buckets are in UTC, like every time coffer prints.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use crate::config::RetentionConfig;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "no retention rule given: set [retention] in the config or pass --keep-last, --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, --keep-within or --keep-tag; refusing to remove every snapshot"
    )]
    NoRule,
    #[error("{what}: {value:?} is not a duration ({reason}); write e.g. \"30d\" or \"12h\"")]
    BadDuration {
        what: String,
        value: String,
        reason: String,
    },
}

/// A calendar slot: (year, month or ISO week, day, hour), zeros where the
/// period is coarser.
pub type Bucket = (i32, u32, u32, u32);

/// A calendar bucket rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket a time falls in: equal for two times of the same UTC hour,
    /// day, ISO week, month or year.
    pub fn bucket(self, t: &DateTime<Utc>) -> Bucket {
        match self {
            Period::Hourly => (t.year(), t.month(), t.day(), t.hour()),
            Period::Daily => (t.year(), t.month(), t.day(), 0),
            Period::Weekly => {
                let w = t.iso_week();
                (w.year(), w.week(), 0, 0)
            }
            Period::Monthly => (t.year(), t.month(), 0, 0),
            Period::Yearly => (t.year(), 0, 0, 0),
        }
    }
}

/// A retention policy. A count of 0 is no rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    pub last: u32,
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
    /// `keep-within`, and the text it was written as (for reasons).
    pub within: Option<(Duration, String)>,
    pub tags: Vec<String>,
}

/// Parses a `keep-within` duration (humantime: "30d", "12h", "1w 2d").
pub fn parse_duration(what: &str, s: &str) -> Result<Duration, RetentionError> {
    humantime::parse_duration(s).map_err(|e| RetentionError::BadDuration {
        what: what.to_string(),
        value: s.to_string(),
        reason: e.to_string(),
    })
}

impl Policy {
    /// The policy of a `[retention]` table.
    pub fn from_config(c: &RetentionConfig) -> Result<Policy, RetentionError> {
        Ok(Policy {
            last: c.keep_last.unwrap_or(0),
            hourly: c.keep_hourly.unwrap_or(0),
            daily: c.keep_daily.unwrap_or(0),
            weekly: c.keep_weekly.unwrap_or(0),
            monthly: c.keep_monthly.unwrap_or(0),
            yearly: c.keep_yearly.unwrap_or(0),
            within: match &c.keep_within {
                Some(w) => Some((
                    parse_duration("[retention].keep_within", w)?,
                    w.trim().to_string(),
                )),
                None => None,
            },
            tags: c.keep_tags.clone().unwrap_or_default(),
        })
    }

    pub fn count(&self, p: Period) -> u32 {
        match p {
            Period::Hourly => self.hourly,
            Period::Daily => self.daily,
            Period::Weekly => self.weekly,
            Period::Monthly => self.monthly,
            Period::Yearly => self.yearly,
        }
    }

    pub fn set_count(&mut self, p: Period, n: u32) {
        match p {
            Period::Hourly => self.hourly = n,
            Period::Daily => self.daily = n,
            Period::Weekly => self.weekly = n,
            Period::Monthly => self.monthly = n,
            Period::Yearly => self.yearly = n,
        }
    }

    /// True when no rule is set: such a policy would remove everything.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && Period::ALL.iter().all(|p| self.count(*p) == 0)
            && self.within.is_none()
            && self.tags.is_empty()
    }

    /// The rules, as flags, for reports ("--keep-last 3 --keep-daily 7").
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if self.last > 0 {
            v.push(format!("--keep-last {}", self.last));
        }
        for p in Period::ALL {
            if self.count(p) > 0 {
                v.push(format!("--keep-{} {}", p.name(), self.count(p)));
            }
        }
        if let Some((_, w)) = &self.within {
            v.push(format!("--keep-within {w}"));
        }
        for t in &self.tags {
            v.push(format!("--keep-tag {t}"));
        }
        v.join(" ")
    }
}

/// Why a snapshot is kept.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    Last,
    Period(Period),
    Within(String),
    Tag(String),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last => write!(f, "keep-last"),
            Reason::Period(p) => write!(f, "keep-{}", p.name()),
            Reason::Within(w) => write!(f, "keep-within {w}"),
            Reason::Tag(t) => write!(f, "keep-tag {t}"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// What the rules need to know of a snapshot.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
    pub tags: Vec<String>,
}

/// The verdict on one snapshot: kept when `reasons` is not empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Applies `policy` to `snapshots` (any order). Returns one decision per
/// snapshot, oldest first (ties in time ordered by id).
pub fn apply(policy: &Policy, snapshots: &[Candidate]) -> Vec<Decision> {
    let mut order: Vec<&Candidate> = snapshots.iter().collect();
    // Newest first; the id breaks ties so the result does not depend on the
    // order the store listed them in.
    order.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let newest = order.first().map(|c| c.time);
    let mut last_left = policy.last;
    // Per period: how many more buckets it may keep, and the last bucket kept.
    let mut buckets: Vec<(Period, u32, Option<Bucket>)> = Period::ALL
        .iter()
        .map(|p| (*p, policy.count(*p), None))
        .collect();
    let mut out: Vec<Decision> = Vec::with_capacity(order.len());
    for c in order {
        let mut reasons = Vec::new();
        if last_left > 0 {
            last_left -= 1;
            reasons.push(Reason::Last);
        }
        for (period, left, last) in buckets.iter_mut() {
            if *left == 0 {
                continue;
            }
            let b = period.bucket(&c.time);
            // Walking newest first, the first snapshot met in a bucket is
            // that bucket's newest.
            if *last != Some(b) {
                *last = Some(b);
                *left -= 1;
                reasons.push(Reason::Period(*period));
            }
        }
        if let (Some((d, text)), Some(newest)) = (&policy.within, newest)
            && within(newest, c.time, *d)
        {
            reasons.push(Reason::Within(text.clone()));
        }
        for t in &policy.tags {
            if c.tags.iter().any(|x| x == t) && !reasons.contains(&Reason::Tag(t.clone())) {
                reasons.push(Reason::Tag(t.clone()));
            }
        }
        out.push(Decision {
            id: c.id.clone(),
            time: c.time,
            reasons,
        });
    }
    out.reverse();
    out
}

/// True when `t` is at most `d` before `newest`.
pub fn within(newest: DateTime<Utc>, t: DateTime<Utc>, d: Duration) -> bool {
    match chrono::Duration::from_std(d) {
        Ok(d) => match newest.checked_sub_signed(d) {
            Some(limit) => t >= limit,
            None => true,
        },
        // Longer than chrono can represent: everything is within it.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn cands(times: &[DateTime<Utc>]) -> Vec<Candidate> {
        times
            .iter()
            .enumerate()
            .map(|(i, t)| Candidate {
                id: format!("{i:016x}"),
                time: *t,
                tags: vec![],
            })
            .collect()
    }

    fn kept(ds: &[Decision]) -> Vec<DateTime<Utc>> {
        ds.iter().filter(|d| d.keep()).map(|d| d.time).collect()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_of_the_newest_days() {
        let snaps = cands(&[
            at(2026, 3, 1, 2, 0),
            at(2026, 3, 1, 14, 0),
            at(2026, 3, 2, 2, 0),
            // no snapshot on the 3rd: the rule looks further back, not at calendar days
            at(2026, 3, 4, 2, 0),
            at(2026, 3, 4, 3, 0),
        ]);
        let p = Policy {
            daily: 3,
            ..Default::default()
        };
        assert_eq!(
            kept(&apply(&p, &snaps)),
            vec![
                at(2026, 3, 1, 14, 0),
                at(2026, 3, 2, 2, 0),
                at(2026, 3, 4, 3, 0)
            ]
        );
    }

    #[test]
    fn weekly_uses_iso_weeks() {
        // 2026-01-01 is a Thursday: ISO week 2026-W01 runs Mon 2025-12-29 to Sun 2026-01-04.
        let snaps = cands(&[
            at(2025, 12, 28, 1, 0), // Sunday, 2025-W52
            at(2025, 12, 29, 1, 0), // Monday, 2026-W01
            at(2026, 1, 4, 1, 0),   // Sunday, 2026-W01
            at(2026, 1, 5, 1, 0),   // Monday, 2026-W02
        ]);
        let p = Policy {
            weekly: 2,
            ..Default::default()
        };
        assert_eq!(
            kept(&apply(&p, &snaps)),
            vec![at(2026, 1, 4, 1, 0), at(2026, 1, 5, 1, 0)]
        );
    }

    #[test]
    fn within_is_relative_to_the_newest_snapshot() {
        let snaps = cands(&[
            at(2020, 1, 1, 0, 0),
            at(2020, 1, 9, 0, 0),
            at(2020, 1, 10, 0, 0),
        ]);
        let p = Policy {
            within: Some((Duration::from_secs(86400), "1d".into())),
            ..Default::default()
        };
        let ds = apply(&p, &snaps);
        assert_eq!(kept(&ds), vec![at(2020, 1, 9, 0, 0), at(2020, 1, 10, 0, 0)]);
        assert_eq!(ds[2].reasons, vec![Reason::Within("1d".into())]);
    }

    #[test]
    fn reasons_read_like_the_flags() {
        let mut snaps = cands(&[at(2026, 5, 1, 0, 0)]);
        snaps[0].tags = vec!["pre-migration".into()];
        let p = Policy {
            last: 1,
            daily: 1,
            within: Some((Duration::from_secs(3600), "1h".into())),
            tags: vec!["pre-migration".into()],
            ..Default::default()
        };
        let r: Vec<String> = apply(&p, &snaps)[0]
            .reasons
            .iter()
            .map(|r| r.to_string())
            .collect();
        assert_eq!(
            r,
            [
                "keep-last",
                "keep-daily",
                "keep-within 1h",
                "keep-tag pre-migration"
            ]
        );
    }

    #[test]
    fn empty_policy_is_refused_and_config_policies_parse() {
        assert!(Policy::default().is_empty());
        let c = RetentionConfig {
            keep_daily: Some(7),
            keep_within: Some("30d".into()),
            ..Default::default()
        };
        let p = Policy::from_config(&c).unwrap();
        assert!(!p.is_empty());
        assert_eq!(p.within.unwrap().0, Duration::from_secs(30 * 86400));
        let zero = RetentionConfig {
            keep_last: Some(0),
            ..Default::default()
        };
        assert!(Policy::from_config(&zero).unwrap().is_empty());
    }

    // ------------------------------------------------------- properties

    /// The newest-first order the rules walk in.
    fn newest_first(snaps: &[Candidate]) -> Vec<&Candidate> {
        let mut v: Vec<&Candidate> = snaps.iter().collect();
        v.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
        v
    }

    /// An independent statement of each rule: the set of ids it selects,
    /// computed by grouping rather than by the streaming walk of `apply`.
    fn oracle(policy: &Policy, snaps: &[Candidate]) -> BTreeMap<Reason, BTreeSet<String>> {
        let order = newest_first(snaps);
        let mut out: BTreeMap<Reason, BTreeSet<String>> = BTreeMap::new();
        if policy.last > 0 {
            out.insert(
                Reason::Last,
                order
                    .iter()
                    .take(policy.last as usize)
                    .map(|c| c.id.clone())
                    .collect(),
            );
        }
        for p in Period::ALL {
            let n = policy.count(p) as usize;
            if n == 0 {
                continue;
            }
            // Newest member of every bucket, then the n newest buckets.
            let mut newest_of: BTreeMap<Bucket, &Candidate> = BTreeMap::new();
            for c in &order {
                newest_of.entry(p.bucket(&c.time)).or_insert(c);
            }
            let ids = newest_of
                .iter()
                .rev()
                .take(n)
                .map(|(_, c)| c.id.clone())
                .collect();
            out.insert(Reason::Period(p), ids);
        }
        if let Some((d, text)) = &policy.within
            && let Some(newest) = order.first()
        {
            let limit = newest.time - chrono::Duration::from_std(*d).unwrap();
            out.insert(
                Reason::Within(text.clone()),
                snaps
                    .iter()
                    .filter(|c| c.time >= limit)
                    .map(|c| c.id.clone())
                    .collect(),
            );
        }
        for t in &policy.tags {
            out.insert(
                Reason::Tag(t.clone()),
                snaps
                    .iter()
                    .filter(|c| c.tags.contains(t))
                    .map(|c| c.id.clone())
                    .collect(),
            );
        }
        out
    }

    const TAGS: [&str; 3] = ["pre-migration", "weekly-manual", "x"];

    fn snapshots() -> impl Strategy<Value = Vec<Candidate>> {
        // Times from 2020 to ~2030 but clustered (a small offset range is
        // mixed in) so that hours, days and weeks hold several snapshots.
        let time = prop_oneof![
            (1_577_836_800i64..1_893_456_000i64),
            (1_700_000_000i64..1_700_000_000 + 40 * 86400),
            (1_700_000_000i64..1_700_000_000 + 6 * 3600),
        ];
        let tags = proptest::collection::vec(0usize..TAGS.len(), 0..2);
        proptest::collection::vec((time, tags), 0..60).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (secs, tags))| Candidate {
                    id: format!("{i:016x}"),
                    time: DateTime::from_timestamp(secs, 0).unwrap(),
                    tags: tags.into_iter().map(|t| TAGS[t].to_string()).collect(),
                })
                .collect()
        })
    }

    fn policies() -> impl Strategy<Value = Policy> {
        let n = || prop_oneof![Just(0u32), 1u32..4, 1u32..40];
        (
            (n(), n(), n(), n(), n(), n()),
            proptest::option::of(prop_oneof![Just(0u64), 1u64..7200, 1u64..(400 * 86400)]),
            proptest::collection::vec(0usize..TAGS.len(), 0..2),
        )
            .prop_map(
                |((last, hourly, daily, weekly, monthly, yearly), within, tags)| Policy {
                    last,
                    hourly,
                    daily,
                    weekly,
                    monthly,
                    yearly,
                    within: within.map(|s| (Duration::from_secs(s), format!("{s}s"))),
                    tags: {
                        let mut t: Vec<String> =
                            tags.into_iter().map(|t| TAGS[t].to_string()).collect();
                        t.dedup();
                        t
                    },
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Each kept snapshot is kept by rules that select it, and each rule
        /// keeps everything it selects: the reasons are exactly the oracle's.
        #[test]
        fn reasons_are_exactly_the_rules_that_select(policy in policies(), snaps in snapshots()) {
            let ds = apply(&policy, &snaps);
            prop_assert_eq!(ds.len(), snaps.len());
            let sel = oracle(&policy, &snaps);
            for d in &ds {
                let mut want: Vec<&Reason> = sel
                    .iter()
                    .filter(|(_, ids)| ids.contains(&d.id))
                    .map(|(r, _)| r)
                    .collect();
                let mut got: Vec<&Reason> = d.reasons.iter().collect();
                want.sort();
                got.sort();
                prop_assert_eq!(got, want, "snapshot {} at {}", &d.id, d.time);
            }
        }

        /// Every id appears once; the output is oldest first.
        #[test]
        fn one_decision_per_snapshot_oldest_first(policy in policies(), snaps in snapshots()) {
            let ds = apply(&policy, &snaps);
            let ids: BTreeSet<&String> = ds.iter().map(|d| &d.id).collect();
            prop_assert_eq!(ids.len(), snaps.len());
            prop_assert!(ds.windows(2).all(|w| w[0].time <= w[1].time));
        }

        /// keep-last N alone keeps exactly the min(N, count) newest.
        #[test]
        fn keep_last_keeps_exactly_the_newest(n in 1u32..80, snaps in snapshots()) {
            let p = Policy { last: n, ..Default::default() };
            let ds = apply(&p, &snaps);
            let k = ds.iter().filter(|d| d.keep()).count();
            prop_assert_eq!(k, (n as usize).min(snaps.len()));
            let want: BTreeSet<String> =
                newest_first(&snaps).iter().take(n as usize).map(|c| c.id.clone()).collect();
            let got: BTreeSet<String> =
                ds.iter().filter(|d| d.keep()).map(|d| d.id.clone()).collect();
            prop_assert_eq!(got, want);
        }

        /// A period rule of N keeps min(N, number of its buckets that have a
        /// snapshot) snapshots, at most one per bucket.
        #[test]
        fn period_rules_keep_one_per_bucket(policy in policies(), snaps in snapshots()) {
            let ds = apply(&policy, &snaps);
            for p in Period::ALL {
                let n = policy.count(p) as usize;
                let buckets: BTreeSet<_> = snaps.iter().map(|c| p.bucket(&c.time)).collect();
                let by_rule: Vec<&Decision> =
                    ds.iter().filter(|d| d.reasons.contains(&Reason::Period(p))).collect();
                prop_assert_eq!(by_rule.len(), n.min(buckets.len()));
                let kept_buckets: BTreeSet<_> = by_rule.iter().map(|d| p.bucket(&d.time)).collect();
                prop_assert_eq!(kept_buckets.len(), by_rule.len());
            }
        }

        /// The newest snapshot survives any count rule > 0; a tagged snapshot
        /// survives its keep-tag; keep-within keeps the newest.
        #[test]
        fn the_newest_and_the_tagged_survive(policy in policies(), snaps in snapshots()) {
            let ds = apply(&policy, &snaps);
            let any_count = policy.last > 0 || Period::ALL.iter().any(|p| policy.count(*p) > 0);
            if let Some(newest) = ds.last()
                && (any_count || policy.within.is_some())
            {
                prop_assert!(newest.keep(), "newest {} removed by {}", &newest.id, policy.describe());
            }
            for (d, c) in ds.iter().map(|d| (d, snaps.iter().find(|c| c.id == d.id).unwrap())) {
                if c.tags.iter().any(|t| policy.tags.contains(t)) {
                    prop_assert!(d.keep());
                }
            }
            if policy.is_empty() {
                prop_assert!(ds.iter().all(|d| !d.keep()));
            }
        }

        /// Adding a rule never removes a snapshot that was kept (rules only add).
        #[test]
        fn more_rules_keep_more(policy in policies(), snaps in snapshots(), extra in 1u32..5) {
            let before: BTreeSet<String> =
                apply(&policy, &snaps).into_iter().filter(|d| d.keep()).map(|d| d.id).collect();
            let mut bigger = policy.clone();
            bigger.daily += extra;
            bigger.last += extra;
            let after: BTreeSet<String> =
                apply(&bigger, &snaps).into_iter().filter(|d| d.keep()).map(|d| d.id).collect();
            prop_assert!(before.is_subset(&after));
        }

        /// The input order does not matter.
        #[test]
        fn order_independent(policy in policies(), snaps in snapshots()) {
            let mut rev = snaps.clone();
            rev.reverse();
            prop_assert_eq!(apply(&policy, &snaps), apply(&policy, &rev));
        }
    }
}
