//! Real file systems for the fidelity tests: ext4, xfs (with reflink) and
//! btrfs images loop-mounted under `target/test-tmp/`, and a tmpfs.
//!
//! One set is shared by the tests that run at the same time
//! ([`shared`]); it is unmounted and its images removed when the last
//! test lets go of it, also when a test panics (a [`Drop`] guard per
//! mount, with `umount -l` when a plain unmount is refused). Sets left
//! behind by a killed test process are cleaned up by the next one.
//!
//! Prerequisites: root, `mkfs.ext4`, `mkfs.xfs`, `mkfs.btrfs`, loop
//! devices and the kernel's file systems. Without them the tests print
//! why and skip; under `CI=true` that is a failure (CI is meant to run
//! them as root), unless `PSYNC_TEST_NO_MOUNTS=1` opts out on purpose.

use super::{in_ci, is_root, remove_tree, test_tmp_base};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// A kind of file system the harness makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fs {
    /// ext4 with 4 KiB blocks and 256-byte inodes (nanosecond times).
    Ext4,
    /// ext4 with 128-byte inodes: whole-second timestamps, no room for
    /// xattrs in the inode (an old file system's layout).
    Ext4Coarse,
    /// xfs with reflink (`mkfs.xfs -m reflink=1`).
    Xfs,
    /// btrfs (reflink always).
    Btrfs,
    /// tmpfs (no block device; holes, xattrs and ACLs in memory).
    Tmpfs,
}

impl Fs {
    /// Every kind, in the order they are made.
    pub const ALL: [Fs; 5] = [Fs::Ext4, Fs::Ext4Coarse, Fs::Xfs, Fs::Btrfs, Fs::Tmpfs];

    /// Short name for messages and directory names.
    pub fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Ext4Coarse => "ext4-128",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
            Fs::Tmpfs => "tmpfs",
        }
    }

    /// True when the file system clones file data (FICLONE).
    pub fn reflinks(self) -> bool {
        matches!(self, Fs::Xfs | Fs::Btrfs)
    }

    /// The mkfs command and its options (the image path follows), or
    /// `None` for tmpfs. Block and inode sizes are explicit: for images
    /// under 512 MiB mke2fs would otherwise pick its "small" profile
    /// (1 KiB blocks, which caps an xattr value near 1 KiB).
    fn mkfs(self) -> Option<(&'static str, &'static [&'static str])> {
        match self {
            Fs::Ext4 => Some(("mkfs.ext4", &["-q", "-F", "-b", "4096", "-I", "256"])),
            Fs::Ext4Coarse => Some(("mkfs.ext4", &["-q", "-F", "-b", "4096", "-I", "128"])),
            Fs::Xfs => Some(("mkfs.xfs", &["-q", "-f", "-m", "reflink=1"])),
            Fs::Btrfs => Some(("mkfs.btrfs", &["-q", "-f"])),
            Fs::Tmpfs => None,
        }
    }

    /// Size of the (sparse) image: mkfs.xfs wants at least 300 MiB, btrfs
    /// at least 114 MiB, and its duplicated metadata takes a good part.
    fn size_mib(self) -> u64 {
        match self {
            Fs::Ext4 | Fs::Btrfs | Fs::Tmpfs => 256,
            Fs::Ext4Coarse => 128,
            Fs::Xfs => 300,
        }
    }
}

impl std::fmt::Display for Fs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One mounted file system; unmounted (lazily if need be) and its image
/// and mount point removed on drop.
#[derive(Debug)]
pub struct Mount {
    fs: Fs,
    dir: PathBuf,
    image: Option<PathBuf>,
    mounted: bool,
}

