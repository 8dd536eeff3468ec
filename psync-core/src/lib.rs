//! psync-core: the model, the four traits, the planner, the engine and the
//! local transport of psync, which makes one directory tree identical to
//! another on locally mounted file systems, in parallel.
//!
//! - [`Walker`] lists one directory with `lstat`-level metadata.
//! - [`Planner`] decides, per directory, what to do (rsync's rules).
//! - [`Copier`] carries out file actions on a pair of file systems
//!   (what an implementation uses besides the trait's types: [`copy::kit`]).
//! - [`Transport`] moves tasks to executors ([`Local`]: threads with work stealing).
//!
//! Most programs use the `psync` facade crate, which registers the generic
//! copier. With the core alone:
//!
//! ```no_run
//! use std::sync::Arc;
//! # fn run(copier: Arc<dyn psync_core::Copier>) -> Result<(), psync_core::Error> {
//! let (tx, rx) = crossbeam_channel::bounded(1024);
//! let mut b = psync_core::SyncBuilder::new("/data/src", "/data/dst");
//! b.threads(8).delete(true).itemize(true).events(tx).default_copier(copier);
//! let sync = b.build()?;
//! let printer = std::thread::spawn(move || {
//!     for ev in rx {
//!         if let Some(line) = ev.itemize_line() { println!("{line}") }
//!     }
//! });
//! let report = sync.run()?;
//! drop(sync);
//! # drop(b);
//! printer.join().unwrap();
//! assert!(report.success());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod backend;
mod builder;

pub mod copy;
mod direct;
mod durable;
mod engine;
pub mod entry;
mod error;
pub mod event;
pub mod filter;
mod fs;
mod fsattr;
mod fsid;
pub mod itemize;

pub mod plan;
pub mod probe;
mod spec;
mod stop;
mod subtree;
pub mod task;
pub mod transport;
mod validate;
mod verify;
mod walk;
mod xattr;
mod xattrat;

pub use backend::Backend;
pub(crate) use builder::random_u64;
pub use builder::{
    CHUNK_ALIGN, MAX_CHUNK_SIZE, MAX_RETRIES, MAX_SECS, MAX_STOP_GRACE, MAX_THREADS,
    MIN_CHUNK_SIZE, Report, SyncBuilder, Syncer, default_threads, default_threads_for,
};
pub use copy::{
    AttrMode, Copied, Copier, CopyOptions, DataJob, Reflink, Registry, StepError, StepExt, Strategy,
};
pub use durable::Flush;
pub use engine::{DryLinks, Engine, TEMP_PREFIX};
pub use entry::{Entry, FsData, Kind, Name, RelPath, Time};
pub use error::{Error, Op, ResultExt, is_unsupported};
pub use event::{Counts, Differences, Event, Side, Snapshot, Stats};
pub use fs::Dir;

/// The ends of an event channel ([`events`] makes one; the sender goes to
/// [`SyncBuilder::events`]): re-exported so that a program needs no other
/// crate to receive a run's events.
pub use crossbeam_channel::{Receiver, Sender};

/// A channel for a run's events, holding up to `capacity` events (a full
/// channel makes the run wait for the receiver: size it, or read it).
pub fn events(capacity: usize) -> (Sender<Event>, Receiver<Event>) {
    crossbeam_channel::bounded(capacity)
}
pub use itemize::Change;
pub use plan::{Action, PlanOptions, Planner, Preserve, RsyncPlanner};
pub use spec::{Allowance, EngineContext, RunSpec, SPEC_ENCODING_VERSION, SpecError};
pub use stop::{StopReason, Stopped};
pub use task::{Task, TaskId};
pub use transport::{
    DeferTwice, Local, Outcome, Scatter, TaskContext, TaskReport, TaskRunner, Transport,
};
pub use validate::{Roots, validate};
pub use verify::{Hasher, hash_segments};
pub use walk::{FsWalker, Listed, Listing, Names, Walker};
pub use xattr::{Node, XattrReport, XattrSync};

/// A temporary directory for unit tests, under the workspace's `target/`
/// (not `/tmp`), removed on drop.
/// A unit test that cannot run here says why; under `CI=true`, where
/// every prerequisite is meant to be present, it fails instead.
#[cfg(test)]
pub(crate) fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "prerequisite missing under CI: {reason}"
    );
    eprintln!("skipping: {reason}");
}

#[cfg(test)]
pub(crate) fn test_dir() -> tempfile::TempDir {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/unit-tmp");
    std::fs::create_dir_all(&base).expect("create target/unit-tmp");
    tempfile::tempdir_in(base).expect("create a temporary directory")
}
