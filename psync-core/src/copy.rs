//! The copier: carries out file actions on one pair of file systems, and
//! the registry that picks one per (source fs, target fs) pair.
//!
//! The engine owns the protocol (temporary name, verification, rename into
//! place); a copier owns how each step is done on its file systems: how a
//! target file is created (Lustre sets a layout there), how data moves
//! (reflink, copy_file_range, read/write), how attributes are applied.
//! What a copier uses to do so, besides the trait's own types, is in
//! [`kit`].

use crate::entry::{Entry, Kind, Name, RelPath};
use crate::error::Op;
use crate::fs::Dir;
use crate::plan::Preserve;
use crate::xattr::{Node, XattrReport};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// How a file's data was moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// A reflink (FICLONE): shared extents, no data read.
    Reflink,
    /// `copy_file_range`: in-kernel copy.
    CopyRange,
    /// `sendfile`.
    Sendfile,
    /// `read`/`write` through a user-space buffer.
    ReadWrite,
    /// `read` into an aligned buffer, `write` with `O_DIRECT`: the chunks
    /// of one large file written in parallel, bypassing the target's page
    /// cache (and its per-file write lock).
    Direct,
    /// `read` from the source straight into a shared mapping of the
    /// target. The generic copier no longer uses it (ADR 022); kept for
    /// copiers that do, and for counts of earlier runs.
    Mapped,
    /// Nothing to move (an empty file).
    Empty,
}

/// What a data copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Copied {
    /// Bytes written to the target.
    pub bytes: u64,
    /// The strategy that did it.
    pub strategy: Strategy,
    /// With [`DataJob::hash`]: the hash ([`kit::Hasher`]) of the
    /// source bytes copied, in the order of `segments`.
    pub hash: Option<u128>,
    /// With a hash: the data segments copied, as (offset, length), in
    /// order; holes between them were not written (an all-hole range has
    /// none).
    pub segments: Vec<(u64, u64)>,
    /// With [`DataJob::read_back`]: the hash of the target's bytes of
    /// `segments` as they read back right after each piece was written,
    /// in order (`None`: not read back; the engine reads the range back
    /// itself).
    pub read_back: Option<u128>,
}

impl Copied {
    /// A copy of `bytes` by `strategy`, without hash, as one segment.
    pub fn plain(bytes: u64, strategy: Strategy) -> Copied {
        Copied {
            bytes,
            strategy,
            hash: None,
            segments: Vec::new(),
            read_back: None,
        }
    }
}

/// A failure inside a copier step: the operation and the cause. The engine
/// adds the path.
#[derive(Debug)]
pub struct StepError {
    /// The failing operation.
    pub op: Op,
    /// The cause.
    pub source: io::Error,
}

impl StepError {
    /// Builds a step error.
    pub fn new(op: Op, source: io::Error) -> StepError {
        StepError { op, source }
    }
}

/// Attaches an operation to an `io::Result` inside a copier.
pub trait StepExt<T> {
    /// Tags the error with `op`.
    fn op(self, op: Op) -> Result<T, StepError>;
}

impl<T> StepExt<T> for io::Result<T> {
    fn op(self, op: Op) -> Result<T, StepError> {
        self.map_err(|e| StepError::new(op, e))
    }
}

/// Whether to clone data (share extents) instead of copying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reflink {
    /// Clone when source and target are on one reflink-capable file
    /// system, copy otherwise (the default).
    #[default]
    Auto,
    /// Clone or fail the file.
    Always,
    /// Always copy the bytes.
    Never,
}

/// Whether a kind of attribute (xattrs, ACLs) is copied, and how strictly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttrMode {
    /// Not copied, not compared.
    Off,
    /// Copied; what the target cannot hold is a warning (the default).
    #[default]
    Auto,
    /// Copied; what the target cannot hold is an error (asked for explicitly).
    Required,
}

impl AttrMode {
    /// True unless `Off`.
    pub fn on(self) -> bool {
        self != AttrMode::Off
    }
}

