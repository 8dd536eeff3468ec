//! psync makes one directory tree identical to another on locally mounted
//! file systems, in parallel. This facade re-exports [`psync_core`] and the
//! copiers, and [`builder`] returns a [`SyncBuilder`] with the generic
//! copier registered as the default and the Lustre copier for Lustre on
//! both sides.
//!
//! ```no_run
//! let (tx, rx) = psync::events(1024);
//! let mut b = psync::builder("/data/src", "/data/dst");
//! b.threads(16).delete(true).itemize(true).events(tx);
//! let sync = b.build()?;
//! drop(b); // the builder holds a sender too
//! let printer = std::thread::spawn(move || {
//!     for ev in rx {
//!         if let Some(line) = ev.itemize_line() {
//!             println!("{line}");
//!         }
//!     }
//! });
//! let report = sync.run()?;
//! drop(sync);
//! printer.join().unwrap();
//! println!("{} created, {} bytes copied", report.stats.created, report.stats.bytes_copied);
//! # Ok::<(), psync::Error>(())
//! ```
#![deny(missing_docs)]

pub use psync_core::*;
pub use psync_generic::GenericCopier;

/// The Lustre copier: layouts kept, chunks of whole stripes, released
/// files skipped ([`lustre::LustreCopier`], [`lustre::LustreOptions`]).
pub use psync_lustre as lustre;

/// The core crate, for paths like `psync::core::plan::plan`.
pub use psync_core as core;

/// The Redis broker: submit runs to `psync worker` processes on many
/// nodes and follow them, or run a worker ([`broker::Worker`]).
pub use psync_broker as broker;

/// A [`SyncBuilder`] for `src` → `dst` with [`GenericCopier`] as the
/// default copier and the Lustre copiers (default options) for a Lustre
/// source ([`lustre::copiers`]). Register another with
/// [`SyncBuilder::register_copier`] (later registrations win).
pub fn builder(src: impl AsRef<std::path::Path>, dst: impl AsRef<std::path::Path>) -> SyncBuilder {
    let mut b = SyncBuilder::new(src, dst);
    b.default_copier(std::sync::Arc::new(GenericCopier::new()));
    for (src, dst, copier) in lustre::copiers(&lustre::LustreOptions::default()) {
        b.register_copier(src, dst, copier);
    }
    b
}

/// The copiers [`builder`] registers: what a process that builds an
/// engine from a [`RunSpec`] made by [`builder`] passes in its
/// [`EngineContext::new`] (the run's Lustre options travel in the spec).
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.set_default(std::sync::Arc::new(GenericCopier::new()));
    for (src, dst, copier) in lustre::copiers(&lustre::LustreOptions::default()) {
        r.register(src, dst, copier);
    }
    r
}

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
