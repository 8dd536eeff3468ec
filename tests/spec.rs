//! One run carried out from its spec: a `RunSpec` made by the library,
//! encoded, decoded on another thread and turned into an engine there
//! (`Engine::from_spec`), then run to the end on the local transport,
//! does what a plain `Syncer` run does — as a worker process on another
//! node will.

use crate::basic::mixed_tree;
use crate::util::compare::assert_no_temps;
use crate::util::run::lib_events;
use crate::util::{Opts, TestDir, copy_tree, rsync_oracle};
use psync::{Engine, EngineContext, Event, Local, Report, RunSpec, SyncBuilder, Task, Time};
use std::path::Path;
use std::time::Duration;

/// A builder for `src` → `dst` as [`lib_events`] makes it (delete,
/// itemize), so both runs are asked the same.
fn builder(src: &Path, dst: &Path) -> SyncBuilder {
    let mut b = psync::builder(src, dst);
    b.threads(4).delete(true).itemize(true);
    b
}

/// Prepares a run with `b`, lets `edit` change its spec, encodes spec and
/// seed, and runs them on another thread with an engine built there from
/// the decoded spec. Returns the events and the report.
fn run_from_spec(b: &SyncBuilder, edit: impl FnOnce(&mut RunSpec)) -> (Vec<Event>, Report) {
    let (mut spec, seed) = b.build().unwrap().prepare().unwrap();
    edit(&mut spec);
    let (spec, seed) = (spec.encode().unwrap(), seed.encode().unwrap());
    let (tx, rx) = crossbeam_channel::unbounded();
    let worker = std::thread::spawn(move || {
        let spec = RunSpec::decode(&spec).expect("decode the spec");
        let seed = Task::decode(&seed).expect("decode the seed");
        let mut cx = EngineContext::new(psync::registry());
        cx.events = Some(tx);
        let engine = Engine::from_spec(&spec, cx).expect("an engine from the spec");
        engine.run_all(seed, &Local::new(4)).expect("the run")
    });
    let report = worker.join().expect("the worker thread");
    // The engine, holding the last sender, ended with its thread.
    (rx.iter().collect(), report)
}

/// The itemized lines, sorted, with the names of the hard-link group
/// `hard/a`, `hard/b`, `other/c` made alike: which of them is copied and
/// which linked to it depends on which thread gets there first.
fn sorted_items(events: &[Event]) -> Vec<String> {
    let group = ["hard/a", "hard/b", "other/c"];
    let mut v: Vec<String> = events
        .iter()
        .filter_map(Event::itemize_line)
        .map(|line| match line.split_once(' ') {
            Some((code, path)) if group.iter().any(|g| path.starts_with(g)) => {
                format!("{code} <a name of the group>")
            }
            _ => line,
        })
        .collect();
    v.sort();
    v
}

fn errors(events: &[Event]) -> Vec<&str> {
    let mut out = Vec::new();
    for e in events {
        if let Event::Error { message, .. } = e {
            out.push(message.as_str());
        }
    }
    out
}

