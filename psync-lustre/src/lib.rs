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
//! use psync_lustre::LustreOptions;
//! let mut b = psync_core::SyncBuilder::new("/lustre/a", "/lustre/b");
//! b.default_copier(Arc::new(psync_generic::GenericCopier::new()));
//! for (src, dst, copier) in psync_lustre::copiers(&LustreOptions::default()) {
//!     b.register_copier(src, dst, copier);
//! }
//! let report = b.build()?.run()?;
//! # Ok::<(), psync_core::Error>(())
//! ```
#![deny(missing_docs)]

mod copier;
pub mod double;
pub mod layout;
mod options;
pub mod sys;

pub use copier::{
    Kept, LL_SUPER_MAGIC, LustreCopier, NAME, SOURCE_NAME, aligned_chunk, differences, stripe_unit,
};

/// A registered pair: source fs magic, target fs magic (`None`: any), copier.
pub type Pair = (
    Option<u64>,
    Option<u64>,
    std::sync::Arc<dyn psync_core::Copier>,
);

/// The Lustre copiers to register, in this order (a later registration
/// wins): [`LustreCopier::source_only`] for Lustre to any other file
/// system ([`SOURCE_NAME`]: no layouts, but released files skipped and
/// chunks of whole stripes), then [`LustreCopier`] for Lustre to Lustre
/// ([`NAME`]).
pub fn copiers(opts: &LustreOptions) -> [Pair; 2] {
    let lustre = Some(LL_SUPER_MAGIC);
    [
        (
            lustre,
            None,
            std::sync::Arc::new(LustreCopier::new(opts.clone()).source_only()),
        ),
        (
            lustre,
            lustre,
            std::sync::Arc::new(LustreCopier::new(opts.clone())),
        ),
    ]
}
pub use layout::{
    Component, CompositeLayout, ForeignLayout, Layout, LayoutError, OstId, OstObject, PlainLayout,
    PoolName,
};
pub use options::{LayoutPolicy, LustreOptions};
pub use sys::{EntryInfo, Fid, LustreSys, RealLustre};
