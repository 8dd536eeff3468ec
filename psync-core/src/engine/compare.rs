//! `--checksum`: whether a source file and its target of the same size hold
//! the same bytes. A file up to the chunk size is hashed on both sides by
//! the task that meets it; a larger one is compared chunk by chunk by any
//! worker (one 1 TiB file among small ones still keeps every thread
//! reading), and copied in chunks, resumably, if any chunk differs.
//!
//! A chunk that differs leaves an empty marker file in the target
//! directory, named with the run id and the source version's key: the
//! finish task, on whatever node it runs, looks for it. A killed run's
//! marker is a stale temporary to the next run, which removes it.

use crate::engine::bigfile::{discard_part, spawn_chunks};
use crate::engine::{CopyFail, Engine};
use crate::entry::{Entry, Kind, Name, RelPath};
use crate::error::Op;
use crate::fs::Dir;
use crate::itemize::Change;
use crate::task::Task;
use crate::transport::TaskContext;
use crate::verify::hash_segments;
use std::io;

impl Engine {
    /// Whether `range` of the source file and of its target hold the same
    /// bytes, and the source range's hash; on an error, whether it was the
    /// target's. Both are dropped
    /// from the cache when equal: neither is read again in this run (ADR
    /// 005, 006). A range above the chunk size (a large file in a dry run,
    /// which has nowhere to record a chunk's verdict) is read on two
    /// threads, one per side.
    pub(crate) fn contents_equal(
        &self,
        src_dir: &Dir,
        dst_dir: &Dir,
        src: &Entry,
        range: (u64, u64),
    ) -> Result<(bool, u128), (bool, io::Error)> {
        let name = src.name.as_bytes();
        let a = src_dir.open_read(name).map_err(|e| (false, e))?;
        let b = dst_dir.open_read(name).map_err(|e| (true, e))?;
        let segs = [range];
        let (ha, hb) = if range.1 > self.chunk_of(src) {
            std::thread::scope(|s| {
                let other = s.spawn(|| hash_segments(&b, &segs));
                let ha = hash_segments(&a, &segs);
                let hb = other
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("hashing thread panicked")));
                (ha, hb)
            })
        } else {
            (hash_segments(&a, &segs), hash_segments(&b, &segs))
        };
        let ha = ha.map_err(|e| (false, e))?;
        let hb = hb.map_err(|e| (true, e))?;
        if ha == hb {
            let len = std::num::NonZeroU64::new(range.1);
            self.drop_cached(&a, range.0, len);
            self.drop_cached(&b, range.0, len);
        }
        Ok((ha == hb, ha))
    }

    /// True when `src` (a file `--checksum` compares) is compared chunk by
    /// chunk by any worker: a large file, not hard-linked (those are
    /// compared whole in the last phase), in a real run or `psync verify`.
    pub(crate) fn compares_in_chunks(&self, src: &Entry) -> bool {
        self.is_big(src)
            && (self.verify_only
                || (!self.dry_run && !crate::plan::is_linked(src, &self.plan_opts)))
    }

    /// Queues one `CompareChunk` per chunk of a large file and its finish.
    pub(crate) fn compare_big(
        &self,
        rel: &RelPath,
        src: Entry,
        dst: Entry,
        (change, at): (Change, Option<(u64, u64)>),
        cx: &mut dyn TaskContext,
    ) {
        spawn_chunks(cx, 0..self.chunks(&src), |index| Task::CompareChunk {
            rel: rel.clone(),
            src: src.clone(),
            index,
            at,
        });
        self.defer(
            cx,
            Task::FinishCompare {
                rel: rel.clone(),
                src,
                dst,
                change,
                at,
            },
        );
    }

    /// The marker a differing chunk of `src` leaves for its finish.
    pub(crate) fn differs_marker(&self, src: &Entry) -> Name {
        self.private_name(b"differs", self.part_key(src), ".differs")
    }

    /// Compares one chunk of both sides; a difference, or a side that
    /// cannot be read, leaves the marker (the copy then reports a source
    /// that cannot be read; a target that cannot be read is replaced).
    pub(crate) fn compare_chunk(
        &self,
        rel: &RelPath,
        src: &Entry,
        index: u64,
        at: Option<(u64, u64)>,
    ) {
        let path = rel.join(&src.name);
        if self.quit.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let (start, len) = self.chunk_range(src, index);
        let compared = self.open_pair(rel, at).and_then(|(src_dir, dst_dir)| {
            self.contents_equal(&src_dir, &dst_dir, src, (start, len))
                .map(|(equal, _)| equal)
                .map_err(|(on_target, err)| CopyFail::Failed {
                    on_target,
                    op: Op::Verify,
                    err,
                })
        });
        let equal = match compared {
            Ok(equal) => {
                self.count(|c| c.chunks_compared += 1);
                equal
            }
            Err(CopyFail::Failed {
                on_target: true,
                err,
                ..
            }) => {
                let why = format!(
                    "chunk {index} (bytes {start}..{}) could not be read for --checksum ({err}); copying the file again",
                    start + len
                );
                self.warn(&path, true, Op::Verify, &why);
                false
            }
            Err(_) => false,
        };
        if equal {
            return;
        }
        if self.verify_only {
            // Nothing written: the difference goes out as an event, one
            // per chunk that differs (the frontend merges them).
            let change = Change {
                transfer: true,
                checksum: true,
                ..Change::attrs_of(Kind::File)
            };
            return self.itemize(path, Some(change), src);
        }
        let marked = self.open_dst_at(rel, at).and_then(|d| {
            match d.create_excl(self.differs_marker(src).as_bytes()) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
                _ => Ok(()),
            }
        });
        if let Err(e) = marked {
            // The finish would take the file for equal: it fails instead.
            self.fail(&path, true, Op::Create, e);
        }
    }

    /// Every chunk compared: equal files get their attributes checked like
    /// any unchanged file; a file with a differing chunk is copied like a
    /// changed large file (resuming a part an earlier run left).
    pub(crate) fn finish_compare(
        &self,
        rel: &RelPath,
        src: Entry,
        dst: Entry,
        (change, at): (Change, Option<(u64, u64)>),
        cx: &mut dyn TaskContext,
    ) {
        let path = rel.join(&src.name);
        let (src_dir, dst_dir) = match self.open_pair(rel, at) {
            Ok(pair) => pair,
            Err(CopyFail::Failed { on_target, op, err }) => {
                return self.fail(&path, on_target, op, err);
            }
            Err(CopyFail::Vanished) => {
                self.count(|c| c.done += 1);
                return self.warn(&path, false, Op::OpenDir, "vanished during --checksum");
            }
            Err(CopyFail::Interrupted) => return,
        };
        let here = crate::engine::Here {
            rel,
            src_dir: &src_dir,
            dir: Some(&dst_dir),
        };
        if self.verify_only {
            // The chunks reported their differences; the attributes and
            // holes here (read only: a dry run).
            let mut change = change;
            change.transfer |= self.holes_filled(&src_dir, &dst_dir, &src);
            self.fix_attrs(
                here,
                (&src, &dst),
                change,
                (1, crate::engine::Shared::Replace),
            );
            return;
        }
        // Looked at, not removed: a second delivery of this task (a broker
        // delivers at least once) must decide as the first did, while the
        // copy the first spawned may be under way. The copy's finish
        // removes the marker once the file is in place.
        match dst_dir.stat(self.differs_marker(&src).as_bytes()) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Gone because the copy an earlier delivery of this task
                // spawned is done: the target is another inode, of the
                // source's size and time (one status per large file
                // compared, which read it whole).
                let copied = dst_dir.stat(src.name.as_bytes()).is_ok_and(|st| {
                    let mut now = Entry::from_stat(src.name.clone(), &st);
                    // `dst.dev` is the run's id of its file system (ADR 014).
                    now.dev = self.fs.of_at(&dst_dir, &src.name, now.dev);
                    (now.dev, now.ino) != (dst.dev, dst.ino)
                        && (now.kind, now.size, now.mtime) == (Kind::File, src.size, src.mtime)
                });
                if copied {
                    return;
                }
                // Equal after all: a part an earlier run left for this
                // version (kept for a resume) has nothing left to finish.
                discard_part(&dst_dir, self.part_key(&src));
                if self.drop_source_cache {
                    // Readahead at a chunk's end may have brought back
                    // pages of a chunk compared (and dropped) before it,
                    // or read again by a second delivery: both files
                    // once more, whole, as a copy's finish does.
                    for d in [&src_dir, &dst_dir] {
                        if let Ok(f) = d.open_read(src.name.as_bytes()) {
                            self.drop_cached(&f, 0, None);
                        }
                    }
                }
                let alone = (1, crate::engine::Shared::Replace);
                self.fix_attrs(here, (&src, &dst), change, alone);
                return;
            }
            Err(e) => return self.fail(&path, true, Op::Stat, e),
        }
        self.count(|c| c.bytes_to_copy += src.size);
        cx.spawn(Task::BigFile {
            rel: rel.clone(),
            src,
            dst: Some(dst),
            change: Change {
                transfer: true,
                checksum: true,
                ..change
            },
            attempt: 0,
            at,
        });
    }
}
