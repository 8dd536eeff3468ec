//! One run, many engines: the run's tasks carried out by several engines
//! built from its one spec, every task encoded and decoded on its way
//! (`psync::Scatter`), as a broker's workers on many nodes will. Nothing
//! of the run may live only in one engine's memory: a directory walked on
//! one engine is finished on another, the hard-link phase driven by the
//! root's finish runs wherever that finish does.

use crate::util::compare::assert_no_temps;
use crate::util::run::scatter_seed;
use crate::util::{TestDir, rsync_oracle};
use psync::{EngineContext, Event, Local, Report, Scatter, SyncBuilder, Task};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Prepares the run `b` describes and carries it out on `engines`
/// engines placed by `placement` (random with a printed seed when
/// `None`), on the local transport with 4 threads. Returns the events
/// and the report.
fn run_scattered(
    b: &SyncBuilder,
    engines: usize,
    placement: Option<psync::transport::scatter::Placement>,
) -> (Vec<Event>, Report) {
    let (events, report, _) = run_with(b, engines, |scatter| {
        if let Some(p) = placement {
            scatter.placement(p);
        }
    });
    (events, report)
}

/// [`run_scattered`] with the scatter set up by `setup`; also returns
/// how many deliveries were made again.
fn run_with(
    b: &SyncBuilder,
    engines: usize,
    setup: impl FnOnce(&mut Scatter),
) -> (Vec<Event>, Report, u64) {
    run_on(b, (engines, 4), None, setup)
}

/// [`run_with`] on `engines` engines through `threads` threads of the
/// local transport, listing with `walker` when given.
fn run_on(
    b: &SyncBuilder,
    (engines, threads): (usize, usize),
    walker: Option<Arc<dyn psync::Walker>>,
    setup: impl FnOnce(&mut Scatter),
) -> (Vec<Event>, Report, u64) {
    let (spec, seed) = b.build().expect("build").prepare().expect("prepare");
    let (tx, rx) = crossbeam_channel::unbounded();
    let (report, again) = {
        let mut cx = EngineContext::new(psync::registry());
        cx.events = Some(tx);
        if let Some(w) = walker {
            cx.walker = w;
        }
        let mut scatter =
            Scatter::from_spec(&spec, engines, &cx, scatter_seed()).expect("engines from the spec");
        drop(cx);
        setup(&mut scatter);
        let report = scatter
            .run_all(seed, &Local::new(threads))
            .expect("the run");
        (report, scatter.redelivered())
    };
    // The engines, holding the last senders, are gone.
    (rx.iter().collect(), report, again)
}

/// [`run_scattered`] on 3 engines placed at random, every task delivered
/// again (`Scatter::redeliver(1.0)`): first to a context that loses its
/// defer and a tail of its spawns, then in full, then once more.
fn run_every_task_thrice(b: &SyncBuilder) -> (Vec<Event>, Report, u64) {
    run_with(b, 3, |scatter| {
        scatter.redeliver(1.0);
    })
}