/// Per-run settings a copier needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CopyOptions {
    /// Attributes to preserve.
    pub preserve: Preserve,
    /// The process can change owners (root): owner/group are applied.
    pub can_chown: bool,
    /// Reflink policy.
    pub reflink: Reflink,
    /// Extended attributes (other than ACLs).
    pub xattrs: AttrMode,
    /// POSIX ACLs.
    pub acls: AttrMode,
    /// Set by the engine for one call: the target was just made by
    /// [`Copier::create_unnamed`] in a directory this run created that
    /// passes on no default ACL, so it has no xattrs. Its owner, group
    /// and mode are whatever creation gave it (a setgid directory gives
    /// its group, a default ACL masks the mode): a copier may look and
    /// skip what is already right.
    pub fresh: bool,
    /// Set by the engine for one call: the target was created by this run
    /// and `preserve.perms` is off, so its mode stays what creation gave
    /// it (umask or the directory's default ACL), as rsync's `--no-perms`
    /// leaves a new file's. (An existing target keeps its own mode, and a
    /// directory made `0700` gets the one rsync gives it: the engine
    /// passes those as the entry's mode with `perms` on.)
    pub created: bool,
    /// `--no-perms` (set for the whole run): a target's mode is not the
    /// source's, so the access ACL copied onto it carries the target's
    /// mode bits rather than the source's ([`XattrSync::target_mode`](crate::XattrSync::target_mode)).
    /// Stays set when the engine passes
    /// an existing target's own mode as the entry's with `perms` on.
    pub acl_target_mode: bool,
    /// The chunks of large files may be written with `O_DIRECT` where the
    /// target's file system supports it (`--no-direct-io` turns it off).
    pub direct_io: bool,
    /// Inode flags of regular files and directories (immutable,
    /// append-only, sync, noatime, nodump: [`kit::fsattr::FLAGS`]);
    /// `--no-file-flags` turns it off (ADR 018).
    #[serde(default)]
    pub file_flags: AttrMode,
    /// Project ids (and the project-inherit flag) of regular files and
    /// directories; `--no-project-ids` turns it off (ADR 018).
    #[serde(default)]
    pub project_ids: AttrMode,
}

impl CopyOptions {
    /// What of inode flags and project ids is synced (the immutable and
    /// append-only flags not: the caller adds them for the last step).
    pub fn fsattr_sync(&self) -> crate::fsattr::FsAttrSync {
        crate::fsattr::FsAttrSync {
            flags: self.file_flags.on(),
            project_ids: self.project_ids.on(),
            ..Default::default()
        }
    }
}

impl Default for CopyOptions {
    /// What a [`crate::SyncBuilder`] gives a process without root by
    /// default: `rsync -a`'s attributes, reflink when possible, xattrs
    /// and ACLs copied (a warning when the target cannot hold them),
    /// direct I/O for chunks; no owner changes, no per-call flags.
    fn default() -> Self {
        CopyOptions {
            preserve: Preserve::ARCHIVE,
            can_chown: false,
            reflink: Reflink::Auto,
            xattrs: AttrMode::Auto,
            acls: AttrMode::Auto,
            fresh: false,
            created: false,
            acl_target_mode: false,
            direct_io: true,
            file_flags: AttrMode::Auto,
            project_ids: AttrMode::Auto,
        }
    }
}

/// One data copy: a byte range of a source file into the same range of a
/// target file.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct DataJob<'a> {
    /// The open source.
    pub src: &'a File,
    /// The open target (created by [`Copier::create`]).
    pub dst: &'a File,
    /// The source's metadata (size, allocated blocks: a hint for holes).
    pub entry: &'a Entry,
    /// First byte of the range.
    pub offset: u64,
    /// Length of the range.
    pub len: u64,
    /// The run's options.
    pub opts: &'a CopyOptions,
    /// Hash the source bytes as they are copied (verification): the copier
    /// should then move the data through user space rather than copy it in
    /// the kernel, which would cost a second read of the source.
    pub hash: bool,
    /// With `hash`, on a target file system that keeps data only in
    /// memory (tmpfs), where reading back later reads the same pages: the
    /// copier may read each piece back right after writing it, while the
    /// CPU's caches still hold it, and return the hash of what read back
    /// in [`Copied::read_back`] (ADR 022). A copier that does not leaves
    /// it `None`.
    pub read_back: bool,
}

