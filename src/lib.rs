//! psync makes one directory tree identical to another on locally mounted
//! file systems, in parallel. This facade re-exports [`psync_core`] and the
//! copiers, and [`builder`] returns a [`SyncBuilder`] with the generic
//! copier already registered as the default.
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

/// The core crate, for paths like `psync::core::plan::plan`.
pub use psync_core as core;

/// The Redis broker: submit runs to `psync worker` processes on many
/// nodes and follow them, or run a worker ([`broker::Worker`]).
pub use psync_broker as broker;

/// A [`SyncBuilder`] for `src` → `dst` with [`GenericCopier`] as the default copier.
pub fn builder(src: impl AsRef<std::path::Path>, dst: impl AsRef<std::path::Path>) -> SyncBuilder {
    let mut b = SyncBuilder::new(src, dst);
    b.default_copier(std::sync::Arc::new(GenericCopier::new()));
    b
}

/// The copiers [`builder`] registers ([`GenericCopier`] as the default):
/// what a process that builds an engine from a [`RunSpec`] made by
/// [`builder`] passes in its [`EngineContext::new`].
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.set_default(std::sync::Arc::new(GenericCopier::new()));
    r
}

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
