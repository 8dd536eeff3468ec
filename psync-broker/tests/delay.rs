//! The delaying proxy against plain TCP servers started here: bytes go
//! through unchanged, each way after the delay, pipelined; cut, hold and
//! restore do what a dead broker, a hung network and recovery do.

use psync_broker::delay::DelayProxy;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// A server on a loopback port running `serve` on each connection in a
/// thread of its own, counting the connections it has open.
struct Server {
    addr: SocketAddr,
    open: Arc<AtomicUsize>,
}

impl Server {
    fn start(serve: fn(TcpStream)) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicUsize::new(0));
        let counter = open.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let stream = stream.unwrap();
                stream.set_nodelay(true).unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let counter = counter.clone();
                thread::spawn(move || {
                    serve(stream);
                    counter.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server { addr, open }
    }

    /// Sends back what it reads until EOF, then closes.
    fn echo() -> Server {
        Server::start(|mut s| {
            let mut buf = vec![0; 64 * 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Reads until EOF, then sends the count of bytes it read.
    fn sink() -> Server {
        Server::start(|mut s| {
            let mut buf = vec![0; 64 * 1024];
            let mut total = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&total.to_le_bytes());
        })
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One request of `msg` and its echo; returns the round-trip time.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Duration {
    let mut back = vec![0; msg.len()];
    let start = Instant::now();
    s.write_all(msg).unwrap();
    s.read_exact(&mut back).unwrap();
    let rtt = start.elapsed();
    assert_eq!(back, msg);
    rtt
}

/// Waits (up to 5 s) until `cond` holds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

fn random_bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[test]
fn forwards_bytes_unchanged_both_ways() {
    let echo = Server::echo();
    let proxy = DelayProxy::start(echo.addr, Duration::from_micros(200)).unwrap();
    let payload = random_bytes(1 << 20, 0x9e3779b97f4a7c15);
    let mut client = connect(proxy.addr());
    let mut writer = client.try_clone().unwrap();
    let sent = payload.clone();
    let sending = thread::spawn(move || {
        // Writes of odd sizes, so chunks don't line up with them.
        for part in sent.chunks(7919) {
            writer.write_all(part).unwrap();
        }
        // The half-close goes through: the echo server ends its reply.
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    sending.join().unwrap();
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "the bytes came back changed");
    drop(client);
    eventually("the connection ends", || proxy.connections() == 0);
}

/// Median and 99th percentile of `n` round trips of 32 bytes.
fn rtt_stats(addr: SocketAddr, n: usize) -> (Duration, Duration, Duration) {
    let mut s = connect(addr);
    let msg = [7u8; 32];
    for _ in 0..50 {
        round_trip(&mut s, &msg);
    }
    let mut rtts: Vec<Duration> = (0..n).map(|_| round_trip(&mut s, &msg)).collect();
    rtts.sort();
    (rtts[0], rtts[n / 2], rtts[n * 99 / 100])
}

#[test]
fn round_trips_take_twice_the_delay() {
    let echo = Server::echo();
    let direct = rtt_stats(echo.addr, 2000);
    let proxy = DelayProxy::start(echo.addr, Duration::ZERO).unwrap();
    let zero = rtt_stats(proxy.addr(), 2000);
    proxy.set_delay(Duration::from_micros(200));
    let delayed = rtt_stats(proxy.addr(), 2000);
    for (what, (min, median, p99)) in [
        ("direct", direct),
        ("proxy, no delay", zero),
        ("proxy, 0.2 ms each way", delayed),
    ] {
        eprintln!(
            "round trip {what}: min {:.3} ms, median {:.3} ms, p99 {:.3} ms",
            ms(min),
            ms(median),
            ms(p99)
        );
    }
    let (min, median, _) = delayed;
    // Never early: each way waits the delay.
    assert!(min >= Duration::from_micros(400), "min {min:?}");
    // Not much late either; generous, on a shared machine.
    assert!(median < Duration::from_millis(3), "median {median:?}");
}

#[test]
fn set_delay_applies_to_new_data() {
    let echo = Server::echo();
    let proxy = DelayProxy::start(echo.addr, Duration::ZERO).unwrap();
    let mut s = connect(proxy.addr());
    round_trip(&mut s, b"warm");
    proxy.set_delay(Duration::from_millis(5));
    assert_eq!(proxy.delay(), Duration::from_millis(5));
    let rtt = round_trip(&mut s, b"slow");
    assert!(rtt >= Duration::from_millis(10), "{rtt:?}");
    proxy.set_delay(Duration::ZERO);
    let rtt = round_trip(&mut s, b"fast");
    assert!(rtt < Duration::from_millis(10), "{rtt:?}");
}

#[test]
fn long_transfers_are_pipelined() {
    let sink = Server::sink();
    let delay = Duration::from_millis(1);
    let proxy = DelayProxy::start(sink.addr, delay).unwrap();
    let payload = random_bytes(16 << 20, 42);
    let mut s = connect(proxy.addr());
    let start = Instant::now();
    s.write_all(&payload).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut count = [0; 8];
    s.read_exact(&mut count).unwrap();
    let took = start.elapsed();
    assert_eq!(u64::from_le_bytes(count), payload.len() as u64);
    // Stop-and-wait, one 64 KiB chunk per delay, would take 256 ms.
    let stop_and_wait = delay * (payload.len() / (64 << 10)) as u32;
    eprintln!(
        "16 MiB through a 1 ms proxy: {:.1} ms (stop-and-wait: {:.0} ms)",
        ms(took),
        ms(stop_and_wait)
    );
    assert!(took >= 2 * delay, "{took:?}");
    assert!(took < stop_and_wait / 2, "{took:?}");
}

#[test]
fn cut_closes_and_refuses_until_restored() {
    let echo = Server::echo();
    let proxy = DelayProxy::start(echo.addr, Duration::from_micros(200)).unwrap();
    let mut s = connect(proxy.addr());
    round_trip(&mut s, b"before");
    assert_eq!(proxy.connections(), 1);
    proxy.cut();
    // The client reads EOF at once (an error would do too), not a timeout.
    let mut buf = [0; 16];
    match s.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "{e}"
        ),
    }
    // Writing fails once the proxy's socket is closed (its RST is back).
    let mut failed = false;
    for _ in 0..100 {
        if s.write_all(b"lost").is_err() {
            failed = true;
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(failed, "writes after the cut kept succeeding");
    // The upstream's side is closed too.
    eventually("the proxy drops the connection", || {
        proxy.connections() == 0
    });
    eventually("the upstream sees the close", || echo.open() == 0);
    // New connections are refused.
    for _ in 0..3 {
        let e = TcpStream::connect(proxy.addr()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    }
    proxy.restore().unwrap();
    let mut s = connect(proxy.addr());
    round_trip(&mut s, b"after");
    assert_eq!(proxy.connections(), 1);
    assert_eq!(echo.open(), 1);
}

#[test]
fn hold_stalls_until_restored() {
    let echo = Server::echo();
    let proxy = DelayProxy::start(echo.addr, Duration::from_micros(200)).unwrap();
    let mut s = connect(proxy.addr());
    round_trip(&mut s, b"before");
    proxy.hold();
    s.write_all(b"held").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0; 4];
    let e = s.read(&mut buf).unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{e}"
    );
    // A new connection is accepted but stalls too.
    let mut other = connect(proxy.addr());
    other.write_all(b"new").unwrap();
    other
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(other.read(&mut buf).is_err());
    proxy.restore().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"held");
    other
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    other.read_exact(&mut buf[..3]).unwrap();
    assert_eq!(&buf[..3], b"new");
    round_trip(&mut s, b"after");
}

#[test]
fn threads_end_with_their_connections() {
    let echo = Server::echo();
    let proxy = DelayProxy::start(echo.addr, Duration::from_micros(100)).unwrap();
    let mut clients: Vec<TcpStream> = (0..16).map(|_| connect(proxy.addr())).collect();
    for (i, s) in clients.iter_mut().enumerate() {
        round_trip(s, format!("client {i}").as_bytes());
    }
    assert_eq!(proxy.connections(), 16);
    // Half of them close abruptly, the other half half-close first.
    for (i, s) in clients.drain(..).enumerate() {
        if i % 2 == 0 {
            s.shutdown(Shutdown::Write).unwrap();
        }
    }
    eventually("every connection's threads end", || {
        proxy.connections() == 0
    });
    eventually("the upstream's sides close", || echo.open() == 0);
}

#[test]
fn drop_closes_everything() {
    let echo = Server::echo();
    let proxy = DelayProxy::start(echo.addr, Duration::from_micros(200)).unwrap();
    let addr = proxy.addr();
    let mut s = connect(addr);
    round_trip(&mut s, b"open");
    proxy.hold();
    s.write_all(b"in flight").unwrap();
    thread::sleep(Duration::from_millis(5));
    // Returns once every thread has ended, though one is held.
    drop(proxy);
    let mut rest = Vec::new();
    assert!(matches!(s.read_to_end(&mut rest), Ok(0) | Err(_)));
    eventually("the upstream sees the close", || echo.open() == 0);
    assert!(TcpStream::connect(addr).is_err());
}
