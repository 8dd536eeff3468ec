//! The completion scripts against a real redis-server: a synthetic tree
//! of task ids (no file system work) driven through spawn, defer and
//! complete in many orders, every task delivered twice and every call
//! made twice.

#[macro_use]
mod server;

use psync_broker::{Completed, Completion, Deferral};
use psync_core::task::TaskId;
use redis::Connection;
use std::collections::{HashMap, HashSet};

/// What a synthetic task does when it runs.
#[derive(Debug, Default)]
struct Spec {
    children: Vec<TaskId>,
    deferred: Option<TaskId>,
}

/// A tree of synthetic tasks: the specs by id, the root, and whose
/// deferred task each deferred task is.
#[derive(Debug)]
struct Tree {
    specs: HashMap<TaskId, Spec>,
    root: TaskId,
    owner: HashMap<TaskId, TaskId>,
}

impl Tree {
    /// Each task of depth < 4 spawns 1 to 3 children; most tasks defer
    /// one; the deferred tasks of depth 1 spawn a child of their own.
    fn new() -> Tree {
        let mut tree = Tree {
            specs: HashMap::new(),
            root: TaskId(0),
            owner: HashMap::new(),
        };
        let mut n = 0u128;
        tree.root = tree.add(&mut n, 0);
        tree
    }

    fn id(n: &mut u128) -> TaskId {
        *n += 1;
        // Spread over 128 bits, as xxh3 ids are.
        TaskId(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835))
    }

    fn add(&mut self, n: &mut u128, depth: usize) -> TaskId {
        let id = Self::id(n);
        let k = *n;
        let mut spec = Spec::default();
        if depth < 4 {
            for _ in 0..1 + k % 3 {
                spec.children.push(self.add(n, depth + 1));
            }
        }
        if k % 4 != 3 {
            let fid = Self::id(n);
            let mut fspec = Spec::default();
            if depth == 1 {
                fspec.children.push(self.add(n, 4));
            }
            self.specs.insert(fid, fspec);
            self.owner.insert(fid, id);
            spec.deferred = Some(fid);
        }
        self.specs.insert(id, spec);
        id
    }

    /// `id` and every task that runs in its place or under it.
    fn subtree(&self, id: TaskId, out: &mut HashSet<TaskId>) {
        out.insert(id);
        let spec = &self.specs[&id];
        for &c in &spec.children {
            self.subtree(c, out);
        }
        if let Some(f) = spec.deferred {
            self.subtree(f, out);
        }
    }
}

fn bytes(id: TaskId) -> Vec<u8> {
    format!("task {id}").into_bytes()
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Spawn(TaskId),
    Defer(TaskId),
    Complete,
}

/// One delivery of a task: its calls, each made twice, in order.
#[derive(Debug)]
struct Delivery {
    id: TaskId,
    ops: Vec<Op>,
    next: usize,
}

impl Delivery {
    fn new(tree: &Tree, id: TaskId) -> Delivery {
        let spec = &tree.specs[&id];
        let mut ops = Vec::new();
        for &c in &spec.children {
            ops.extend([Op::Spawn(c), Op::Spawn(c)]);
        }
        if let Some(f) = spec.deferred {
            ops.extend([Op::Defer(f), Op::Defer(f)]);
        }
        ops.extend([Op::Complete, Op::Complete]);
        Delivery { id, ops, next: 0 }
    }
}

#[derive(Debug, Clone, Copy)]
enum Order {
    Fifo,
    Lifo,
    Random(u64),
}

/// Reads the stream's entries after `last`.
fn read_stream(con: &mut Connection, key: &str, last: &mut String) -> Vec<(TaskId, Vec<u8>)> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg(format!("({last}"))
        .arg("+")
        .query(con)
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|e| {
            *last = e.id.clone();
            let hex: String = e.get("id").unwrap();
            let task: Vec<u8> = e.get("task").unwrap();
            (TaskId(u128::from_str_radix(&hex, 16).unwrap()), task)
        })
        .collect()
}

fn scan(con: &mut Connection, pattern: &str) -> Vec<String> {
    let keys: redis::Iter<String> = redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(pattern)
        .clone()
        .iter(con)
        .unwrap();
    keys.map(|k| k.unwrap()).collect()
}

