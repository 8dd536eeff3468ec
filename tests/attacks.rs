//! Attacks by a user who may write in part of the target, on a run as
//! root (issue 13). psync often runs as root over other users' data, in
//! targets where users can create entries (a 1777 scratch directory, their
//! own directories): nothing such a user plants there may make psync give
//! a victim's data to the attacker, nor change a file outside the target.
//!
//! - The hard-link area: psync copies hard-linked files through a link
//!   area at the target root, named like a temporary of the run. A user
//!   who learns the run id (from any temporary of the run: inotify on a
//!   1777 target root reports every name created there) and creates the
//!   area first must not get the victim's new hard-linked files linked to
//!   an inode of theirs.
//! - Attributes through a planted hard link: a user who hard-links a file
//!   (or symlink) from outside the target into their own target directory,
//!   matching their source file's size and mtime, must not get psync's
//!   attribute-only update (chown, chmod) applied to the outside inode.
//!
//! Both run as root with the unprivileged test user as the attacker.

use crate::util::compare::is_temp_name;
use crate::util::run::{Config, Front, Outcome, json_lines, run_cli};
use crate::util::user::{User, test_user};
use crate::util::{Opts, TestDir, each_config, read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a run must say about an area it did not create: any warning or
/// error whose path or message contains one of these (case-insensitive).
/// Kept loose on purpose: the exact wording is the fix's to choose.
const PLANTED_REPORT: &[&str] = &[".psync-tmp", "not created by psync", "planted"];

/// The victim: the owner of the data psync syncs as root.
const VICTIM: u32 = 4242;

/// A time for the fixtures' mtimes.
const T: i64 = 1_650_000_000;

/// A directory made as an unprivileged user makes it: owned by them, `mode`.
fn mkdir_as(user: &User, p: &Path, mode: u32) -> Result<(), String> {
    std::fs::create_dir(p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", p.display()))?;
    std::os::unix::fs::lchown(p, Some(user.uid), Some(user.gid))
        .map_err(|e| format!("chown {}: {e}", p.display()))
}

// ---------------------------------------------------------------------------
// Attack 1: the hard-link area
// ---------------------------------------------------------------------------

/// An inotify watch on a directory, as any user who may read it can set:
/// it reports the name of every entry created or renamed away there, even
/// one that exists for a microsecond (psync's temporaries).
struct NameWatch {
    fd: std::os::fd::OwnedFd,
}

impl NameWatch {
    fn new(dir: &Path) -> NameWatch {
        use rustix::fs::inotify;
        let fd = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .expect("inotify_init1");
        inotify::add_watch(
            &fd,
            dir,
            inotify::WatchFlags::CREATE | inotify::WatchFlags::MOVED_FROM,
        )
        .unwrap_or_else(|e| panic!("inotify_add_watch {}: {e}", dir.display()));
        NameWatch { fd }
    }

    /// The run id (16 hex digits) of the first name seen in the exact
    /// format of psync's temporaries (`.psync-tmp.<run>.<nonce>.<n>`),
    /// waiting for one at most `limit`.
    fn run_id(&self, limit: Duration) -> Result<String, String> {
        use rustix::fs::inotify;
        let started = Instant::now();
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 8192];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut seen = Vec::new();
        loop {
            match reader.next() {
                Ok(ev) => {
                    let Some(name) = ev.file_name() else { continue };
                    let name = name.to_bytes();
                    if is_temp_name(name) {
                        let rest = &name[psync::TEMP_PREFIX.len()..];
                        return Ok(String::from_utf8_lossy(&rest[..16]).into_owned());
                    }
                    seen.push(String::from_utf8_lossy(name).into_owned());
                }
                Err(rustix::io::Errno::AGAIN) => {
                    if started.elapsed() > limit {
                        return Err(format!(
                            "no temporary of psync's appeared in the target root within \
                             {limit:?} (names created there: {seen:?})"
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("read inotify events: {e}")),
            }
        }
    }
}

/// The attacker's move, made by a walker so that it happens at a known
/// point of the run: when psync lists the first source directory that
/// holds a new hard-linked file (before it plans that directory, which is
/// when it makes its link area), the attacker, who has been watching the
/// target root, takes the run id from the temporary psync made there
/// already and creates the link area of the run under that name, with a
/// link to a file of their own under the key of the victim's source inode
/// in every bucket.
struct PlantLinkArea {
    /// Source directories (dev, ino) whose listing triggers the plant.
    triggers: Vec<(u64, u64)>,
    watch: NameWatch,
    dst: PathBuf,
    attacker: User,
    /// The attacker's own file, linked into the area.
    bait: PathBuf,
    /// `<dev hex>-<ino hex>` of the victim's source inode.
    key: String,
    /// The planted area, or why it could not be planted; `None` until a
    /// trigger was listed.
    planted: Mutex<Option<Result<PathBuf, String>>>,
}

impl PlantLinkArea {
    fn plant(&self) -> Result<PathBuf, String> {
        let run = self.watch.run_id(Duration::from_secs(60))?;
        let area = self.dst.join(format!("{}{run}.links", psync::TEMP_PREFIX));
        mkdir_as(&self.attacker, &area, 0o755)?;
        // Every bucket: the attacker need not even compute the hash.
        for b in 0..256 {
            let bucket = area.join(format!("{b:02x}"));
            mkdir_as(&self.attacker, &bucket, 0o755)?;
            std::fs::hard_link(&self.bait, bucket.join(&self.key)).map_err(|e| {
                format!(
                    "link {} into {}: {e}",
                    self.bait.display(),
                    bucket.display()
                )
            })?;
        }
        Ok(area)
    }
}

impl psync::Walker for PlantLinkArea {
    fn list(&self, dir: &psync::Dir) -> std::io::Result<psync::Listing> {
        let st = dir.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        let id = (st.st_dev as u64, st.st_ino as u64);
        if self.triggers.contains(&id) {
            // A second trigger listed meanwhile waits for the first's plant.
            let mut planted = self.planted.lock().unwrap_or_else(|e| e.into_inner());
            if planted.is_none() {
                *planted = Some(self.plant());
            }
        }
        psync::FsWalker.list(dir)
    }
}

fn dev_ino(p: &Path) -> (u64, u64) {
    let m = p
        .symlink_metadata()
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    (m.dev(), m.ino())
}

/// Warnings and errors of a library run, as `PATH: MESSAGE`.
fn reports(events: &[psync::Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            psync::Event::Warning { path, message, .. }
            | psync::Event::Error { path, message, .. } => Some(format!("{path}: {message}")),
            _ => None,
        })
        .collect()
}

/// A victim's new pair of hard-linked files (`a/x`, `b/x`) in directories
/// the target has from a first run, synced as root into a 1777 target
/// root where the attacker planted the run's link area (see
/// [`PlantLinkArea`]): the victim's target files must be their own inode
/// with their source's data and attributes, the attacker's file unchanged,
/// no `.psync-tmp.*` left at the root, and the planted area reported.
#[test]
fn planted_link_area_does_not_capture_the_victims_hard_links() {
    let test = "planted_link_area_does_not_capture_the_victims_hard_links";
    let Some(attacker) = test_user(test) else {
        return;
    };
    const SECRET: &[u8] = b"the victim's hard-linked secret";
    const BAIT: &[u8] = b"the attacker's bait";
    for threads in [1, 8] {
        eprintln!("=== {test} [lib-{threads}t]");
        let t = TestDir::new(&format!("{test}-{threads}t"));
        // A scratch tree: its root is 1777 in the source, so in the target.
        tree!(t.src(), {
            "a/keep" => file("a") owner(VICTIM, VICTIM) mode(0o600),
            "b/keep" => file("b") owner(VICTIM, VICTIM) mode(0o600),
            "a" => dir() owner(VICTIM, VICTIM) mode(0o755),
            "b" => dir() owner(VICTIM, VICTIM) mode(0o755),
            "" => keep() mode(0o1777),
        });
        crate::util::run::sync_lib(&t.src(), &t.dst(), threads, &Opts::default()).assert_ok();
        assert_eq!(crate::util::mode_of(t.dst()), 0o1777, "the target root");

        // The incremental pass: the victim's new hard-linked pair, and a
        // new symlink at the root, which psync makes under a temporary
        // name (so the run id shows in the root before any directory
        // below it is listed).
        tree!(t.src(), {
            "a/x" => file(SECRET) owner(VICTIM, VICTIM) mode(0o600) mtime(T, 7),
            "b/x" => hardlink("a/x"),
            "s" => symlink("a/keep"),
        });
        assert_eq!(t.src().join("a/x").metadata().unwrap().nlink(), 2);
        let bait = t.join("attacker/bait");
        tree!(t.join("attacker"), { "bait" => file(BAIT) mode(0o666) });
        attacker.own(&t.join("attacker"));
        let bait_ino = bait.metadata().unwrap().ino();
        let (dev, ino) = dev_ino(&t.src().join("a/x"));
        let walker = std::sync::Arc::new(PlantLinkArea {
            triggers: vec![dev_ino(&t.src().join("a")), dev_ino(&t.src().join("b"))],
            watch: NameWatch::new(&t.dst()),
            dst: t.dst(),
            attacker,
            bait: bait.clone(),
            key: format!("{dev:x}-{ino:x}"),
            planted: Mutex::new(None),
        });

        let (tx, rx) = crossbeam_channel::unbounded();
        let mut b = psync::builder(t.src(), t.dst());
        b.threads(threads)
            .itemize(true)
            .events(tx)
            .walker(walker.clone());
        let result = b.build().and_then(|s| s.run());
        drop(b);
        let events: Vec<psync::Event> = rx.iter().collect();
        let said = reports(&events);
        let what = format!("threads={threads}: run {result:?}, warnings and errors {said:#?}");

        // The attack happened as meant.
        match walker.planted.lock().unwrap().as_ref() {
            Some(Ok(area)) => eprintln!("planted {}", area.display()),
            Some(Err(why)) => panic!("{what}\nthe attacker could not plant the link area: {why}"),
            None => panic!("{what}\nneither a/ nor b/ of the source was listed"),
        }

        // The victim's files: not the attacker's inode; their own data,
        // owner and mode; one inode.
        for rel in ["a/x", "b/x"] {
            let p = t.dst().join(rel);
            let m = p
                .symlink_metadata()
                .unwrap_or_else(|e| panic!("{what}\nlstat {}: {e}", p.display()));
            assert_ne!(
                m.ino(),
                bait_ino,
                "{what}\nDST {rel} is the attacker's planted inode (their file {}, owner {}, \
                 mode {:o}): psync linked the victim's new hard-linked file to it",
                bait.display(),
                m.uid(),
                m.mode() & 0o7777,
            );
            assert_eq!(read(&p), SECRET, "{what}\ncontent of DST {rel}");
            assert_eq!(
                (m.uid(), m.gid(), m.mode() & 0o7777),
                (VICTIM, VICTIM, 0o600),
                "{what}\nowner, group and mode of DST {rel}"
            );
        }
        assert_eq!(
            dev_ino(&t.dst().join("a/x")),
            dev_ino(&t.dst().join("b/x")),
            "{what}\nDST a/x and b/x are not linked"
        );
        assert_eq!(read(&bait), BAIT, "{what}\nthe attacker's file changed");

        // Nothing of the run's temporaries stays. The attacker's planted
        // directory is left alone (a directory psync did not make is never
        // removed: a user who can rename there may have given someone
        // else's data that name) and reported below.
        let left: Vec<(String, u32)> = std::fs::read_dir(t.dst())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| {
                e.file_name()
                    .as_bytes()
                    .starts_with(psync::TEMP_PREFIX.as_bytes())
            })
            .map(|e| {
                let uid = e.metadata().unwrap().uid();
                (e.file_name().to_string_lossy().into_owned(), uid)
            })
            .collect();
        assert!(
            left.iter().all(|(_, uid)| *uid == attacker.uid),
            "{what}\nleft at the target root, not the attacker's: {left:?}"
        );

        // The planted area was noticed and reported.
        assert!(
            said.iter().any(|s| {
                let s = s.to_lowercase();
                PLANTED_REPORT.iter().any(|k| s.contains(k))
            }),
            "{what}\nnothing reported about the planted link area (looked for any of \
             {PLANTED_REPORT:?})"
        );
    }
}

// ---------------------------------------------------------------------------
// Attack 3: attributes through a planted hard link
// ---------------------------------------------------------------------------

/// What the attacker links into their target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Planted {
    /// A regular file of another user's (mode 0666, so that even
    /// `protected_hardlinks=1` lets the attacker link it).
    File,
    /// A symlink of another user's (a hard link to the symlink itself;
    /// models `protected_hardlinks=0`: root makes the link for them).
    Symlink,
}

/// What an attack may not change of the outside entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outside {
    ino: u64,
    uid: u32,
    gid: u32,
    /// `st_mode` in octal (type and permissions).
    mode: String,
    mtime: (i64, i64),
    /// Contents (file) or link text (symlink).
    data: String,
}

