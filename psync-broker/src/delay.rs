//! A delaying TCP proxy, tooling for the broker's tests and benchmarks:
//! this kernel has no netem qdisc, so latency between workers and the
//! Redis server is made here. Each direction of each connection delays
//! every byte by the one-way delay, in order, without limiting
//! throughput: a reader thread stamps each chunk it reads with the time
//! it is due and queues it, a writer thread sends it then (many chunks
//! in flight, as on a real link). The proxy can also cut the broker off
//! (connections closed, new ones refused, as when its process dies) or
//! hold every connection (nothing forwarded, as on a hung network).
//!
//! Plain std threads: four per connection, gone when it closes.

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The most one read takes, so one chunk.
const CHUNK: usize = 64 * 1024;

/// Chunks in flight per direction: a reader waits (and TCP pushes back on
/// the sender) beyond that. Reads return full chunks when data piles up,
/// so this bounds memory (16 MiB) rather than throughput.
const IN_FLIGHT: usize = 256;

/// How long before a chunk is due its writer stops sleeping and yields
/// instead: `thread::sleep` wakes 50-150 µs late (the timer slack).
const SPIN: Duration = Duration::from_micros(150);

/// How long the proxy waits for the upstream to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP proxy on a loopback port that forwards each connection to one
/// upstream address, each way after a delay. See the module doc.
#[derive(Debug)]
pub struct DelayProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The thread accepting connections; none while cut.
    listener: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    delay_ns: AtomicU64,
    state: Mutex<State>,
    /// Signalled when the mode changes and when a thread ends.
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    /// Bumped to tell the listener thread to exit.
    generation: u64,
    /// Open connections by id: a clone of each side, to shut them down.
    conns: HashMap<u64, [TcpStream; 2]>,
    next_id: u64,
    /// Threads started and not ended (the listener's not counted).
    threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Open,
    Held,
    Cut,
    Stopped,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `upstream`, delaying each direction by `delay`.
    pub fn start(upstream: SocketAddr, delay: Duration) -> io::Result<DelayProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            delay_ns: AtomicU64::new(nanos(delay)),
            state: Mutex::new(State {
                mode: Mode::Open,
                generation: 0,
                conns: HashMap::new(),
                next_id: 0,
                threads: 0,
            }),
            changed: Condvar::new(),
        });
        let handle = spawn_listener(&shared, listener, 0)?;
        Ok(DelayProxy {
            addr,
            shared,
            listener: Mutex::new(Some(handle)),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where connections are forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// The one-way delay.
    pub fn delay(&self) -> Duration {
        Duration::from_nanos(self.shared.delay_ns.load(Ordering::Relaxed))
    }

    /// Sets the one-way delay of the data read from now on (what is in
    /// flight keeps its time; order is kept either way).
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_ns.store(nanos(delay), Ordering::Relaxed);
    }

    /// Open connections (each until its threads have ended).
    pub fn connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// Makes the upstream unreachable: shuts down both sides of every
    /// open connection (clients read EOF, and their writes fail once the
    /// proxy's socket is closed) and refuses new connections until
    /// [`restore`](Self::restore). Data in flight is dropped.
    pub fn cut(&self) {
        {
            let mut state = self.shared.lock();
            if matches!(state.mode, Mode::Cut | Mode::Stopped) {
                return;
            }
            state.mode = Mode::Cut;
            state.generation += 1;
            shut_down_all(&state);
        }
        self.shared.changed.notify_all();
        self.stop_listener();
    }

    /// Hangs the network: connections stay open (new ones are accepted)
    /// but nothing is forwarded until [`restore`](Self::restore), so
    /// clients' reads time out. No effect while cut.
    pub fn hold(&self) {
        let mut state = self.shared.lock();
        if state.mode == Mode::Open {
            state.mode = Mode::Held;
        }
    }

    /// Ends a [`cut`](Self::cut) (listens again on the same port: fails
    /// if that port was taken meanwhile) or a [`hold`](Self::hold) (what
    /// was held is forwarded at once).
    pub fn restore(&self) -> io::Result<()> {
        let mut state = self.shared.lock();
        match state.mode {
            Mode::Open | Mode::Stopped => {}
            Mode::Held => {
                state.mode = Mode::Open;
                self.shared.changed.notify_all();
            }
            Mode::Cut => {
                let listener = TcpListener::bind(self.addr)?;
                let handle = spawn_listener(&self.shared, listener, state.generation)?;
                *self.listener.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
                state.mode = Mode::Open;
            }
        }
        Ok(())
    }

    /// Wakes the listener thread with a connection of our own (it sees
    /// its generation is over and exits, closing the port) and joins it.
    fn stop_listener(&self) {
        let handle = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _wake = TcpStream::connect(self.addr);
            let _ = handle.join();
        }
    }
}

