//! Runs on a cluster: a real `redis-server` (started per test on a free
//! loopback port), real `psync worker` processes, `psync sync --broker`
//! and the cluster's commands, with rsync as the oracle. Workers heartbeat
//! every 0.2 s here (dead after 2 s of silence).

use crate::server::Redis;
use crate::util::TestDir;
use crate::util::rsync::{require_rsync, rsync_oracle, rsync_oracle_without_delete};
use crate::util::run::psync_cmd;
use crate::util::tree::random;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A broker and its workers; workers are killed on drop.
pub(crate) struct Cluster {
    pub(crate) redis: Redis,
    pub(crate) workers: Vec<(String, Child)>,
    pub(crate) allow: PathBuf,
    pub(crate) logs: PathBuf,
}

impl Cluster {
    /// A redis-server and `n` workers (2 threads each) allowed `allow`.
    pub(crate) fn start(redis: Redis, t: &TestDir, n: usize) -> Cluster {
        let logs = t.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let mut c = Cluster {
            redis,
            workers: Vec::new(),
            allow: t.path().to_path_buf(),
            logs,
        };
        for i in 0..n {
            c.worker(&format!("w{i}"), &[]);
        }
        c.wait_workers(n);
        c
    }

    pub(crate) fn cmd(&self) -> Command {
        let mut c = psync_cmd();
        c.env("PSYNC_BROKER", self.redis.url());
        c
    }

    /// Starts a worker named `name` (2 threads, heartbeat 0.2 s, lease
    /// 5 s, grace 5 s) with `extra` arguments.
    pub(crate) fn worker(&mut self, name: &str, extra: &[&str]) {
        let log = std::fs::File::create(self.logs.join(format!("{name}.log"))).unwrap();
        let child = self
            .cmd()
            .args([
                "worker",
                "--threads",
                "2",
                "--heartbeat",
                "0.2",
                "--lease",
                "5",
            ])
            .args(if extra.contains(&"--grace") {
                &[][..]
            } else {
                &["--grace", "5"]
            })
            .args(["--name", name, "--allow"])
            .arg(&self.allow)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start a worker");
        self.workers.push((name.to_string(), child));
    }

