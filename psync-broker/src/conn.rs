//! A connection to the broker that reconnects: a call that fails because
//! the server cannot be reached (refused, reset, timed out, still loading
//! its AOF after a restart) is retried on a new connection with backoff,
//! and the outage is reported once when it starts and once when it ends.
//! Everything the broker sends is safe to send twice (idempotent scripts,
//! claims and acknowledgements), so a call cut off in the middle is simply
//! made again.

use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a connection says about the server's reachability.
#[derive(Debug, Clone)]
pub enum Outage {
    /// Calls fail: the cause; retried with backoff.
    Lost(String),
    /// Calls work again, after this long.
    Back(Duration),
}

/// Where a connection reports outages.
pub type OutageSink = Arc<dyn Fn(&Outage) + Send + Sync>;

/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A reconnecting connection (see the module's docs).
pub struct Conn {
    client: redis::Client,
    con: Option<redis::Connection>,
    read_timeout: Duration,
    down_since: Option<Instant>,
    sink: OutageSink,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("connected", &self.con.is_some())
            .field("down_since", &self.down_since)
            .finish_non_exhaustive()
    }
}

/// True for errors that say the server is (for now) out of reach: the
/// call is retried on a new connection.
pub fn is_outage(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(
            e.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            )
        )
}

impl Conn {
    /// A connection through `client` whose reads wait at most
    /// `read_timeout` (longer than any blocking read made through it);
    /// not connected until the first call.
    pub fn new(client: redis::Client, read_timeout: Duration, sink: OutageSink) -> Conn {
        Conn {
            client,
            con: None,
            read_timeout,
            down_since: None,
            sink,
        }
    }

    fn connect(&mut self) -> RedisResult<&mut redis::Connection> {
        let con = match self.con.take() {
            Some(con) => con,
            None => {
                let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
                con.set_read_timeout(Some(self.read_timeout))?;
                con.set_write_timeout(Some(self.read_timeout))?;
                con
            }
        };
        Ok(self.con.insert(con))
    }

    /// Makes `f` once, without retrying: for a first contact that must
    /// fail fast (a run submitted to a broker that is not there).
    ///
    /// # Errors
    /// `f`'s error, or the connection's.
    pub fn once<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let r = self.connect().and_then(f);
        if let Err(e) = &r
            && is_outage(e)
        {
            self.con = None;
        }
        r
    }

    /// Makes `f` until it succeeds or fails for another reason than an
    /// outage; between attempts, waits (backoff up to 2 s) on a new
    /// connection. Gives up only when `quit` is set.
    ///
    /// # Errors
    /// `f`'s error when it is not an outage, or the last outage's when
    /// `quit` was set meanwhile.
    pub fn call<T>(
        &mut self,
        quit: &AtomicBool,
        mut f: impl FnMut(&mut redis::Connection) -> RedisResult<T>,
    ) -> RedisResult<T> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.connect().and_then(&mut f) {
                Ok(v) => {
                    if let Some(since) = self.down_since.take() {
                        (self.sink)(&Outage::Back(since.elapsed()));
                    }
                    return Ok(v);
                }
                Err(e) if is_outage(&e) => {
                    self.con = None;
                    // A signal (EINTR) or a stop is not the server's doing.
                    if quit.load(Ordering::Relaxed) {
                        return Err(e);
                    }
                    if interrupted(&e) {
                        continue;
                    }
                    if self.down_since.is_none() {
                        self.down_since = Some(Instant::now());
                        (self.sink)(&Outage::Lost(e.to_string()));
                    }
                    sleep_unless(quit, backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// An error of a system call interrupted by a signal.
fn interrupted(e: &RedisError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::Interrupted)
}

/// Sleeps `d`, waking early (every 50 ms) when `quit` is set.
pub(crate) fn sleep_unless(quit: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !quit.load(Ordering::Relaxed) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
