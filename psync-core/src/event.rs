//! What a run reports while it works: progress, itemized changes, warnings
//! and errors, on a channel any frontend consumes; and the counters behind
//! the progress bar and the summary.
//!
//! A task's events and counts reach them when the transport acknowledges
//! the task ([`crate::transport::TaskReport`]), once however often it was
//! delivered: the events of one task are in order, those of different
//! tasks in the order they complete (a directory's children may come
//! before it).

use crate::entry::{Kind, RelPath, Time};
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
        /// For symlinks, the link text; for a hard link, the path it was
        /// linked to; `None` for a deletion.
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
    /// `psync verify`: a name of a hard-linked entry (more than one name
    /// on either side) and its inode on each side. The frontend compares
    /// the groups once every name is known: no single task sees them all.
    Linked {
        /// Path relative to the run's roots.
        path: RelPath,
        /// The entry's type.
        kind: Kind,
        /// The source inode, as (file system id, inode).
        src: (u64, u64),
        /// The target inode, as (file system id, inode).
        dst: (u64, u64),
    },
    /// `--manifest`: a regular file of the source, as listed, and the
    /// xxh3-128 of its content.
    Hashed {
        /// Path relative to the run's roots.
        path: RelPath,
        /// Size in bytes.
        size: u64,
        /// Modification time.
        mtime: Time,
        /// The content hash, 32 lowercase hex digits.
        hash: String,
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

/// `psync verify`'s verdict, from a run's [`Event::Itemize`] and
/// [`Event::Linked`] events (in any order, any repeated): one line per
/// path (the differences of a file's chunks and attributes merged), and
/// the names whose hard-link group in the target is not their group in
/// the source, by their names within the tree.
#[derive(Debug, Default)]
pub struct Differences {
    itemized: std::collections::BTreeMap<RelPath, Event>,
    linked: std::collections::BTreeMap<RelPath, Linked>,
}

/// A name of a hard-linked entry: its type, source and target inode.
type Linked = (Kind, (u64, u64), (u64, u64));

impl Differences {
    /// Takes note of `ev`.
    pub fn add(&mut self, ev: &Event) {
        match ev {
            Event::Itemize { path, .. } => {
                use std::collections::btree_map::Entry;
                match self.itemized.entry(path.clone()) {
                    Entry::Vacant(v) => {
                        v.insert(ev.clone());
                    }
                    Entry::Occupied(mut o) => merge(o.get_mut(), ev),
                }
            }
            Event::Linked {
                path,
                kind,
                src,
                dst,
            } => {
                self.linked.insert(path.clone(), (*kind, *src, *dst));
            }
            _ => {}
        }
    }

    /// The differences in path order: the itemize events, and for names
    /// in another link group not itemized already, `hf` lines naming the
    /// first other name of the source group, or, for a name the source
    /// has alone, `>f` (`c` for the other types: made anew).
    pub fn events(mut self) -> Vec<Event> {
        use std::collections::HashMap;
        let mut by_src: HashMap<(u64, u64), Vec<&RelPath>> = HashMap::new();
        let mut by_dst: HashMap<(u64, u64), Vec<&RelPath>> = HashMap::new();
        // In path order: the groups' lists come out sorted.
        for (path, (_, src, dst)) in &self.linked {
            by_src.entry(*src).or_default().push(path);
            by_dst.entry(*dst).or_default().push(path);
        }
        let mut links = Vec::new();
        for (path, (kind, src, dst)) in &self.linked {
            let group = &by_src[src];
            if self.itemized.contains_key(path) || *group == by_dst[dst] {
                continue;
            }
            let leader = group.iter().find(|p| **p != path).map(|p| (*p).clone());
            let mut change = Change::attrs_of(*kind);
            match leader {
                Some(_) => change.hardlink = true,
                None if *kind == Kind::File => change.transfer = true,
                None => change.checksum = true,
            }
            let ev = Event::Itemize {
                path: path.clone(),
                change: Some(change),
                kind: *kind,
                link: leader,
            };
            links.push((path.clone(), ev));
        }
        self.itemized.extend(links);
        self.itemized.into_values().collect()
    }
}

/// Adds the differences `ev` says to those of `into` (same path).
fn merge(into: &mut Event, ev: &Event) {
    let (
        Event::Itemize {
            change: Some(a), ..
        },
        Event::Itemize {
            change: Some(b), ..
        },
    ) = (into, ev)
    else {
        return;
    };
    a.new |= b.new;
    a.transfer |= b.transfer;
    a.hardlink |= b.hardlink;
    a.checksum |= b.checksum;
    a.size |= b.size;
    a.time |= b.time;
    a.perms |= b.perms;
    a.owner |= b.owner;
    a.group |= b.group;
    a.acl |= b.acl;
    a.xattr |= b.xattr;
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
    /// Parts of wide directories listed, each a task of its own (ADR 021).
    dir_parts,
    /// Directory tasks (and parts of wide directories) spawned, as a sum
    /// of their ids' low 32 bits (the root's not counted). With [`Stats::dirs_run_ids`]: see
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
    fn differences_merge_and_compare_link_groups() {
        let p = |s: &str| RelPath::from_bytes(s);
        let linked = |path: &str, src: u64, dst: u64| Event::Linked {
            path: p(path),
            kind: Kind::File,
            src: (1, src),
            dst: (2, dst),
        };
        let mut g = Differences::default();
        // Source groups {a, b} {c, d}; target {a, c} {b, d}; e, f right.
        for ev in [
            linked("a", 1, 10),
            linked("b", 1, 11),
            linked("c", 2, 10),
            linked("d", 2, 11),
            linked("e", 3, 12),
            linked("f", 3, 12),
            linked("b", 1, 11),
        ] {
            g.add(&ev);
        }
        let item = |path: &str, f: fn(&mut Change)| {
            let mut c = Change::attrs_of(Kind::File);
            f(&mut c);
            Event::Itemize {
                path: p(path),
                change: Some(c),
                kind: Kind::File,
                link: None,
            }
        };
        // A's chunks and attributes, reported apart, twice: one line.
        g.add(&item("a", |c| c.time = true));
        g.add(&item("a", |c| {
            c.checksum = true;
            c.transfer = true;
        }));
        g.add(&item("a", |c| {
            c.checksum = true;
            c.transfer = true;
        }));
        let lines: Vec<_> = g.events().iter().filter_map(Event::itemize_line).collect();
        assert_eq!(
            lines,
            [
                ">fc.t...... a",
                "hf......... b => a",
                "hf......... c => d",
                "hf......... d => c"
            ]
        );
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
