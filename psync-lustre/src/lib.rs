//! psync-lustre: psync's Lustre support.
//!
//! - [`layout`]: a file's striping as Lustre reports it in the
//!   `lustre.lov` xattr, decoded into types and encoded back;
//! - [`LustreCopier`]: the generic copier, with each new file given its
//!   source's layout before any data (`O_LOV_DELAY_CREATE`, then
//!   `fsetxattr("lustre.lov")`, read back and compared), each new
//!   directory its default layout, chunks of whole stripes, FIDs kept
//!   with entries and HSM-released files skipped unless asked
//!   ([`LustreOptions`]);
//! - [`sys`]: the few Lustre calls it makes, behind a trait, and
//!   [`double`], a test double of them for any file system.
//!
//! ```no_run
//! use std::sync::Arc;
//! use psync_lustre::{LL_SUPER_MAGIC, LustreCopier, LustreOptions};
//! let mut b = psync_core::SyncBuilder::new("/lustre/a", "/lustre/b");
//! b.default_copier(Arc::new(psync_generic::GenericCopier::new()));
//! let lustre = Arc::new(LustreCopier::new(LustreOptions::default()));
//! b.register_copier(Some(LL_SUPER_MAGIC), Some(LL_SUPER_MAGIC), lustre);
//! let report = b.build()?.run()?;
//! # Ok::<(), psync_core::Error>(())
//! ```
#![deny(missing_docs)]

mod copier;
pub mod double;
pub mod layout;
mod options;
pub mod sys;

pub use copier::{Kept, LL_SUPER_MAGIC, LustreCopier, aligned_chunk, differences, stripe_unit};
pub use layout::{
    Component, CompositeLayout, ForeignLayout, Layout, LayoutError, OstId, OstObject, PlainLayout,
    PoolName,
};
pub use options::{LayoutPolicy, LustreOptions};
pub use sys::{EntryInfo, Fid, LustreSys, RealLustre};
