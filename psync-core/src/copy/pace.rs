//! `--bwlimit`: one rate for all the data copies of a run's engines in
//! this process. Copiers call [`pace`] after each step of data they move
//! (and size their steps with [`step`]); the engine sets the run's
//! [`Pacer`] on the thread around [`crate::Copier::copy_data`]. Clones
//! (reflinks) move no data and are not paced.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The smallest step a paced copy moves at once.
const MIN_STEP: u64 = 1 << 20;

/// A schedule kept outside this process, for a run whose engines are
/// spread over processes (the broker's, one per run): the same booking
/// as [`Pacer`]'s own, on one clock for all of them.
pub trait Schedule: Send + Sync + std::fmt::Debug {
    /// Books `bytes` at `rate` bytes per second after the bytes booked
    /// before; returns how long from now until they are due.
    ///
    /// # Errors
    /// The schedule could not be reached: the pacer books on its own.
    fn book(&self, bytes: u64, rate: u64) -> std::io::Result<Duration>;
}

/// A shared schedule of bytes: each step moved pushes the time the next
/// byte may move by its share of the rate; a thread ahead of it sleeps.
/// Unset (rate 0), it never waits.
#[derive(Debug, Default)]
pub struct Pacer {
    /// Bytes per second; 0 for no limit.
    rate: AtomicU64,
    /// When the bytes moved so far will have been due.
    due: Mutex<Option<Instant>>,
    /// Where the bytes are booked instead of `due`, when set.
    shared: Option<Arc<dyn Schedule>>,
}

impl Pacer {
    /// A pacer of `rate` bytes per second (`None` or 0: no limit).
    pub fn new(rate: Option<u64>) -> Pacer {
        let p = Pacer::default();
        p.set_rate(rate);
        p
    }

    /// A pacer that books on `schedule`, shared with other processes
    /// (falling back to its own while `schedule` fails).
    pub fn shared(schedule: Arc<dyn Schedule>) -> Pacer {
        Pacer {
            shared: Some(schedule),
            ..Pacer::default()
        }
    }

    /// Sets the rate (`None` or 0: no limit).
    pub fn set_rate(&self, rate: Option<u64>) {
        self.rate.store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    fn rate(&self) -> u64 {
        self.rate.load(Ordering::Relaxed)
    }

    /// Counts `bytes` just moved and sleeps until they were due, in short
    /// naps that end early once `quit` is set. No saved-up allowance: an
    /// idle pause does not buy a burst later.
    pub fn take(&self, bytes: u64, quit: &AtomicBool) {
        let rate = self.rate();
        if rate == 0 || bytes == 0 {
            return;
        }
        let now = Instant::now();
        let booked = self.shared.as_ref().and_then(|s| s.book(bytes, rate).ok());
        let until = if let Some(wait) = booked {
            now + wait
        } else {
            let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
            let start = due.filter(|&d| d > now).unwrap_or(now);
            let until = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
            *due = Some(until);
            until
        };
        while !quit.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }

    /// The step a copier should move at once: `default`, or less when
    /// paced (a twentieth of a second's bytes, whole MiB), so waits are
    /// short and threads share the rate evenly.
    pub fn step(&self, default: u64) -> u64 {
        match self.rate() {
            0 => default,
            rate => default.min((rate / 20).next_multiple_of(MIN_STEP).max(MIN_STEP)),
        }
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Pacer>>> = const { RefCell::new(None) };
}

/// Runs `f` (a data copy) with `pacer` as this thread's.
pub(crate) fn with<R>(pacer: &Arc<Pacer>, f: impl FnOnce() -> R) -> R {
    let before = CURRENT.with(|c| c.replace(Some(Arc::clone(pacer))));
    let out = f();
    CURRENT.with(|c| *c.borrow_mut() = before);
    out
}

/// For copiers: `bytes` were just moved; waits for the run's rate.
pub fn pace(bytes: u64, quit: &AtomicBool) {
    let pacer = CURRENT.with(|c| c.borrow().clone());
    if let Some(p) = pacer {
        p.take(bytes, quit);
    }
}

/// For copiers: the step to move at once instead of `default`.
pub fn step(default: u64) -> u64 {
    CURRENT.with(|c| c.borrow().as_ref().map_or(default, |p| p.step(default)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_never_waits() {
        let p = Pacer::new(None);
        let t = Instant::now();
        p.take(1 << 40, &AtomicBool::new(false));
        assert!(t.elapsed() < Duration::from_millis(50));
        assert_eq!(p.step(64 << 20), 64 << 20);
    }

    #[test]
    fn steps_shrink_to_the_rate() {
        let p = Pacer::new(Some(100 << 20));
        assert_eq!(p.step(64 << 20), 5 << 20);
        let slow = Pacer::new(Some(1000));
        assert_eq!(slow.step(64 << 20), MIN_STEP);
    }

    /// Four threads moving 1 MiB steps at 20 MiB/s: 10 MiB take about
    /// half a second (wide bounds: a shared machine).
    #[test]
    fn threads_share_the_rate() {
        let p = Arc::new(Pacer::new(Some(20 << 20)));
        let quit = AtomicBool::new(false);
        let t = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10 / 2 {
                        p.take(1 << 19, &quit);
                    }
                });
            }
        });
        let secs = t.elapsed().as_secs_f64();
        assert!((0.4..1.5).contains(&secs), "{secs}s for 10 MiB at 20 MiB/s");
    }

    #[test]
    fn quit_ends_the_wait() {
        let p = Pacer::new(Some(1));
        let t = Instant::now();
        p.take(1 << 30, &AtomicBool::new(true));
        assert!(t.elapsed() < Duration::from_millis(50));
    }
}
