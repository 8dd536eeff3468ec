//! Fourth adversarial review of issue 13 (ADR 010), after "directories
//! by identity" and "deletes as listed". Each test fails while the hole
//! is open.

use crate::util::TestDir;
use crate::util::user::{User, test_user};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The victim: the owner of data psync syncs as root.
const VICTIM: u32 = 4242;

/// What a library run as root said and how it ended.
#[derive(Debug, Default)]
struct Out {
    ok: bool,
    errors: Vec<String>,
    warnings: Vec<String>,
}

fn run_lib(src: &Path, dst: &Path, setup: impl FnOnce(&mut psync::SyncBuilder)) -> Out {
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
fn attrs(p: &Path) -> (u64, u32, u32, u32) {
    let m = p.symlink_metadata().unwrap();
    (m.ino(), m.uid(), m.gid(), m.mode())
}

/// Runs an attacker's move once, when the source directory `trigger` is
/// listed (the walker lists source and target directories alike).
struct OnList {
    trigger: (u64, u64),
    act: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl psync::Walker for OnList {
    fn list(&self, dir: &psync::fs::Dir) -> std::io::Result<psync::Listing> {
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

fn on_list(trigger: &Path, act: impl FnOnce() + Send + 'static) -> OnList {
    let m = trigger.symlink_metadata().unwrap();
    OnList {
        trigger: (m.dev(), m.ino()),
        act: std::sync::Mutex::new(Some(Box::new(act))),
    }
}

/// `mv -T from to` as the attacker.
fn mv(user: User, from: &Path, to: &Path) {
    let out = user
        .command("mv")
        .arg("-T")
        .arg(from)
        .arg(to)
        .output()
        .unwrap();
    assert!(out.status.success(), "mv as the attacker: {out:?}");
}

fn cat(user: User, p: &Path) -> bool {
    user.command("cat")
        .arg(p)
        .output()
        .unwrap()
        .status
        .success()
}

/// The victim's private directory `u/v` (mode 0700, in the attacker's
/// `u/`), and the attacker's own `u/w` with a subdirectory, synced once.
fn victim_and_attacker(t: &TestDir, user: User) {
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

/// Review 3's swap (`copies_planned_for_the_attackers_directory_land_in_
/// the_victims`), with a file larger than the chunk size: its copy is not
/// a `Task::Files` (which now checks the directory by identity) but a
/// `Task::BigFile`, and `prepare_big` / `copy_chunk` / `finish_big` open
/// the target directory by path (`open_pair`, no identity). The attacker
/// swaps `u/w` for the victim's `u/v` once the walk listed `u/w`: the
/// part file is made in the victim's directory, filled with the
/// attacker's data and renamed over the victim's file `x`, as root.
#[test]
fn large_copy_planned_for_the_attackers_directory_lands_in_the_victims() {
    let test = "large_copy_planned_for_the_attackers_directory_lands_in_the_victims";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    victim_and_attacker(&t, user);
    tree!(t.dst(), {
        "u/v/x" => file("the victim's x") owner(VICTIM, VICTIM) mode(0o600),
    });
    // Larger than the chunk size (1 MiB here).
    tree!(t.src(), {
        "u/w/x" => random((1 << 20) + 4096) mode(0o644),
    });
    user.own(&t.src().join("u/w"));
    let victim_ino = attrs(&t.dst().join("u/v")).0;
    let d = t.dst();
    let walker = on_list(&t.dst().join("u/w"), move || {
        mv(user, &d.join("u/w"), &d.join("u/w-mine"));
        mv(user, &d.join("u/v"), &d.join("u/w"));
    });
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.walker(std::sync::Arc::new(walker)).chunk_size(1 << 20);
    });
    let victims: PathBuf = t.dst().join("u/w");
    assert_eq!(
        attrs(&victims).0,
        victim_ino,
        "the victim's directory is at u/w"
    );
    let x = victims.join("x");
    assert!(
        std::fs::read(&x).ok().as_deref() == Some(&b"the victim's x"[..]),
        "the victim's file x was replaced by the attacker's {} bytes (owner uid {}); run: {out:#?}",
        x.metadata().map(|m| m.len()).unwrap_or(0),
        x.metadata().map(|m| m.uid()).unwrap_or(0),
    );
}
