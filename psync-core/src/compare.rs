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

use crate::bigfile::{discard_part, part_key};
use crate::engine::{CopyFail, Engine, TEMP_PREFIX};
use crate::entry::{Entry, Name, RelPath};
use crate::error::Op;
use crate::event::Stats;
use crate::fs::Dir;
use crate::itemize::Change;
use crate::task::Task;
use crate::transport::TaskContext;
use crate::verify::hash_segments;
use std::io;

impl Engine {
    /// Hashes both files whole. Used for files up to the chunk size, and
    /// for larger ones in a dry run (which has nowhere to record a chunk's
    /// verdict): those are read on two threads, one per side.
    pub(crate) fn contents_equal(
        &self,
        src_dir: &Dir,
        dst_dir: &Dir,
        src: &Entry,
    ) -> Result<bool, (bool, io::Error)> {
        let name = src.name.as_bytes();
        let a = src_dir.open_read(name).map_err(|e| (false, e))?;
        let b = dst_dir.open_read(name).map_err(|e| (true, e))?;
        let whole = [(0, src.size)];
        let (ha, hb) = if self.is_big(src) {
            std::thread::scope(|s| {
                let other = s.spawn(|| hash_segments(&b, &whole));
                let ha = hash_segments(&a, &whole);
                let hb = other
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("hashing thread panicked")));
                (ha, hb)
            })
        } else {
            (hash_segments(&a, &whole), hash_segments(&b, &whole))
        };
        let ha = ha.map_err(|e| (false, e))?;
        let hb = hb.map_err(|e| (true, e))?;
        if ha == hb {
            // Equal: neither is read again in this run (ADR 005, 006).
            self.drop_cached(&a, 0, None);
            self.drop_cached(&b, 0, None);
        }
        Ok(ha == hb)
    }

    /// Queues one `CompareChunk` per chunk of a large file and its finish.
    pub(crate) fn compare_big(
        &self,
        rel: &RelPath,
        src: Entry,
        dst: Entry,
        change: Change,
        cx: &mut dyn TaskContext,
    ) {
        // Last first: the spawning thread pops from the front (LIFO).
        for index in (0..self.chunks(&src)).rev() {
            cx.spawn(Task::CompareChunk {
                rel: rel.clone(),
                src: src.clone(),
                index,
            });
        }
        cx.defer(Task::FinishCompare {
            rel: rel.clone(),
            src,
            dst,
            change,
        });
    }

    /// The marker a differing chunk of `src` leaves for its finish.
    fn differs_marker(&self, src: &Entry) -> Name {
        Name(
            format!(
                "{TEMP_PREFIX}{:016x}.{:016x}.differs",
                self.run_id,
                part_key(src)
            )
            .into_bytes(),
        )
    }

    /// Compares one chunk of both sides; a difference, or a side that
    /// cannot be read, leaves the marker (the copy then reports a source
    /// that cannot be read; a target that cannot be read is replaced).
    pub(crate) fn compare_chunk(&self, rel: &RelPath, src: &Entry, index: u64) {
        let path = rel.join(&src.name);
        let (start, len) = self.chunk_range(src, index);
        let equal = match self.chunk_equal(rel, src, (start, len)) {
            Ok(equal) => {
                Stats::bump(&self.stats.chunks_compared, 1);
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
            Err(CopyFail::Interrupted) => return,
            Err(_) => false,
        };
        if equal {
            return;
        }
        let marked = self.open_dst(rel).and_then(|d| {
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

    fn chunk_equal(&self, rel: &RelPath, src: &Entry, range: (u64, u64)) -> Result<bool, CopyFail> {
        if self.quit.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(CopyFail::Interrupted);
        }
        let (src_dir, dst_dir) = self.open_pair(rel)?;
        let name = src.name.as_bytes();
        let a = src_dir
            .open_read(name)
            .map_err(|e| CopyFail::source(Op::Open, e))?;
        let b = dst_dir
            .open_read(name)
            .map_err(|e| CopyFail::target_io(Op::Open, e))?;
        let ha = hash_segments(&a, &[range]).map_err(|e| CopyFail::source(Op::Verify, e))?;
        let hb = hash_segments(&b, &[range]).map_err(|e| CopyFail::target_io(Op::Verify, e))?;
        if ha == hb {
            let len = std::num::NonZeroU64::new(range.1);
            self.drop_cached(&a, range.0, len);
            self.drop_cached(&b, range.0, len);
        }
        Ok(ha == hb)
    }

    /// Every chunk compared: equal files get their attributes checked like
    /// any unchanged file; a file with a differing chunk is copied like a
    /// changed large file (resuming a part an earlier run left).
    pub(crate) fn finish_compare(
        &self,
        rel: &RelPath,
        src: Entry,
        dst: Entry,
        change: Change,
        cx: &mut dyn TaskContext,
    ) {
        let path = rel.join(&src.name);
        let (src_dir, dst_dir) = match self.open_pair(rel) {
            Ok(pair) => pair,
            Err(CopyFail::Failed { on_target, op, err }) => {
                return self.fail(&path, on_target, op, err);
            }
            Err(CopyFail::Vanished) => {
                Stats::bump(&self.stats.done, 1);
                return self.warn(&path, false, Op::OpenDir, "vanished during --checksum");
            }
            Err(CopyFail::Interrupted) => return,
        };
        match dst_dir.unlink(self.differs_marker(&src).as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Equal after all: a part an earlier run left for this
                // version (kept for a resume) has nothing left to finish.
                discard_part(&dst_dir, &src);
                return self.fix_attrs(rel, &src_dir, Some(&dst_dir), &src, &dst, change);
            }
            Err(e) => return self.fail(&path, true, Op::Remove, e),
        }
        Stats::bump(&self.stats.bytes_to_copy, src.size);
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
        });
    }
}
