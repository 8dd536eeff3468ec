//! What a run reports while it works: progress, itemized changes, warnings
//! and errors, on a channel any frontend consumes; and the counters behind
//! the progress bar and the summary.
//!
//! A task's events and counts reach them when the transport acknowledges
//! the task ([`crate::transport::TaskReport`]), once however often it was
//! delivered: the events of one task are in order, those of different
//! tasks in the order they complete (a directory's children may come
//! before it).

use crate::entry::{Kind, RelPath};
use crate::error::Op;
use crate::itemize::Change;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// One event of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Counters so far; sent a few times a second.
    Progress(Snapshot),
    /// An entry was created, updated or deleted (rsync `-i`).
    Itemize {
        /// Path relative to the target root.
        path: RelPath,
        /// What changed; `None` for a deletion.
        change: Option<Change>,
        /// The entry's type.
        kind: Kind,
        /// For symlinks, the link text; for a hard link, the path it was linked to.
        link: Option<RelPath>,
    },
    /// Something odd that did not fail the entry (it vanished, an attribute was dropped).
    Warning {
        /// Path relative to the run's roots.
        path: RelPath,
        /// What was being done.
        op: Op,
        /// The message.
        message: String,
    },
    /// An entry was left alone on purpose (`--min-age`, or by the
    /// copier: [`crate::Copier::skip`]).
    Skipped {
        /// Path relative to the run's roots.
        path: RelPath,
        /// Why.
        reason: String,
    },
    /// Something about the whole run, said once at its start (a pair of
    /// file systems that cannot keep everything: Lustre layouts dropped).
    Notice {
        /// The message.
        message: String,
    },
    /// An entry failed; the run goes on and its exit status will say so
    /// (unless the target file system is full or read-only: then this is
    /// the run's one error and it stops, see [`crate::Report::stopped`]).
    Error {
        /// Path relative to the run's roots.
        path: RelPath,
        /// What was being done.
        op: Op,
        /// Which tree the failing operation was on.
        side: Side,
        /// The OS error number, when the cause was one.
        errno: Option<i32>,
        /// The message: operation, full path (escaped) and cause.
        message: String,
    },
}

/// The tree an error is about: where the operation that failed was made.
/// Exhaustive: a run has these two trees and no other (ADR 013).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The source tree (reading).
    Source,
    /// The target tree (writing, or reading back).
    Target,
}

impl Side {
    /// `Target` when `on_target`, else `Source`.
    pub fn of(on_target: bool) -> Side {
        if on_target {
            Side::Target
        } else {
            Side::Source
        }
    }
}

impl Event {
    /// rsync's 11-character `%i` code of an itemize event (`*deleting  `
    /// for a deletion).
    pub fn itemize_code(&self) -> Option<String> {
        let Event::Itemize { change, .. } = self else {
            return None;
        };
        Some(change.map_or_else(|| crate::itemize::DELETING.to_string(), |c| c.code()))
    }

    /// rsync's `-i` line for an itemize event: `%i %n%L`.
    pub fn itemize_line(&self) -> Option<String> {
        let Event::Itemize {
            path,
            change,
            kind,
            link,
        } = self
        else {
            return None;
        };
        let code = change.map_or_else(|| crate::itemize::DELETING.to_string(), |c| c.code());
        let name = if path.is_root() {
            ".".to_string()
        } else {
            path.to_string()
        };
        let slash = if *kind == Kind::Dir { "/" } else { "" };
        let arrow = match (link, change) {
            (Some(l), Some(c)) if c.hardlink => format!(" => {l}"),
            (Some(l), Some(_)) => format!(" -> {l}"),
            _ => String::new(),
        };
        Some(format!("{code} {name}{slash}{arrow}"))
    }
}

impl Event {
    /// rsync's `-v` line for an itemize event: the name (`/` after a
    /// directory, ` -> text` after a symlink, ` => leader` after a hard
    /// link), or `deleting name` for a deletion.
    pub fn verbose_line(&self) -> Option<String> {
        let line = self.itemize_line()?;
        let name = &line[crate::itemize::DELETING.len() + 1..];
        Some(match self {
            Event::Itemize { change: None, .. } => format!("deleting {name}"),
            _ => name.to_string(),
        })
    }
}

macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident,)*) => {
        /// Live counters of a run: the counts of its tasks, added as the
        /// transport acknowledges each ([`crate::transport::TaskReport`]),
        /// read for progress and the report.
        #[derive(Debug, Default)]
        #[non_exhaustive]
        pub struct Stats {
            $($(#[$doc])* pub $field: AtomicU64,)*
        }

        /// A copy of the counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        #[non_exhaustive]
        pub struct Snapshot {
            $($(#[$doc])* pub $field: u64,)*
            /// Time since the run started, in milliseconds.
            pub elapsed_ms: u64,
        }

        /// What one task counted: the same counters as plain numbers, kept
        /// by the engine while the task runs and handed to the transport
        /// with its outcome, which has them added to the run's [`Stats`]
        /// once per task (a task delivered twice counts once).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Counts {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl Stats {
            /// Reads all counters.
            pub fn snapshot(&self, elapsed: Duration) -> Snapshot {
                Snapshot {
                    $($field: self.$field.load(Relaxed),)*
                    elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                }
            }

            /// Adds a task's counts to these.
            pub fn add(&self, counts: &Counts) {
                $(if counts.$field != 0 { self.$field.fetch_add(counts.$field, Relaxed); })*
            }
        }
    };
}

counters! {
    /// Source entries listed (the root not included).
    scanned,
    /// Source directories listed.
    dirs,
    /// Directory tasks spawned, as a sum of their ids' low 32 bits
    /// (the root's not counted). With [`Stats::dirs_run_ids`]: see
    /// [`Snapshot::walk_done`].
    dirs_spawned_ids,
    /// Directory tasks done (listed, or failed), as a sum of their ids'
    /// low 32 bits (the root's not counted).
    dirs_run_ids,
    /// Bytes of regular files found in the source.
    bytes_total,
    /// Entries that needed nothing.
    unchanged,
    /// Entries created on the target.
    created,
    /// Existing entries whose data or link was replaced.
    updated,
    /// Existing entries whose attributes only were updated.
    attrs_updated,
    /// Target entries deleted (a deleted directory counts its contents).
    deleted,
    /// Target entries `--delete` left because of `--max-delete`.
    deletes_skipped,
    /// Entries that failed.
    failed,
    /// Warnings reported.
    warnings,
    /// Entries whose processing is finished (any outcome).
    done,
    /// Bytes of file data planned for copying.
    bytes_to_copy,
    /// Bytes of file data copied.
    bytes_copied,
    /// Files copied with a reflink (clone).
    by_reflink,
    /// Files copied with copy_file_range.
    by_copy_range,
    /// Files copied with sendfile.
    by_sendfile,
    /// Files copied with read/write.
    by_read_write,
    /// Files copied with O_DIRECT writes (large files' chunks).
    by_direct,
    /// Files copied into a shared mapping of the target (large files'
    /// chunks on tmpfs).
    by_mapped,
    /// Stale temporaries of earlier runs removed.
    stale_removed,
    /// Files that changed while being copied (and were retried or left).
    changed_during_copy,
    /// Files (or chunks) whose written data was read back and matched.
    verified,
    /// Entries skipped because they changed too recently (`--min-age`).
    skipped_young,
    /// Entries the copier left alone on purpose (Lustre: files whose data
    /// is released to HSM), their targets untouched.
    skipped_by_copier,
    /// Large-file chunks copied.
    chunks,
    /// Large-file chunks found complete from an interrupted run and kept.
    chunks_resumed,
    /// Large-file chunks compared on both sides by `--checksum`.
    chunks_compared,
}

impl Snapshot {
    /// True once every source directory found has been listed (or
    /// failed): the totals (`scanned`, `bytes_total`) grow no more, nor
    /// does `bytes_to_copy` but for `--checksum`'s large files (planned
    /// for copying once their comparison finds a difference).
    ///
    /// Sums of ids, not counts: a directory's children may be
    /// acknowledged before it, and counts of directories spawned and
    /// done can then come out even while some are not done; sums of
    /// ids cannot (but by a chance of about 2^-32 per snapshot). Two
    /// sums that only grow, as a broker's counters must (a Redis hash of
    /// signed 64-bit integers: 2^31 directories fit).
    pub fn walk_done(&self) -> bool {
        self.dirs > 0 && self.dirs_spawned_ids == self.dirs_run_ids
    }

    /// Wall time as a `Duration`.
    pub fn elapsed(&self) -> Duration {
        Duration::from_millis(self.elapsed_ms)
    }

    /// Entries processed per second of wall time.
    pub fn entries_per_sec(&self) -> f64 {
        self.done as f64 / self.elapsed().as_secs_f64().max(1e-9)
    }

    /// Bytes copied per second of wall time.
    pub fn bytes_per_sec(&self) -> f64 {
        self.bytes_copied as f64 / self.elapsed().as_secs_f64().max(1e-9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Name;

    #[test]
    fn itemize_lines() {
        let p = RelPath::root().join(&Name::from("d"));
        let ev = Event::Itemize {
            path: p.clone(),
            change: Some(Change::new_entry(Kind::Dir)),
            kind: Kind::Dir,
            link: None,
        };
        assert_eq!(ev.itemize_line().unwrap(), "cd+++++++++ d/");
        assert_eq!(ev.verbose_line().unwrap(), "d/");
        let ev = Event::Itemize {
            path: p.clone(),
            change: None,
            kind: Kind::File,
            link: None,
        };
        assert_eq!(ev.itemize_line().unwrap(), "*deleting   d");
        assert_eq!(ev.verbose_line().unwrap(), "deleting d");
        let ev = Event::Itemize {
            path: p,
            change: Some(Change::new_entry(Kind::Symlink)),
            kind: Kind::Symlink,
            link: Some(RelPath::from_bytes("t")),
        };
        assert_eq!(ev.itemize_line().unwrap(), "cL+++++++++ d -> t");
        assert_eq!(ev.verbose_line().unwrap(), "d -> t");
    }

    #[test]
    fn counts_add() {
        let s = Stats::default();
        let counts = Counts {
            created: 3,
            ..Counts::default()
        };
        s.add(&counts);
        s.add(&counts);
        assert_eq!(s.snapshot(Duration::ZERO).created, 6);
    }
}
