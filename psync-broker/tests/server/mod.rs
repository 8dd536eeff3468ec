#![allow(dead_code)] // shared by several test binaries, each using a part
//! A real `redis-server` for the broker's tests: started on a free
//! loopback port in a temp dir, killed on drop.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether a missing prerequisite fails the test (`CI=true`) rather than
/// skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the rest of a test for a missing prerequisite: prints why and
/// returns. Under `CI=true`, which has every prerequisite, it fails.
#[allow(unused_macros)]
macro_rules! skip {
    ($($fmt:tt)*) => {{
        assert!(
            !$crate::server::in_ci(),
            "CI=true but {}: {}",
            module_path!(),
            format_args!($($fmt)*)
        );
        eprintln!("SKIPPED {}: {}", module_path!(), format_args!($($fmt)*));
        return;
    }};
}

/// Starts a server or leaves the test (see [`skip!`]).
macro_rules! require_redis {
    () => {
        match $crate::server::Redis::start() {
            Ok(r) => r,
            Err(why) => skip!("{why}"),
        }
    };
}

/// A running `redis-server`, killed (and its dir removed) on drop.
#[derive(Debug)]
pub struct Redis {
    child: Child,
    port: u16,
    aof: bool,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one; Err says why it could not (`redis-server` missing, or
    /// not answering within 10 s).
    pub fn start() -> Result<Redis, String> {
        Redis::start_with(false)
    }

    /// Starts one that keeps an append-only file (`appendfsync always`),
    /// so that [`Redis::restart`] finds its data again.
    pub fn start_with(aof: bool) -> Result<Redis, String> {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tempfile::Builder::new()
            .prefix("redis-")
            .tempdir_in(tmp)
            .map_err(|e| format!("temp dir in {}: {e}", tmp.display()))?;
        // Another process may take the port between this probe and the
        // server's bind: then the server exits and we try another.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            if let Some(child) = spawn(port, dir.path(), aof)? {
                return Ok(Redis {
                    child,
                    port,
                    aof,
                    dir,
                });
            }
        }
        Err("redis-server exited at start 5 times (ports taken?)".into())
    }

    /// The server's URL.
    pub fn url(&self) -> String {
        url(self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new connection to it.
    pub fn connect(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to the test redis-server")
    }

    /// Kills the server (SIGKILL) and, after `down`, starts it again on
    /// the same port and directory (its AOF, when it keeps one).
    pub fn restart(&mut self, down: Duration) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(down);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match spawn(self.port, self.dir.path(), self.aof) {
                Ok(Some(c)) => {
                    self.child = c;
                    return;
                }
                // The port may linger a moment after the kill.
                _ if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                r => panic!("redis-server does not restart on port {}: {r:?}", self.port),
            }
        }
    }

    /// Stops the server (SIGSTOP): connections stay open, nothing answers.
    pub fn freeze(&self) {
        signal(&self.child, "STOP");
    }

    /// Continues a frozen server (SIGCONT).
    pub fn thaw(&self) {
        signal(&self.child, "CONT");
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} redis-server");
}

/// Starts a server on `port` in `dir`; `None` when it exits at once (the
/// port is taken) or does not answer within 10 s.
fn spawn(port: u16, dir: &Path, aof: bool) -> Result<Option<Child>, String> {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .args(["--save", ""]);
    if aof {
        cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
    } else {
        cmd.args(["--appendonly", "no"]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("redis-server cannot be started: {e} (install redis-server)"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ping(port) {
            return Ok(Some(child));
        }
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(None);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn url(port: u16) -> String {
    format!("redis://127.0.0.1:{port}/")
}

fn ping(port: u16) -> bool {
    redis::Client::open(url(port))
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
        .is_ok()
}
