//! What a directory task finds of psync's own on the target: stale
//! temporaries of earlier runs, unused part files, and names like psync's
//! that another user owns.

use super::{Engine, euid, temp_run_id};
use crate::entry::{Entry, Kind, Name, RelPath};
use crate::error::Op;
use crate::fs::Dir;
use crate::plan::Action;
use std::io;

impl Engine {
    /// Removes temporaries left by earlier (interrupted) runs and hides this
    /// run's own from the planner. Part files of large files are set aside
    /// in `parts`: whether one is resumed depends on the plan.
    pub(super) fn drop_temporaries(
        &self,
        dir: &Dir,
        rel: &RelPath,
        mut entries: Vec<Entry>,
        parts: &mut Vec<Name>,
    ) -> (Vec<Entry>, bool) {
        // Whether an entry was removed: the directory's mtime moved, and
        // its finish must set it again.
        let mut removed = false;
        if self.verify_only {
            // `psync verify` makes none of its own: each is an entry the
            // source lacks (a sync removes it, or leaves another user's
            // and says so), hidden from the plan below all the same.
            let ours = |e: &&Entry| {
                temp_run_id(&e.name).is_some()
                    || crate::engine::bigfile::part_name_key(&e.name).is_some()
            };
            for e in entries.iter().filter(ours) {
                self.itemize(rel.join(&e.name), None, e);
            }
        }
        entries.retain(|e| match temp_run_id(&e.name) {
            None if crate::engine::bigfile::part_name_key(&e.name).is_some() => {
                parts.push(e.name.clone());
                false
            }
            None => true,
            // This run's own (another engine's temporary, or the link area).
            Some(id) if id == self.run_id && e.uid == euid() => false,
            // This run's id on an entry of another user's: planted (the id
            // shows in the run's temporary names), never trusted.
            Some(id) if id == self.run_id => {
                removed = true;
                self.remove_foreign(dir, rel, e, "carries this run's id but is not psync's");
                false
            }
            Some(_) if e.uid != euid() => {
                removed = true;
                self.remove_foreign(dir, rel, e, "a temporary of another psync run");
                false
            }
            Some(_) => {
                removed = true;
                self.remove_stale(dir, rel, &e.name);
                false
            }
        });
        (entries, removed)
    }

    /// Removes the part files (and journals) no planned copy will resume:
    /// those of changed or removed sources, and those of files that are
    /// already up to date (a kill between rename and journal removal).
    /// True when it removed any (the directory's mtime moved).
    pub(super) fn drop_unused_parts(
        &self,
        dir: Option<&Dir>,
        rel: &RelPath,
        parts: &[Name],
        actions: &[Action],
    ) -> bool {
        let Some(dir) = dir else { return false };
        let mut removed = false;
        let wanted: Vec<u64> = actions
            .iter()
            .filter_map(|a| match a {
                // A compared file may turn out to differ: its copy resumes.
                Action::Copy { src, .. } | Action::Compare { src, .. } if self.is_big(src) => {
                    Some(self.part_key(src))
                }
                _ => None,
            })
            .collect();
        for name in parts {
            if crate::engine::bigfile::part_name_key(name).is_some_and(|k| !wanted.contains(&k)) {
                removed = true;
                self.remove_stale(dir, rel, name);
            }
        }
        removed
    }

    /// Removes an entry named like psync's temporaries that another user
    /// owns, and says so (a user may plant such names to steer the run;
    /// an interrupted run's temporary may also have been given its
    /// source's owner already).
    pub(crate) fn remove_foreign(&self, dir: &Dir, rel: &RelPath, e: &Entry, what: &str) {
        if self.dry_run {
            return;
        }
        let path = rel.join(&e.name);
        if e.kind == Kind::Dir {
            // Never removed: a user who can rename in this directory may
            // have given someone else's directory this name.
            let why = format!(
                "{what}, a directory owned by uid {} and not by psync's user: left alone, never used",
                e.uid
            );
            return self.warn(&path, true, Op::Remove, &why);
        }
        match dir.unlink(e.name.as_bytes()) {
            Ok(()) => {
                self.count(|c| c.stale_removed += 1);
                let why = format!(
                    "{what}, owned by uid {} and not by psync's user: removed, never used",
                    e.uid
                );
                self.warn(&path, true, Op::Remove, &why);
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => self.fail(&path, true, Op::Remove, err),
        }
    }

    pub(crate) fn remove_stale(&self, dir: &Dir, rel: &RelPath, name: &Name) {
        if self.dry_run {
            return;
        }
        // The only directories psync names like a temporary are link
        // areas, at the root, of its own user and mode 0700: any other
        // directory of such a name (one a user renamed there) is left.
        if let Ok(st) = dir.stat(name.as_bytes())
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
        {
            // Checked and emptied through a handle, then rmdir by name
            // (which takes nothing with it if the name was swapped).
            let area = rel.is_root() && name.as_bytes().ends_with(b".links");
            let emptied = dir.open_dir(name.as_bytes()).ok().filter(|d| {
                area && d.fstat().is_ok_and(|st| {
                    crate::engine::links::not_private(&st, libc::S_IFDIR, 0o700).is_none()
                })
            });
            let Some(d) = emptied else {
                let why = "a directory named like psync's temporaries that is not a link area of psync's: left alone";
                return self.warn(&rel.join(name), true, Op::Remove, why);
            };
            let cleared = d
                .names()
                .and_then(|names| {
                    names
                        .iter()
                        .try_for_each(|n| d.remove_all(n.as_bytes()).map(drop))
                })
                .and_then(|()| dir.rmdir(name.as_bytes()));
            return match cleared {
                Ok(()) => self.count(|c| c.stale_removed += 1),
                Err(err) => self.fail(&rel.join(name), true, Op::Remove, err),
            };
        }
        // Another user's file under a part's or journal's name (a shared
        // directory) is removed too, and said so, as when a copy meets one.
        // Never recursively: a directory swapped in since stays.
        let planted = crate::engine::bigfile::planted(dir, name);
        match dir.unlink_file(name.as_bytes()) {
            Ok(_) => {
                self.count(|c| c.stale_removed += 1);
                if let Some(what) = planted {
                    self.warn(
                        &rel.join(name),
                        true,
                        Op::Remove,
                        &format!("{what}: removed"),
                    );
                }
            }
            // Gone meanwhile: a part renamed into place, or a journal
            // removed, by the finish of a copy this listing caught in
            // flight (an earlier delivery of this directory's task).
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => self.fail(&rel.join(name), true, Op::Remove, err),
        }
    }
}
