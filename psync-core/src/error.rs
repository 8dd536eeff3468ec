//! One error type for the library: the operation, the path, the cause.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What psync was doing when something failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Op {
    /// Opening a directory.
    OpenDir,
    /// Reading the entries of a directory.
    ReadDir,
    /// `lstat` of an entry.
    Stat,
    /// Reading a symlink's target.
    ReadLink,
    /// Opening a file for reading.
    Open,
    /// Creating a file (the temporary of a copy).
    Create,
    /// Copying file data (when no one side is to blame: a clone, a
    /// copy that changed or failed in some of its chunks).
    CopyData,
    /// Reading the source's data.
    Read,
    /// Writing the target's data.
    Write,
    /// Renaming a finished temporary into place.
    Rename,
    /// Creating a directory.
    Mkdir,
    /// Creating a symlink.
    Symlink,
    /// Creating a hard link.
    Link,
    /// Creating a device, fifo or socket.
    Mknod,
    /// Changing owner and group.
    Chown,
    /// Changing permissions.
    Chmod,
    /// Setting times.
    SetTimes,
    /// Setting or removing extended attributes.
    Xattr,
    /// Removing an entry.
    Remove,
    /// Verifying copied data: reading the target back from its storage.
    Verify,
    /// Checking the arguments of a run.
    Validate,
    /// Moving tasks between workers.
    Transport,
    /// Flushing a file or directory to stable storage (`fsync`).
    Fsync,
    /// Flushing a whole file system to stable storage (`syncfs`).
    Syncfs,
    /// Setting inode flags (`chattr`) or a project id.
    FileAttr,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Op::OpenDir => "open directory",
            Op::ReadDir => "read directory",
            Op::Stat => "stat",
            Op::ReadLink => "read symlink",
            Op::Open => "open",
            Op::Create => "create",
            Op::CopyData => "copy data",
            Op::Read => "read",
            Op::Write => "write",
            Op::Rename => "rename",
            Op::Mkdir => "mkdir",
            Op::Symlink => "symlink",
            Op::Link => "link",
            Op::Mknod => "mknod",
            Op::Chown => "chown",
            Op::Chmod => "chmod",
            Op::SetTimes => "set times",
            Op::Xattr => "xattr",
            Op::FileAttr => "file flags",
            Op::Remove => "remove",
            Op::Verify => "verify",
            Op::Validate => "validate",
            Op::Transport => "transport",
            Op::Fsync => "fsync",
            Op::Syncfs => "syncfs",
        };
        f.write_str(s)
    }
}

/// An I/O failure with the operation and the path it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.message())]
pub struct Error {
    op: Op,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl From<Error> for io::Error {
    /// The error as an `io::Error` of the same kind, with the whole
    /// message (operation, path, cause) as its text.
    fn from(e: Error) -> io::Error {
        io::Error::new(e.source.kind(), e.to_string())
    }
}

impl Error {
    /// Builds an error from its parts.
    pub fn new(op: Op, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error {
            op,
            path: path.into(),
            source,
        }
    }

    /// A validation error (bad arguments), with a message.
    pub fn invalid(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::new(
            Op::Validate,
            path,
            io::Error::new(io::ErrorKind::InvalidInput, msg.into()),
        )
    }

    /// "op path: cause", with the path's bytes escaped rsync-style (a
    /// newline or an invalid UTF-8 byte shows as `\#ooo`, nothing is
    /// lost); a validation error reads "path: what is wrong".
    fn message(&self) -> String {
        use std::os::unix::ffi::OsStrExt;
        let path = crate::entry::escape(self.path.as_os_str().as_bytes());
        match self.op {
            Op::Validate => format!("{path}: {}", self.source),
            op => format!("{op} {path}: {}", self.source),
        }
    }

    /// The operation that failed.
    pub fn op(&self) -> Op {
        self.op
    }

    /// The path it failed on.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying I/O error.
    pub fn io(&self) -> &io::Error {
        &self.source
    }

    /// True when the file system or kernel does not support the operation.
    pub fn is_unsupported(&self) -> bool {
        is_unsupported(&self.source)
    }

    /// True when the entry vanished (ENOENT) — normal on a live file system.
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// True for the errno values that mean "this fs/kernel cannot do that".
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOSYS | libc::EXDEV | libc::EINVAL | libc::ENOTTY)
    ) || e.kind() == io::ErrorKind::Unsupported
}

/// Attaches an operation and a path to an `io::Result`.
pub trait ResultExt<T> {
    /// Converts the error into an [`Error`] naming `op` and `path`.
    fn at(self, op: Op, path: &Path) -> Result<T, Error>;
}

impl<T> ResultExt<T> for io::Result<T> {
    fn at(self, op: Op, path: &Path) -> Result<T, Error> {
        self.map_err(|e| Error::new(op, path, e))
    }
}

impl<T> ResultExt<T> for rustix::io::Result<T> {
    fn at(self, op: Op, path: &Path) -> Result<T, Error> {
        self.map_err(|e| Error::new(op, path, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    #[test]
    fn messages_keep_every_byte_of_the_path() {
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/d/a\nb\xff"));
        let e = Error::new(Op::Open, p, io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(
            e.to_string(),
            "open /d/a\\#012b\\#377: Permission denied (os error 13)"
        );
        let v = Error::invalid("/x", "source does not exist");
        assert_eq!(v.to_string(), "/x: source does not exist");
    }
}