impl Mount {
    /// Makes and mounts `fs` at `base/NAME`, its image at `base/NAME.img`.
    fn create(fs: Fs, base: &Path) -> Result<Mount, String> {
        let dir = base.join(fs.name());
        std::fs::create_dir(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        // From here on, dropping `m` undoes whatever was done.
        let mut m = Mount {
            fs,
            dir,
            image: None,
            mounted: false,
        };
        let mut mount = Command::new("mount");
        match fs.mkfs() {
            Some((tool, opts)) => {
                let image = base.join(format!("{}.img", fs.name()));
                m.image = Some(image.clone());
                let f = std::fs::File::create(&image)
                    .map_err(|e| format!("create {}: {e}", image.display()))?;
                f.set_len(fs.size_mib() << 20)
                    .map_err(|e| format!("truncate {}: {e}", image.display()))?;
                run(Command::new(tool).args(opts).arg(&image))?;
                mount.arg("-o").arg("loop").arg(&image);
            }
            None => {
                mount
                    .args(["-t", "tmpfs", "-o"])
                    .arg(format!("size={}M,mode=0755", fs.size_mib()))
                    .arg("psync-test");
            }
        }
        run(mount.arg(&m.dir))?;
        m.mounted = true;
        Ok(m)
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted && !unmount(&self.dir) {
            // Leave the image: removing it under a live mount frees nothing.
            return;
        }
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Unmounts `dir`; when that is refused (busy), detaches it lazily so the
/// kernel finishes once the last user is gone. False if both failed.
pub fn unmount(dir: &Path) -> bool {
    if run(Command::new("umount").arg(dir)).is_ok() {
        return true;
    }
    match run(Command::new("umount").arg("-l").arg(dir)) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("warning: cannot unmount {}: {e}", dir.display());
            false
        }
    }
}

/// Runs a command; its stderr is the error.
fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown}: not installed"),
        _ => format!("{shown}: {e}"),
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{shown}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A set of mounted file systems, one of each [`Fs`] that could be made.
#[derive(Debug)]
pub struct Mounts {
    base: PathBuf,
    mounts: Vec<(Fs, Result<Mount, String>)>,
}

const BASE_PREFIX: &str = "fidelity-fs.";

impl Mounts {
    /// Makes and mounts every kind under a fresh directory of
    /// `target/test-tmp/`. A kind that fails is recorded with the reason.
    fn create() -> Mounts {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        remove_stale_sets();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let base = test_tmp_base().join(format!("{BASE_PREFIX}{}.{n}", std::process::id()));
        let made = std::fs::create_dir_all(&base);
        let mounts = Fs::ALL
            .iter()
            .map(|&fs| {
                let m = match &made {
                    Ok(()) => Mount::create(fs, &base),
                    Err(e) => Err(format!("mkdir {}: {e}", base.display())),
                };
                (fs, m)
            })
            .collect();
        Mounts { base, mounts }
    }

    /// The mount point of `fs`, or why it could not be made.
    pub fn dir(&self, fs: Fs) -> Result<&Path, &str> {
        match self.mounts.iter().find(|(k, _)| *k == fs) {
            Some((_, Ok(m))) => Ok(m.dir()),
            Some((_, Err(why))) => Err(why),
            None => Err("not made"),
        }
    }

    /// A scratch pair for one test: `src/` (created) on `from`, `dst`
    /// (absent, its parent created) on `to`, both removed on drop.
    pub fn scratch(self: &Arc<Self>, name: &str, from: Fs, to: Fs) -> Result<Scratch, String> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let leaf = format!("{name}.{n}");
        let src_top = self
            .dir(from)
            .map_err(|e| format!("{from}: {e}"))?
            .join(&leaf);
        let dst_top = self.dir(to).map_err(|e| format!("{to}: {e}"))?.join(&leaf);
        let s = Scratch {
            src: src_top.join("src"),
            dst: dst_top.join("dst"),
            tops: vec![src_top, dst_top],
            _mounts: Arc::clone(self),
        };
        std::fs::create_dir_all(&s.src).map_err(|e| format!("mkdir {}: {e}", s.src.display()))?;
        std::fs::create_dir_all(&s.tops[1])
            .map_err(|e| format!("mkdir {}: {e}", s.tops[1].display()))?;
        Ok(s)
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        self.mounts.clear(); // unmounts, in order
        if std::fs::remove_dir(&self.base).is_err() && self.base.exists() {
            eprintln!(
                "warning: {} is not empty after unmounting",
                self.base.display()
            );
        }
    }
}

/// Unmounts and removes the sets of test processes that no longer run
/// (killed before their guards ran).
fn remove_stale_sets() {
    let Ok(rd) = std::fs::read_dir(test_tmp_base()) else {
        return;
    };
    let mounted = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(BASE_PREFIX)
            .and_then(|r| r.split('.').next())
        else {
            continue;
        };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        let base = e.path();
        for line in mounted.lines() {
            let Some(point) = line.split(' ').nth(1) else {
                continue;
            };
            if Path::new(point).starts_with(&base) {
                unmount(Path::new(point));
            }
        }
        remove_tree(&base);
    }
}