impl<'a> DataJob<'a> {
    /// The copy of the whole of `src` (of metadata `entry`) into `dst`,
    /// without hash: set `offset`, `len` and `hash` for another job.
    pub fn new(src: &'a File, dst: &'a File, entry: &'a Entry, opts: &'a CopyOptions) -> Self {
        DataJob {
            src,
            dst,
            entry,
            offset: 0,
            len: entry.size,
            opts,
            hash: false,
            read_back: false,
        }
    }

    /// True when the range is the whole file: a copier may then clone the
    /// file at once, and must leave the target exactly `len` bytes long
    /// (a trailing hole included). A chunk of a larger file relies on the
    /// engine having set the target's length beforehand.
    pub fn is_whole_file(&self) -> bool {
        self.offset == 0 && self.len == self.entry.size
    }

    /// True when the source may have holes: fewer bytes allocated than its size.
    pub fn may_be_sparse(&self) -> bool {
        self.entry.blocks.saturating_mul(512) < self.entry.size
    }
}

/// Carries out file actions on a pair of file systems. Object-safe:
/// the engine holds an `Arc<dyn Copier>` and calls it once per file or
/// chunk, never per buffer.
pub trait Copier: Send + Sync {
    /// A short name for reports ("generic", "lustre").
    fn name(&self) -> &str;

    /// Creates the target file `tmp` in `dir` for the source file `src`
    /// (which the copy will fill). A backend may give it a layout here.
    /// The file must be new (`O_EXCL`, never an existing one), owned by
    /// the process, of mode 0600, as [`Dir::create_excl`] makes it: the
    /// part files of large files are checked to be so, when created and at
    /// every later open.
    ///
    /// # Errors
    /// As file creation; EEXIST when `tmp` is taken.
    fn create(
        &self,
        dir: &Dir,
        tmp: &Name,
        src: &Entry,
        src_file: &File,
    ) -> Result<File, StepError>;

    /// Creates an unnamed target file in `dir` for `src` (`O_TMPFILE`),
    /// which the engine links at its name once complete. It may be created
    /// with `src`'s permission bits (the kernel applies the umask): no one
    /// can open an unnamed file. `Ok(None)` when
    /// the file system cannot (the engine then uses a named temporary).
    /// The default: `Ok(None)`.
    ///
    /// # Errors
    /// As file creation.
    fn create_unnamed(
        &self,
        dir: &Dir,
        src: &Entry,
        src_file: &File,
    ) -> Result<Option<File>, StepError> {
        let _ = (dir, src, src_file);
        Ok(None)
    }

    /// Creates the target file for `src` at its own name (`src.name`) in
    /// `dir`, to be filled there: `O_EXCL`, never an existing entry, with
    /// `src`'s permission bits (less the umask). `Ok(None)` when the name
    /// is taken or the copier would rather not (the engine then uses
    /// [`Copier::create_unnamed`] or a named temporary). The default:
    /// `Ok(None)`.
    ///
    /// The engine asks only where no one else can reach the file while it
    /// is filled and nothing is lost if it stops halfway: a new name, in a
    /// directory this run created (mode 0700 until its finish), on a file
    /// system that keeps data only in memory (ADR 024). It sets the file's
    /// times last, after verification, and removes the file when the copy
    /// fails.
    ///
    /// # Errors
    /// As file creation.
    fn create_in_place(
        &self,
        dir: &Dir,
        src: &Entry,
        src_file: &File,
    ) -> Result<Option<File>, StepError> {
        let _ = (dir, src, src_file);
        Ok(None)
    }

    /// Makes `dst` a clone of the whole of `src` (shared extents) when the
    /// options allow and the file systems can; `Ok(false)` to copy the
    /// data instead. Used before splitting a large file into chunks. The
    /// default: `Ok(false)`.
    ///
    /// # Errors
    /// A clone that was required (`Reflink::Always`) and failed.
    fn try_clone(&self, src: &File, dst: &File, opts: &CopyOptions) -> Result<bool, StepError> {
        let _ = (src, dst, opts);
        Ok(false)
    }

    /// Copies the job's byte range from source to target at the same
    /// offset, keeping holes as holes. Checks `quit` between large steps and
    /// fails with `ErrorKind::Interrupted` when it is set.
    ///
    /// # Errors
    /// The failing read or write; a short source (EOF before the range
    /// ends) is an error of kind `UnexpectedEof`.
    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError>;

