//! Whole target subtrees, visited children first (to remove them, or to
//! itemize what a removal takes) without recursion and with two open
//! directories at any depth.
//!
//! A user can make a directory chain of any depth inside a target they
//! write to, so neither the call stack nor the number of open fds may grow
//! with it. The walk keeps one frame per level (the level's path, its
//! device and inode, and the entries still to visit) and one open
//! directory: it goes down with `openat(O_NOFOLLOW)` and back up through
//! `..`, which it trusts only when that is the very directory it came down
//! from (same device and inode); a directory moved away mid-walk stops the
//! walk with an error instead of leading it elsewhere. A directory on
//! another file system (a mount point, bind mounts included) is never
//! entered.

use crate::entry::{Entry, Kind, Name, RelPath, escape};
use crate::fs::Dir;
use std::io;

/// One entry of a directory being walked.
#[derive(Debug)]
pub(crate) struct Child {
    /// Its name in its directory.
    pub(crate) name: Name,
    /// True when the walk enters it (visited after its contents): a
    /// directory, unless its lister keeps it from being entered.
    pub(crate) dir: bool,
    /// Its type (what a removal reports).
    pub(crate) kind: Kind,
    /// Its metadata, when the lister read it.
    pub(crate) entry: Option<Entry>,
}

impl Child {
    /// A child known from its full listing entry.
    pub(crate) fn of(entry: &Entry) -> Child {
        Child {
            name: entry.name.clone(),
            dir: entry.kind == Kind::Dir,
            kind: entry.kind,
            entry: Some(entry.clone()),
        }
    }
}

/// Lists a directory's children (given the directory and its path); the
/// walk visits them from the back.
pub(crate) type Lister<'a> = dyn FnMut(&Dir, &RelPath) -> io::Result<Vec<Child>> + 'a;
/// Called for each non-directory, and for each directory after everything
/// in it, with the directory that holds it and its path.
pub(crate) type Leave<'a> = dyn FnMut(&Dir, &RelPath, &Child) -> io::Result<()> + 'a;

struct Frame {
    path: RelPath,
    ids: (u64, u64),
    pending: Vec<Child>,
    child: Child,
}

/// Walks the directory `top` of `parent` (at `path`), children before
/// their directory, `top` itself last.
///
/// # Errors
/// The first failure of `list` or `leave`; a mount point met (EXDEV, or
/// `top` itself); a directory moved away during the walk.
pub(crate) fn walk(
    parent: &Dir,
    top: Child,
    path: &RelPath,
    list: &mut Lister<'_>,
    leave: &mut Leave<'_>,
) -> io::Result<()> {
    let dev = parent.fstat()?.st_dev;
    let root = match open_checked(parent, &top.name, dev, path)? {
        Some(d) => d,
        None => return Ok(()),
    };
    // The directory listed, not another one a user renamed to its name.
    if let Some(e) = &top.entry
        && ids(&root)? != (e.dev, e.ino)
    {
        return Err(io::Error::other(format!(
            "{} is not the directory listed (another one was put at its name): left alone",
            escape(path.as_bytes())
        )));
    }
    let mut stack = vec![Frame {
        path: path.clone(),
        ids: ids(&root)?,
        pending: list(&root, path)?,
        child: top,
    }];
    let mut cur = root;
    while let Some(frame) = stack.last_mut() {
        match frame.pending.pop() {
            Some(child) if child.dir => {
                let sub_path = frame.path.join(&child.name);
                let Some(sub) = open_checked(&cur, &child.name, dev, &sub_path)? else {
                    continue;
                };
                let pending = list(&sub, &sub_path)?;
                stack.push(Frame {
                    path: sub_path,
                    ids: ids(&sub)?,
                    pending,
                    child,
                });
                cur = sub;
            }
            Some(child) => leave(&cur, &frame.path.join(&child.name), &child)?,
            None => {
                let Some(done) = stack.pop() else { break };
                let Some(up) = stack.last() else {
                    drop(cur);
                    return leave(parent, path, &done.child);
                };
                let parent_dir = cur.open_dir(b"..")?;
                if ids(&parent_dir)? != up.ids {
                    return Err(io::Error::other(format!(
                        "{} was moved during the walk; stopped there",
                        escape(done.path.as_bytes())
                    )));
                }
                cur = parent_dir;
                leave(&cur, &done.path, &done.child)?;
            }
        }
    }
    Ok(())
}

/// Opens the subdirectory `name` if it is on the file system `dev` and is
/// not a mount point; `None` when it vanished.
fn open_checked(dir: &Dir, name: &Name, dev: u64, path: &RelPath) -> io::Result<Option<Dir>> {
    let sub = match dir.open_dir(name.as_bytes()) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if sub.fstat()?.st_dev != dev || sub.is_mount_root() {
        return Err(mount_point(path));
    }
    Ok(Some(sub))
}

/// The error for a mount point met where psync does not go.
pub(crate) fn mount_point(path: &RelPath) -> io::Error {
    io::Error::new(
        io::ErrorKind::CrossesDevices,
        format!(
            "{} is a mount point (another file system, or a bind mount): left alone",
            escape(path.as_bytes())
        ),
    )
}

