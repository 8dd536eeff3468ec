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

    /// [`Walker::list`], unless `dir` holds more than `most` names: then
    /// its names only, nothing looked up (a wide directory is listed in
    /// parts, ADR 021). The default always lists.
    ///
    /// # Errors
    /// When the directory itself cannot be read.
    fn list_or_names(&self, dir: &Dir, most: usize) -> io::Result<Listed> {
        let _ = most;
        self.list(dir).map(Listed::Entries)
    }

    /// The entries of `dir` of the given names (sorted, unique): one part
    /// of a wide directory. Names not there are left out, as vanished
    /// entries are. The default lists the whole directory and keeps them.
    ///
    /// # Errors
    /// When the directory itself cannot be read.
    fn list_some(&self, dir: &Dir, names: &[&[u8]]) -> io::Result<Listing> {
        let mut l = self.list(dir)?;
        let wanted = |n: &Name| names.binary_search(&n.as_bytes()).is_ok();
        l.entries.retain(|e| wanted(&e.name));
        l.failed.retain(|(n, _)| wanted(n));
        Ok(l)
    }
}

/// What [`Walker::list_or_names`] found.
#[derive(Debug)]
#[non_exhaustive]
pub enum Listed {
    /// The directory's listing.
    Entries(Listing),
    /// Only its names: it holds more than asked for.
    Names(Names),
}

/// A directory's names, packed (each followed by a NUL byte, which no
/// name holds): about 20 bytes a name where a `Vec<Name>` takes 56.
#[derive(Debug, Default, Clone)]
pub struct Names {
    bytes: Vec<u8>,
    starts: Vec<usize>,
}

impl Names {
    /// Adds one name.
    pub fn push(&mut self, name: &[u8]) {
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(name);
        self.bytes.push(0);
    }

    /// How many names.
    #[must_use]
    pub fn len(&self) -> usize {
        self.starts.len()
    }

    /// No names.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The `i`-th name.
    #[must_use]
    pub fn get(&self, i: usize) -> &[u8] {
        let rest = &self.bytes[self.starts[i]..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// Sorts the names (bytewise, as listings are) and drops repeats.
    pub fn sort(&mut self) {
        let bytes = &self.bytes;
        let name = |s: usize| {
            let rest = &bytes[s..];
            &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())]
        };
        self.starts.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
        self.starts.dedup_by(|a, b| name(*a) == name(*b));
    }

    /// The index of `name`, in sorted names.
    #[must_use]
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The names in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }
}

impl<T: Walker + ?Sized> Walker for std::sync::Arc<T> {
    fn list(&self, dir: &Dir) -> io::Result<Listing> {
        (**self).list(dir)
    }
    fn list_or_names(&self, dir: &Dir, most: usize) -> io::Result<Listed> {
        (**self).list_or_names(dir, most)
    }
    fn list_some(&self, dir: &Dir, names: &[&[u8]]) -> io::Result<Listing> {
        (**self).list_some(dir, names)
    }
}

impl<T: Walker + ?Sized> Walker for Box<T> {
    fn list(&self, dir: &Dir) -> io::Result<Listing> {
        (**self).list(dir)
    }
    fn list_or_names(&self, dir: &Dir, most: usize) -> io::Result<Listed> {
        (**self).list_or_names(dir, most)
    }
    fn list_some(&self, dir: &Dir, names: &[&[u8]]) -> io::Result<Listing> {
        (**self).list_some(dir, names)
    }
}

/// `getdents64` + `statx(AT_SYMLINK_NOFOLLOW)` + `readlinkat` for symlinks.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsWalker;

impl Walker for FsWalker {
    fn list(&self, dir: &Dir) -> io::Result<Listing> {
        dir.list()
    }
    fn list_or_names(&self, dir: &Dir, most: usize) -> io::Result<Listed> {
        dir.list_or_names(most)
    }
    fn list_some(&self, dir: &Dir, names: &[&[u8]]) -> io::Result<Listing> {
        Ok(dir.list_some(names.iter().copied()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packed names sort bytewise, drop repeats, and are found by name.
    #[test]
    fn names_sort_dedup_and_find() {
        let mut n = Names::default();
        for name in [&b"b"[..], b"a\xff", b"", b"ab", b"b", b"a"] {
            n.push(name);
        }
        n.sort();
        let got: Vec<&[u8]> = n.iter().collect();
        assert_eq!(got, [&b""[..], b"a", b"ab", b"a\xff", b"b"]);
        assert_eq!(n.find(b"ab"), Some(2));
        assert_eq!(n.find(b"a\xff"), Some(3));
        assert_eq!(n.find(b"aa"), None);
        assert_eq!(n.find(b"c"), None);
        assert_eq!(n.len(), 5);
    }
}
