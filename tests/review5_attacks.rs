//! Fifth adversarial review of issue 13 (ADR 010), after "identities in
//! every task". Each test fails while the hole is open.

use crate::util::TestDir;
use crate::util::attack::*;
use crate::util::user::test_user;
use psync::Dir;
use psync::{
    Copied, Copier, CopyOptions, DataJob, Entry, GenericCopier, Name, Node, StepError, XattrReport,
};
use std::fs::File;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

type MkdirHook = Box<dyn FnOnce() + Send>;

/// The generic copier, with an attacker's move run once right after the
/// `mkdirat` of a directory named `name`: the window between psync's
/// `mkdirat` and the `fstatat` that takes the new directory's identity
/// (a user spinning on `renameat2(RENAME_EXCHANGE)` in their own
/// directory lands there; the hook makes it deterministic).
struct AfterMkdir {
    inner: GenericCopier,
    name: &'static str,
    hook: Mutex<Option<MkdirHook>>,
    /// Run once after the data of a file of that name was copied.
    after_copy: Option<(&'static str, Mutex<Option<MkdirHook>>)>,
}

impl Copier for AfterMkdir {
    fn name(&self) -> &str {
        "after-mkdir"
    }
    fn create(&self, dir: &Dir, tmp: &Name, src: &Entry, f: &File) -> Result<File, StepError> {
        self.inner.create(dir, tmp, src, f)
    }
    fn create_unnamed(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
        self.inner.create_unnamed(dir, src, f)
    }
    fn try_clone(&self, s: &File, d: &File, o: &CopyOptions) -> Result<bool, StepError> {
        self.inner.try_clone(s, d, o)
    }
    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        let copied = self.inner.copy_data(job, quit)?;
        if let Some((name, hook)) = &self.after_copy
            && job.entry.name.as_bytes() == name.as_bytes()
            && let Some(hook) = hook.lock().unwrap().take()
        {
            hook();
        }
        Ok(copied)
    }
    fn set_attrs(
        &self,
        t: Node<'_>,
        src: &Entry,
        from: Option<Node<'_>>,
        o: &CopyOptions,
    ) -> Result<XattrReport, StepError> {
        self.inner.set_attrs(t, src, from, o)
    }
    fn make_dir(
        &self,
        dir: &Dir,
        n: &Name,
        src: &Entry,
        from: psync::Node<'_>,
    ) -> Result<(), StepError> {
        self.inner.make_dir(dir, n, src, from)?;
        if n.as_bytes() == self.name.as_bytes()
            && let Some(hook) = self.hook.lock().unwrap().take()
        {
            hook();
        }
        Ok(())
    }
    fn make_symlink(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_symlink(dir, n, src)
    }
    fn make_special(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_special(dir, n, src)
    }
    fn remove(&self, dir: &Dir, e: &Entry) -> Result<u64, StepError> {
        self.inner.remove(dir, e)
    }
}

fn after_mkdir(name: &'static str, hook: impl FnOnce() + Send + 'static) -> Arc<dyn Copier> {
    Arc::new(AfterMkdir {
        inner: GenericCopier::new(),
        name,
        hook: Mutex::new(Some(Box::new(hook))),
        after_copy: None,
    })
}

/// A new directory's identity is taken by name (`fstatat` of the parent
/// and the name) right after `mkdirat`, and then trusted by its task and
/// its finish as "the directory this run made". In the attacker's `u/`
/// sits the victim's private `u/v` (0700, a 0644 secret inside); the
/// attacker's new `u/n` is made by the run. Between the `mkdirat` and the
/// `fstatat` the attacker exchanges the two names (`u/n` -> `u/n-mine`,
/// `u/v` -> `u/n`): the identity recorded for `u/n` is the victim's
/// directory's. Its task syncs the attacker's tree into it and its finish
/// gives it the attacker's owner and mode 0755: the attacker owns the
/// victim's directory and reads their secret.
#[test]
fn identity_taken_by_name_after_mkdir_accepts_a_victims_directory_swapped_in() {
    let test = "identity_taken_by_name_after_mkdir_accepts_a_victims_directory_swapped_in";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), { "u/keep" => file("k") mode(0o644), "u" => dir() mode(0o755) });
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
    // New in the second run: the attacker's u/n.
    tree!(t.src(), {
        "u/n/y" => file("the attacker's") mode(0o644),
        "u/n" => dir() mode(0o755),
    });
    user.own(&t.src().join("u/n"));
    let victim_ino = attrs(&t.dst().join("u/v")).0;
    let d = t.dst();
    let copier = after_mkdir("n", move || {
        mv(user, &d.join("u/n"), &d.join("u/n-mine"));
        mv(user, &d.join("u/v"), &d.join("u/n"));
    });
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.default_copier(copier);
    });
    let at_n = attrs(&t.dst().join("u/n"));
    assert_eq!(at_n.0, victim_ino, "the victim's directory is at u/n");
    assert!(
        !cat(user, &t.dst().join("u/n/secret")) && at_n.1 != user.uid,
        "the attacker owns the victim's directory (uid {}, mode {:o}) and reads their secret: \
         the identity taken by name after mkdirat was the victim's; run: {out:#?}",
        at_n.1,
        at_n.3 & 0o7777
    );
}