    /// Applies the attributes of the source entry `src` to `target`, in the
    /// order that keeps them: owner (chown clears setuid/setgid and file
    /// capabilities), mode, ACLs, xattrs, times last. ACLs and xattrs are
    /// synced from `from` (the source entry) when given and enabled in
    /// `opts`; `None` leaves them alone. Never follows a symlink.
    ///
    /// # Errors
    /// The first failing call. ACLs/xattrs the target refuses are not
    /// errors here: they are listed in the report.
    fn set_attrs(
        &self,
        target: Node<'_>,
        src: &Entry,
        from: Option<Node<'_>>,
        opts: &CopyOptions,
    ) -> Result<XattrReport, StepError>;

    /// Creates the directory `name` (mode 0700 until it is finished, so a
    /// read-only source directory does not block its own copy). `from` is
    /// the source directory, for what a backend sets at creation (a
    /// default layout that new files inside inherit).
    ///
    /// # Errors
    /// As `mkdirat`.
    fn make_dir(
        &self,
        dir: &Dir,
        name: &Name,
        src: &Entry,
        from: Node<'_>,
    ) -> Result<(), StepError>;

    /// Makes the xattrs/ACLs of `target` those of `from`, as `how` says,
    /// for a target whose other attributes are right (an xattr-only
    /// update, or a check with `how.check_only`). The default:
    /// [`kit::sync_xattrs`], which leaves the names of
    /// [`kit::is_never_copied`] alone; a backend filters more
    /// names here (and in `set_attrs`).
    ///
    /// # Errors
    /// Reading either side fails.
    fn sync_xattrs(
        &self,
        from: Node<'_>,
        target: Node<'_>,
        how: crate::xattr::XattrSync,
    ) -> io::Result<XattrReport> {
        crate::xattr::sync_xattrs(from, target, how)
    }

    /// Makes the inode flags and project id of `target` (a regular file
    /// or directory) those of `from`, as `how` says (ADR 018). The
    /// default: [`kit::fsattr::sync`] (`file_setattr`, or the
    /// `fsxattr` ioctls on an fd psync opened itself).
    ///
    /// # Errors
    /// Reading either side fails; refusals are in the report.
    fn sync_fsattrs(
        &self,
        from: Node<'_>,
        target: Node<'_>,
        how: crate::fsattr::FsAttrSync,
    ) -> io::Result<crate::fsattr::FsAttrReport> {
        crate::fsattr::sync(from, target, how)
    }

    /// Sets the permission bits of an existing target (a directory the
    /// run opens for its own writes without root, then closes again).
    /// The default: `chmod` through the node.
    ///
    /// # Errors
    /// As `fchmod`/`fchmodat`.
    fn set_mode(&self, target: Node<'_>, mode: u32) -> Result<(), StepError> {
        let r = match target {
            Node::Fd(fd) | Node::Path(fd) => crate::fs::chmod_fd(fd, mode),
            Node::At(dir, name) => dir.chmod(name.as_bytes(), mode),
        };
        r.map_err(|e| StepError::new(crate::error::Op::Chmod, e))
    }

    /// Called with each source directory's listing before anything is
    /// planned from it: a backend may set [`Entry::fs_data`] of the
    /// entries (a Lustre FID), which then travels with them. Must not
    /// change any other field. An error fails the directory's listing
    /// (reported on the source side, as an unreadable directory). The
    /// default does nothing and costs nothing.
    ///
    /// # Errors
    /// When the backend cannot read what it keeps.
    fn annotate(&self, dir: &Dir, entries: &mut [Entry]) -> io::Result<()> {
        let _ = (dir, entries);
        Ok(())
    }

    /// The chunk size for the large file `src`, given the run's
    /// (`default`): a backend may align chunks to the file's layout
    /// (Lustre stripes). Must be a multiple of 4 KiB and the same on
    /// every node for the same file (a worker computes it again). The
    /// default: `default`.
    fn chunk_size(&self, src: &Entry, default: u64) -> u64 {
        let _ = src;
        default
    }