/// The set of file systems the tests running now share: made by the first
/// that asks, unmounted when the last drops its `Arc`.
///
/// # Errors
/// Why the tests cannot run here at all (not root, opted out).
pub fn shared() -> Result<Arc<Mounts>, String> {
    static SHARED: Mutex<Weak<Mounts>> = Mutex::new(Weak::new());
    if std::env::var_os("PSYNC_TEST_NO_MOUNTS").is_some_and(|v| !v.is_empty() && v != "0") {
        return Err("PSYNC_TEST_NO_MOUNTS is set".into());
    }
    if !is_root() {
        return Err("not root: loop mounts need root".into());
    }
    let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(m) = slot.upgrade() {
        return Ok(m);
    }
    let m = Arc::new(Mounts::create());
    *slot = Arc::downgrade(&m);
    Ok(m)
}

/// True when a missing prerequisite must fail the test instead of
/// skipping it: under CI, unless mounts were turned off on purpose.
pub fn must_have_mounts() -> bool {
    in_ci() && std::env::var_os("PSYNC_TEST_NO_MOUNTS").is_none_or(|v| v.is_empty() || v == "0")
}

/// A source and a target directory on (possibly different) mounted file
/// systems. Holds the set alive; removes both trees on drop.
#[derive(Debug)]
pub struct Scratch {
    src: PathBuf,
    dst: PathBuf,
    tops: Vec<PathBuf>,
    _mounts: Arc<Mounts>,
}

impl Scratch {
    /// The source tree (exists).
    pub fn src(&self) -> PathBuf {
        self.src.clone()
    }

    /// The target tree (absent until the first sync).
    pub fn dst(&self) -> PathBuf {
        self.dst.clone()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for top in &self.tops {
            remove_tree(top);
        }
    }
}

/// A file system mounted for one test: a small tmpfs, a small ext4
/// image, or a read-only bind mount. Unmounted on drop (lazily when a
/// plain unmount is refused), also when the test panics; an image is
/// removed after its unmount. The mount point is the caller's.
#[derive(Debug)]
pub struct TestMount {
    dir: PathBuf,
    image: Option<PathBuf>,
}

impl TestMount {
    /// A tmpfs of `size` (`mount -o size=`, e.g. `2m`) at `dir`.
    pub fn tmpfs(dir: &Path, size: &str) -> Result<TestMount, String> {
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755"))
            .arg("psync-test")
            .arg(dir))?;
        Ok(TestMount {
            dir: dir.to_path_buf(),
            image: None,
        })
    }

    /// An ext4 of `mib` MiB (4 KiB blocks, no blocks reserved for root)
    /// in a sparse image at `image`, loop-mounted at `dir`.
    pub fn ext4(dir: &Path, image: &Path, mib: u64) -> Result<TestMount, String> {
        let f =
            std::fs::File::create(image).map_err(|e| format!("create {}: {e}", image.display()))?;
        f.set_len(mib << 20)
            .map_err(|e| format!("truncate {}: {e}", image.display()))?;
        let made = run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-b", "4096", "-I", "256", "-m", "0"])
            .arg(image))
        .and_then(|()| {
            run(Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(image)
                .arg(dir))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(image);
            return Err(e);
        }
        Ok(TestMount {
            dir: dir.to_path_buf(),
            image: Some(image.to_path_buf()),
        })
    }

    /// `of` bind-mounted at `at`, then made read-only there (`of` itself
    /// stays writable).
    pub fn read_only_bind(of: &Path, at: &Path) -> Result<TestMount, String> {
        run(Command::new("mount").arg("--bind").arg(of).arg(at))?;
        // From here dropping `m` unmounts, whatever fails next.
        let m = TestMount {
            dir: at.to_path_buf(),
            image: None,
        };
        run(Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(at))?;
        Ok(m)
    }

    /// `mount -o remount,OPTS` (e.g. `size=64m` to grow a tmpfs).
    pub fn remount(&self, opts: &str) -> Result<(), String> {
        run(Command::new("mount")
            .arg("-o")
            .arg(format!("remount,{opts}"))
            .arg(&self.dir))
    }

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        if unmount(&self.dir)
            && let Some(image) = &self.image
        {
            let _ = std::fs::remove_file(image);
        }
    }
}
