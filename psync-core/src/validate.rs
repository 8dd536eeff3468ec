//! Checks of a run's arguments that every frontend needs: the source must
//! be a readable directory, the destination a directory or absent, and
//! neither may contain the other.

use crate::error::{Error, Op, ResultExt};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The checked roots of a run.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Roots {
    /// The source directory as given.
    pub src: PathBuf,
    /// The destination as given.
    pub dst: PathBuf,
    /// True when the destination does not exist yet (it will be created).
    pub dst_missing: bool,
}

/// Validates source and destination. Touches nothing.
///
/// # Errors
/// A [`Error`] with [`Op::Validate`] (or the failing `stat`/`open`) naming
/// the offending path and saying what is wrong.
pub fn validate(src: &Path, dst: &Path) -> Result<Roots, Error> {
    let smeta = std::fs::metadata(src).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::invalid(src, "source does not exist"),
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => {
            Error::invalid(src, "a component of the source's path is not a directory")
        }
        _ => Error::new(Op::Stat, src, e),
    })?;
    if !smeta.is_dir() {
        return Err(Error::invalid(src, "source is not a directory"));
    }
    // Readable: open and read one entry now, so the error names the source
    // instead of surfacing as a per-entry failure later.
    std::fs::read_dir(src)
        .and_then(|mut d| d.next().transpose())
        .at(Op::ReadDir, src)?;
    let dst_missing = match std::fs::symlink_metadata(dst) {
        Ok(_) => {
            let m = std::fs::metadata(dst).at(Op::Stat, dst)?;
            if !m.is_dir() {
                return Err(Error::invalid(
                    dst,
                    "destination exists and is not a directory",
                ));
            }
            if (m.dev(), m.ino()) == (smeta.dev(), smeta.ino()) {
                return Err(Error::invalid(
                    dst,
                    "source and destination are the same directory",
                ));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let parent = parent_of(dst);
            let pm = std::fs::metadata(&parent).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    Error::invalid(dst, "the destination's parent directory does not exist")
                }
                _ => Error::new(Op::Stat, &parent, e),
            })?;
            if !pm.is_dir() {
                return Err(Error::invalid(
                    dst,
                    "the destination's parent is not a directory",
                ));
            }
            true
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(Error::invalid(
                dst,
                "a component of the destination's path is not a directory",
            ));
        }
        Err(e) => return Err(Error::new(Op::Stat, dst, e)),
    };
    let src_id = (smeta.dev(), smeta.ino());
    // Compare by (dev, ino) up the ancestor chains, so bind mounts and
    // symlinked spellings of the same directory are caught too.
    if ancestors_ids(dst, dst_missing)?.contains(&src_id) {
        return Err(Error::invalid(
            dst,
            format!("destination is inside the source {}", src.display()),
        ));
    }
    if !dst_missing {
        let dmeta = std::fs::metadata(dst).at(Op::Stat, dst)?;
        if ancestors_ids(src, false)?.contains(&(dmeta.dev(), dmeta.ino())) {
            return Err(Error::invalid(
                src,
                format!("source is inside the destination {}", dst.display()),
            ));
        }
    }
    Ok(Roots {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        dst_missing,
    })
}

/// The parent directory of `p` (`.` for a bare name).
fn parent_of(p: &Path) -> PathBuf {
    match p.parent() {
        Some(x) if !x.as_os_str().is_empty() => x.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// (dev, ino) of `p` (unless it does not exist) and of every ancestor.
fn ancestors_ids(p: &Path, missing: bool) -> Result<Vec<(u64, u64)>, Error> {
    let start = if missing {
        parent_of(p)
    } else {
        p.to_path_buf()
    };
    let canon = std::fs::canonicalize(&start).at(Op::Stat, &start)?;
    canon
        .ancestors()
        .map(|a| {
            std::fs::metadata(a)
                .map(|m| (m.dev(), m.ino()))
                .at(Op::Stat, a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(r: Result<Roots, Error>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn bad_inputs_are_named() {
        let t = crate::test_dir();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(t.path().join("file"), b"x").unwrap();
        assert!(
            msg(validate(&t.path().join("nope"), &t.path().join("d")))
                .contains("source does not exist")
        );
        assert!(
            msg(validate(&t.path().join("file"), &t.path().join("d"))).contains("not a directory")
        );
        assert!(msg(validate(&src, &src)).contains("same directory"));
        assert!(msg(validate(&src, &src.join("sub"))).contains("inside the source"));
        assert!(msg(validate(&src, &src.join("new"))).contains("inside the source"));
        assert!(msg(validate(&src.join("sub"), &src)).contains("inside the destination"));
        assert!(msg(validate(&src, &t.path().join("file"))).contains("not a directory"));
        assert!(
            msg(validate(&src, &t.path().join("no/such")))
                .contains("parent directory does not exist")
        );
        let ok = validate(&src, &t.path().join("dst")).unwrap();
        assert!(ok.dst_missing);
    }

    #[test]
    fn symlinked_spelling_of_the_source_is_caught() {
        let t = crate::test_dir();
        let src = t.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::os::unix::fs::symlink(&src, t.path().join("alias")).unwrap();
        assert!(msg(validate(&src, &t.path().join("alias"))).contains("same directory"));
        assert!(msg(validate(&src, &t.path().join("alias/x"))).contains("inside the source"));
    }
}