    /// A stable identity of the source file `src`, the same on every node
    /// (a Lustre FID), from the entry (its `fs_data`). The engine names
    /// what it shares about a source file from it instead of its file
    /// system's id and inode: the hard-link records and a large file's
    /// part, journal and `-c` marker. It must be one to one among the
    /// files of the source (each file one id; one id, one file) and the
    /// same whichever node listed the entry, or a hard-link group is
    /// split and a part not found again. The default: `None` (keys from
    /// the file system's id and the inode, ADR 014).
    fn file_id(&self, src: &Entry) -> Option<u128> {
        let _ = src;
        None
    }

    /// Whether to leave the source entry `src` alone on purpose (a Lustre
    /// file whose data is released to HSM): `Some(reason)` and the engine
    /// reports it as skipped (`skipped_by_copier`), plans nothing for it
    /// and leaves its target entry untouched, never deleted (also with
    /// `--delete`). Asked for every non-directory of a listing, after
    /// [`Copier::annotate`]: it should decide from the entry (its
    /// `fs_data`). The default: `None`.
    fn skip(&self, src: &Entry) -> Option<String> {
        let _ = src;
        None
    }

    /// This copier's options as a string, carried in
    /// [`crate::RunSpec::copier_options`] to every engine of the run
    /// (other processes, other nodes), which gets its copier through
    /// [`Copier::with_options`]. The default: none (empty).
    fn options(&self) -> String {
        String::new()
    }

    /// The copier to use for a run whose copier has [`Copier::options`]
    /// `options`: `Ok(None)` for this one as it is. The default: `None`
    /// for empty options, an error otherwise.
    ///
    /// # Errors
    /// Options this copier does not understand.
    fn with_options(&self, options: &str) -> io::Result<Option<Arc<dyn Copier>>> {
        if options.is_empty() {
            return Ok(None);
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("copier {:?} takes no options", self.name()),
        ))
    }

    /// Creates the symlink `name` with `src.link` as its text.
    ///
    /// # Errors
    /// As `symlinkat`.
    fn make_symlink(&self, dir: &Dir, name: &Name, src: &Entry) -> Result<(), StepError>;

    /// Creates a fifo, device or socket `name` like `src`.
    ///
    /// # Errors
    /// As `mknodat`.
    fn make_special(&self, dir: &Dir, name: &Name, src: &Entry) -> Result<(), StepError>;

    /// Removes the entry `listed` of `dir` (recursively for a directory),
    /// as it was listed: a directory only if the one at its name is still
    /// that directory, a non-directory never recursively (a user may
    /// swap another user's directory in for it). Returns the entries
    /// removed. `listed` is in this node's terms (its `dev` what `fstat`
    /// says here), unlike the entries of the other steps, whose `dev` is
    /// the run's id of their file system (ADR 014).
    ///
    /// # Errors
    /// The first failing removal.
    fn remove(&self, dir: &Dir, listed: &Entry) -> Result<u64, StepError>;

    /// [`Copier::remove`], calling `removed` with the path (below `dir`,
    /// `listed`'s name first) and type of each entry this call removed:
    /// the engine itemizes those, when it itemizes, so two deliveries of
    /// one deletion that run at once itemize each entry once between them
    /// ([`Dir::remove_listed_each`] does this). A copier that wraps
    /// another should forward this method too, or its deletions are
    /// reported as the default reports them: it lists what `listed` holds
    /// and reports it as it goes, before it calls [`Copier::remove`]
    /// (what the engine did before this method was there).
    ///
    /// # Errors
    /// As [`Copier::remove`].
    fn remove_each(
        &self,
        dir: &Dir,
        listed: &Entry,
        removed: &mut dyn FnMut(&RelPath, Kind),
    ) -> Result<u64, StepError> {
        let top = RelPath::from_bytes(listed.name.as_bytes());
        if listed.kind == Kind::Dir {
            // Best effort: what cannot be listed is not reported.
            let _ = crate::subtree::walk(
                dir,
                crate::subtree::Child::of(listed),
                &top,
                &mut |d, _| d.typed_names(),
                &mut |_, p, c| {
                    removed(p, c.kind);
                    Ok(())
                },
            );
        } else {
            removed(&top, listed.kind);
        }
        self.remove(dir, listed)
    }
}

