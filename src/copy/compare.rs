//! Whether two objects of equal size differ: stored hash, content hash or
//! size and mtime.

use super::*;

/// Stored metadata of a cloud object: (sha256, mtime).
pub(super) async fn head_meta(
    loc: &Location,
    key: &str,
) -> Result<(Option<String>, Option<DateTime<Utc>>), ObjectError> {
    let Kind::Remote { store, .. } = &loc.kind else {
        return Ok((None, None));
    };
    let r = store
        .get_opts(
            &loc.obj_path(key),
            GetOptions {
                head: true,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| os_fail(&format!("stat {key} in {}", loc.url), e))?;
    Ok(stored_meta(&r.attributes))
}

pub(super) fn stored_meta(a: &Attributes) -> (Option<String>, Option<DateTime<Utc>>) {
    let sha = a
        .get(&Attribute::Metadata(META_SHA.into()))
        .map(|v| v.as_ref().to_string())
        .filter(|s| s.len() == 64);
    let mtime = a
        .get(&Attribute::Metadata(META_MTIME.into()))
        .and_then(|v| DateTime::parse_from_rfc3339(v.as_ref()).ok())
        .map(|t| t.with_timezone(&Utc));
    (sha, mtime)
}

pub(super) fn close_times(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    (a - b).num_microseconds().is_some_and(|d| d.abs() < 1000)
}

/// How two equal-size objects were compared (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum How {
    Content,
    StoredHash,
    SizeMtime,
}

impl std::fmt::Display for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            How::Content => "by content",
            How::StoredHash => "by stored hash",
            How::SizeMtime => "by size+mtime",
        })
    }
}

/// The result of comparing two equal-size objects: `why` says what differs.
pub(super) struct Verdict {
    pub(super) same: bool,
    pub(super) how: How,
    pub(super) why: String,
}

/// Memory one hashed side holds, in MiB: the part being hashed and what the
/// stream has buffered beyond it.
pub(super) const HASH_COST_MIB: u32 = 2;

/// Equal-size objects: unchanged? (See the module doc for the rules.)
pub(super) async fn compare(ctx: &Ctx, src: &Entry, dst: &Entry) -> Result<Verdict, ObjectError> {
    let (s, d) = futures::join!(head_meta(&ctx.src, &src.key), head_meta(&ctx.dst, &dst.key));
    let ((s_sha, _), (d_sha, d_mtime)) = (s?, d?);
    // The mtime that coffer set at DST (a local file's own, or the `mtime`
    // metadata), against SRC's: what a plain copy goes by.
    let dst_mtime = if ctx.dst.is_local() {
        Some(dst.mtime)
    } else {
        d_mtime
    };
    let mtime_same = dst_mtime.map(|m| close_times(src.mtime, m));
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if let (Some(a), Some(b)) = (&s_sha, &d_sha) {
        // A plain copy compares these too.
        return Ok(hash_verdict(ctx, a, b, How::StoredHash, false));
    }
    if !ctx.opts.check
        && !ctx.opts.checksum
        && let (Some(same), Some(m)) = (mtime_same, dst_mtime)
    {
        return Ok(Verdict {
            same,
            how: How::SizeMtime,
            why: format!("mtime differs (SRC {}, DST {})", stamp(src.mtime), stamp(m)),
        });
    }
    // Whatever is not stored is read and hashed; both sides' memory is taken
    // at once, so that no compare holds part of it while waiting for more.
    let cost = HASH_COST_MIB * (u32::from(s_sha.is_none()) + u32::from(d_sha.is_none()));
    let _budget = ctx
        .budget
        .acquire_many(cost)
        .await
        .expect("the budget is never closed");
    let how = if d_sha.is_some() {
        How::StoredHash
    } else {
        How::Content
    };
    let (a, b) = futures::join!(
        async {
            match s_sha {
                Some(h) => Ok(h),
                None => hash_object(&ctx.src, &src.key).await,
            }
        },
        async {
            match d_sha {
                Some(h) => Ok(h),
                None => hash_object(&ctx.dst, &dst.key).await,
            }
        }
    );
    Ok(hash_verdict(ctx, &a?, &b?, how, mtime_same == Some(true)))
}

/// `copy_skips`: a plain copy would find size and mtime equal and skip it.
pub(super) fn hash_verdict(ctx: &Ctx, a: &str, b: &str, how: How, copy_skips: bool) -> Verdict {
    let mut why = format!(
        "content differs ({how}: SHA-256 at SRC {}..., at DST {}...)",
        &a[..12.min(a.len())],
        &b[..12.min(b.len())]
    );
    // A check that finds what a plain copy would skip says how to repair it.
    if ctx.opts.check && !ctx.opts.checksum && copy_skips {
        why.push_str(
            "; size and mtime are equal, so a plain copy skips it: repair with `coffer copy --checksum`",
        );
    }
    Verdict {
        same: a == b,
        how,
        why,
    }
}

/// SHA-256 of an object's bytes, read in parts of [`LOCAL_BLOCK`] (the
/// caller holds [`HASH_COST_MIB`] of the budget for it).
pub(super) async fn hash_object(loc: &Location, key: &str) -> Result<String, ObjectError> {
    let what = |f: ObjectError| ObjectError::Hashing {
        key: key.to_string(),
        side: loc.side,
        url: loc.url.clone(),
        source: Box::new(f),
    };
    let mut r = open_reader(loc, key).await.map_err(what)?;
    let mut h = Sha256::new();
    while let Some(part) = r.read_part(LOCAL_BLOCK).await.map_err(what)? {
        h = hash_part(h, part).await;
    }
    Ok(hex::encode(h.finalize()))
}