/// The fallback for a new directory whose identity could not be taken
/// ("psync's user's, mode 0700") is reached by the attacker at will: in
/// the window after `mkdirat`, they put a file at the new name, so the
/// `fstatat` finds no directory and the task carries `at: None` (no error
/// is reported). Then review 4's swap works again: the victim's new
/// private `u/v` (root, 0700 until its finish) is given the name `u/n`
/// once the victim's file is in it; the task of `u/n` accepts it (root,
/// 0700), syncs the attacker's tree into it, and its finish gives it to
/// the attacker (mode 0755).
#[test]
fn failed_identity_after_mkdir_falls_back_to_root_0700_and_gives_a_victims_new_directory_away() {
    let test = "failed_identity_after_mkdir_falls_back_to_root_0700_and_gives_a_victims_new_directory_away";
    let Some(user) = test_user(test) else { return };
    let t = TestDir::new(test);
    tree!(t.src(), { "u/keep" => file("k") mode(0o644), "u" => dir() mode(0o755) });
    user.own(&t.src().join("u"));
    let first = run_lib(&t.src(), &t.dst(), |_| {});
    assert!(first.ok, "first run: {first:#?}");
    tree!(t.src(), {
        "u/n/y" => file("the attacker's") mode(0o644),
        "u/n" => dir() mode(0o755),
    });
    user.own(&t.src().join("u/n"));
    tree!(t.src(), {
        "u/v/secret" => file("the victim's secret") owner(VICTIM, VICTIM) mode(0o644),
        "u/v" => dir() owner(VICTIM, VICTIM) mode(0o700),
    });
    let (d1, d2) = (t.dst(), t.dst());
    let victim_ino = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let vi = victim_ino.clone();
    let copier: Arc<dyn Copier> = Arc::new(AfterMkdir {
        inner: GenericCopier::new(),
        name: "n",
        // Right after mkdirat(u, "n"): a file at "n" when psync looks.
        hook: Mutex::new(Some(Box::new(move || {
            mv(user, &d1.join("u/n"), &d1.join("u/n-mine"));
            let out = user.command("touch").arg(d1.join("u/n")).output().unwrap();
            assert!(out.status.success(), "touch as the attacker: {out:?}");
        }))),
        // The victim's file is in their new directory: it goes to "n".
        after_copy: Some((
            "secret",
            Mutex::new(Some(Box::new(move || {
                vi.store(
                    attrs(&d2.join("u/v")).0,
                    std::sync::atomic::Ordering::SeqCst,
                );
                let out = user.command("rm").arg(d2.join("u/n")).output().unwrap();
                assert!(out.status.success(), "rm as the attacker: {out:?}");
                mv(user, &d2.join("u/v"), &d2.join("u/n"));
            }))),
        )),
    });
    let out = run_lib(&t.src(), &t.dst(), |b| {
        b.default_copier(copier);
    });
    let victim_ino = victim_ino.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(victim_ino, 0, "the victim's file was copied; run: {out:#?}");
    let at_n = attrs(&t.dst().join("u/n"));
    assert_eq!(
        at_n.0, victim_ino,
        "the victim's directory is at u/n; run: {out:#?}"
    );
    assert!(
        !cat(user, &t.dst().join("u/n/secret")) && at_n.1 != user.uid,
        "the attacker owns the victim's new directory (uid {}, mode {:o}) and reads their \
         secret: no identity after mkdirat, and the fallback (root, 0700) accepted it; \
         run: {out:#?}",
        at_n.1,
        at_n.3 & 0o7777
    );
}
