//! The harness of the end-to-end tests: temporary directories under
//! `target/`, the `tree!` fixture builder, `assert_synced!`, the rsync
//! oracle, and one sync entry point that runs the library or the CLI.
//!
//! Environment:
//! - `CI=true`: a missing prerequisite CI is meant to have (rsync, the
//!   `psync` binary) fails the test instead of skipping it.
//! - `PSYNC_TEST_FRONTS=lib` (or `cli`, `scatter`, or a comma-separated
//!   list): run the multi-configuration tests through those frontends
//!   only. Default: all. `scatter` is the library with the run's tasks
//!   scattered over several engines (`psync::Scatter`).
//! - `PSYNC_SCATTER_SEED=0x…`: the seed of the scatter runs' draws (each
//!   run prints the one it used). Default: a new one per run.
//! - `PSYNC_SCATTER_REDELIVER=0.5`: the fraction of the scatter runs'
//!   tasks delivered twice (`Scatter::redeliver`). Default: 0.3.
//!   `PSYNC_SCATTER_LOSSY=1`: some of those start with a lossy delivery
//!   (a dead worker's, whose counts and events are lost: exact counters
//!   and reports need it off, the default; `scatter.rs` tests it).
//! - `PSYNC_TEST_NO_MOUNTS=1`: skip the tests that loop-mount real file
//!   systems (they need root; see `mounts`), also under CI.

#![allow(dead_code)] // not every test module uses every helper

pub mod compare;
#[macro_use]
pub mod faultfs;
pub mod mounts;
pub mod rsync;
pub mod run;
pub mod tree;
pub mod user;

pub use compare::{assert_no_temps, listing, stat_snapshot};
pub use rsync::{
    require_rsync, rsync_itemize, rsync_oracle, rsync_oracle_full_with, rsync_oracle_without_delete,
};
pub use run::{Config, Front, Opts, each_config};

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Builds a fixture under a root directory. Each line is
/// `PATH => KIND(ARGS) ATTR(ARGS)...`; `PATH` is anything that is
/// `AsRef<[u8]>` (so `b"bad\xff"` names work), missing parents are created.
///
/// Kinds (see [`tree`]): `file("text")`, `random(bytes)`, `sparse(bytes)`,
/// `dir()`, `symlink("target")`, `hardlink("other/path")`, `fifo()`,
/// `socket()`, `chardev(major, minor)`, `keep()` (only change the
/// attributes of what is there), `absent()` (remove it). Attributes:
/// `mode(0o640)`, `mtime(secs, nanos)`, `owner(uid, gid)`,
/// `xattr("user.k", value)`, `acl("u:1234:r-x")`. An entry of another type
/// at `PATH` is replaced.
///
/// ```ignore
/// tree!(t.src(), {
///     "a/f" => file("hello") mode(0o600) mtime(1_600_000_000, 5),
///     "d"   => dir() mode(0o555),
///     "l"   => symlink("a/f"),
///     "p"   => fifo(),
/// });
/// ```
macro_rules! tree {
    ($root:expr, { $($path:expr => $kind:ident ( $($arg:expr),* $(,)? ) $( $attr:ident ( $($aarg:expr),* $(,)? ) )* ),* $(,)? }) => {
        $crate::util::tree::build(
            ::std::convert::AsRef::<::std::path::Path>::as_ref(&$root),
            vec![$( $crate::util::tree::Node::at($path, $crate::util::tree::$kind($($arg),*)) $( .$attr($($aarg),*) )* ),*],
        )
    };
}

/// Asserts that two trees are identical as `rsync -aHAX` means it: the
/// same entries with the same type, size, content, permissions, owner,
/// group, mtime (to the nanosecond, also for directories and symlinks),
/// symlink target, device number, extended attributes (ACLs included) and
/// hard link groups; the roots' attributes too. On a mismatch, panics with
/// the differences and both listings. (Stricter than the rsync oracle:
/// rsync 3.2.7 ignores sub-second mtime differences between local files.)
///
/// `assert_synced!(src, dst, except: ["extra", "d/x"])` ignores those
/// target paths (and everything below them).
macro_rules! assert_synced {
    ($src:expr, $dst:expr $(,)?) => {
        $crate::util::compare::assert_synced_impl(
            ::std::convert::AsRef::<::std::path::Path>::as_ref(&$src),
            ::std::convert::AsRef::<::std::path::Path>::as_ref(&$dst),
            &[],
        )
    };
    ($src:expr, $dst:expr, except: [$($ex:expr),* $(,)?] $(,)?) => {
        $crate::util::compare::assert_synced_impl(
            ::std::convert::AsRef::<::std::path::Path>::as_ref(&$src),
            ::std::convert::AsRef::<::std::path::Path>::as_ref(&$dst),
            &[$(::std::convert::AsRef::<[u8]>::as_ref(&$ex)),*],
        )
    };
}