fn outside_of(p: &Path) -> (Outside, u64, (i64, i64)) {
    let m = p
        .symlink_metadata()
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    let data = if m.file_type().is_symlink() {
        std::fs::read_link(p)
            .unwrap()
            .as_os_str()
            .as_bytes()
            .to_vec()
    } else {
        read(p)
    };
    let data = String::from_utf8_lossy(&data).into_owned();
    let o = Outside {
        ino: m.ino(),
        uid: m.uid(),
        gid: m.gid(),
        mode: format!("{:o}", m.mode()),
        mtime: (m.mtime(), m.mtime_nsec()),
        data,
    };
    (o, m.nlink(), (m.ctime(), m.ctime_nsec()))
}

/// Runs `psync sync` as root with default options (`--no-hard-links` when
/// `hard_links` is false) through the library or the CLI.
fn run_as_root(cfg: Config, hard_links: bool, src: &Path, dst: &Path) -> Outcome {
    let mut out = Outcome::default();
    let threads = cfg.threads;
    match cfg.front {
        Front::Lib | Front::Scatter => {
            let (tx, rx) = crossbeam_channel::unbounded();
            let mut b = psync::builder(src, dst);
            cfg.apply(&mut b);
            b.hard_links(hard_links).events(tx);
            let result = b.build().and_then(|s| s.run());
            drop(b);
            for ev in rx.iter() {
                match ev {
                    psync::Event::Error { path, message, .. } => {
                        out.errors.push(format!("{path}: {message}"));
                    }
                    psync::Event::Warning { path, message, .. } => {
                        out.warnings.push(format!("{path}: {message}"));
                    }
                    _ => {}
                }
            }
            out.exit = match result {
                Ok(r) if r.success() => 0,
                Ok(_) => 1,
                Err(e) => {
                    out.errors.push(e.to_string());
                    2
                }
            };
        }
        Front::Cli => {
            let threads = threads.to_string();
            let mut args = vec!["--json", "--threads", &threads];
            if !hard_links {
                args.push("--no-hard-links");
            }
            let o = run_cli(&args, src, dst);
            out.exit = o.status.code().unwrap_or(-1);
            out.stdout = String::from_utf8_lossy(&o.stdout).into_owned();
            out.stderr = String::from_utf8_lossy(&o.stderr).into_owned();
            for ev in json_lines(&out.stdout) {
                let line = format!("{}: {}", ev["path"], ev["message"]);
                match ev["event"].as_str() {
                    Some("error") => out.errors.push(line),
                    Some("warning") => out.warnings.push(line),
                    _ => {}
                }
            }
        }
    }
    out
}

