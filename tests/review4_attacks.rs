//! Fourth adversarial review of issue 13 (ADR 010), after "directories
//! by identity" and "deletes as listed". Each test fails while the hole
//! is open.

use crate::util::TestDir;
use crate::util::attack::*;
use crate::util::user::test_user;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

/// Runs a hook (once each) when the source or target directory at a
/// given path is listed; hooks may block (the run has other workers).
/// A hook run once when the directory of that (dev, ino) is listed.
type Hook = ((u64, u64), Box<dyn FnOnce() + Send>);

struct Hooks(std::sync::Mutex<Vec<Hook>>);

impl psync::Walker for Hooks {
    fn list(&self, dir: &psync::Dir) -> std::io::Result<psync::Listing> {
        let st = dir.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        let id = (st.st_dev as u64, st.st_ino as u64);
        let hook = {
            let mut hooks = self.0.lock().unwrap();
            hooks
                .iter()
                .position(|(at, _)| *at == id)
                .map(|i| hooks.remove(i).1)
        };
        if let Some(hook) = hook {
            hook();
        }
        psync::FsWalker.list(dir)
    }
}

fn hook(at: &Path, act: impl FnOnce() + Send + 'static) -> ((u64, u64), Box<dyn FnOnce() + Send>) {
    let m = at.symlink_metadata().unwrap();
    ((m.dev(), m.ino()), Box::new(act))
}

/// Polls `cond` for up to 5 s.
fn wait_for(cond: impl Fn() -> bool) -> bool {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::time::Instant::now() < until {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

/// A directory new in this run is checked, by its own task and by its
/// finish, only to be psync's user's with mode 0700 (`check_dir` with no
/// listed entry): any directory the run made and has not finished yet
/// passes. In the attacker's `u/`, the run makes the attacker's new
/// `u/n` and the victim's new private `u/v` (0700 in the source, its
/// file 0644). Once the victim's file is copied into `u/v` (root, 0700
/// until its own finish), the attacker swaps: `u/n` -> `u/n-mine`,
/// `u/v` -> `u/n`. The finish of `u/n` finds a root-owned 0700
/// directory there, takes it for the one it made, and gives it the
/// attacker's owner and mode 0755: the attacker owns the victim's
/// directory and reads their file. (Hooks stand for timing the attacker
/// gets from big trees: `u/v/sub` holds the victim's finish back,
/// `u/n/sub` the attacker's.)
#[test]
fn victims_new_directory_swapped_for_the_attackers_new_one_is_given_away_at_its_finish() {
    let test =
        "victims_new_directory_swapped_for_the_attackers_new_one_is_given_away_at_its_finish";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), { "u/keep" => file("k") mode(0o644), "u" => dir() mode(0o755) });
    user.own(&t.src().join("u"));
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    // New in the second run: the attacker's u/n, the victim's u/v.
    tree!(t.src(), {
        "u/n/sub/y" => file("the attacker's") mode(0o644),
        "u/n/sub" => dir() mode(0o755),
        "u/n" => dir() mode(0o755),
    });
    user.own(&t.src().join("u/n"));
    tree!(t.src(), {
        "u/v/secret" => file("the victim's secret") owner(VICTIM, VICTIM) mode(0o644),
        "u/v/sub/z" => file("z") owner(VICTIM, VICTIM) mode(0o644),
        "u/v/sub" => dir() owner(VICTIM, VICTIM) mode(0o755),
        "u/v" => dir() owner(VICTIM, VICTIM) mode(0o700),
    });
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let victim_ino = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let d = t.dst();
    let (s1, s2, vi) = (swapped.clone(), swapped.clone(), victim_ino.clone());
    let hooks = Hooks(std::sync::Mutex::new(vec![
        // The victim's directory stays unfinished until the swap.
        hook(&t.src().join("u/v/sub"), move || {
            wait_for(|| s1.load(std::sync::atomic::Ordering::SeqCst));
        }),
        // The attacker's, once the victim's file is in.
        hook(&t.src().join("u/n/sub"), move || {
            if wait_for(|| d.join("u/v/secret").exists()) {
                vi.store(attrs(&d.join("u/v")).0, std::sync::atomic::Ordering::SeqCst);
                mv(user, &d.join("u/n"), &d.join("u/n-mine"));
                mv(user, &d.join("u/v"), &d.join("u/n"));
            }
            s2.store(true, std::sync::atomic::Ordering::SeqCst);
        }),
    ]));
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.walker(std::sync::Arc::new(hooks)).threads(4);
    });
    let victim_ino = victim_ino.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(
        victim_ino, 0,
        "the victim's file was copied before the swap; run: {out:#?}"
    );
    let at_n = attrs(&t.dst().join("u/n"));
    assert_eq!(at_n.0, victim_ino, "the victim's directory is at u/n");
    assert!(
        !cat(user, &t.dst().join("u/n/secret")) && at_n.1 != user.uid,
        "the attacker owns the victim's new private directory (uid {}, mode {:o}) and reads \
         their file: the finish of u/n took it for the directory it made; run: {out:#?}",
        at_n.1,
        at_n.3 & 0o7777
    );
}

/// A type change with `--force` (no `--delete`) removes the target
/// directory in the way recursively, "as listed": any directory listed
/// at that name, whoever owns it. A user cannot move another user's
/// directory to another parent (that needs write access to it), but can
/// rename it within their own directory: the attacker gives the victim's
/// `u/v` (in their `u/`) the name `u/d`, a file in the source. psync, as
/// root, deletes the victim's directory with everything in it, the
/// victim's work that exists only in the target included (`u/v/results`,
/// written there since the last run: an incremental migration whose
/// users already work in DST). Without `--delete` psync never removes
/// that file, and the attacker cannot. No race: the rename is done before
/// the run. (The `Descend` of such a directory is refused by
/// `foreign_dir`; the delete of a replaced one is not checked that way.)
#[test]
fn type_change_with_force_deletes_a_victims_directory_renamed_to_the_attackers_file() {
    let test = "type_change_with_force_deletes_a_victims_directory_renamed_to_the_attackers_file";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), {
        "u/d" => file("the attacker's file") mode(0o644),
        "u" => dir() mode(0o755),
    });
    user.own(&t.src().join("u"));
    tree!(t.src(), {
        "u/v/data" => file("the victim's data") owner(VICTIM, VICTIM) mode(0o600),
        "u/v" => dir() owner(VICTIM, VICTIM) mode(0o700),
    });
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    // The victim works in the target since.
    tree!(t.dst(), {
        "u/v/results" => file("the victim's only copy") owner(VICTIM, VICTIM) mode(0o600),
    });
    // The attacker removes their file u/d and gives the victim's
    // directory its name.
    let out = user
        .command("rm")
        .arg(t.dst().join("u/d"))
        .output()
        .unwrap();
    assert!(out.status.success(), "rm as the attacker: {out:?}");
    mv(user, &t.dst().join("u/v"), &t.dst().join("u/d"));
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.force(true);
    });
    let survives = t.dst().join("u/v/results").exists() || t.dst().join("u/d/results").exists();
    assert!(
        survives,
        "the victim's target-only file was deleted by psync as root (no --delete); run: {out:#?}"
    );
}