/// The mixed tree, hard links and a target with stale, outdated and
/// extraneous entries: a spec run on one copy of the target and a plain
/// run on another end alike, with the same changes itemized and counted.
#[test]
fn a_spec_run_on_another_thread_equals_a_plain_run() {
    let t = TestDir::new("spec-run-equals-plain");
    mixed_tree(&t.src());
    tree!(t.src(), {
        "hard/a" => file("one inode, three names"),
        "hard/b" => hardlink("hard/a"),
        "other/c" => hardlink("hard/a"),
        "changed" => file("new text") mtime(1_700_000_000, 0),
    });
    let before = t.join("before");
    tree!(before, {
        "changed" => file("old") mtime(1_600_000_000, 0),
        "extra/x" => file("deleted"),
        "small" => file("hello\n") mode(0o600),
    });
    let (spec_dst, plain_dst) = (t.join("spec-dst"), t.join("plain-dst"));
    copy_tree(&before, &spec_dst);
    copy_tree(&before, &plain_dst);

    let (events, report) = run_from_spec(&builder(&t.src(), &spec_dst), |_| {});
    assert!(report.success(), "{report:#?}\n{:#?}", errors(&events));
    assert_synced!(t.src(), spec_dst);
    rsync_oracle(&t.src(), &spec_dst);
    assert_no_temps(&spec_dst);

    let (plain_events, plain) = lib_events(&t.src(), &plain_dst, 4, &Opts::delete());
    let plain = plain.expect("the plain run");
    assert!(plain.success(), "{plain:#?}");
    assert_eq!(sorted_items(&events), sorted_items(&plain_events));
    let (mut a, mut b) = (report.stats, plain.stats);
    (a.elapsed_ms, b.elapsed_ms) = (0, 0);
    assert_eq!(a, b, "the counters of the spec run and of the plain run");
    assert_eq!(report.copier, plain.copier);
    assert_eq!(report.modify_window_ns, plain.modify_window_ns);

    // And a second spec run finds nothing to do.
    let (again, report) = run_from_spec(&builder(&t.src(), &spec_dst), |_| {});
    assert!(report.success(), "{report:#?}");
    assert_eq!(sorted_items(&again), Vec::<String>::new());
    assert_eq!(report.stats.bytes_copied, 0);
}

/// A target root the run creates: the spec's preparation creates it, and
/// the engine's run itemizes it as new, as a plain run does.
#[test]
fn a_spec_run_into_a_missing_target_creates_and_itemizes_it() {
    let t = TestDir::new("spec-run-missing-target");
    tree!(t.src(), { "f" => file("x") });
    let (events, report) = run_from_spec(&builder(&t.src(), &t.dst()), |_| {});
    assert!(report.success(), "{report:#?}");
    let items: Vec<String> = events.iter().filter_map(Event::itemize_line).collect();
    assert_eq!(items, ["cd+++++++++ ./", ">f+++++++++ f"], "the root first");
    assert_synced!(t.src(), t.dst());
}

/// `--min-age` measures against the run's clock, the spec's `now`, not
/// the clock of the process that runs the engine: a file just written is
/// too young for a spec of now, and old enough for a spec whose clock is
/// two hours ahead.
#[test]
fn min_age_uses_the_clock_of_the_spec() {
    let t = TestDir::new("spec-min-age");
    tree!(t.src(), { "fresh" => file("just written") });
    let mut b = builder(&t.src(), &t.dst());
    b.min_age(Duration::from_secs(3600));
    let (_, report) = run_from_spec(&b, |_| {});
    assert_eq!(report.stats.skipped_young, 1, "{report:#?}");
    assert!(!t.dst().join("fresh").exists());
    let (_, report) = run_from_spec(&b, |spec| {
        spec.plan.now = Time::new(spec.plan.now.sec + 7200, 0);
    });
    assert!(report.success(), "{report:#?}");
    assert_eq!(report.stats.skipped_young, 0, "{report:#?}");
    assert_eq!(crate::util::read(t.dst().join("fresh")), b"just written");
}

/// An engine refuses a spec it cannot carry out as made: a copier it does
/// not know, or other powers than the preparing process had.
#[test]
fn from_spec_refuses_what_it_cannot_carry_out() {
    let t = TestDir::new("spec-refused");
    tree!(t.src(), { "f" => file("x") });
    let (spec, _) = builder(&t.src(), &t.dst())
        .build()
        .unwrap()
        .prepare()
        .unwrap();
    let build = |spec: &RunSpec| Engine::from_spec(spec, EngineContext::new(psync::registry()));
    build(&spec).expect("the spec as prepared");

    let mut unknown = spec.clone();
    unknown.copier = "nonesuch".into();
    let e = build(&unknown).unwrap_err().to_string();
    assert!(e.contains("no copier named \"nonesuch\""), "{e}");

    let mut other_powers = spec;
    other_powers.copy.can_chown = !other_powers.copy.can_chown;
    let e = build(&other_powers).unwrap_err().to_string();
    assert!(e.contains("the run was prepared"), "{e}");
}