macro_rules! forward_copier {
    ($($ty:ty),*) => {$(
        impl<T: Copier + ?Sized> Copier for $ty {
            fn name(&self) -> &str { (**self).name() }
            fn create(&self, dir: &Dir, tmp: &Name, src: &Entry, f: &File) -> Result<File, StepError> {
                (**self).create(dir, tmp, src, f)
            }
            fn create_unnamed(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
                (**self).create_unnamed(dir, src, f)
            }
            fn create_in_place(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
                (**self).create_in_place(dir, src, f)
            }
            fn try_clone(&self, s: &File, d: &File, o: &CopyOptions) -> Result<bool, StepError> {
                (**self).try_clone(s, d, o)
            }
            fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
                (**self).copy_data(job, quit)
            }
            fn set_attrs(&self, t: Node<'_>, src: &Entry, from: Option<Node<'_>>, o: &CopyOptions) -> Result<XattrReport, StepError> {
                (**self).set_attrs(t, src, from, o)
            }
            fn make_dir(&self, dir: &Dir, n: &Name, src: &Entry, from: Node<'_>) -> Result<(), StepError> {
                (**self).make_dir(dir, n, src, from)
            }
            fn sync_xattrs(&self, from: Node<'_>, t: Node<'_>, how: crate::xattr::XattrSync) -> io::Result<XattrReport> {
                (**self).sync_xattrs(from, t, how)
            }
            fn set_mode(&self, t: Node<'_>, mode: u32) -> Result<(), StepError> {
                (**self).set_mode(t, mode)
            }
            fn sync_fsattrs(&self, from: Node<'_>, t: Node<'_>, how: crate::fsattr::FsAttrSync) -> io::Result<crate::fsattr::FsAttrReport> {
                (**self).sync_fsattrs(from, t, how)
            }
            fn chunk_size(&self, src: &Entry, default: u64) -> u64 {
                (**self).chunk_size(src, default)
            }
            fn annotate(&self, dir: &Dir, entries: &mut [Entry]) -> io::Result<()> {
                (**self).annotate(dir, entries)
            }
            fn skip(&self, src: &Entry) -> Option<String> {
                (**self).skip(src)
            }
            fn file_id(&self, src: &Entry) -> Option<u128> {
                (**self).file_id(src)
            }
            fn options(&self) -> String {
                (**self).options()
            }
            fn with_options(&self, o: &str) -> io::Result<Option<Arc<dyn Copier>>> {
                (**self).with_options(o)
            }
            fn make_symlink(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
                (**self).make_symlink(dir, n, src)
            }
            fn make_special(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
                (**self).make_special(dir, n, src)
            }
            fn remove(&self, dir: &Dir, e: &Entry) -> Result<u64, StepError> {
                (**self).remove(dir, e)
            }

            fn remove_each(
                &self,
                dir: &Dir,
                e: &Entry,
                removed: &mut dyn FnMut(&RelPath, Kind),
            ) -> Result<u64, StepError> {
                (**self).remove_each(dir, e, removed)
            }
        }
    )*};
}
forward_copier!(Arc<T>, Box<T>, &T);

