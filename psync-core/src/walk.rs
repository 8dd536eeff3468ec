//! The walker: lists one directory with `lstat`-level metadata. A run lists
//! each directory once per side, as its own task, so the walk is parallel.

use crate::entry::{Entry, Name};
use crate::fs::Dir;
use std::io;

/// One directory's entries, sorted by name, and the entries that could not
/// be examined.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct Listing {
    /// The entries, sorted by name.
    pub entries: Vec<Entry>,
    /// Entries whose `lstat`/`readlink` failed (vanished entries are left out silently).
    pub failed: Vec<(Name, io::Error)>,
}

/// Lists a directory. Object-safe; `Send + Sync` so one walker serves all threads.
pub trait Walker: Send + Sync {
    /// Lists the open directory `dir`, each entry's `dev` as `stat`
    /// reports it on this node (the engine names it, ADR 014).
    ///
    /// # Errors
    /// When the directory itself cannot be read.
    fn list(&self, dir: &Dir) -> io::Result<Listing>;
}

impl<T: Walker + ?Sized> Walker for std::sync::Arc<T> {
    fn list(&self, dir: &Dir) -> io::Result<Listing> {
        (**self).list(dir)
    }
}

impl<T: Walker + ?Sized> Walker for Box<T> {
    fn list(&self, dir: &Dir) -> io::Result<Listing> {
        (**self).list(dir)
    }
}

/// `getdents64` + `statx(AT_SYMLINK_NOFOLLOW)` + `readlinkat` for symlinks.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsWalker;

impl Walker for FsWalker {
    fn list(&self, dir: &Dir) -> io::Result<Listing> {
        dir.list()
    }
}