    /// Waits until `n` workers are alive.
    pub(crate) fn wait_workers(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.status()["workers"]
            .as_array()
            .map_or(0, |w| w.iter().filter(|w| w["alive"] == true).count())
            < n
        {
            assert!(
                Instant::now() < deadline,
                "{n} workers not up: {}",
                self.worker_logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (30 s at most) until the worker `name` runs a task.
    fn wait_busy(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let busy = |w: &serde_json::Value| w["name"] == name && w["busy"].as_u64() > Some(0);
        while !self.status()["workers"]
            .as_array()
            .is_some_and(|ws| ws.iter().any(busy))
        {
            assert!(Instant::now() < deadline, "{name} never busy");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn worker_logs(&self) -> String {
        let mut all = String::new();
        for (name, _) in &self.workers {
            let log =
                std::fs::read_to_string(self.logs.join(format!("{name}.log"))).unwrap_or_default();
            all.push_str(&format!("\n--- {name}:\n{log}"));
        }
        all
    }

    pub(crate) fn psync(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run psync")
    }

    pub(crate) fn status(&self) -> serde_json::Value {
        let o = self.psync(&["status", "--json"]);
        assert!(
            o.status.success(),
            "status: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("status JSON")
    }

    /// `psync sync` through the broker, with `args`, under way (its
    /// output piped).
    pub(crate) fn spawn_sync(&self, src: &Path, dst: &Path, args: &[&str]) -> Child {
        self.cmd()
            .arg("sync")
            .args(args)
            .arg(src)
            .arg(dst)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start psync sync")
    }

    /// `psync sync` through the broker, with `args`.
    pub(crate) fn sync(&self, src: &Path, dst: &Path, args: &[&str]) -> Output {
        self.cmd()
            .arg("sync")
            .args(args)
            .arg(src)
            .arg(dst)
            .output()
            .expect("run psync sync")
    }

    /// The cluster log's lines.
    pub(crate) fn log(&self) -> String {
        String::from_utf8_lossy(&self.psync(&["logs"]).stdout).into_owned()
    }

    pub(crate) fn kill(&mut self, name: &str) {
        let (_, child) = self.workers.iter_mut().find(|(n, _)| n == name).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.workers {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Asserts a run's success, showing everything when it failed.
pub(crate) fn assert_ok(o: &Output, c: &Cluster) {
    assert!(o.status.success(), "{}", show(o, c));
}

/// A run's exit status and output, the workers' and the cluster's logs.
pub(crate) fn show(o: &Output, c: &Cluster) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}\nworkers: {}\ncluster log:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        c.worker_logs(),
        c.log()
    )
}

/// A mixed tree: `dirs` directories of `files` small files, four large
/// files of 3 MiB (chunked at 1 MiB), hard links across directories, a
/// symlink.
pub(crate) fn mixed_tree(src: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = src.join(format!("d{d}/sub"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(
                dir.join(format!("f{f}")),
                format!("{d}/{f}\n").repeat(f % 7 + 1),
            )
            .unwrap();
        }
    }
    for i in 0..4 {
        crate::util::tree::build(
            src,
            vec![crate::util::tree::Node::at(
                format!("big{i}"),
                random(3 << 20),
            )],
        );
    }
    std::fs::hard_link(src.join("d0/sub/f1"), src.join("d1/linked")).unwrap();
    std::fs::hard_link(
        src.join("big0"),
        src.join(format!("d{}/big-again", dirs - 1)),
    )
    .unwrap();
    std::os::unix::fs::symlink("d0/sub/f2", src.join("sym")).unwrap();
}

/// A cluster of `$n` workers for the test dir `$t` (a real redis-server),
/// or the test's skip when rsync or redis-server is missing (a failure
/// under `CI=true`). Used by `cluster_review.rs` too.
macro_rules! cluster {
    ($t:expr, $n:expr) => {{
        if !$crate::util::rsync::require_rsync() {
            return;
        }
        let redis = require_redis!();
        $crate::cluster::Cluster::start(redis, &$t, $n)
    }};
}

#[test]
fn a_mixed_tree_syncs_through_three_workers_and_a_rerun_applies_deletes_and_type_changes() {
    let t = TestDir::new("cluster_mixed");
    let c = cluster!(t, 3);
    let (src, dst) = (t.src(), t.dst());
    mixed_tree(&src, 12, 40);
    let o = c.sync(&src, &dst, &["--chunk-size", "1M", "--json", "-i"]);
    assert_ok(&o, &c);
    rsync_oracle(&src, &dst);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("\"event\":\"summary\""), "{out}");
    assert!(
        out.contains("big-again"),
        "itemized through the broker: {out}"
    );

    // Deletes and type changes on a re-run.
    std::fs::remove_dir_all(src.join("d3")).unwrap();
    std::fs::remove_file(src.join("d4/sub/f0")).unwrap();
    std::fs::create_dir(src.join("d4/sub/f0")).unwrap();
    std::fs::remove_file(src.join("sym")).unwrap();
    std::fs::create_dir(src.join("sym")).unwrap();
    std::fs::remove_dir_all(src.join("d5")).unwrap();
    std::fs::write(src.join("d5"), "now a file").unwrap();
    std::fs::write(src.join("big1"), "small now").unwrap();
    let o = c.sync(&src, &dst, &["--chunk-size", "1M", "--delete", "-q"]);
    assert_ok(&o, &c);
    rsync_oracle(&src, &dst);
    // Every worker took part.
    let status = c.status();
    for w in status["workers"].as_array().unwrap() {
        assert!(w["tasks_done"].as_u64().unwrap() > 0, "{w}");
    }
}

#[test]
fn a_killed_worker_s_tasks_are_taken_by_the_others_and_nothing_of_a_live_one() {
    let t = TestDir::new("cluster_kill");
    let mut c = cluster!(t, 3);
    let (src, dst) = (t.src(), t.dst());
    mixed_tree(&src, 30, 60);
    for i in 0..6 {
        crate::util::tree::build(
            &src,
            vec![crate::util::tree::Node::at(
                format!("huge{i}"),
                random(8 << 20),
            )],
        );
    }
    let run = c.spawn_sync(&src, &dst, &["--chunk-size", "1M", "-q"]);
    // Kill w1 while it runs tasks.
    c.wait_busy("w1");
    c.kill("w1");
    let o = run.wait_with_output().unwrap();
    assert_ok(&o, &c);
    rsync_oracle(&src, &dst);
    let log = c.log();
    let took: Vec<&str> = log.lines().filter(|l| l.contains("took")).collect();
    assert!(!took.is_empty(), "w1's tasks were taken by others: {log}");
    for l in &took {
        assert!(
            l.contains("of w1, which is gone"),
            "a live worker's tasks taken: {l}\n{log}"
        );
    }
}

#[test]
fn an_unreachable_broker_is_a_clear_error() {
    let t = TestDir::new("cluster_unreachable");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = psync_cmd()
        .args(["sync", "--broker", &format!("redis://127.0.0.1:{port}/")])
        .arg(t.src())
        .arg(t.dst())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("refused"),
        "{err}"
    );
    assert!(
        !t.dst().exists(),
        "the target root was made for a run never submitted"
    );
}

#[test]
fn relative_roots_are_resolved_where_the_run_is_submitted() {
    let t = TestDir::new("cluster_relative");
    let c = cluster!(t, 1);
    mixed_tree(&t.src(), 2, 5);
    let o = c
        .cmd()
        .current_dir(t.path())
        .args(["sync", "-q", "src", "dst"])
        .output()
        .unwrap();
    assert_ok(&o, &c);
    rsync_oracle_without_delete(&t.src(), &t.dst());
}

#[test]
fn two_runs_at_once_on_one_broker_and_detach_then_wait() {
    let t = TestDir::new("cluster_two_runs");
    let c = cluster!(t, 2);
    let (src2, dst2) = (t.join("src2"), t.join("dst2"));
    mixed_tree(&t.src(), 6, 30);
    std::fs::create_dir(&src2).unwrap();
    mixed_tree(&src2, 5, 20);
    let o = c.sync(&t.src(), &t.dst(), &["--detach"]);
    assert_ok(&o, &c);
    let run = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(run.len(), 16, "{run}");
    let o2 = c.sync(&src2, &dst2, &["-q"]);
    assert_ok(&o2, &c);
    let w = c.psync(&["wait", &run, "--json"]);
    assert_ok(&w, &c);
    assert!(String::from_utf8_lossy(&w.stdout).contains("\"event\":\"summary\""));
    rsync_oracle(&t.src(), &t.dst());
    rsync_oracle(&src2, &dst2);
}

#[test]
fn pause_resume_cancel_threads_and_shutdown() {
    let t = TestDir::new("cluster_ops");
    let mut c = cluster!(t, 2);
    mixed_tree(&t.src(), 20, 50);
    let o = c.psync(&["pause"]);
    assert_ok(&o, &c);
    // Paused before it starts: submit, see nothing happen, resume. A
    // pause of every run is of the runs under way, so the workers are
    // stopped (SIGSTOP, well within their heartbeat's lifetime) until the
    // new run is paused too: else one may take its first task before.
    let signal = |sig: &str| {
        for (_, w) in &c.workers {
            let ok = Command::new("kill")
                .args([sig, &w.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} worker");
        }
    };
    signal("-STOP");
    let o = c.sync(&t.src(), &t.dst(), &["--detach"]);
    let run = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let paused = c.psync(&["pause", &run]);
    signal("-CONT");
    assert_ok(&o, &c);
    assert_ok(&paused, &c);
    std::thread::sleep(Duration::from_millis(600));
    let s = c.psync(&["status", &run, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(s["runs"][0]["state"], "paused", "{s}");
    assert_eq!(
        s["runs"][0]["counts"]["done"], 0,
        "nothing ran while paused: {s}"
    );
    assert_ok(&c.psync(&["resume", &run]), &c);
    assert_ok(&c.psync(&["wait", &run, "-q"]), &c);
    rsync_oracle_without_delete(&t.src(), &t.dst());

    // Live thread count.
    let o = c.psync(&["workers", "--threads", "3", "--name", "w1"]);
    assert_ok(&o, &c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.status()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["name"] == "w1" && w["threads"] == 3)
    {
        assert!(Instant::now() < deadline, "w1 did not grow: {}", c.status());
        std::thread::sleep(Duration::from_millis(50));
    }

    // Cancel: with no worker to take it, a run waits; cancelled, its
    // follower ends with status 2 and the run is cancelled.
    c.kill("w0");
    c.kill("w1");
    let (src2, dst2) = (t.join("src2"), t.join("dst2"));
    std::fs::create_dir(&src2).unwrap();
    mixed_tree(&src2, 3, 5);
    let o = c.sync(&src2, &dst2, &["--detach"]);
    assert_ok(&o, &c);
    let run2 = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let follower = c
        .cmd()
        .args(["wait", &run2, "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_ok(&c.psync(&["cancel", &run2]), &c);
    let w = follower.wait_with_output().unwrap();
    assert_eq!(
        w.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&w.stderr)
    );
    assert!(String::from_utf8_lossy(&w.stderr).contains("was cancelled"));
    let s = c.psync(&["status", &run2, "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    assert_eq!(s["runs"][0]["state"], "cancelled", "{s}");
    assert!(
        std::fs::read_dir(&dst2).unwrap().next().is_none(),
        "nothing of a cancelled run was copied"
    );

    // Shutdown: every worker leaves cleanly.
    c.workers.clear();
    c.worker("w2", &[]);
    c.worker("w3", &[]);
    c.wait_workers(2);
    // Shutdown: every worker leaves cleanly.
    assert_ok(&c.psync(&["shutdown"]), &c);
    for (name, child) in &mut c.workers {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "{name} exited {st:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{name} did not leave");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let s = c.status();
    let left: Vec<&serde_json::Value> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"] == "w2" || w["name"] == "w3")
        .collect();
    assert_eq!(left.len(), 2, "{s}");
    for w in left {
        assert_eq!(w["state"], "left", "{w}");
        assert_eq!(w["alive"], false, "{w}");
    }
}

#[test]
fn a_run_completes_across_a_broker_restart_with_aof() {
    let t = TestDir::new("cluster_restart");
    if !require_rsync() {
        return;
    }
    let redis = match Redis::start_with(true) {
        Ok(r) => r,
        Err(why) => skip!("{why}"),
    };
    let mut c = Cluster::start(redis, &t, 2);
    mixed_tree(&t.src(), 40, 80);
    let mut run = c.spawn_sync(&t.src(), &t.dst(), &["-q"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run ended before the restart"
    );
    c.redis.restart(Duration::from_millis(500));
    let o = run.wait_with_output().unwrap();
    assert_ok(&o, &c);
    rsync_oracle_without_delete(&t.src(), &t.dst());
}

/// An in-process worker (a thread) with its own copier, allowed `allow`:
/// the worker's `leave` flag and its thread.
pub(crate) fn worker_in_process(
    url: &str,
    name: &str,
    copier: std::sync::Arc<dyn psync::Copier>,
    lease: Duration,
    allow: PathBuf,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use psync::broker::{Worker, WorkerOptions, engines};
    use std::sync::Arc;
    let client = redis::Client::open(url).unwrap();
    let mut opts = WorkerOptions::new(1);
    opts.name = name.to_string();
    opts.tick = Duration::from_millis(100);
    opts.alive_ttl = Duration::from_secs(1);
    opts.lease = lease;
    opts.grace = Duration::ZERO;
    let make = engines(move || {
        let mut copiers = psync::Registry::new();
        copiers.set_default(Arc::clone(&copier));
        psync::EngineContext::new(copiers)
    });
    let accept: psync::broker::Accept = Arc::new(move |spec: &psync::RunSpec| {
        (spec.src.starts_with(&allow) && spec.dst.starts_with(&allow))
            .then_some(())
            .ok_or_else(|| "outside".to_string())
    });
    let check: psync::broker::CheckTask = Arc::new(|_| Ok(()));
    let w = Worker::new(client, opts, accept, make, check, Arc::new(|_| {}));
    let leave = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let l = Arc::clone(&leave);
    let h = std::thread::spawn(move || {
        let hurry = std::sync::atomic::AtomicBool::new(false);
        w.run(&l, &hurry).expect("worker runs");
    });
    (leave, h)
}

#[test]
fn a_slow_worker_keeps_its_tasks_past_the_lease() {
    use crate::large::{Hooked, When};
    use std::collections::HashMap;
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};
    let t = TestDir::new("cluster_slow");
    let redis = require_redis!();
    let (src, dst) = (t.src(), t.dst());
    crate::util::tree::build(
        &src,
        vec![crate::util::tree::Node::at("big", random(2 << 20))],
    );
    // Every copy of each chunk, by offset, on either worker.
    let copies: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let counted = |slow: bool| {
        let copies = Arc::clone(&copies);
        Hooked::around(move |job, when| {
            if when == When::Before && job.entry.name.as_bytes() == b"big" {
                *copies.lock().unwrap().entry(job.offset).or_default() += 1;
                if slow {
                    // Each chunk takes longer than the lease (0.6 s).
                    std::thread::sleep(Duration::from_millis(1500));
                }
            }
        })
    };
    let lease = Duration::from_millis(600);
    let (leave_a, a) =
        worker_in_process(&redis.url(), "slow", counted(true), lease, t.path().into());
    let mut b = psync::SyncBuilder::new(&src, &dst);
    b.default_copier(counted(false)).chunk_size(1 << 20);
    let (spec, seed) = b.build().unwrap().prepare().unwrap();
    let broker = psync::broker::Broker::new(redis::Client::open(redis.url()).unwrap(), redis.url());
    let run = broker.submit(&spec, &seed).unwrap();
    // The slow worker is on a chunk: only now does the other one come.
    let deadline = Instant::now() + Duration::from_secs(20);
    while copies.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no chunk started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (leave_b, b) =
        worker_in_process(&redis.url(), "fast", counted(false), lease, t.path().into());
    let (tx, rx) = crossbeam_channel::unbounded();
    let quit = std::sync::atomic::AtomicBool::new(false);
    let mut messages = Vec::new();
    let end = broker
        .follow(run, &tx, &mut |m| messages.push(m.line()), &quit)
        .unwrap();
    drop(rx);
    assert!(end.report.success(), "{:?} {messages:?}", end.report);
    leave_a.store(true, Ordering::SeqCst);
    leave_b.store(true, Ordering::SeqCst);
    a.join().unwrap();
    b.join().unwrap();
    let copies = copies.lock().unwrap();
    assert_eq!(copies.len(), 2, "two chunks: {copies:?}");
    assert!(
        copies.values().all(|n| *n == 1),
        "a chunk copied twice: {copies:?}"
    );
    let mut log = String::new();
    broker
        .logs(None, psync::broker::Level::Info, false, &quit, &mut |e| {
            log.push_str(&e.line());
            log.push('\n');
        })
        .unwrap();
    assert!(
        !log.contains("lease lapsed") && !log.contains("took"),
        "{log}"
    );
    assert_eq!(
        std::fs::read(src.join("big")).unwrap(),
        std::fs::read(dst.join("big")).unwrap()
    );
}

#[test]
fn workers_wait_out_a_broker_unreachable_for_20_seconds() {
    let t = TestDir::new("cluster_frozen");
    let c = cluster!(t, 2);
    mixed_tree(&t.src(), 40, 80);
    let mut run = c.spawn_sync(&t.src(), &t.dst(), &["-q"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run ended before the outage"
    );
    c.redis.freeze();
    std::thread::sleep(Duration::from_secs(20));
    c.redis.thaw();
    let o = run.wait_with_output().unwrap();
    assert_ok(&o, &c);
    rsync_oracle_without_delete(&t.src(), &t.dst());
    // The outage was seen and reported, by the follower and the workers.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broker unreachable"), "{err}");
    let log = c.log();
    assert!(log.contains("broker reachable again after"), "{log}");
}

#[test]
fn a_run_is_durable_when_done_a_failing_write_back_fails_it() {
    use crate::durability::{Faulty, prerequisites};
    let test = "cluster_durable";
    if let Err(why) = prerequisites() {
        skip!("{why}");
    }
    let t = TestDir::new(test);
    let c = cluster!(t, 2);
    // ~6 MiB to write; the image's tmpfs has 1 MiB to spare.
    let src = t.src();
    for i in 0..48u64 {
        let dir = src.join(format!("d{}", i % 4));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i:02}")),
            crate::util::tree::random_bytes(i, 128 << 10),
        )
        .unwrap();
    }
    let fs = Faulty::new(test).unwrap_or_else(|e| panic!("faulty ext4: {e}"));
    // The workers may write below the test dir and the faulty mount.
    let dst = fs.dir().join("dst");
    let mut c = c;
    c.kill("w0");
    c.kill("w1");
    c.workers.clear();
    c.allow = fs.dir();
    c.worker("d0", &["--allow", &t.path().to_string_lossy()]);
    c.worker("d1", &["--allow", &t.path().to_string_lossy()]);
    c.wait_workers(2);
    // A local run without --fsync and --no-verify ends before write-back:
    // exit 0 (tests/durability.rs). Through the broker, each worker
    // flushes before it reports: the write-back's failure fails the run.
    let o = c.sync(&src, &dst, &["--no-verify", "-q"]);
    assert!(
        matches!(o.status.code(), Some(1 | 3)),
        "must fail: {:?}\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        c.log()
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains(&*dst.to_string_lossy()) || stderr.contains(&*fs.dir().to_string_lossy()),
        "{stderr}"
    );
    drop(c);
}

#[test]
fn a_run_outside_every_worker_s_allow_is_refused_and_nothing_is_written() {
    let t = TestDir::new("cluster_allow");
    let c = cluster!(t, 2);
    // Below the test dir's parent, outside the workers' --allow.
    let outside = TestDir::new("cluster_allow_outside");
    std::fs::write(outside.src().join("f"), "data").unwrap();
    let dst = outside.dst();
    let o = c.sync(&outside.src(), &dst, &["-q"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("refuses the run") && err.contains("every live worker refused"),
        "{err}"
    );
    // The submitter made the target root (as a local run does); the
    // workers wrote nothing into it.
    assert!(
        std::fs::read_dir(&dst).unwrap().next().is_none(),
        "written: {dst:?}"
    );
    assert!(c.log().contains("run refused"), "{}", c.log());
}

/// A task as a forger writes it into a run's stream.
pub(crate) fn forge(redis: &Redis, run: &str, task: &psync::Task) {
    let run_id = u64::from_str_radix(run, 16).unwrap();
    let keys = psync::broker::RunKeys::new(run_id);
    let mut con = redis.connect();
    redis::cmd("XADD")
        .arg(keys.tasks())
        .arg("*")
        .arg("id")
        .arg(task.id(run_id).to_string())
        .arg("task")
        .arg(task.encode().unwrap())
        .exec(&mut con)
        .unwrap();
}

#[test]
fn forged_tasks_with_paths_out_of_the_roots_are_refused_and_nothing_is_written() {
    use psync::{Entry, Kind, Name, RelPath, Task};
    let t = TestDir::new("cluster_forged");
    let mut c = cluster!(t, 1);
    // Outside the roots, but inside --allow: where a forged `..` lands.
    let victim = t.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("secret"), "root's data").unwrap();
    mixed_tree(&t.src(), 2, 3);
    // No worker while the run and the forged tasks are queued.
    c.kill("w0");
    c.workers.clear();
    let o = c.sync(&t.src(), &t.dst(), &["--detach"]);
    assert_ok(&o, &c);
    let run = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let entry = |name: &[u8]| {
        let mut e = Entry::new(Name::from(name.to_vec()), Kind::Dir);
        e.mode = 0o755;
        e
    };
    for rel in [&b"../victim"[..], b"/etc", b"a/../../victim"] {
        forge(
            &c.redis,
            &run,
            &Task::Dir {
                rel: RelPath::from_bytes(rel),
                src: entry(b"x"),
                dst: None,
                at: None,
            },
        );
    }
    c.worker("w1", &[]);
    let w = c.psync(&["wait", &run, "-q"]);
    assert_ok(&w, &c);
    rsync_oracle_without_delete(&t.src(), &t.dst());
    assert_eq!(
        std::fs::read(victim.join("secret")).unwrap(),
        b"root's data"
    );
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    let log =
        String::from_utf8_lossy(&c.psync(&["logs", &run, "--level", "error"]).stdout).into_owned();
    assert_eq!(log.matches("task refused").count(), 3, "{log}");
}

/// Parts of a wide directory as a forger writes them: a name that is a
/// path component `..`, an empty name, a list without its final NUL, in
/// either list. The worker refuses each before the engine sees it, and
/// nothing outside the roots is touched. (What passes the worker, names
/// out of order, in both lists or none, the engine refuses: its unit
/// test `forged_part_names_are_refused`.)
#[test]
fn forged_parts_of_a_wide_directory_are_refused() {
    use psync::{RelPath, Task};
    let t = TestDir::new("cluster_forged_parts");
    let mut c = cluster!(t, 1);
    let victim = t.join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("secret"), "root's data").unwrap();
    mixed_tree(&t.src(), 2, 3);
    c.kill("w0");
    c.workers.clear();
    let o = c.sync(&t.src(), &t.dst(), &["--detach"]);
    assert_ok(&o, &c);
    let run = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let forged: [(&[u8], &[u8]); 6] = [
        (b"..\0", b""),
        (b"a\0\0b\0", b""),
        (b"a\0b", b""),
        (b"a\0", b"..\0"),
        (b"", b"a\0\0"),
        (b"a\0", b"b"),
    ];
    for (names, only_dst) in forged {
        forge(
            &c.redis,
            &run,
            &Task::DirPart {
                rel: RelPath::root(),
                names: names.to_vec(),
                only_dst: only_dst.to_vec(),
                at: None,
                fresh: false,
                recheck: false,
            },
        );
    }
    c.worker("w1", &[]);
    let w = c.psync(&["wait", &run, "-q"]);
    assert_eq!(
        std::fs::read(victim.join("secret")).unwrap(),
        b"root's data"
    );
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 1);
    rsync_oracle_without_delete(&t.src(), &t.dst());
    let log =
        String::from_utf8_lossy(&c.psync(&["logs", &run, "--level", "error"]).stdout).into_owned();
    assert_eq!(log.matches("task refused").count(), 6, "{log}");
    assert_ok(&w, &c);
}

#[test]
fn a_worker_sent_sigterm_hands_back_its_tasks_and_leaves() {
    let t = TestDir::new("cluster_sigterm");
    let mut c = cluster!(t, 1);
    c.worker("quick", &["--grace", "0"]);
    c.wait_workers(2);
    mixed_tree(&t.src(), 30, 60);
    for i in 0..4 {
        crate::util::tree::build(
            &t.src(),
            vec![crate::util::tree::Node::at(
                format!("huge{i}"),
                random(8 << 20),
            )],
        );
    }
    let run = c.spawn_sync(&t.src(), &t.dst(), &["--chunk-size", "1M", "-q"]);
    c.wait_busy("quick");
    let (_, quick) = c.workers.iter_mut().find(|(n, _)| n == "quick").unwrap();
    let pid = quick.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let left = quick.wait().unwrap();
    assert!(left.success(), "quick exited {left:?}");
    let o = run.wait_with_output().unwrap();
    assert_ok(&o, &c);
    rsync_oracle_without_delete(&t.src(), &t.dst());
    let log = c.log();
    assert!(
        log.contains("quick: leaving") && log.contains("quick: left"),
        "{log}"
    );
    // Its tasks were handed back, not taken from it as from a dead worker.
    assert!(!log.contains("of quick, which is gone"), "{log}");
}
