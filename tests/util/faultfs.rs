//! A fault-injecting FUSE file system for the tests: `tests/faultfs/faultfs.c`,
//! a pass-through to a backing directory that can corrupt what it stores,
//! or fail reads, writes, fsync or stat with EIO (see the C file for the
//! exact rules). This kernel has no device-mapper; `/dev/fuse` works.
//!
//! The program is compiled once per test process with `cc` against
//! libfuse3 (`libfuse3-dev`, which `scripts/test` installs) into
//! `target/faultfs/`. A mount lives as long as its [`FaultFs`] guard: on
//! drop it is unmounted (lazily if busy) and the daemon reaped, also when
//! the test panics.
//!
//! Prerequisites: root, `/dev/fuse`, `cc`, `pkg-config` and libfuse3's
//! headers. Without them [`mount`] says why; `require_faultfs!` then
//! skips the test with that reason, or under `CI=true` fails it.

use super::in_ci;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One kind of fault and the fnmatch patterns (`:`-separated) of the
/// paths (inside the mount, `/dir/file`; `*` matches any) it hits.
#[derive(Debug, Clone, Copy)]
pub enum Fault<'a> {
    /// Writes store the data with its first byte flipped, and succeed.
    CorruptWrite(&'a str),
    /// Reads fail with EIO.
    EioRead(&'a str),
    /// Writes fail with EIO.
    EioWrite(&'a str),
    /// fsync fails with EIO.
    EioFsync(&'a str),
    /// getattr, and listing a directory, fail with EIO.
    EioStat(&'a str),
    /// Reads never return.
    HangRead(&'a str),
}

impl Fault<'_> {
    fn env(self) -> (&'static str, String) {
        let (var, pat) = match self {
            Fault::CorruptWrite(p) => ("FAULTFS_CORRUPT_WRITE", p),
            Fault::EioRead(p) => ("FAULTFS_EIO_READ", p),
            Fault::EioWrite(p) => ("FAULTFS_EIO_WRITE", p),
            Fault::EioFsync(p) => ("FAULTFS_EIO_FSYNC", p),
            Fault::EioStat(p) => ("FAULTFS_EIO_STAT", p),
            Fault::HangRead(p) => ("FAULTFS_HANG_READ", p),
        };
        (var, pat.to_string())
    }
}

/// A mounted faultfs; unmounted on drop.
#[derive(Debug)]
pub struct FaultFs {
    mnt: PathBuf,
    daemon: Child,
}

/// FUSE's `statfs` magic.
const FUSE_MAGIC: u64 = 0x6573_5546;

/// Mounts faultfs at `mnt` (created) over `backing` (created) with `faults`.
///
/// # Errors
/// Why faultfs cannot be used here (a missing prerequisite, a failed build
/// or mount).
pub fn mount(backing: &Path, mnt: &Path, faults: &[Fault<'_>]) -> Result<FaultFs, String> {
    mount_with(backing, mnt, faults, &[])
}

/// [`mount`] with more FUSE options (`-o` each).
///
/// # Errors
/// As [`mount`].
pub fn mount_with(
    backing: &Path,
    mnt: &Path,
    faults: &[Fault<'_>],
    options: &[&str],
) -> Result<FaultFs, String> {
    if !super::is_root() {
        return Err("faultfs needs root (to mount)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Err("no /dev/fuse".into());
    }
    let bin = binary()?;
    for d in [backing, mnt] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let mut cmd = Command::new(bin);
    cmd.arg(backing)
        .arg(mnt)
        .args(["-f", "-o", "max_threads=16"])
        // `coherent`: no page cache (FAULTFS_COHERENT, see faultfs.c).
        .args(
            options
                .iter()
                .filter(|o| **o != "coherent")
                .flat_map(|o| ["-o", o]),
        )
        .envs(
            options
                .contains(&"coherent")
                .then_some(("FAULTFS_COHERENT", "1")),
        )
        .envs(faults.iter().map(|f| f.env()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let daemon = cmd.spawn().map_err(|e| format!("start {cmd:?}: {e}"))?;
    let mut fs = FaultFs {
        mnt: mnt.to_path_buf(),
        daemon,
    };
    fs.wait_mounted()?;
    Ok(fs)
}

impl FaultFs {
    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mnt
    }

    /// Waits until the mount point is a FUSE mount (or the daemon died).
    fn wait_mounted(&mut self) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(status)) = self.daemon.try_wait() {
                let mut why = String::new();
                if let Some(mut e) = self.daemon.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut why);
                }
                return Err(format!("faultfs exited ({status}): {}", why.trim()));
            }
            if rustix::fs::statfs(&self.mnt).is_ok_and(|s| s.f_type as u64 == FUSE_MAGIC) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("faultfs did not mount within 20 s".into())
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        super::mounts::unmount(&self.mnt);
        // Unmounted, the daemon exits by itself; a lazy unmount may keep
        // it serving a busy file: then it is killed.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.daemon.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The faultfs program, compiled once per process into `target/faultfs/`.
fn binary() -> Result<&'static Path, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(build).as_deref().map_err(Clone::clone)
}

fn build() -> Result<PathBuf, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/faultfs/faultfs.c");
    let dir = super::test_tmp_base()
        .parent()
        .expect("target dir")
        .join("faultfs");
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    // Built under a name of this process's, then renamed over the last
    // build: a test process running it meanwhile keeps its own copy.
    let tmp = dir.join(format!("faultfs.tmp.{}", std::process::id()));
    let bin = dir.join("faultfs");
    let flags = pkg_config_fuse3()?;
    let out = Command::new("cc")
        .args(["-O2", "-Wall", "-o"])
        .arg(&tmp)
        .arg(&src)
        .args(flags.split_whitespace())
        .output()
        .map_err(|e| format!("cc: {e} (install a C compiler)"))?;
    if !out.status.success() {
        return Err(format!(
            "cc {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &bin).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(bin)
}

fn pkg_config_fuse3() -> Result<String, String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "fuse3"])
        .output()
        .map_err(|e| format!("pkg-config: {e} (install pkg-config and libfuse3-dev)"))?;
    if !out.status.success() {
        return Err("pkg-config finds no fuse3 (install libfuse3-dev)".into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Under `CI=true` a missing prerequisite is a failure, not a skip.
pub fn must_have() -> bool {
    in_ci()
}

/// Mounts faultfs or leaves the test: skipped with the reason, or under
/// `CI=true` failed.
macro_rules! require_faultfs {
    ($backing:expr, $mnt:expr, $faults:expr) => {
        require_faultfs!($backing, $mnt, $faults, [])
    };
    ($backing:expr, $mnt:expr, $faults:expr, $options:expr) => {
        match $crate::util::faultfs::mount_with(&$backing, &$mnt, &$faults, &$options) {
            Ok(fs) => fs,
            Err(why) if $crate::util::faultfs::must_have() => {
                panic!("faultfs is required under CI=true: {why}")
            }
            Err(why) => skip!("faultfs unavailable: {why}"),
        }
    };
}