/// The attacker owns `u/` in the source and in the target. Outside the
/// target (same file system) another user's `outside` (owner 4242); the
/// attacker links it into their target directory as `u/f`, and makes
/// their source `u/f` match it in size and mtime, with their own owner
/// (and, for a file, mode 0600 and other data). With `hard_links`, their
/// source file also gets a second link outside the source tree, so that
/// its link count matches the target's (2) and the planner sees nothing
/// but attributes to fix; without, the run is `--no-hard-links`. Then a
/// run as root: `outside` must be unchanged, and the target `u/f` a
/// different inode with the source's data and attributes.
fn planted_hard_link(test: &str, planted: Planted, hard_links: bool) {
    let Some(user) = test_user(test) else {
        return;
    };
    each_config(test, |cfg, t| {
        tree!(t.src(), {
            "u/keep" => file("k") mode(0o644),
            "u" => dir() mode(0o755),
        });
        user.own(&t.src().join("u"));
        let first = run_as_root(cfg, hard_links, &t.src(), &t.dst());
        assert!(
            first.exit == 0 && first.errors.is_empty(),
            "first run: {first:#?}"
        );
        assert!(
            user.owns(&t.dst().join("u")),
            "the target u/ is the attacker's"
        );

        // Another user's entry outside the target, and the attacker's
        // source entry matching it in size and mtime.
        let outside = t.join("elsewhere/outside");
        let (src_f, dst_f) = (t.src().join("u/f"), t.dst().join("u/f"));
        const OUTSIDE_DATA: &[u8] = b"another user's file";
        const ATTACKER_DATA: &[u8] = b"the attacker's data";
        assert_eq!(OUTSIDE_DATA.len(), ATTACKER_DATA.len());
        match planted {
            Planted::File => {
                tree!(t.join("elsewhere"), {
                    "outside" => file(OUTSIDE_DATA) owner(VICTIM, VICTIM) mode(0o666) mtime(T, 0),
                });
                tree!(t.src(), {
                    "u/f" => file(ATTACKER_DATA) owner(user.uid, user.gid) mode(0o600) mtime(T, 0),
                });
            }
            Planted::Symlink => {
                tree!(t.join("elsewhere"), {
                    "outside" => symlink("some/where") owner(VICTIM, VICTIM) mtime(T, 0),
                });
                tree!(t.src(), {
                    "u/f" => symlink("some/where") owner(user.uid, user.gid) mtime(T, 0),
                });
            }
        }
        if hard_links {
            // A second link of the attacker's source entry outside the
            // source tree (linkat without following: a symlink's own link).
            std::fs::create_dir(t.join("attacker-home")).unwrap();
            std::fs::hard_link(&src_f, t.join("attacker-home/f2")).unwrap();
        }
        // The plant: `outside` hard-linked into the attacker's target dir.
        std::fs::hard_link(&outside, &dst_f)
            .unwrap_or_else(|e| panic!("link {} as {}: {e}", outside.display(), dst_f.display()));
        let src_nlink = src_f.symlink_metadata().unwrap().nlink();
        let dst_nlink = dst_f.symlink_metadata().unwrap().nlink();
        if hard_links {
            assert_eq!(src_nlink, dst_nlink, "link counts of SRC and DST u/f");
        }
        let (before, nlink_before, ctime_before) = outside_of(&outside);

        let out = run_as_root(cfg, hard_links, &t.src(), &t.dst());
        let what = format!("[{cfg}] {planted:?}, hard links {hard_links}: {out:#?}");

        // The outside entry is untouched.
        let (after, nlink_after, ctime_after) = outside_of(&outside);
        assert_eq!(
            after,
            before,
            "{what}\nthe entry outside the target ({}) changed through the link the attacker \
             planted as DST u/f (left: after the run, right: before)",
            outside.display()
        );
        if nlink_after == nlink_before {
            // (Replacing DST u/f drops a link of `outside`: its ctime moves then.)
            assert_eq!(
                ctime_after,
                ctime_before,
                "{what}\nctime of {}",
                outside.display()
            );
        }

        // The attacker's target entry is their source's, in an inode of its own.
        let m = dst_f
            .symlink_metadata()
            .unwrap_or_else(|e| panic!("{what}\nlstat {}: {e}", dst_f.display()));
        assert_ne!(
            m.ino(),
            before.ino,
            "{what}\nDST u/f is still the outside inode"
        );
        let s = src_f.symlink_metadata().unwrap();
        assert_eq!(
            (m.uid(), m.gid(), m.mode(), m.mtime(), m.mtime_nsec()),
            (s.uid(), s.gid(), s.mode(), s.mtime(), s.mtime_nsec()),
            "{what}\nowner, group, mode and mtime of DST u/f"
        );
        match planted {
            Planted::File => assert_eq!(read(&dst_f), ATTACKER_DATA, "{what}\nDST u/f"),
            Planted::Symlink => assert_eq!(
                std::fs::read_link(&dst_f).unwrap(),
                Path::new("some/where"),
                "{what}\nDST u/f"
            ),
        }
        assert!(
            out.exit == 0 && out.errors.is_empty(),
            "{what}\nthe run did not succeed"
        );
    });
}