fn errors(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Error { message, .. } | Event::Warning { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// Everything on engine 0 except the root's finish (every pass of it:
/// the last phase's records, the held copies, the area's removal): on
/// engine 1.
fn root_finish_elsewhere() -> psync::transport::scatter::Placement {
    Arc::new(|task: &Task, _n| match task {
        Task::FinishDir { rel, .. } if rel.is_root() => 1,
        _ => 0,
    })
}

/// The root's finish alternating between the engines, pass by pass (what
/// one pass holds back for the next must be found by another engine);
/// everything else on engine 0.
fn root_finish_alternating() -> psync::transport::scatter::Placement {
    let passes = Arc::new(AtomicUsize::new(0));
    Arc::new(move |task: &Task, n| match task {
        Task::FinishDir { rel, .. } if rel.is_root() => {
            1 + passes.fetch_add(1, Ordering::Relaxed) % (n - 1)
        }
        _ => 0,
    })
}

fn builder(src: &Path, dst: &Path) -> SyncBuilder {
    let mut b = psync::builder(src, dst);
    b.threads(4).delete(true).itemize(true);
    b
}

#[track_caller]
pub(crate) fn assert_linked(dst: &Path, names: &[&str]) {
    let ino = |n: &str| {
        dst.join(n)
            .symlink_metadata()
            .unwrap_or_else(|e| panic!("{n}: {e}"))
            .ino()
    };
    for n in &names[1..] {
        assert_eq!(ino(n), ino(names[0]), "{n} is not linked to {}", names[0]);
    }
    let nlink = dst.join(names[0]).symlink_metadata().unwrap().nlink();
    assert_eq!(nlink, names.len() as u64, "links of {}", names[0]);
}

/// The issue's case: one run's tasks through two engines, every task
/// serialized in between, everything on engine A but the root's finish,
/// on engine B — with a hard-link group across directories. The group's
/// files are copied and linked, no link area is left, nothing failed; and
/// the same with the root's passes alternating between engines.
#[test]
fn two_engines_root_finish_on_the_other_one() {
    for (name, engines, placement) in [
        ("elsewhere", 2, root_finish_elsewhere()),
        ("alternating", 3, root_finish_alternating()),
    ] {
        let t = TestDir::new(&format!("scatter-two-engines-{name}"));
        tree!(t.src(), {
            "a/one" => file("a group of three names"),
            "b/two" => hardlink("a/one"),
            "c/d/three" => hardlink("a/one"),
            "a/solo" => file("one name"),
            "pair/x" => file("another group"),
            "pair/y" => hardlink("pair/x"),
        });
        let (events, report) =
            run_scattered(&builder(&t.src(), &t.dst()), engines, Some(placement));
        assert!(
            report.success(),
            "{name}: {report:#?}\n{:#?}",
            errors(&events)
        );
        assert_eq!(report.stats.failed, 0, "{name}");
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_no_temps(&t.dst());
        assert_linked(&t.dst(), &["a/one", "b/two", "c/d/three"]);
        assert_linked(&t.dst(), &["pair/x", "pair/y"]);

        // The group gains a name and loses one, the root's finish on the
        // other engine again.
        tree!(t.src(), {
            "b/two" => absent(),
            "e/four" => hardlink("a/one"),
        });
        let placement = match name {
            "elsewhere" => root_finish_elsewhere(),
            _ => root_finish_alternating(),
        };
        let (events, report) =
            run_scattered(&builder(&t.src(), &t.dst()), engines, Some(placement));
        assert!(
            report.success(),
            "{name}: {report:#?}\n{:#?}",
            errors(&events)
        );
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_no_temps(&t.dst());
        assert_linked(&t.dst(), &["a/one", "c/d/three", "e/four"]);
    }
}

/// Tasks scattered at random over three engines on a tree with hard
/// links across directories, large files copied in chunks, `-c`,
/// deletes and type changes; then a change of each kind and a run again;
/// then a run that finds nothing to do.
#[test]
fn three_engines_links_chunks_checksum_deletes_type_changes() {
    let t = TestDir::new("scatter-three-engines");
    tree!(t.src(), {
        "big/one" => random(5 << 20),
        "big/two" => random((3 << 20) + 17),
        "big/link" => hardlink("big/one"),
        "h/a" => file("linked"),
        "h/sub/b" => hardlink("h/a"),
        "k/c" => hardlink("h/a"),
        "same/size" => file("aaaa") mtime(1_700_000_000, 0),
        "types/was_file" => file("x"),
        "types/was_dir/inner" => file("y"),
        "types/was_link" => symlink("nowhere"),
        "gone/deep/f" => file("deleted later"),
        "fifo" => fifo(),
    });
    tree!(t.dst(), {
        "extra/x" => file("not in the source"),
        "h/a" => file("stale"),
    });
    let mut b = builder(&t.src(), &t.dst());
    b.chunk_size(1 << 20).checksum(true).force(true);
    b.scatter(3, scatter_seed());
    let report = b.build().unwrap().run().expect("first run");
    assert!(report.success(), "{report:#?}");
    assert!(
        report.transport.contains("scattered over 3 engines"),
        "{}",
        report.transport
    );
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_no_temps(&t.dst());
    assert_linked(&t.dst(), &["big/one", "big/link"]);
    assert_linked(&t.dst(), &["h/a", "h/sub/b", "k/c"]);

    // Same size and time, other data: only -c sees it. Types change,
    // a subtree goes, the big file changes, a group gains a name.
    tree!(t.src(), {
        "same/size" => file("bbbb") mtime(1_700_000_000, 0),
        "types/was_file" => dir(),
        "types/was_dir" => file("now a file"),
        "types/was_link" => file("now data"),
        "gone" => absent(),
        "big/two" => random((4 << 20) + 5),
        "new/d" => hardlink("h/a"),
    });
    let report = b.build().unwrap().run().expect("second run");
    assert!(report.success(), "{report:#?}");
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_no_temps(&t.dst());
    assert_eq!(crate::util::read(t.dst().join("same/size")), b"bbbb");
    assert_linked(&t.dst(), &["h/a", "h/sub/b", "k/c", "new/d"]);

    let report = b.build().unwrap().run().expect("third run");
    assert!(report.success(), "{report:#?}");
    assert_eq!(report.stats.bytes_copied, 0, "{report:#?}");
    assert_no_temps(&t.dst());
}

/// A broker delivers at least once: the tree above with a third of the
/// tasks delivered twice (a finished task run again before it is
/// acknowledged; a task whose first delivery lost its defer and part of
/// its spawns run again in full), on three engines: the hard-link phase
/// (the walk's records, its passes, the held copies, the area's
/// removal) included. The result is the source's, nothing is reported
/// failed, nothing is left behind.
#[test]
fn redelivered_tasks_links_chunks_checksum_deletes_type_changes() {
    let t = TestDir::new("scatter-redelivered");
    tree!(t.src(), {
        "big/one" => random(5 << 20),
        "big/two" => random((3 << 20) + 17),
        "big/link" => hardlink("big/one"),
        "h/a" => file("linked"),
        "h/sub/b" => hardlink("h/a"),
        "k/c" => hardlink("h/a"),
        "same/size" => file("aaaa") mtime(1_700_000_000, 0),
        "types/was_file" => file("x"),
        "types/was_dir/inner" => file("y"),
        "types/was_link" => symlink("nowhere"),
        "gone/deep/f" => file("deleted later"),
        "many/f0" => file("0"),
        "many/f1" => file("1"),
        "many/f2" => file("2"),
        "many/f3" => file("3"),
        "fifo" => fifo(),
    });
    tree!(t.dst(), {
        "extra/x" => file("not in the source"),
        "h/a" => file("stale"),
    });
    let mut b = builder(&t.src(), &t.dst());
    // Large files resume from their part: a large file's setup delivered
    // twice below the threshold is not the link phase's (ADR 011).
    b.chunk_size(1 << 20)
        .checksum(true)
        .force(true)
        .resume_threshold(0);
    b.scatter(3, scatter_seed()).redeliver(0.3);
    let run = |b: &mut SyncBuilder, what: &str| {
        let (tx, rx) = crossbeam_channel::unbounded();
        b.events(tx);
        let report = b.build().unwrap().run().expect(what);
        let events: Vec<Event> = rx.try_iter().collect();
        assert!(
            report.success(),
            "{what}: {report:#?}\n{:#?}",
            errors(&events)
        );
        assert_eq!(
            report.stats.failed,
            0,
            "{what}: {report:#?}\n{:#?}",
            errors(&events)
        );
        report
    };
    run(&mut b, "first run");
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_no_temps(&t.dst());
    assert_linked(&t.dst(), &["big/one", "big/link"]);
    assert_linked(&t.dst(), &["h/a", "h/sub/b", "k/c"]);

    tree!(t.src(), {
        "same/size" => file("bbbb") mtime(1_700_000_000, 0),
        "types/was_file" => dir(),
        "types/was_dir" => file("now a file"),
        "types/was_link" => file("now data"),
        "gone" => absent(),
        "big/two" => random((4 << 20) + 5),
        "new/d" => hardlink("h/a"),
    });
    run(&mut b, "second run");
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_no_temps(&t.dst());
    assert_eq!(crate::util::read(t.dst().join("same/size")), b"bbbb");
    assert_linked(&t.dst(), &["h/a", "h/sub/b", "k/c", "new/d"]);

    let report = run(&mut b, "third run");
    assert_eq!(report.stats.bytes_copied, 0, "{report:#?}");
    assert_no_temps(&t.dst());
}

/// The tasks of the hard-link phase: every pass of the root's finish,
/// `LinkSlots`, `Links`, `DropLinks`; with `dirs`, the directory tasks
/// too (they write the phase's records).
fn link_phase(dirs: bool) -> psync::transport::scatter::Redeliverable {
    Arc::new(move |task: &Task| match task {
        Task::FinishDir { rel, .. } => rel.is_root(),
        Task::Links { .. } | Task::LinkSlots { .. } | Task::DropLinks { .. } => true,
        Task::Dir { .. } => dirs,
        _ => false,
    })
}

/// Every task of the hard-link phase delivered three times: first on a
/// context that loses its defer and a tail of its spawns, then in full,
/// then once more after it finished; with the directory tasks that
/// write the phase's records (but in the first run, which makes the
/// directories: a lost first delivery's new entries are not the link
/// phase's, see ADR 011). Groups copied, relinked, fixed in place,
/// gaining names; a symlink and a fifo of several names; a file linked
/// outside the tree. The result is the source's, nothing is reported
/// (no error, no warning), nothing is left behind.
#[test]
fn link_phase_tasks_delivered_again() {
    let t = TestDir::new("scatter-link-phase-again");
    tree!(t.src(), {
        "a/x" => file("group one"),
        "b/y" => hardlink("a/x"),
        "c/d/z" => hardlink("a/x"),
        "a/p" => file("group two"),
        "b/q" => hardlink("a/p"),
        "a/m" => file("group three"),
        "c/n" => hardlink("a/m"),
        "a/s" => symlink("somewhere"),
        "b/s" => hardlink("a/s"),
        "a/f" => fifo(),
        "c/f" => hardlink("a/f"),
        "a/solo" => file("one name in the tree"),
    });
    std::fs::hard_link(t.src().join("a/solo"), t.path().join("outside")).unwrap();
    tree!(t.dst(), { "a/x" => file("stale") });
    let b = builder(&t.src(), &t.dst());
    let run = |what: &str, dirs: bool| {
        let (events, report, again) = run_with(&b, 3, |s| {
            s.redeliver(1.0).redeliver_if(link_phase(dirs));
        });
        assert!(
            report.success(),
            "{what}: {report:#?}\n{:#?}",
            errors(&events)
        );
        assert_eq!(report.stats.failed, 0, "{what}");
        assert!(errors(&events).is_empty(), "{what}: {:#?}", errors(&events));
        assert!(again > 0, "{what}: nothing was delivered again");
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        assert_no_temps(&t.dst());
        report
    };
    run("first run", false);
    assert_linked(&t.dst(), &["a/x", "b/y", "c/d/z"]);
    assert_linked(&t.dst(), &["a/p", "b/q"]);
    assert_linked(&t.dst(), &["a/s", "b/s"]);

    // New data in a group (its names keep their inode), a name more in
    // two groups, a mode of a group changed, the single name's data.
    std::fs::write(t.src().join("a/x"), "group one, changed").unwrap();
    std::fs::write(t.src().join("a/solo"), "changed outside").unwrap();
    tree!(t.src(), {
        "b/r" => hardlink("a/p"),
        "c/s" => hardlink("a/s"),
        "a/m" => keep() mode(0o600),
    });
    run("second run", true);
    assert_linked(&t.dst(), &["a/x", "b/y", "c/d/z"]);
    assert_linked(&t.dst(), &["a/p", "b/q", "b/r"]);
    assert_linked(&t.dst(), &["a/m", "c/n"]);
    assert_linked(&t.dst(), &["a/s", "b/s", "c/s"]);

    let report = run("third run", true);
    assert_eq!(report.stats.bytes_copied, 0, "{report:#?}");
}

/// [`link_phase_tasks_delivered_again`] with the walk's records sorted
/// into the link area's `parts/` and decided by `LinkSlots` lanes, and
/// `held/` read a file per pass: in a child process of this test binary
/// with `PSYNC_LINK_RECORDS_MEM=0` (read once per process).
#[test]
fn link_phase_tasks_delivered_again_in_slots() {
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", "scatter::link_phase_tasks_delivered_again"])
        .env("PSYNC_LINK_RECORDS_MEM", "0")
        .output()
        .expect("run the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}

/// Syncs `src` into `dst` on three engines through `threads` threads
/// of the local transport, every task delivered twice with `redeliver`
/// 1.0 (each time after a finished delivery: no lossy one), listing
/// with `walker` when given. Returns the events, the report, and the
/// deliveries made again.
fn run_redelivered(
    src: &Path,
    dst: &Path,
    redeliver: f64,
    threads: usize,
    walker: Option<Arc<dyn psync::Walker>>,
) -> (Vec<Event>, Report, u64) {
    let mut b = builder(src, dst);
    // The failures are immutable target entries the source does not
    // have, which psync lifts when it syncs file flags (ADR 018).
    b.file_flags(psync::AttrMode::Off);
    run_on(&b, (3, threads), walker, |scatter| {
        scatter.redeliver(redeliver).lossy(false);
    })
}

/// Issue 14: a task delivered twice counts once. The same sync (new
/// files, updates, an attribute-only change, symlinks, a fifo, a type
/// change, deletions, and two failures: a copy into an immutable target
/// directory, a delete of an immutable file) into two identical targets,
/// once with every task delivered once and once with every task
/// delivered twice: the counters are the same, the failures counted
/// once each.
///
/// One thread: with more, another thread may finish a batch a directory
/// task spawned before that task's second delivery lists the directory,
/// which then plans a smaller batch (another task id) and copies again
/// what the first batch copies (work, and counts, of another task).
#[test]
fn redelivered_tasks_count_once() {
    let t = TestDir::new("scatter-count-once");
    tree!(t.src(), {
        "new/a" => file("a"),
        "new/deep/b" => file("bb"),
        "new/deep/er/c" => random(100_000),
        "same" => file("unchanged") mtime(1_700_000_000, 0),
        "changed" => file("new data, longer"),
        "modes" => file("mode only") mode(0o600) mtime(1_700_000_000, 0),
        "link" => symlink("same"),
        "fifo" => fifo(),
        "was_dir" => file("now a file"),
        "locked/f" => file("v2, longer"),
    });
    let targets = ["once", "twice"].map(|name| {
        let dst = t.join(name);
        tree!(&dst, {
            "same" => file("unchanged") mtime(1_700_000_000, 0),
            "changed" => file("old"),
            "modes" => file("mode only") mode(0o644) mtime(1_700_000_000, 0),
            "was_dir/x" => file("x"),
            "gone/deep/y" => file("y"),
            "stuck/z" => file("cannot be removed"),
            "locked/f" => file("v1"),
        });
        dst
    });
    let mut guards = Vec::new();
    for dst in &targets {
        for locked in ["stuck/z", "locked"] {
            match crate::failures::Immutable::set(&dst.join(locked)) {
                Ok(g) => guards.push(g),
                Err(why) => panic!("the test's failures need chattr +i: {why}"),
            }
        }
    }
    let (once_events, once, _) = run_redelivered(&t.src(), &targets[0], 0.0, 1, None);
    let (twice_events, twice, again) = run_redelivered(&t.src(), &targets[1], 1.0, 1, None);
    let (once_errors, twice_errors) = (errors(&once_events), errors(&twice_events));
    drop(guards);
    assert!(again > 0, "nothing was delivered again");
    let counters = |r: &Report| {
        let mut s = r.stats;
        s.elapsed_ms = 0;
        s
    };
    assert_eq!(counters(&twice), counters(&once), "{twice_errors:#?}");
    let s = counters(&once);
    // Each failure once: the copy into the locked directory and its
    // finish (its owner cannot be set), the delete of the stuck file.
    assert_eq!(s.failed, 3, "{s:#?}\n{once_errors:#?}");
    for what in ["create", "chown", "remove"] {
        assert!(
            once_errors.iter().any(|e| e.starts_with(what)),
            "no {what} error: {once_errors:#?}"
        );
    }
    assert!(
        s.created > 0
            && s.updated > 0
            && s.attrs_updated > 0
            && s.deleted > 0
            && s.bytes_copied > 0,
        "{s:#?}"
    );
    for dst in &targets {
        assert_synced!(t.src(), dst, except: ["locked", "stuck"]);
        assert_no_temps(dst);
    }
}

/// Engines on nodes that number the file systems apart (issue 14: an NFS
/// export has another `st_dev` on each client). The same trees through
/// two FUSE mounts of one backing directory (faultfs without faults:
/// each mount has a device number of its own and passes inode numbers
/// through, as two clients see one export), engine 0 with the roots
/// through one mount and engine 1 through the other, the tasks
/// alternating between them. Each must reproduce what the other named: a
/// hard-link group across directories ends as one inode (its key), a file
/// whose chunks ran on both is whole (its part's name), every directory
/// is found as the one listed (its identity), and nothing is reported; a
/// group gains a name in a later run, and a run after that changes
/// nothing.
#[test]
fn engines_that_number_the_file_systems_apart_agree() {
    let t = TestDir::new("scatter-two-mounts");
    let back = t.join("backing");
    // Names, attributes and data not cached: what one engine changes
    // through its mount, the other sees at once, as the clients of a
    // cluster file system do (each mount's page cache would otherwise
    // keep a page of a journal that the other wrote records into).
    let uncached = [
        "entry_timeout=0",
        "attr_timeout=0",
        "negative_timeout=0",
        "coherent",
    ];
    let one = require_faultfs!(back, t.join("one"), [], uncached);
    let two = require_faultfs!(back, t.join("two"), [], uncached);
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    assert_ne!(dev(one.path()), dev(two.path()), "a device per mount");
    let (src, dst) = (back.join("src"), back.join("dst"));
    tree!(src, {
        "a/one" => file("a group of three names"),
        "b/two" => hardlink("a/one"),
        "c/d/three" => hardlink("a/one"),
        "big/whole" => random((3 << 20) + 7),
        "big/link" => hardlink("big/whole"),
        "big/alone" => random((2 << 20) + 3),
        "e/f/g/h" => file("deep"),
    });
    let run = |what: &str| {
        let mut b = builder(&one.path().join("src"), &one.path().join("dst"));
        b.chunk_size(1 << 20);
        let (spec, seed) = b.build().expect("build").prepare().expect("prepare");
        let mut other = spec.clone();
        (other.src, other.dst) = (two.path().join("src"), two.path().join("dst"));
        let (tx, rx) = crossbeam_channel::unbounded();
        let report = {
            let mut cx = EngineContext::new(psync::registry());
            cx.events = Some(tx);
            let mut scatter = Scatter::from_specs(&[spec, other], &cx, scatter_seed())
                .expect("engines from the specs");
            drop(cx);
            let next = AtomicUsize::new(0);
            scatter.placement(Arc::new(move |_: &Task, n| {
                next.fetch_add(1, Ordering::Relaxed) % n
            }));
            scatter.run_all(seed, &Local::new(4)).expect(what)
        };
        let events: Vec<Event> = rx.iter().collect();
        assert!(
            report.success(),
            "{what}: {report:#?}\n{:#?}",
            errors(&events)
        );
        assert!(errors(&events).is_empty(), "{what}: {:#?}", errors(&events));
        assert_synced!(src, dst);
        assert_no_temps(&dst);
        report
    };
    run("first run");
    assert_linked(&dst, &["a/one", "b/two", "c/d/three"]);
    assert_linked(&dst, &["big/whole", "big/link"]);

    tree!(src, { "k/four" => hardlink("a/one") });
    run("second run");
    assert_linked(&dst, &["a/one", "b/two", "c/d/three", "k/four"]);

    let report = run("third run");
    let s = &report.stats;
    assert_eq!(
        (
            s.created,
            s.updated,
            s.attrs_updated,
            s.deleted,
            s.bytes_copied
        ),
        (0, 0, 0, 0, 0),
        "{report:#?}"
    );
}

/// A broker delivers at least once: a tree with large files copied in
/// chunks, `-c`, deletes and type changes, with a third of the tasks
/// delivered twice (a finished task run again before it is
/// acknowledged; a task whose first delivery lost its defer and part of
/// its spawns run again in full), on three engines. The result is the
/// source's (directory times included: a lossy first delivery moved
/// them), nothing is reported failed, nothing is left behind. Large files
/// both resume from their part (`resume_threshold` 0) and do not (the
/// default: a second setup finds the part its first delivery's chunks
/// write into, and keeps it).
#[test]
fn redelivered_tasks_chunks_checksum_deletes_type_changes() {
    for threshold in [0, 1 << 30] {
        redelivered_no_links(threshold);
    }
}

fn redelivered_no_links(threshold: u64) {
    let t = TestDir::new(&format!("scatter-redelivered-{threshold}"));
    tree!(t.src(), {
        "big/one" => random(5 << 20),
        "big/two" => random((3 << 20) + 17),
        "h/a" => file("linked"),
        "same/size" => file("aaaa") mtime(1_700_000_000, 0),
        "types/was_file" => file("x"),
        "types/was_dir/inner" => file("y"),
        "types/was_link" => symlink("nowhere"),
        "gone/deep/f" => file("deleted later"),
        "many/f0" => file("0"),
        "many/f1" => file("1"),
        "many/f2" => file("2"),
        "many/f3" => file("3"),
        "fifo" => fifo(),
    });
    tree!(t.dst(), {
        "extra/x" => file("not in the source"),
        "h/a" => file("stale"),
    });
    let mut b = builder(&t.src(), &t.dst());
    b.chunk_size(1 << 20)
        .checksum(true)
        .force(true)
        .resume_threshold(threshold);
    b.scatter(3, scatter_seed()).redeliver(0.3);
    let run = |b: &mut SyncBuilder, what: &str| {
        let (tx, rx) = crossbeam_channel::unbounded();
        b.events(tx);
        let report = b.build().unwrap().run().expect(what);
        let events: Vec<Event> = rx.try_iter().collect();
        let what = format!("{what}, resume threshold {threshold}");
        assert!(
            report.success(),
            "{what}: {report:#?}\n{:#?}",
            errors(&events)
        );
        assert_eq!(
            report.stats.failed,
            0,
            "{what}: {report:#?}\n{:#?}",
            errors(&events)
        );
        // Nothing to warn about either (a copy taken for a target
        // replaced behind the run's back, say).
        assert_eq!(
            report.stats.warnings,
            0,
            "{what}: {report:#?}\n{:#?}",
            errors(&events)
        );
        report
    };
    run(&mut b, "first run");
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_no_temps(&t.dst());

    tree!(t.src(), {
        "same/size" => file("bbbb") mtime(1_700_000_000, 0),
        "types/was_file" => dir(),
        "types/was_dir" => file("now a file"),
        "types/was_link" => file("now data"),
        "gone" => absent(),
        "big/two" => random((4 << 20) + 5),
    });
    run(&mut b, "second run");
    assert_synced!(t.src(), t.dst());
    rsync_oracle(&t.src(), &t.dst());
    assert_no_temps(&t.dst());
    assert_eq!(crate::util::read(t.dst().join("same/size")), b"bbbb");

    let report = run(&mut b, "third run");
    assert_eq!(report.stats.bytes_copied, 0, "{report:#?}");
    assert_no_temps(&t.dst());
}

/// Every task delivered three times (a lossy first delivery, a full one,
/// and the full one again before it is acknowledged), on a tree without
/// hard links: large files below and above the resume threshold, `-c`
/// finding a large file equal and another different, deletes (of a
/// directory too), type changes, new directories. Each run leaves the
/// source's tree (directory times included), no failure, no warning,
/// nothing behind; the last finds nothing to copy.
#[test]
fn every_task_delivered_thrice_chunks_checksum_deletes_type_changes() {
    for threshold in [0, 1 << 30] {
        let t = TestDir::new(&format!("scatter-thrice-{threshold}"));
        tree!(t.src(), {
            "big/one" => random(5 << 20),
            "big/two" => random((3 << 20) + 17),
            "same/size" => file("aaaa") mtime(1_700_000_000, 0),
            "same/big" => random((2 << 20) + 3) mtime(1_700_000_000, 0),
            "types/was_file" => file("x"),
            "types/was_dir/inner" => file("y"),
            "gone/deep/f" => file("deleted later"),
            "many/f0" => file("0"),
            "many/f1" => file("1"),
            "many/sub/f2" => file("2"),
            "quiet/sub/f" => file("q"),
        });
        tree!(t.dst(), {
            "extra/x" => file("not in the source"),
        });
        let mut b = builder(&t.src(), &t.dst());
        b.chunk_size(1 << 20)
            .checksum(true)
            .force(true)
            .resume_threshold(threshold);
        let run = |b: &SyncBuilder, what: &str| {
            let (events, report, again) = run_every_task_thrice(b);
            let what = format!("{what}, resume threshold {threshold}");
            assert!(again > 0, "{what}: nothing delivered again");
            assert!(
                report.success(),
                "{what}: {report:#?}\n{:#?}",
                errors(&events)
            );
            assert_eq!(report.stats.failed, 0, "{what}: {:#?}", errors(&events));
            assert_eq!(report.stats.warnings, 0, "{what}: {:#?}", errors(&events));
            assert_synced!(t.src(), t.dst());
            rsync_oracle(&t.src(), &t.dst());
            assert_no_temps(&t.dst());
            report
        };
        run(&b, "first run");
        tree!(t.src(), {
            "same/size" => file("bbbb") mtime(1_700_000_000, 0),
            "types/was_file" => dir(),
            "types/was_dir" => file("now a file"),
            "gone" => absent(),
            "big/two" => random((4 << 20) + 5),
            "many/sub/new" => file("new"),
        });
        // Same size and time, other data: only -c sees it.
        let mut data = crate::util::read(t.src().join("same/big"));
        data[(1 << 20) + 7] ^= 1;
        let f = t.src().join("same/big");
        std::fs::write(&f, &data).unwrap();
        let then = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .and_then(|f| f.set_modified(then))
            .unwrap();
        // An entry to delete in a directory whose times are right and
        // which holds no file (a file to compare would make every
        // delivery act): the lossy first delivery of its task deletes it,
        // which moves the times, and the finish of the full one, which
        // finds nothing to do, puts them back.
        std::fs::write(t.dst().join("quiet/extra"), "extra").unwrap();
        let quiet = std::fs::metadata(t.src().join("quiet")).unwrap();
        std::fs::File::open(t.dst().join("quiet"))
            .and_then(|d| d.set_modified(quiet.modified().unwrap()))
            .unwrap();
        run(&b, "second run");
        assert_eq!(crate::util::read(t.dst().join("same/size")), b"bbbb");
        let report = run(&b, "third run");
        assert_eq!(report.stats.bytes_copied, 0, "{report:#?}");
    }
}

/// A walker that fails `lstat` (EIO) of the entries named `flaky*` in
/// the source directories `dirs` (device, inode): every listing of them,
/// each delivery's, reports the same error, and (with `--delete`) the
/// same warning that nothing is deleted there.
struct FlakySource {
    dirs: Vec<(u64, u64)>,
}

impl psync::Walker for FlakySource {
    fn list(&self, dir: &psync::Dir) -> std::io::Result<psync::Listing> {
        let mut l = dir.list()?;
        let st = dir.fstat()?;
        #[allow(clippy::unnecessary_cast)]
        if self.dirs.contains(&(st.st_dev as u64, st.st_ino as u64)) {
            let (flaky, ok): (Vec<psync::Entry>, _) = l
                .entries
                .into_iter()
                .partition(|e| e.name.as_bytes().starts_with(b"flaky"));
            l.entries = ok;
            l.failed = flaky
                .into_iter()
                .map(|e| (e.name, std::io::Error::from_raw_os_error(libc::EIO)))
                .collect();
        }
        Ok(l)
    }
}

/// Issue 14: a task delivered twice reports its events once. The same
/// sync with `-i` (new files, updates, an attribute-only change, a
/// symlink, a fifo, a type change, deletions; a source entry that
/// cannot be read, an error and a warning that every listing of its
/// directory gives; a copy into an immutable target directory and a
/// delete of an immutable file, errors that every delivery of their
/// tasks meets) from two identical sources into two identical targets,
/// once with every task delivered once and once with every task
/// delivered twice: the same itemized lines, warnings and errors, each
/// once.
///
/// One thread, as `redelivered_tasks_count_once` (a batch another
/// thread finishes before its directory task's second delivery lists
/// the directory makes that delivery plan another batch).
#[test]
fn redelivered_tasks_report_once() {
    let t = TestDir::new("scatter-report-once");
    let pairs = ["once", "twice"].map(|name| (t.join(name).join("src"), t.join(name).join("dst")));
    for (src, dst) in &pairs {
        tree!(src, {
            "new/a" => file("a"),
            "new/deep/b" => file("bb"),
            "same" => file("unchanged") mtime(1_700_000_000, 0),
            "changed" => file("new data, longer"),
            "modes" => file("mode only") mode(0o600) mtime(1_700_000_000, 0),
            "link" => symlink("same"),
            "fifo" => fifo(),
            "was_dir" => file("now a file"),
            "locked/f" => file("v2, longer"),
            "d/ok" => file("ok"),
            "d/flaky" => file("cannot be read"),
        });
        tree!(dst, {
            "same" => file("unchanged") mtime(1_700_000_000, 0),
            "changed" => file("old"),
            "modes" => file("mode only") mode(0o644) mtime(1_700_000_000, 0),
            "was_dir/x" => file("x"),
            "gone/deep/y" => file("y"),
            "stuck/z" => file("cannot be removed"),
            "locked/f" => file("v1"),
            "d/extra" => file("kept: the source could not be read"),
        });
    }
    let mut guards = Vec::new();
    for (_, dst) in &pairs {
        for locked in ["stuck/z", "locked"] {
            match crate::failures::Immutable::set(&dst.join(locked)) {
                Ok(g) => guards.push(g),
                Err(why) => panic!("the test's failures need chattr +i: {why}"),
            }
        }
    }
    let walker: Arc<dyn psync::Walker> = Arc::new(FlakySource {
        dirs: pairs
            .iter()
            .map(|(src, _)| {
                let m = src.join("d").metadata().unwrap();
                (m.dev(), m.ino())
            })
            .collect(),
    });
    let [(src0, dst0), (src1, dst1)] = &pairs;
    let (once, once_report, _) = run_redelivered(src0, dst0, 0.0, 1, Some(Arc::clone(&walker)));
    let (twice, twice_report, again) = run_redelivered(src1, dst1, 1.0, 1, Some(walker));
    drop(guards);
    assert!(again > 0, "nothing was delivered again");

    // What each run reported, sorted, its roots' paths made alike.
    let reported = |events: &[Event], (src, dst): &(std::path::PathBuf, std::path::PathBuf)| {
        let alike = |m: &str| {
            m.replace(&*dst.to_string_lossy(), "DST")
                .replace(&*src.to_string_lossy(), "SRC")
        };
        let mut lines = [Vec::new(), Vec::new(), Vec::new()];
        for e in events {
            match e {
                Event::Itemize { .. } => lines[0].push(e.itemize_line().unwrap()),
                Event::Warning { message, .. } => lines[1].push(alike(message)),
                Event::Error { message, .. } => lines[2].push(alike(message)),
                _ => {}
            }
        }
        lines.iter_mut().for_each(|l| l.sort());
        lines
    };
    let once = reported(&once, &pairs[0]);
    assert_eq!(reported(&twice, &pairs[1]), once);
    let [items, warnings, errors] = once;

    // The run without redelivery reported what the test is about: every
    // kind of change, and its warning and errors, each once.
    for code in [
        "cd+++++++++ new/",
        ">f+++++++++ new/a",
        ">f.st...... changed",
        ".f...p..... modes",
        "cL+++++++++ link -> same",
        "cS+++++++++ fifo",
        "*deleting   gone/",
        "*deleting   was_dir/x",
        ">f+++++++++ was_dir",
        ">f+++++++++ d/ok",
    ] {
        assert_eq!(
            items.iter().filter(|l| *l == code).count(),
            1,
            "{code:?} in {items:#?}"
        );
    }
    assert_eq!(
        warnings,
        [
            "read directory SRC/d: source entries could not be read: nothing deleted in this directory"
        ],
        "{warnings:#?}"
    );
    assert_eq!(
        errors,
        [
            "chown DST/locked: Operation not permitted (os error 1)",
            "create DST/locked/f: Operation not permitted (os error 1)",
            "remove DST/stuck: Operation not permitted (os error 1)",
            "stat SRC/d/flaky: Input/output error (os error 5)",
        ],
        "{errors:#?}"
    );
    let counts = |r: &Report| (r.stats.failed, r.stats.warnings);
    assert_eq!(counts(&twice_report), counts(&once_report));
    assert_eq!(counts(&once_report), (4, 1));
}

/// `-c` finds a large file equal, chunk by chunk, whose mode alone
/// changed: its finish gives the target the source's mode (the finish
/// compares the target's identity as the run names it, ADR 014: with a
/// local `st_dev` against the run's id it took every equal file for one
/// an earlier delivery had copied, and left its attributes).
#[test]
fn checksum_finds_a_large_file_equal_and_fixes_its_mode() {
    let t = TestDir::new("scatter-checksum-mode");
    tree!(t.src(), {
        "big" => random((3 << 20) + 5) mode(0o644) mtime(1_700_000_000, 0),
    });
    let mut b = builder(&t.src(), &t.dst());
    b.chunk_size(1 << 20).checksum(true);
    b.scatter(3, scatter_seed());
    assert!(b.build().unwrap().run().expect("first run").success());
    let big = t.src().join("big");
    std::fs::set_permissions(&big, std::fs::Permissions::from_mode(0o600)).unwrap();
    let report = b.build().unwrap().run().expect("second run");
    assert!(report.success(), "{report:#?}");
    assert_eq!(report.stats.bytes_copied, 0, "{report:#?}");
    let mode = std::fs::metadata(t.dst().join("big")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o600, "the target's mode");
    assert_synced!(t.src(), t.dst());
}
