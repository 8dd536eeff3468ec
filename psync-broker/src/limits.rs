//! A run's limits over all of its workers: `--max-delete`'s allowance
//! and `--bwlimit`'s schedule are kept in the run's state on the broker
//! (one atomic script call each), so that the limits are the run's, not
//! each worker's. `--max-errors` is the committer's: see
//! [`crate::worker`].

use crate::completion::RunKeys;
use crate::conn::Conn;
use psync_core::Allowance;
use psync_core::copy::pace::Schedule;
use redis::Script;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Attempts at an allowance before it is refused (a broker outage):
/// nothing is deleted that was not granted.
const ATTEMPTS: u32 = 3;

/// One run's limits on the broker, for its engines on one worker.
pub struct RunLimits {
    keys: RunKeys,
    conn: Mutex<Conn>,
    allow: Script,
    book: Script,
    /// The last booking failed (the broker out of reach): bookings fail
    /// at once, but the one `probing`, which tries the broker again, so
    /// that the engines' threads do not wait their turn for a timeout.
    failing: AtomicBool,
    probing: AtomicBool,
}

impl std::fmt::Debug for RunLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunLimits")
            .field("run", &self.keys.prefix())
            .finish_non_exhaustive()
    }
}

impl RunLimits {
    /// The limits of the run `run` on the broker `client`.
    pub fn new(run: u64, client: redis::Client) -> RunLimits {
        let quiet: crate::OutageSink = std::sync::Arc::new(|_| {});
        RunLimits::with_conn(run, Conn::new(client, Duration::from_secs(10), quiet))
    }

    /// The limits of the run `run`, reached through `conn` (its own
    /// connection: calls come from the engines' threads).
    pub(crate) fn with_conn(run: u64, conn: Conn) -> RunLimits {
        RunLimits {
            keys: RunKeys::new(run),
            conn: Mutex::new(conn),
            allow: Script::new(include_str!("lua/allow.lua")),
            book: Script::new(include_str!("lua/book.lua")),
            failing: AtomicBool::new(false),
            probing: AtomicBool::new(false),
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Allowance for RunLimits {
    fn take(&self, n: u64, limit: u64) -> bool {
        for attempt in 0..ATTEMPTS {
            let granted: redis::RedisResult<i64> = self.conn().once(|c| {
                self.allow
                    .key(self.keys.state())
                    .arg(n)
                    .arg(limit)
                    .invoke(c)
            });
            match granted {
                Ok(g) => return g == 1,
                Err(_) if attempt + 1 < ATTEMPTS => {
                    std::thread::sleep(Duration::from_millis(100 << attempt));
                }
                Err(_) => {}
            }
        }
        false
    }
}

impl Schedule for RunLimits {
    fn book(&self, bytes: u64, rate: u64) -> io::Result<Duration> {
        // Once: while the broker is out of reach the pacer books on its
        // own (this worker's share then exceeds the run's for a while).
        let out = || io::Error::other("the broker is out of reach");
        let probe =
            self.failing.load(Ordering::Acquire) && !self.probing.swap(true, Ordering::AcqRel);
        if self.failing.load(Ordering::Acquire) && !probe {
            return Err(out());
        }
        let mut conn = self.conn();
        // It failed while this one waited for the connection.
        if self.failing.load(Ordering::Acquire) && !probe {
            return Err(out());
        }
        let micros: redis::RedisResult<i64> = conn.once(|c| {
            self.book
                .key(self.keys.state())
                .arg(bytes)
                .arg(rate)
                .invoke(c)
        });
        self.failing.store(micros.is_err(), Ordering::Release);
        if probe {
            self.probing.store(false, Ordering::Release);
        }
        let micros = micros.map_err(io::Error::other)?;
        Ok(Duration::from_micros(micros.max(0).unsigned_abs()))
    }
}
