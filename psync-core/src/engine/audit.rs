//! What `psync verify` and `--manifest` add to a run: the names of
//! hard-linked entries with their inodes (the groups are compared by the
//! frontend, the one place that sees every name), holes of the source
//! filled in the target, and a content hash of every regular file.

use super::Engine;
use crate::entry::{Entry, Kind, RelPath};
use crate::error::Op;
use crate::event::Event;
use crate::fs::Dir;
use crate::plan::Action;
use std::fs::File;
use std::io;

impl Engine {
    /// After a directory is planned: [`Event::Linked`] for each name of a
    /// hard-linked entry on both sides (`verify_only`), and
    /// [`Event::Hashed`] for each regular file the run does not hash
    /// anyway (`manifest`; a whole-file comparison hashes its source in
    /// [`Engine::compare_file`]). Reads only.
    pub(super) fn audit_dir(
        &self,
        rel: &RelPath,
        src_dir: &Dir,
        (src, dst): (&[Entry], &[Entry]),
        actions: &[Action],
    ) {
        if self.verify_only {
            for s in src {
                let Ok(i) = dst.binary_search_by(|d| d.name.cmp(&s.name)) else {
                    continue;
                };
                let d = &dst[i];
                // A directory's own task itemizes its attributes, xattrs
                // and ACLs (`itemize_dir`).
                if s.kind == Kind::Dir && d.kind == Kind::Dir {
                    continue;
                }
                if self.plan_opts.hard_links && d.kind == s.kind && (s.nlink > 1 || d.nlink > 1) {
                    self.emit(Event::Linked {
                        path: rel.join(&s.name),
                        kind: s.kind,
                        src: (s.dev, s.ino),
                        dst: (d.dev, d.ino),
                    });
                }
            }
        }
        if !self.manifest {
            return;
        }
        // Compared whole by a task: hashed there.
        // The files whose comparison hashes them whole (their hash comes
        // with it): a set, as a wide directory has as many as entries.
        let compared_names: std::collections::HashSet<&[u8]> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Compare { src: c, .. } if !self.compares_in_chunks(c) => {
                    Some(c.name.as_bytes())
                }
                _ => None,
            })
            .collect();
        let compared = |s: &Entry| compared_names.contains(s.name.as_bytes());
        for s in src.iter().filter(|s| s.kind == Kind::File) {
            if self.quit.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            if compared(s) {
                continue;
            }
            let path = rel.join(&s.name);
            let hashed = src_dir
                .open_read(s.name.as_bytes())
                .and_then(|f| crate::verify::hash_segments(&f, &[(0, s.size)]));
            match hashed {
                Ok(hash) => self.hashed(path, s, hash),
                // Gone since the listing: as a sync, a warning.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.warn(
                    &path,
                    false,
                    Op::Verify,
                    &format!("not hashed for --manifest: {e}"),
                ),
                // A manifest without it would pass for a whole one: a
                // failure (the entry itself was counted done by the sync).
                Err(e) => {
                    self.count(|c| c.failed += 1);
                    self.report(
                        &path,
                        false,
                        Op::Read,
                        std::io::Error::new(e.kind(), format!("not hashed for --manifest: {e}")),
                        false,
                    );
                }
            }
        }
    }

    /// Reports a regular file's content hash for `--manifest`.
    pub(super) fn hashed(&self, path: RelPath, src: &Entry, hash: u128) {
        self.emit(Event::Hashed {
            path,
            size: src.size,
            mtime: src.mtime,
            hash: format!("{hash:032x}"),
        });
    }

    /// `psync verify`: true when a hole of the source file `src` (with
    /// the same bytes as its target) is data in the target, beyond the
    /// target's block rounding: the copy lost its sparseness.
    pub(super) fn holes_filled(&self, src_dir: &Dir, d: &Dir, src: &Entry) -> bool {
        let name = src.name.as_bytes();
        let (Ok(a), Ok(b)) = (src_dir.open_read(name), d.open_read(name)) else {
            return false;
        };
        holes_filled(&a, &b, src.size).unwrap_or(false)
    }
}

/// True when `b` holds more data than `a`'s data segments rounded out to
/// `b`'s block size: a hole of `a` is allocated in `b`. A file system
/// without `SEEK_DATA` reports a file as one segment of data.
fn holes_filled(a: &File, b: &File, size: u64) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let block = b.metadata()?.blksize().max(512);
    let want: u64 = data_segments(a, size)?
        .iter()
        .map(|&(start, len)| {
            let end = (start + len)
                .next_multiple_of(block)
                .min(size.next_multiple_of(block));
            end - (start - start % block)
        })
        .sum();
    let have: u64 = data_segments(b, size)?.iter().map(|s| s.1).sum();
    Ok(have > want)
}

/// The data segments of `f` below `size`, as (start, length), found with
/// `SEEK_DATA`/`SEEK_HOLE`.
fn data_segments(f: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use rustix::fs::SeekFrom;
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(f, SeekFrom::Data(pos)) {
            Ok(d) => d,
            // ENXIO: no data at or after pos.
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) if pos == 0 && crate::error::is_unsupported(&e.into()) => {
                return Ok(vec![(0, size)]);
            }
            Err(e) => return Err(e.into()),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(f, SeekFrom::Hole(data))?.min(size);
        out.push((data, hole - data));
        pos = hole;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_filled_hole_is_found() {
        let t = crate::test_dir();
        let (pa, pb) = (t.path().join("a"), t.path().join("b"));
        let size = 8u64 << 20;
        let a = File::create(&pa).unwrap();
        a.set_len(size).unwrap();
        a.write_all_at(b"x", size - 1).unwrap();
        std::fs::write(&pb, vec![0u8; size as usize - 1]).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&pb)
            .unwrap()
            .write_all_at(b"x", size - 1)
            .unwrap();
        let (a, b) = (File::open(&pa).unwrap(), File::open(&pb).unwrap());
        assert!(!holes_filled(&a, &a, size).unwrap());
        assert!(!holes_filled(&b, &b, size).unwrap());
        let sparse = data_segments(&a, size).unwrap().len() == 1
            && data_segments(&a, size).unwrap()[0].1 < size;
        assert_eq!(holes_filled(&a, &b, size).unwrap(), sparse);
        assert!(!holes_filled(&b, &a, size).unwrap());
    }
}
