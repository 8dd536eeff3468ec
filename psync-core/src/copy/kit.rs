//! The toolkit for implementing [`Copier`](crate::Copier): what a copier
//! (the generic one in `psync-generic`, a file-system-specific one such
//! as Lustre's) uses besides the types of the trait's own signatures,
//! which are at the crate root ([`Dir`](crate::Dir),
//! [`Node`](crate::Node), [`Entry`](crate::Entry),
//! [`CopyOptions`](crate::CopyOptions), [`DataJob`](crate::DataJob),
//! [`Copied`](crate::Copied), [`StepError`](crate::StepError),
//! [`XattrReport`](crate::XattrReport), [`XattrSync`](crate::XattrSync)).
//!
//! A program that only runs syncs needs none of this. These are psync's
//! own primitives, so that every copier does each step as the engine
//! expects it done:
//! - attributes through a [`Node`](crate::Node) of any kind ([`chown_fd`],
//!   [`chmod_fd`], [`set_times_fd`], [`timestamps`]) and the rules of who
//!   may give what ([`umask`], [`own_groups`]);
//! - xattrs and ACLs ([`sync_xattrs`], [`is_never_copied`]: the names no
//!   copier copies or removes, ADR 012);
//! - the data hash the engine verifies against ([`Hasher`], fed the
//!   source bytes in the order of
//!   [`Copied::segments`](crate::Copied::segments), and
//!   [`hash_segments`] to compute it from a file);
//! - the file system of an open file ([`fs_magic`]);
//! - direct I/O and the shared aligned buffers ([`direct`]);
//! - warnings about the entry a step is for ([`warn`]);
//! - a directory just made, opened only if it is still the one made
//!   ([`open_made_dir`]).

pub use crate::copy::{take_notes, warn};
pub use crate::engine::open_made_dir;
pub use crate::fs::{chmod_fd, chown_fd, fs_magic, own_groups, set_times_fd, timestamps, umask};
pub use crate::verify::{Hasher, hash_segments};
pub use crate::xattr::{is_never_copied, sync_xattrs};

/// Inode flags and project ids (ADR 018).
pub mod fsattr {
    pub use crate::fsattr::*;
}

/// Direct I/O (`O_DIRECT`) and the aligned buffers data passes through:
/// a copier that moves data through user space borrows its buffer here
/// ([`with_buffer`](crate::copy::kit::direct::with_buffer)) rather than
/// allocating one per file, so that a run's memory stays bounded however
/// many threads copy.
pub mod direct {
    pub use crate::direct::{ALIGN, DirectMode, SMALL, align, with_buffer};
}