#[test]
fn planted_hard_link_to_an_outside_file_keeps_its_attributes() {
    planted_hard_link(
        "planted_hard_link_to_an_outside_file_keeps_its_attributes",
        Planted::File,
        true,
    );
}

#[test]
fn planted_hard_link_to_an_outside_file_keeps_its_attributes_no_hard_links() {
    planted_hard_link(
        "planted_hard_link_to_an_outside_file_keeps_its_attributes_no_hard_links",
        Planted::File,
        false,
    );
}

#[test]
fn planted_hard_link_to_an_outside_symlink_keeps_its_owner() {
    planted_hard_link(
        "planted_hard_link_to_an_outside_symlink_keeps_its_owner",
        Planted::Symlink,
        true,
    );
}

#[test]
fn planted_hard_link_to_an_outside_symlink_keeps_its_owner_no_hard_links() {
    planted_hard_link(
        "planted_hard_link_to_an_outside_symlink_keeps_its_owner_no_hard_links",
        Planted::Symlink,
        false,
    );
}

// ---------------------------------------------------------------------------
// Attack 3: a directory of another file system with the same inode number
// ---------------------------------------------------------------------------

/// Every btrfs subvolume's root is inode 256, and a user who may write in
/// a directory may make a subvolume there and rename it within its parent
/// subvolume: a directory put in place of another with the same inode
/// number, on another file system as far as `stat` goes (a device number
/// and an `f_fsid` of its own). Here the target directory `a`, a
/// subvolume, is swapped for the victim's subvolume once `a`'s task has
/// opened and listed it: the tasks that follow (the copy of `x`, the
/// directory's finish) must find that it is not the directory listed, by
/// its file system's id (ADR 014), and leave the victim's alone.
#[test]
fn a_subvolume_swapped_in_with_the_same_inode_is_refused() {
    use crate::util::attack::{on_list, run_lib};
    use crate::util::mounts::{self, Fs};
    let test = "a_subvolume_swapped_in_with_the_same_inode_is_refused";
    let s = match mounts::shared().and_then(|m| m.scratch(test, Fs::Btrfs, Fs::Btrfs)) {
        Ok(s) => s,
        Err(why) => skip!("{why}"),
    };
    let (src, dst) = (s.src(), s.dst());
    tree!(src, {
        "a/x" => file("the run's new file") mode(0o644),
        "a" => dir() mode(0o755),
    });
    std::fs::create_dir(&dst).unwrap();
    let (a, away, other) = (dst.join("a"), dst.join("a-away"), dst.join("../other"));
    for p in [&a, &other] {
        let made = std::process::Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(p)
            .status();
        if !made.as_ref().is_ok_and(|s| s.success()) {
            skip!("btrfs subvolume create {}: {made:?}", p.display());
        }
    }
    std::fs::write(other.join("victim"), b"the victim's").unwrap();
    std::os::unix::fs::lchown(&other, Some(VICTIM), Some(VICTIM)).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (ma, mo) = (a.metadata().unwrap(), other.metadata().unwrap());
    assert_eq!((ma.ino(), mo.ino()), (256, 256), "subvolume roots");
    assert_ne!(ma.dev(), mo.dev(), "a device number per subvolume");
    let (from, to) = (other.clone(), a.clone());
    let walker = on_list(&a, move || {
        std::fs::rename(&to, &away).unwrap();
        std::fs::rename(&from, &to).unwrap();
    });
    let out = run_lib(&src, &dst, |b| {
        b.walker(std::sync::Arc::new(walker));
    });
    let now = a.metadata().unwrap();
    assert_eq!(
        (now.uid(), now.mode() & 0o7777),
        (VICTIM, 0o700),
        "{out:#?}"
    );
    assert!(
        !a.join("x").exists(),
        "the run's file was copied into the victim's subvolume: {out:#?}"
    );
    assert!(
        out.errors
            .iter()
            .any(|e| e.contains("another directory stands at this path")),
        "{out:#?}"
    );
}
