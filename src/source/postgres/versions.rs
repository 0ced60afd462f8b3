//! The PostgreSQL source: versions.

use super::*;

/// A comparable major version: 906 for 9.6, 1500 for 15.
pub(super) fn version_key(text: &str) -> Option<u32> {
    let mut parts = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().ok());
    let major = parts.next()??;
    if major >= 10 {
        Some(major * 100)
    } else {
        Some(major * 100 + parts.next().flatten().unwrap_or(0))
    }
}

pub(super) fn server_version_key(num: u32) -> u32 {
    if num >= 100_000 {
        num / 10_000 * 100
    } else {
        num / 100
    }
}

pub(super) fn major_text(key: u32) -> String {
    if key >= 1000 {
        (key / 100).to_string()
    } else {
        format!("{}.{}", key / 100, key % 100)
    }
}

/// `prog --version`: the version text ("15.20 (Debian ...)") and its key.
pub(super) fn tool_version(prog: &str) -> Result<(String, u32), SourceError> {
    let out = ToolSpec::new(
        format!("{prog} --version"),
        vec![prog.into(), "--version".into()],
    )
    .output()?;
    let line = out.lines().next().unwrap_or("").trim();
    let text = match line.find(|c: char| c.is_ascii_digit()) {
        Some(i) => line[i..].to_string(),
        None => String::new(),
    };
    let key = version_key(&text).ok_or_else(|| {
        SourceError::Failed(format!(
            "cannot tell the version of {prog} from {line:?} (`{prog} --version`)"
        ))
    })?;
    Ok((text, key))
}

/// `pg_restore` must be at least as new as the `pg_dump` that made the dump.
pub(super) fn check_pg_restore(details: &Details) -> Result<(), SourceError> {
    let (text, key) = tool_version("pg_restore")?;
    if let Some(dump) = details.get("pg_dump_version").and_then(|v| v.as_str())
        && let Some(dump_key) = version_key(dump)
        && key < dump_key
    {
        return Err(SourceError::Failed(format!(
            "pg_restore {text} is older than the pg_dump ({dump}) that made this dump and cannot read it: \
             install the PostgreSQL {} client tools (or newer) and put them first on PATH",
            major_text(dump_key)
        )));
    }
    Ok(())
}