impl Drop for DelayProxy {
    /// Closes everything and waits for every thread to end.
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.mode = Mode::Stopped;
            state.generation += 1;
            shut_down_all(&state);
        }
        self.shared.changed.notify_all();
        self.stop_listener();
        let mut state = self.shared.lock();
        while state.threads > 0 {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_ns.load(Ordering::Relaxed))
    }

    /// Waits while held; whether forwarding goes on (not cut or stopped).
    fn wait_open(&self) -> bool {
        let mut state = self.lock();
        loop {
            match state.mode {
                Mode::Open => return true,
                Mode::Cut | Mode::Stopped => return false,
                Mode::Held => {
                    state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Starts a thread running `f`, counted until it ends.
    fn spawn(self: &Arc<Self>, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.lock().threads += 1;
        let counted = Counted(self.clone());
        let spawned = thread::Builder::new()
            .name("delay-proxy".into())
            .spawn(move || {
                let _counted = counted;
                f()
            });
        // On failure the closure, and with it the count, was dropped.
        spawned.map(drop)
    }
}

/// One running thread, uncounted when dropped.
struct Counted(Arc<Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.lock().threads -= 1;
        self.0.changed.notify_all();
    }
}

fn shut_down_all(state: &State) {
    for sides in state.conns.values() {
        for side in sides {
            let _ = side.shutdown(Shutdown::Both);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn spawn_listener(
    shared: &Arc<Shared>,
    listener: TcpListener,
    generation: u64,
) -> io::Result<JoinHandle<()>> {
    let shared = shared.clone();
    thread::Builder::new()
        .name("delay-proxy-accept".into())
        .spawn(move || accept_loop(&shared, &listener, generation))
}

/// Accepts connections until the generation changes (cut or drop).
fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, generation: u64) {
    loop {
        let accepted = listener.accept();
        if shared.lock().generation != generation {
            return;
        }
        match accepted {
            Ok((client, _)) => {
                let on_thread = shared.clone();
                if shared.spawn(move || connect(&on_thread, client)).is_err() {
                    // Out of threads: the client was dropped (closed).
                    thread::sleep(Duration::from_millis(10));
                }
            }
            // Out of fds and the like: try again shortly.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// An open connection's registration, removed when its last thread ends.
struct Conn {
    id: u64,
    shared: Arc<Shared>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.shared.lock().conns.remove(&self.id);
    }
}

impl Conn {
    /// Tears the connection down both ways (an error on either side).
    fn shut_down(&self) {
        if let Some(sides) = self.shared.lock().conns.get(&self.id) {
            for side in sides {
                let _ = side.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A chunk read from one side, to be written to the other at `due`.
struct Chunk {
    due: Instant,
    data: Vec<u8>,
}

/// A new client's thread: connects to the upstream, registers the
/// connection, starts the other three threads, then forwards what the
/// client sends.
fn connect(shared: &Arc<Shared>, client: TcpStream) {
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT) else {
        return;
    };
    let conn = match register(shared, &client, &upstream) {
        Ok(Some(conn)) => conn,
        // Cut or stopped meanwhile, or out of fds: both are dropped.
        Ok(None) | Err(_) => return,
    };
    let (to_upstream, from_client) = sync_channel(IN_FLIGHT);
    match start_threads(&conn, &client, upstream, from_client) {
        Ok(()) => read_loop(&conn, client, to_upstream),
        Err(_) => conn.shut_down(),
    }
}

/// Starts the threads forwarding to the upstream, from it, and to the
/// client.
fn start_threads(
    conn: &Arc<Conn>,
    client: &TcpStream,
    upstream: TcpStream,
    from_client: Receiver<Chunk>,
) -> io::Result<()> {
    let (to_client, from_upstream) = sync_channel(IN_FLIGHT);
    let (to, back) = (upstream.try_clone()?, client.try_clone()?);
    let on = conn.clone();
    conn.shared
        .spawn(move || write_loop(&on, from_client, to))?;
    let on = conn.clone();
    conn.shared
        .spawn(move || write_loop(&on, from_upstream, back))?;
    let on = conn.clone();
    conn.shared
        .spawn(move || read_loop(&on, upstream, to_client))
}

/// Adds the connection to the open ones, unless cut or stopped.
fn register(
    shared: &Arc<Shared>,
    client: &TcpStream,
    upstream: &TcpStream,
) -> io::Result<Option<Arc<Conn>>> {
    // Each chunk is written whole: no waiting for an ACK (Nagle) on top
    // of the delay.
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let sides = [client.try_clone()?, upstream.try_clone()?];
    let mut state = shared.lock();
    if matches!(state.mode, Mode::Cut | Mode::Stopped) {
        return Ok(None);
    }
    let id = state.next_id;
    state.next_id += 1;
    state.conns.insert(id, sides);
    Ok(Some(Arc::new(Conn {
        id,
        shared: shared.clone(),
    })))
}

/// Reads chunks from one side and queues them, stamped with when they
/// are due, until EOF (the writer then passes the half-close on) or an
/// error (the whole connection is shut down).
fn read_loop(conn: &Conn, mut from: TcpStream, to: SyncSender<Chunk>) {
    let mut buf = vec![0; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let due = Instant::now() + conn.shared.delay();
                let chunk = Chunk {
                    due,
                    data: buf[..n].to_vec(),
                };
                if to.send(chunk).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                conn.shut_down();
                return;
            }
        }
    }
}

/// Writes each queued chunk to the other side when it is due (and not
/// held); at the end of the queue, shuts down writing.
fn write_loop(conn: &Conn, from: Receiver<Chunk>, mut to: TcpStream) {
    for chunk in from {
        sleep_until(chunk.due);
        if !conn.shared.wait_open() || to.write_all(&chunk.data).is_err() {
            conn.shut_down();
            return;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Sleeps until `due`, the last [`SPIN`] by yielding.
fn sleep_until(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > SPIN {
            thread::sleep(left - SPIN);
        } else {
            thread::yield_now();
        }
    }
}
