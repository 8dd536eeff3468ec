//! What the adversarial tests (`tests/review*_attacks.rs`) share: a
//! library run as root that keeps what it said, the victim's uid, an
//! attacker's moves as the test user, and a walker that runs a move when
//! a chosen directory is listed.

use super::TestDir;
use super::user::User;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The victim: the owner of data psync syncs as root.
pub const VICTIM: u32 = 4242;

/// A time for the fixtures' mtimes.
pub const T: i64 = 1_650_000_000;

/// What a library run as root said and how it ended.
#[derive(Debug, Default)]
pub struct Out {
    pub ok: bool,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    pub itemized: Vec<String>,
}

/// Runs psync through the library (one thread unless `setup` says
/// otherwise) and collects its errors, warnings and itemized paths.
pub fn run_lib(src: &Path, dst: &Path, setup: impl FnOnce(&mut psync::SyncBuilder)) -> Out {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut b = psync::builder(src, dst);
    b.threads(1).events(tx);
    setup(&mut b);
    let result = b.build().and_then(|s| s.run());
    drop(b);
    let mut out = Out::default();
    for ev in rx.iter() {
        match ev {
            psync::Event::Error { path, message, .. } => {
                out.errors.push(format!("{path}: {message}"));
            }
            psync::Event::Warning { path, message, .. } => {
                out.warnings.push(format!("{path}: {message}"));
            }
            psync::Event::Itemize { path, .. } => out.itemized.push(path.to_string()),
            _ => {}
        }
    }
    out.ok = matches!(result, Ok(ref r) if r.success());
    if let Err(e) = result {
        out.errors.push(e.to_string());
    }
    out
}

/// (ino, uid, gid, mode) of `p`, not following a symlink.
pub fn attrs(p: &Path) -> (u64, u32, u32, u32) {
    let m = p.symlink_metadata().unwrap();
    (m.ino(), m.uid(), m.gid(), m.mode())
}

/// Runs an attacker's move once, when the source directory `trigger` is
/// listed (the walker lists source and target directories alike).
pub struct OnList {
    pub trigger: (u64, u64),
    pub act: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl psync::Walker for OnList {
    fn list(&self, dir: &psync::Dir) -> std::io::Result<psync::Listing> {
        let st = dir.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        if (st.st_dev as u64, st.st_ino as u64) == self.trigger
            && let Some(act) = self.act.lock().unwrap().take()
        {
            act();
        }
        psync::FsWalker.list(dir)
    }
}

/// An [`OnList`] for the directory `trigger`.
pub fn on_list(trigger: &Path, act: impl FnOnce() + Send + 'static) -> OnList {
    let m = trigger.symlink_metadata().unwrap();
    OnList {
        trigger: (m.dev(), m.ino()),
        act: std::sync::Mutex::new(Some(Box::new(act))),
    }
}

/// `mv -T from to` as the attacker.
pub fn mv(user: User, from: &Path, to: &Path) {
    let out = user
        .command("mv")
        .arg("-T")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "mv as the attacker: {out:?}");
}

/// Whether the attacker can read `p`.
pub fn cat(user: User, p: &Path) -> bool {
    user.command("cat")
        .arg(p)
        .output()
        .unwrap()
        .status
        .success()
}

/// The victim's private directory `u/v` (mode 0700, in the attacker's
/// `u/`), and the attacker's own `u/w` with a subdirectory, synced once.
pub fn victim_and_attacker(t: &TestDir, user: User) {
    tree!(t.src(), {
        "u/w/x" => file("the attacker's file") mode(0o644),
        "u/w/sub/y" => file("y") mode(0o644),
        "u/w" => dir() mode(0o755),
        "u" => dir() mode(0o755),
    });
    user.own(&t.src().join("u"));
    tree!(t.src(), {
        "u/v/secret" => file("the victim's secret") owner(VICTIM, VICTIM) mode(0o644),
        "u/v" => dir() owner(VICTIM, VICTIM) mode(0o700),
    });
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    assert!(
        !cat(user, &t.dst().join("u/v/secret")),
        "private before the run"
    );
}
