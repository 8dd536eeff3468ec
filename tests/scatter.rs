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
use std::os::unix::fs::MetadataExt;
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
    let (spec, seed) = b.build().expect("build").prepare().expect("prepare");
    let (tx, rx) = crossbeam_channel::unbounded();
    let report = {
        let mut cx = EngineContext::new(psync::registry());
        cx.events = Some(tx);
        let mut scatter =
            Scatter::from_spec(&spec, engines, &cx, scatter_seed()).expect("engines from the spec");
        drop(cx);
        if let Some(p) = placement {
            scatter.placement(p);
        }
        scatter.run_all(seed, &Local::new(4)).expect("the run")
    };
    // The engines, holding the last senders, are gone.
    (rx.iter().collect(), report)
}

/// [`run_scattered`] on 3 engines placed at random, every task delivered
/// again (`Scatter::redeliver(1.0)`): first to a context that loses its
/// defer and a tail of its spawns, then in full, then once more.
fn run_every_task_thrice(b: &SyncBuilder) -> (Vec<Event>, Report, u64) {
    let (spec, seed) = b.build().expect("build").prepare().expect("prepare");
    let (tx, rx) = crossbeam_channel::unbounded();
    let (report, again) = {
        let mut cx = EngineContext::new(psync::registry());
        cx.events = Some(tx);
        let mut scatter =
            Scatter::from_spec(&spec, 3, &cx, scatter_seed()).expect("engines from the spec");
        drop(cx);
        scatter.redeliver(1.0);
        let report = scatter.run_all(seed, &Local::new(4)).expect("the run");
        (report, scatter.redelivered())
    };
    (rx.iter().collect(), report, again)
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
fn assert_linked(dst: &Path, names: &[&str]) {
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

/// The case: one run's tasks through two engines, every task
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
        redelivered(threshold);
    }
}

fn redelivered(threshold: u64) {
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