/// `err`, a failure to remove `name` of `dir` (at `path`), or the
/// mount-point error when it is EBUSY because `name` is a mount root: a
/// file bind-mounted there cannot be unlinked (and must not be: the file
/// is someone else's), and "Device or resource busy" alone does not say
/// why. The lister reads only directory-entry types, so the entry is
/// examined here, on the error path only.
pub(crate) fn busy_mount(dir: &Dir, name: &[u8], path: &RelPath, err: io::Error) -> io::Error {
    if err.raw_os_error() == Some(libc::EBUSY) && dir.is_mount_root_at(name) {
        mount_point(path)
    } else {
        err
    }
}

fn ids(d: &Dir) -> io::Result<(u64, u64)> {
    let st = d.fstat()?;
    #[allow(clippy::unnecessary_cast)]
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Removes the directory `name` of `parent` and everything in it. Returns
/// the number of entries removed. A mount point met inside (a directory
/// or a file mounted there) is left alone with what holds it, and the
/// rest is removed, as rsync does; the error then names the first one.
///
/// # Errors
/// The first failure; what could be removed before it is gone.
pub(crate) fn remove_dir_all(parent: &Dir, name: &Name) -> io::Result<u64> {
    remove_top(
        parent,
        Child {
            name: name.clone(),
            dir: true,
            kind: Kind::Dir,
            entry: None,
        },
        &mut |_, _| {},
    )
}

/// [`remove_dir_all`] of the directory `listed`, only if the directory at
/// its name is still that one (same device and inode), calling `removed`
/// with the path (below `parent`) and type of each entry this call
/// removed: not those another remover took first.
///
/// # Errors
/// As [`remove_dir_all`]; another directory at the name is an error.
pub(crate) fn remove_dir_all_of(
    parent: &Dir,
    listed: &Entry,
    removed: &mut dyn FnMut(&RelPath, Kind),
) -> io::Result<u64> {
    remove_top(parent, Child::of(listed), removed)
}

fn remove_top(
    parent: &Dir,
    top: Child,
    removed: &mut dyn FnMut(&RelPath, Kind),
) -> io::Result<u64> {
    let mut n = 0u64;
    let name = top.name.clone();
    // Mount points skipped (the first one's path, for the error): the
    // directories above them cannot go.
    let mounts: std::cell::RefCell<Vec<RelPath>> = std::cell::RefCell::new(Vec::new());
    let mut list = |d: &Dir, _: &RelPath| {
        let mut children = d.typed_names()?;
        // One statx per subdirectory (not per file): is it a mount root?
        children.retain(|c| {
            let mount = c.dir && d.is_mount_root_at(c.name.as_bytes());
            if mount {
                mounts
                    .borrow_mut()
                    .push(RelPath::from_bytes(c.name.as_bytes()));
            }
            !mount
        });
        Ok(children)
    };
    let mut leave = |dir: &Dir, path: &RelPath, c: &Child| {
        let r = if c.dir {
            dir.rmdir(c.name.as_bytes())
        } else {
            dir.unlink(c.name.as_bytes())
        };
        match r {
            Ok(()) => {
                n += 1;
                removed(path, c.kind);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            // Above a mount point left alone: it stays, not an error of its own.
            Err(e)
                if e.kind() == io::ErrorKind::DirectoryNotEmpty && !mounts.borrow().is_empty() => {}
            Err(e) => match busy_mount(dir, c.name.as_bytes(), path, e) {
                m if m.kind() == io::ErrorKind::CrossesDevices => {
                    mounts.borrow_mut().push(path.clone())
                }
                other => return Err(other),
            },
        }
        Ok(())
    };
    walk(
        parent,
        top,
        &RelPath::from_bytes(name.as_bytes()),
        &mut list,
        &mut leave,
    )?;
    match mounts.into_inner().first() {
        Some(first) => Err(mount_point(first)),
        None => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_a_chain_deeper_than_path_max_without_recursion() {
        let t = crate::test_dir();
        let root = Dir::open_root(t.path()).unwrap();
        root.mkdir(b"deep", 0o755).unwrap();
        let mut d = root.open_dir(b"deep").unwrap();
        // 3,000 levels of 8-byte names: 27,000 bytes of path.
        for i in 0..3000 {
            d.mkdir(b"level___", 0o755).unwrap();
            if i % 100 == 0 {
                std::fs::write(
                    format!(
                        "/proc/self/fd/{}/f",
                        std::os::fd::AsRawFd::as_raw_fd(&d.fd())
                    ),
                    b"x",
                )
                .unwrap();
            }
            d = d.open_dir(b"level___").unwrap();
        }
        drop(d);
        let n = remove_dir_all(&root, &Name(b"deep".to_vec())).unwrap();
        assert_eq!(n, 3001 + 30);
        assert!(!t.path().join("deep").exists());
    }

    #[test]
    fn lists_children_before_their_directory() {
        let t = crate::test_dir();
        std::fs::create_dir_all(t.path().join("top/a/b")).unwrap();
        std::fs::write(t.path().join("top/a/b/f"), b"x").unwrap();
        std::fs::write(t.path().join("top/z"), b"x").unwrap();
        let root = Dir::open_root(t.path()).unwrap();
        let top = Child {
            name: Name(b"top".to_vec()),
            dir: true,
            kind: Kind::Dir,
            entry: None,
        };
        let mut seen = Vec::new();
        walk(
            &root,
            top,
            &RelPath::from_bytes(b"top"),
            &mut |d, _| Ok(d.list()?.entries.iter().map(Child::of).collect()),
            &mut |_, p, _| {
                seen.push(String::from_utf8_lossy(p.as_bytes()).into_owned());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, ["top/z", "top/a/b/f", "top/a/b", "top/a", "top"]);
    }
}