thread_local! {
    /// Warnings a copier step made on this thread ([`kit::warn`]), taken
    /// by the engine when the step returns.
    static NOTES: std::cell::RefCell<Vec<(Op, String)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reports a warning about the entry the running copier step is for: the
/// engine sends it as an [`crate::Event::Warning`] with the entry's path
/// once the step returns. For [`Copier::create`],
/// [`Copier::create_unnamed`] and [`Copier::make_dir`] (what a backend
/// could not give a new entry: a layout refused); the engine drops what
/// other steps leave.
pub fn warn(op: Op, message: impl Into<String>) {
    NOTES.with(|n| n.borrow_mut().push((op, message.into())));
}

/// The warnings made on this thread ([`warn`]) since the last call: the
/// engine's, after each step (a test's, to see a copier's).
pub fn take_notes() -> Vec<(Op, String)> {
    NOTES.with(|n| std::mem::take(&mut *n.borrow_mut()))
}

/// A registered pair: source fs magic, target fs magic (`None` = any), copier.
type Pair = (Option<u64>, Option<u64>, Arc<dyn Copier>);

/// Picks a copier per (source fs, target fs) pair by `statfs` magic.
#[derive(Clone)]
pub struct Registry {
    pairs: Vec<Pair>,
    default: Option<Arc<dyn Copier>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self
            .pairs
            .iter()
            .map(|(s, d, c)| (s, d, c.name().to_string()))
            .collect();
        f.debug_struct("Registry")
            .field("pairs", &names)
            .field(
                "default",
                &self.default.as_ref().map(|c| c.name().to_string()),
            )
            .finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry {
            pairs: Vec::new(),
            default: None,
        }
    }

    /// Registers `copier` for a source fs magic and a target fs magic;
    /// `None` matches any. Later registrations win over earlier ones.
    pub fn register(
        &mut self,
        src_magic: Option<u64>,
        dst_magic: Option<u64>,
        copier: Arc<dyn Copier>,
    ) -> &mut Self {
        self.pairs.push((src_magic, dst_magic, copier));
        self
    }

    /// Sets the copier used when no pair matches.
    pub fn set_default(&mut self, copier: Arc<dyn Copier>) -> &mut Self {
        self.default = Some(copier);
        self
    }

    /// True when a default copier is set.
    pub fn has_default(&self) -> bool {
        self.default.is_some()
    }

    /// The copier for this pair of file systems.
    pub fn lookup(&self, src_magic: u64, dst_magic: u64) -> Option<Arc<dyn Copier>> {
        self.pairs
            .iter()
            .rev()
            .find(|(s, d, _)| s.is_none_or(|m| m == src_magic) && d.is_none_or(|m| m == dst_magic))
            .map(|(_, _, c)| Arc::clone(c))
            .or_else(|| self.default.clone())
    }

    /// The copier named `name` ([`Copier::name`]): the latest registered
    /// pair's of that name, else the default if it has that name. How an
    /// engine built from a [`crate::RunSpec`] finds the copier its run
    /// chose, so a name stands for one copier in a registry.
    pub fn by_name(&self, name: &str) -> Option<Arc<dyn Copier>> {
        self.pairs
            .iter()
            .rev()
            .map(|(_, _, c)| c)
            .chain(&self.default)
            .find(|c| c.name() == name)
            .map(Arc::clone)
    }

    /// The copier for this pair, as [`Registry::lookup`], and the
    /// registered pair (source, target magic; `None` = any) that chose it:
    /// `None` when it is the default.
    #[allow(clippy::type_complexity)]
    pub fn lookup_pair(
        &self,
        src_magic: u64,
        dst_magic: u64,
    ) -> Option<(Arc<dyn Copier>, Option<(Option<u64>, Option<u64>)>)> {
        self.pairs
            .iter()
            .rev()
            .find(|(s, d, _)| s.is_none_or(|m| m == src_magic) && d.is_none_or(|m| m == dst_magic))
            .map(|(s, d, c)| (Arc::clone(c), Some((*s, *d))))
            .or_else(|| self.default.clone().map(|c| (c, None)))
    }

    /// The pairs (source, target magic; `None` = any) the copier named
    /// `name` is registered for, in registration order; `(None, None)`
    /// for the default.
    pub fn pairs_of(&self, name: &str) -> Vec<(Option<u64>, Option<u64>)> {
        let mut v: Vec<_> = self
            .pairs
            .iter()
            .filter(|(_, _, c)| c.name() == name)
            .map(|(s, d, _)| (*s, *d))
            .collect();
        if self.default.as_ref().is_some_and(|c| c.name() == name) {
            v.push((None, None));
        }
        v
    }

    /// The names of the registered copiers (the default's included), each once.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for c in self.pairs.iter().map(|(_, _, c)| c).chain(&self.default) {
            if !v.iter().any(|n| n == c.name()) {
                v.push(c.name().to_string());
            }
        }
        v
    }

    /// The copier for the file systems holding `src` and `dst`.
    ///
    /// # Errors
    /// When `fstatfs` fails.
    pub fn copier_for(&self, src: &Dir, dst: &Dir) -> io::Result<Option<Arc<dyn Copier>>> {
        Ok(self.lookup(src.fs_magic()?, dst.fs_magic()?))
    }
}

pub mod kit;
pub mod pace;
