//! Putting staged sources in place together: the swaps done so far, and
//! how they are undone when a later source fails.

use super::*;

/// The commit phase's record: what is already in place and cannot be
/// undone, for the message on-call reads when a later step fails.
pub(super) struct Commits {
    pub(super) snapshot: String,
    /// Every selected source still to commit, in commit order unknown here:
    /// the ones not in `done` when a step fails.
    pub(super) selected: Vec<String>,
    pub(super) done: Vec<(String, String)>,
    pub(super) target: Option<PathBuf>,
    pub(super) to_database: Option<String>,
}

impl Commits {
    pub(super) fn new(m: &Manifest, opts: &RestoreOptions) -> Commits {
        Commits {
            snapshot: m.id.clone(),
            selected: m
                .sources
                .iter()
                .filter(|s| s.status != SourceStatus::Failed)
                .filter(|s| opts.only.is_empty() || opts.only.contains(&s.name))
                .map(|s| s.name.clone())
                .collect(),
            done: Vec::new(),
            target: opts.target.clone(),
            to_database: opts.to_database.clone(),
        }
    }

    /// A source committed that cannot be undone.
    pub(super) fn committed(&mut self, d: &RestoredSource) {
        self.done.push((d.name.clone(), d.destination.clone()));
    }

    /// Undoes the swaps, then says what stayed committed, if anything.
    pub(super) async fn fail(
        &self,
        failed: &str,
        error: RestoreError,
        swapped: Vec<Swapped>,
    ) -> RestoreError {
        let undo = blocking(move || {
            let mut left = Vec::new();
            for sw in swapped.into_iter().rev() {
                if let Err(e) = sw.undo() {
                    left.push(e);
                }
            }
            Ok(left)
        })
        .await
        .unwrap_or_default();
        if self.done.is_empty() && undo.is_empty() {
            return error;
        }
        let mut done: Vec<String> = self
            .done
            .iter()
            .map(|(n, d)| format!("{n} (into {d})"))
            .collect();
        done.extend(undo.iter().map(|u| u.to_string()));
        let left: Vec<&str> = self
            .selected
            .iter()
            .map(String::as_str)
            .filter(|n| !self.done.iter().any(|(d, _)| d == n))
            .collect();
        let flags = |names: &[&str]| {
            let mut f: String = names.iter().map(|n| format!(" --only {n}")).collect();
            if let Some(t) = &self.target {
                f.push_str(&format!(" --target {}", t.display()));
            }
            if let Some(d) = &self.to_database {
                f.push_str(&format!(" --to-database {d}"));
            }
            f
        };
        let done_names: Vec<&str> = self.done.iter().map(|(n, _)| n.as_str()).collect();
        RestoreError::PartlyRestored {
            snapshot: self.snapshot.clone(),
            failed: failed.to_string(),
            done: done.join(", "),
            left: left.join(", "),
            finish: format!("coffer restore {}{} --force", self.snapshot, flags(&left)),
            undo: format!("coffer restore OLDER{} --force", flags(&done_names)),
            error: Box::new(error),
        }
    }
}

/// A directory swapped into place whose previous content is kept, under the
/// staging directory's name in the same parent, until the whole restore has
/// committed, so that a later failure can put it back. Works by the parent's
/// handle: nothing is looked up by path again.
pub(super) struct Swapped {
    pub(super) parent: Dir,
    pub(super) dest_name: OsString,
    pub(super) old_name: String,
    /// Whether the destination existed before (an exchange) or not (a rename).
    pub(super) existed: bool,
    /// Identities of the previous content (now at `old_name`) and of the
    /// restored copy (now at `dest_name`): nothing is removed by name
    /// unless the name still leads to it.
    pub(super) old_id: Option<(u64, u64)>,
    pub(super) new_id: (u64, u64),
}

/// Why a swap could not be undone, for the on-call message.
#[derive(Debug)]
pub(super) struct UndoFailed {
    pub(super) dest: PathBuf,
    pub(super) old: PathBuf,
    pub(super) error: io::Error,
}

impl std::fmt::Display for UndoFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (restored; putting back its previous content failed: {}; that content is in {})",
            self.dest.display(),
            self.error,
            self.old.display()
        )
    }
}

impl Swapped {
    /// Puts the previous content back (or removes what the restore created).
    pub(super) fn undo(self) -> Result<(), UndoFailed> {
        let fail = |error: io::Error| UndoFailed {
            dest: self.parent.join(&self.dest_name),
            old: self.parent.join(&self.old_name),
            error,
        };
        if self.existed {
            self.parent
                .rename(
                    &self.old_name,
                    &self.parent,
                    &self.dest_name,
                    RenameFlags::EXCHANGE,
                )
                .map_err(fail)?;
        } else {
            self.parent
                .rename(
                    &self.dest_name,
                    &self.parent,
                    &self.old_name,
                    RenameFlags::NOREPLACE,
                )
                .map_err(fail)?;
        }
        // `old_name` now holds the restored copy.
        remove_if(&self.parent, &self.old_name, Some(self.new_id));
        Ok(())
    }

    /// The restore committed: the previous content goes.
    pub(super) fn forget_old(self) {
        if self.existed {
            remove_if(&self.parent, &self.old_name, self.old_id);
        }
    }
}

/// Removes `name` from `parent` only if it is still the file `id` names
/// (another process may have put something else under that name).
pub(super) fn remove_if(parent: &Dir, name: &str, id: Option<(u64, u64)>) {
    let Some(id) = id else { return };
    match parent.stat_at(name) {
        Ok(st) if dirfd::identity(&st) == id => {
            let _ = parent.remove_all(name);
        }
        Ok(_) => tracing::warn!(
            "{} is no longer what this restore made there; left as it is",
            parent.join(name).display()
        ),
        Err(_) => {}
    }
}
