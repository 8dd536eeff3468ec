//! Seventh adversarial review (ADR 010, ADR 011): what bears redelivery
//! now, attacked by the unprivileged test user. A second delivery of a
//! directory's task spawns batches that skip a file "another batch put in
//! place meanwhile" (`Task::Files::recheck`); the user plants such a file.

use crate::util::TestDir;
use crate::util::attack::{T, VICTIM};
use crate::util::user::{User, test_user};
use psync::{EngineContext, Local, Scatter, Task};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Lists as `FsWalker` does; after the `nth` listing of the directory
/// `at` (dev, ino), the attacker writes `file` with `bytes` and mtime `T`.
struct PlantAfterListing {
    at: (u64, u64),
    nth: u32,
    seen: AtomicU32,
    user: User,
    file: PathBuf,
    bytes: &'static str,
    planted: AtomicU32,
}

impl psync::Walker for PlantAfterListing {
    fn list(&self, dir: &psync::Dir) -> std::io::Result<psync::Listing> {
        let listing = psync::FsWalker.list(dir)?;
        let st = dir.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        if (st.st_dev as u64, st.st_ino as u64) == self.at
            && self.seen.fetch_add(1, Ordering::SeqCst) + 1 == self.nth
            && !self.file.exists()
        {
            let out = self
                .user
                .command("sh")
                .args(["-c", "printf %s \"$1\" > \"$2\" && touch -d @\"$3\" \"$2\""])
                .arg("sh")
                .arg(self.bytes)
                .arg(&self.file)
                .arg(T.to_string())
                .output()
                .unwrap();
            assert!(out.status.success(), "plant as the attacker: {out:?}");
            self.planted.fetch_add(1, Ordering::SeqCst);
        }
        Ok(listing)
    }
}

/// One run of `src` to `dst` on 3 scattered engines, one thread, every
/// task of the directory `pub` delivered again (a lossy delivery first,
/// then two full ones), with `walker`. Returns whether the run succeeded.
fn run_redelivering_pub(src: &Path, dst: &Path, walker: Arc<PlantAfterListing>, seed: u64) -> bool {
    let mut b = psync::builder(src, dst);
    b.threads(1);
    let (spec, first) = b.build().expect("build").prepare().expect("prepare");
    let mut cx = EngineContext::new(psync::registry());
    cx.walker = walker;
    let mut scatter = Scatter::from_spec(&spec, 3, &cx, seed).expect("engines");
    drop(cx);
    scatter.redeliver(1.0).redeliver_if(Arc::new(
        |t: &Task| matches!(t, Task::Dir { rel, .. } if rel.as_bytes() == b"pub"),
    ));
    scatter
        .run_all(first, &Local::new(1))
        .expect("the run")
        .success()
}

/// A redelivered directory's batch skips a target file that is "placed
/// meanwhile" by size and mtime alone: a file of another inode, whatever
/// its owner or content. When a worker dies after listing a shared sticky
/// directory (mode 1777) and its batch is lost, the attacker who creates
/// the victim's new file's name between the second delivery's listing and
/// its batch (same size, `touch -d` to the source's mtime) keeps it: the
/// run succeeds, the target holds the attacker's bytes under the
/// attacker's uid at the victim's path, and the sticky bit stops the
/// victim from removing it. Later runs' quick check finds it equal (and
/// chowns the attacker's content to the victim). Here the plant follows
/// the last delivery's listing; seed 10 is the one whose lossy delivery
/// loses the batch (`keep` 0). Fix: `placed_meanwhile`
/// must only trust a file of psync's own making, e.g. owned by the source's
/// uid/gid and mode as the copy would leave them, or better, read the
/// batch's record/temp name of the first delivery instead of size+mtime.
#[test]
fn redelivered_batch_keeps_attackers_file_planted_with_sources_size_and_mtime() {
    let test = "redelivered_batch_keeps_attackers_file_planted_with_sources_size_and_mtime";
    let Some(user) = test_user(test) else { return };
    let secret = "the victim's new file, 42 bytes long......";
    let forged = "the attacker's forged file, same length..!";
    assert_eq!(secret.len(), forged.len());
    let mut kept = Vec::new();
    let mut planted_runs = 0;
    for seed in 0..12u64 {
        let t = TestDir::new(&format!("{test}-{seed}"));
        for root in [t.src(), t.dst()] {
            let d = root.join("pub");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        }
        // A subdirectory: the directory's task spawns, so its file goes
        // in a batch of its own (a leaf's only batch is copied inline).
        std::fs::create_dir_all(t.src().join("pub/sub")).unwrap();
        let f = t.src().join("pub/f");
        std::fs::write(&f, secret).unwrap();
        std::os::unix::fs::chown(&f, Some(VICTIM), Some(VICTIM)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(T as u64);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(when)
            .unwrap();
        let m = t.dst().join("pub").symlink_metadata().unwrap();
        let walker = Arc::new(PlantAfterListing {
            at: (m.dev(), m.ino()),
            nth: 3,
            seen: AtomicU32::new(0),
            user,
            file: t.dst().join("pub/f"),
            bytes: forged,
            planted: AtomicU32::new(0),
        });
        let ok = run_redelivering_pub(&t.src(), &t.dst(), walker.clone(), seed);
        if walker.planted.load(Ordering::SeqCst) == 0 {
            continue;
        }
        planted_runs += 1;
        let got = t.dst().join("pub/f");
        let (bytes, uid) = (
            std::fs::read_to_string(&got).unwrap(),
            got.symlink_metadata().unwrap().uid(),
        );
        if bytes != secret || uid != VICTIM {
            kept.push(format!(
                "seed {seed}: run ok={ok}, pub/f holds {bytes:?}, uid {uid}"
            ));
        }
    }
    assert!(planted_runs > 0, "the attacker never got to plant");
    assert!(
        kept.is_empty(),
        "the attacker's planted file was kept as the victim's ({planted_runs} runs planted):\n{}",
        kept.join("\n")
    );
}
