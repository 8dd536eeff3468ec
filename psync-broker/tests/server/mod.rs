#![allow(dead_code, unused_macros)] // shared by several test binaries, each using a part
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

/// Starts a TLS server or leaves the test (see [`skip!`]).
#[allow(unused_macros)] // each test binary includes this module; tls.rs uses it
macro_rules! require_tls_redis {
    () => {
        match $crate::server::TlsRedis::start() {
            Ok(r) => r,
            Err(why) => skip!("{why}"),
        }
    };
}

/// A `redis-server` that speaks only TLS, with a certificate for
/// `127.0.0.1` and `localhost` signed by a CA made for it (by the
/// `openssl` command), and one ACL user, [`TlsRedis::USER`] with
/// [`TlsRedis::PASSWORD`] (the default user is off). Killed on drop.
#[allow(dead_code)] // used by tls.rs only
#[derive(Debug)]
pub struct TlsRedis {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

#[allow(dead_code)] // used by tls.rs only
impl TlsRedis {
    /// The ACL user.
    pub const USER: &str = "psync";
    /// Its password.
    pub const PASSWORD: &str = "tls-test-pw";

    /// Starts one; Err says why it could not (`openssl` or `redis-server`
    /// missing, a server built without TLS, no answer within 10 s).
    pub fn start() -> Result<TlsRedis, String> {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let dir = tempfile::Builder::new()
            .prefix("redis-tls-")
            .tempdir_in(tmp)
            .map_err(|e| format!("temp dir in {}: {e}", tmp.display()))?;
        let d = dir.path();
        make_ca(d, "ca")?;
        make_ca(d, "other-ca")?;
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .map_err(|e| e.to_string())?;
        openssl(
            d,
            "req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
             -keyout server.key -out server.csr",
        )?;
        openssl(
            d,
            "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
             -extfile server.ext -out server.crt",
        )?;
        let log = d.join("redis.log");
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            let mut child = Command::new("redis-server")
                // 127.0.0.2: an address the certificate does not name.
                .args(["--bind", "127.0.0.1", "127.0.0.2", "--port", "0"])
                .args(["--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(d.join("server.crt"))
                .arg("--tls-key-file")
                .arg(d.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.crt"))
                .args(["--tls-auth-clients", "no"])
                .args(["--user", "default", "off"])
                .args(["--user", Self::USER, "on"])
                .arg(format!(">{}", Self::PASSWORD))
                .args(["~*", "&*", "+@all"])
                .arg("--dir")
                .arg(d)
                .args(["--save", "", "--appendonly", "no"])
                .arg("--logfile")
                .arg(&log)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| {
                    format!("redis-server cannot be started: {e} (install redis-server)")
                })?;
            // Listening is enough: the tests' own handshakes check the rest.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(TlsRedis { child, port, dir });
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("redis-server on TLS port {port} does not answer"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if !said.contains("Address already in use") {
                return Err(format!("redis-server with --tls-port exited: {said}"));
            }
        }
        Err("redis-server exited at start 5 times (ports taken?)".into())
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA certificate (PEM) that signed the server's.
    pub fn ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Another CA's certificate, which did not sign the server's.
    pub fn other_ca_file(&self) -> std::path::PathBuf {
        self.dir.path().join("other-ca.crt")
    }

    /// A directory for the test's own files, removed with the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A self-signed CA: `NAME.key` and `NAME.crt` in `dir`.
#[allow(dead_code)] // used by tls.rs only
fn make_ca(dir: &Path, name: &str) -> Result<(), String> {
    openssl(
        dir,
        &format!(
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
             -subj /CN=psync-test-{name} -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign -keyout {name}.key -out {name}.crt"
        ),
    )
}

/// Runs `openssl ARGS` (split at spaces) in `dir`; Err with its output
/// when it fails.
#[allow(dead_code)] // used by tls.rs only
fn openssl(dir: &Path, args: &str) -> Result<(), String> {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl cannot be started: {e} (install openssl)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
