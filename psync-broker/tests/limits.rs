//! A run's limits on the broker (`RunLimits`), against a real
//! redis-server: `--max-delete`'s allowance is exact under threads that
//! race for it, `--bwlimit`'s schedule books bytes one after another on
//! the server's clock, and an ended run grants nothing.

#[macro_use]
mod server;

use psync_broker::{RunKeys, RunLimits};
use psync_core::Allowance;
use psync_core::copy::pace::Schedule;
use std::time::Duration;

/// Limits of the run `run`, submitted (its state holds a spec).
fn submitted(redis: &server::Redis, run: u64) -> RunLimits {
    redis::cmd("HSET")
        .arg(RunKeys::new(run).state())
        .arg("spec")
        .arg("x")
        .exec(&mut redis.connect())
        .unwrap();
    RunLimits::new(run, redis::Client::open(redis.url()).unwrap())
}

#[test]
fn eight_threads_racing_for_an_allowance_of_100_get_exactly_100() {
    let redis = require_redis!();
    let limits = submitted(&redis, 1);
    let granted: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| s.spawn(|| (0..60).filter(|_| limits.take(1, 100)).count() as u64))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(granted, 100, "480 asked for, one at a time");
    assert!(!limits.take(1, 100));
    // Another run has its own.
    let other = submitted(&redis, 2);
    assert!(other.take(100, 100));
    assert!(!other.take(1, 100));
}

#[test]
fn bookings_follow_one_another_and_an_idle_spell_buys_no_burst() {
    let redis = require_redis!();
    let limits = submitted(&redis, 3);
    let rate = 1 << 20;
    // 1 MiB at 1 MiB/s: due in a second, the next in two, the next in three.
    let waits: Vec<Duration> = (0..3).map(|_| limits.book(rate, rate).unwrap()).collect();
    for (i, w) in waits.iter().enumerate() {
        let want = (i + 1) as f64;
        assert!(
            (want - 0.1..=want + 0.01).contains(&w.as_secs_f64()),
            "{waits:?}"
        );
    }
    // After the schedule's end, booking starts from now again.
    let fresh = submitted(&redis, 4);
    fresh.book(rate / 20, rate).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let w = fresh.book(rate / 20, rate).unwrap();
    assert!(w <= Duration::from_millis(51), "{w:?}");
}

#[test]
fn an_ended_run_grants_nothing_and_books_no_wait() {
    let redis = require_redis!();
    let mut con = redis.connect();
    let keys = RunKeys::new(5);
    redis::cmd("HSET")
        .arg(keys.state())
        .arg("end")
        .arg("cancelled")
        .exec(&mut con)
        .unwrap();
    let limits = RunLimits::new(5, redis::Client::open(redis.url()).unwrap());
    assert!(!limits.take(1, 1000));
    assert_eq!(limits.book(1 << 30, 1).unwrap(), Duration::ZERO);
}

#[test]
fn an_unreachable_broker_grants_no_deletion_and_fails_the_booking() {
    // A port nothing listens on (a server started and stopped).
    let redis = require_redis!();
    let url = redis.url();
    drop(redis);
    let limits = RunLimits::new(6, redis::Client::open(url).unwrap());
    assert!(!limits.take(1, 1000));
    assert!(limits.book(1, 1).is_err());
}

/// A broker restarted without its data mid-run (no persistence) no longer
/// knows the run: until the workers' next heartbeat sees it gone, their
/// engines still ask. The allowance must not start again from 0 (the run
/// would delete up to twice `--max-delete`), and neither call may leave a
/// state behind for a run that is not there (no TTL: it stays forever).
#[test]
fn a_run_the_broker_lost_grants_nothing_and_leaves_no_state() {
    let mut redis = require_redis!();
    let keys = RunKeys::new(7);
    let limits = submitted(&redis, 7);
    assert!(limits.take(7, 7), "the run's whole allowance");
    redis.restart(Duration::from_millis(100));
    assert!(
        !limits.take(1, 7),
        "granted again after the broker lost the run"
    );
    // Not booked there: the pacer paces on its own meanwhile.
    assert!(limits.book(1 << 20, 1 << 20).is_err());
    let exists: bool = redis::cmd("EXISTS")
        .arg(keys.state())
        .query(&mut redis.connect())
        .unwrap();
    assert!(
        !exists,
        "a state written for a run the broker does not know"
    );
}

/// A broker that stops answering (frozen: its connections stay open, a
/// call waits for its 10 s read timeout) costs the copies one timeout,
/// not one per thread in turn: the threads waiting for the connection
/// fail with the first, later ones at once while one tries the broker
/// again, and their pacers pace on their own. Back, it books again.
#[test]
fn a_frozen_broker_fails_the_other_bookings_at_once() {
    let redis = require_redis!();
    let limits = submitted(&redis, 8);
    let rate = 1 << 30;
    limits.book(1, rate).unwrap();
    redis.freeze();
    let start = std::time::Instant::now();
    let took: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let t = std::time::Instant::now();
                    assert!(limits.book(1, rate).is_err());
                    t.elapsed()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all = start.elapsed();
    redis.thaw();
    // Each one's own timeout in turn: 40 s.
    assert!(
        all < Duration::from_secs(15),
        "4 bookings in {all:?}: {took:?}"
    );
    // The next booking tries the broker again.
    limits.book(1, rate).unwrap();
    limits.book(1, rate).unwrap();
}