/// Drives the tree through one run on `con` in `order`, checking every
/// step; `flush` empties the server's script cache every so often (the
/// scripts are loaded again on NOSCRIPT).
fn drive(con: &mut Connection, run: u64, tree: &Tree, order: Order, flush: bool) {
    let c = Completion::new(run);
    let mut rng = match order {
        Order::Random(s) => s | 1,
        _ => 1,
    };
    let mut last = "0-0".to_string();
    let mut queued: Vec<TaskId> = Vec::new();
    let mut pool: Vec<Delivery> = Vec::new();
    let mut done: HashSet<TaskId> = HashSet::new();
    let mut complete = 0;
    let mut steps = 0u64;

    assert!(c.seed(con, tree.root, &bytes(tree.root)).unwrap());
    assert!(!c.seed(con, tree.root, &bytes(tree.root)).unwrap());
    loop {
        for (id, task) in read_stream(con, &c.keys().tasks(), &mut last) {
            assert_eq!(task, bytes(id), "payload of {id}");
            queued.push(id);
            pool.push(Delivery::new(tree, id));
            pool.push(Delivery::new(tree, id));
        }
        if pool.is_empty() {
            break;
        }
        let i = match order {
            Order::Fifo => 0,
            Order::Lifo => pool.len() - 1,
            Order::Random(_) => {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % pool.len() as u64) as usize
            }
        };
        let d = &mut pool[i];
        let (id, op) = (d.id, d.ops[d.next]);
        d.next += 1;
        if d.next == d.ops.len() {
            pool.swap_remove(i);
        }
        steps += 1;
        if flush && steps.is_multiple_of(37) {
            redis::cmd("SCRIPT").arg("FLUSH").exec(con).unwrap();
        }
        match op {
            Op::Spawn(child) => {
                c.spawn(con, id, child, &bytes(child)).unwrap();
            }
            Op::Defer(f) => {
                let r = c.defer(con, id, f, &bytes(f)).unwrap();
                assert_ne!(r, Deferral::Refused, "{id} deferring {f}");
            }
            Op::Complete => {
                done.insert(id);
                match c.complete(con, id).unwrap() {
                    Completed::Deferred(f) => {
                        // Queued only once the whole subtree it follows is done.
                        let owner = tree.owner[&f];
                        let mut below = HashSet::new();
                        tree.subtree(owner, &mut below);
                        let mut after = HashSet::new();
                        tree.subtree(f, &mut after);
                        for t in below.difference(&after) {
                            assert!(
                                done.contains(t),
                                "{f} queued before {t} was done ({order:?})"
                            );
                        }
                    }
                    Completed::RunComplete => {
                        complete += 1;
                        let all: HashSet<TaskId> = tree.specs.keys().copied().collect();
                        assert_eq!(done, all, "the run completed before every task ({order:?})");
                    }
                    Completed::Counted | Completed::Again => {}
                }
            }
        }
        assert_eq!(
            c.is_complete(con).unwrap(),
            complete == 1,
            "{order:?} at step {steps}"
        );
    }
    assert_eq!(complete, 1, "completed once ({order:?})");
    // Every task queued exactly once.
    let unique: HashSet<TaskId> = queued.iter().copied().collect();
    assert_eq!(
        unique.len(),
        queued.len(),
        "a task queued twice ({order:?})"
    );
    assert_eq!(unique.len(), tree.specs.len());
    // No task record left, and the stream deleted with the run's end:
    // only the run's state and its log (its last line says it ended),
    // which expire.
    assert_eq!(scan(con, &c.keys().task_pattern()), Vec::<String>::new());
    let mut keys = scan(con, &format!("{}*", c.keys().prefix()));
    keys.sort();
    let mut want = vec![c.keys().state(), c.keys().events()];
    want.sort();
    assert_eq!(keys, want);
    for k in want {
        let ttl: i64 = redis::cmd("TTL").arg(&k).query(con).unwrap();
        assert!(ttl > 0, "the ended run's {k} expires: TTL {ttl}");
    }
}

#[test]
fn a_tree_completes_once_at_its_end_in_any_order_with_every_call_twice() {
    let redis = require_redis!();
    let mut con = redis.connect();
    let tree = Tree::new();
    assert!(tree.specs.len() > 60, "{} tasks", tree.specs.len());
    let orders = [Order::Fifo, Order::Lifo]
        .into_iter()
        .chain((1..=40).map(Order::Random));
    for (run, order) in (1..).zip(orders) {
        drive(&mut con, run, &tree, order, false);
    }
}

#[test]
fn the_scripts_are_loaded_again_when_the_server_forgot_them() {
    let redis = require_redis!();
    let mut con = redis.connect();
    let tree = Tree::new();
    drive(&mut con, 7, &tree, Order::Random(99), true);
}

/// A task defers one task: another is refused, as is one after it is
/// done without any; a done task spawns nothing; a late delivery's calls
/// on a finished subtree do nothing.
#[test]
fn a_second_deferred_task_and_late_spawns_are_refused() {
    let redis = require_redis!();
    let mut con = redis.connect();
    let con = &mut con;
    let c = Completion::new(3);
    let (root, a, b, f, g) = (TaskId(1), TaskId(2), TaskId(3), TaskId(4), TaskId(5));
    assert!(c.seed(con, root, b"r").unwrap());
    assert!(c.spawn(con, root, a, b"a").unwrap());
    assert_eq!(c.defer(con, root, f, b"f").unwrap(), Deferral::Set);
    assert_eq!(c.defer(con, root, f, b"f").unwrap(), Deferral::Again);
    assert_eq!(c.defer(con, root, g, b"g").unwrap(), Deferral::Refused);
    assert_eq!(c.complete(con, root).unwrap(), Completed::Counted);
    // Done: spawns nothing more, even a child it spawned before.
    assert!(!c.spawn(con, root, b, b"b").unwrap());
    assert!(!c.spawn(con, root, a, b"a").unwrap());
    // `a` finishes without deferring: a defer after that is refused.
    assert_eq!(c.complete(con, a).unwrap(), Completed::Deferred(f));
    assert_eq!(c.complete(con, a).unwrap(), Completed::Again);
    assert_eq!(c.defer(con, a, g, b"g").unwrap(), Deferral::Again);
    assert!(!c.is_complete(con).unwrap());
    assert_eq!(c.complete(con, f).unwrap(), Completed::RunComplete);
    assert_eq!(c.complete(con, f).unwrap(), Completed::Again);
    assert_eq!(c.complete(con, root).unwrap(), Completed::Again);
    assert!(c.is_complete(con).unwrap());
    assert_eq!(scan(con, &c.keys().task_pattern()), Vec::<String>::new());

    // Another run on the same server, with the same ids: its own keys.
    let c = Completion::new(4);
    assert!(c.seed(con, root, b"r").unwrap());
    assert!(!c.is_complete(con).unwrap());
    assert!(c.spawn(con, root, a, b"a").unwrap());
    assert_eq!(c.complete(con, root).unwrap(), Completed::Counted);
    assert_eq!(c.defer(con, root, f, b"f").unwrap(), Deferral::Refused);
    assert_eq!(c.complete(con, a).unwrap(), Completed::RunComplete);
    assert_eq!(scan(con, &c.keys().task_pattern()), Vec::<String>::new());
}