/// The directory all test trees live in: `target/test-tmp/`.
pub fn test_tmp_base() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`; its parent is the target
    // directory, wherever CARGO_TARGET_DIR put it.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .to_path_buf();
    target.join("test-tmp")
}

/// A scratch directory under `target/test-tmp/` with `src/` (created) and
/// `dst` (not created: the first sync creates it, as rsync does). Removed on
/// drop, except when the test is failing: then it is kept and its path
/// printed, to look at what went wrong.
#[derive(Debug)]
pub struct TestDir {
    root: PathBuf,
}

impl TestDir {
    /// A fresh directory named after the test.
    pub fn new(name: &str) -> TestDir {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let root = test_tmp_base().join(format!("{clean}.{}.{n}", std::process::id()));
        if root.symlink_metadata().is_ok() {
            remove_tree(&root);
        }
        std::fs::create_dir_all(root.join("src")).expect("create test dir");
        TestDir { root }
    }

    /// The scratch directory itself.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The source tree (exists).
    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }

    /// The target tree (absent until created by a sync or a fixture).
    pub fn dst(&self) -> PathBuf {
        self.root.join("dst")
    }

    /// A path inside the scratch directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.root.join(rel)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping {}", self.root.display());
        } else {
            remove_tree(&self.root);
        }
    }
}

/// Removes a tree even where a fixture left directories without write or
/// search permission (which stops a non-root `remove_dir_all`).
pub fn remove_tree(root: &Path) {
    if std::fs::remove_dir_all(root).is_ok() || root.symlink_metadata().is_err() {
        return;
    }
    open_up(root);
    if let Err(e) = std::fs::remove_dir_all(root) {
        eprintln!("warning: cannot remove {}: {e}", root.display());
    }
}

fn open_up(dir: &Path) {
    let Ok(meta) = dir.symlink_metadata() else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            open_up(&e.path());
        }
    }
}

/// A path from raw bytes.
pub fn bpath(b: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(b))
}

/// True when this process runs as root (uid 0): permissions do not stop it.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// True when running under CI (`CI=true`), where a missing prerequisite
/// that CI is meant to have fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the rest of a test for a missing prerequisite: prints why and
/// returns from the test function. Under `CI=true`, which is meant to have
/// every prerequisite (root, the built binary, mounts, FUSE), it fails
/// instead.
macro_rules! skip {
    ($($fmt:tt)*) => {{
        assert!(
            !$crate::util::in_ci(),
            "CI=true but {}: {}",
            module_path!(),
            format_args!($($fmt)*)
        );
        eprintln!("SKIPPED {}: {}", module_path!(), format_args!($($fmt)*));
        return;
    }};
}

/// Reads a whole file.
pub fn read(p: impl AsRef<Path>) -> Vec<u8> {
    let p = p.as_ref();
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// lstat mode bits (permissions only) of a path.
pub fn mode_of(p: impl AsRef<Path>) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let p = p.as_ref();
    p.symlink_metadata()
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .mode()
        & 0o7777
}

/// Copies a tree exactly (`cp -a`: modes, owners, ns times, symlinks,
/// specials), for "run two tools on identical starting targets".
pub fn copy_tree(from: &Path, to: &Path) {
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .output()
        .expect("run cp -a");
    assert!(
        out.status.success(),
        "cp -a {} {}: {}",
        from.display(),
        to.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Removes whatever is at `p`: a tree, a file, a symlink (not followed).
pub fn remove_tree_or_file(p: &Path) {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => remove_tree(p),
        Ok(_) => std::fs::remove_file(p).unwrap_or_else(|e| panic!("rm {}: {e}", p.display())),
        Err(_) => {}
    }
}

/// `root/rel` for a raw relative path (`root` itself for `""`).
pub fn join_rel(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(bpath(rel))
    }
}

/// `path` with a trailing slash, as rsync wants for "the contents of".
pub fn slash(p: &Path) -> std::ffi::OsString {
    let mut s = p.as_os_str().to_os_string();
    s.push("/");
    s
}

// After the `tree!` macro above, which it uses.
pub mod attack;
