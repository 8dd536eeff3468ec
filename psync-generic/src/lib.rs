//! psync-generic: a [`Copier`](psync_core::Copier) for any POSIX file system.
//!
//! Data moves by `copy_file_range` (in-kernel; the file system may turn it
//! into a server-side copy or a reflink) and falls back to `pread`/`pwrite`
//! with a large buffer when the kernel or the pair of file systems does not
//! support it. Attributes are applied in the order that keeps them: owner
//! first (chown clears setuid/setgid), then mode, then times.
//!
//! ```no_run
//! let mut b = psync_core::SyncBuilder::new("/src", "/dst");
//! b.default_copier(std::sync::Arc::new(psync_generic::GenericCopier::new()));
//! let report = b.build()?.run()?;
//! # Ok::<(), psync_core::Error>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod copy;

pub use copy::GenericCopier;
