//! What a worker and a submitting process are told: the broker's URL and
//! its secrets, the directories a worker serves, and the checks a worker
//! makes on what it reads from Redis before it touches a file.
//!
//! Whoever can write to the Redis server can hand a worker a run spec and
//! tasks: a worker runs as root on its node, so it accepts a run only when
//! both roots are below a directory it was started with (`--allow`,
//! [`Allow::check_spec`]), and a task only when every path it carries
//! stays below the run's roots ([`check_task`]).
//!
//! TLS (`rediss://`) goes through rustls with ring as its crypto
//! provider: as light to build as native-tls, without a system library
//! to build or run with. Measured on the 2-core build machine: a clean
//! `cargo build -p psync-broker` (psync-core included) took ~18 s (34 s
//! of CPU) without TLS and ~24 s (44 s of CPU) with it. In a crate of its
//! own, the redis crate took ~21 s of CPU; rustls + ring added ~7 s,
//! native-tls ~6 s (but it needs `libssl-dev` and `pkg-config` to build
//! and libssl to run), rustls + aws-lc-rs ~28 s.

use psync_core::entry::{Entry, Name, RelPath};
use psync_core::plan::Action;
use psync_core::task::Task;
use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The broker's URL when `--broker` is not given.
pub const ENV_BROKER: &str = "PSYNC_BROKER";
/// The broker's password when no password file is given.
pub const ENV_PASSWORD: &str = "PSYNC_BROKER_PASSWORD";
/// The CA certificate file (PEM) that signed the broker's certificate.
pub const ENV_CA: &str = "PSYNC_BROKER_CA";

/// Redis's port when the URL has none.
const DEFAULT_PORT: u16 = 6379;

/// Why a broker setting, a worker's configuration, a run's roots or a
/// task are refused. URLs in messages never show a password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A broker URL that does not parse or cannot be used.
    #[error("broker URL {url}: {why}")]
    Url {
        /// The URL, its password replaced by `***`.
        url: String,
        /// What is wrong.
        why: String,
    },
    /// Neither `--broker` nor `PSYNC_BROKER`.
    #[error("no broker: give --broker redis://HOST[:PORT] or set PSYNC_BROKER")]
    NoBroker,
    /// A file that cannot be read or is refused.
    #[error("{what} {}: {why}", path.display())]
    File {
        /// Which file: "password file", "CA file", "config file".
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A line of a worker's config file.
    #[error("config file {}, line {line}: {why}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line's number, from 1.
        line: usize,
        /// What is wrong.
        why: String,
    },
    /// The server cannot be reached, refuses the credentials or the
    /// handshake.
    #[error("cannot connect to the broker at {url}: {why}")]
    Connect {
        /// The URL, its password replaced by `***`.
        url: String,
        /// The client's error, with a hint where one helps.
        why: String,
    },
    /// A worker started without an allowed directory.
    #[error(
        "a worker needs at least one --allow DIR (or `allow = DIR` in its config file): \
         it runs only runs whose roots are below one of them"
    )]
    NoAllow,
    /// An allowed directory that cannot serve as one.
    #[error("allowed directory {}: {why}", path.display())]
    Allow {
        /// The directory as given.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A run's root that is not a clean absolute path below an allowed
    /// directory.
    #[error("run root {}: {why}", path.display())]
    Root {
        /// The root as the run spec has it.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A task carrying a path that could leave the run's roots.
    #[error("task in {rel}: {why}")]
    Task {
        /// The task's directory (escaped as in psync's output).
        rel: String,
        /// What is wrong.
        why: String,
    },
}

/// Where a worker or a submitting process finds the broker:
/// `redis://[USER[:PASSWORD]@]HOST[:PORT][/DB]`, or `rediss://…` for TLS.
///
/// The password may instead come from a file ([`BrokerUrl::with_password_file`])
/// or `PSYNC_BROKER_PASSWORD`, which keeps it off command lines (`ps`
/// shows those to every user). `Display` and `Debug` show `***` for it.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    tls: bool,
    host: String,
    port: u16,
    db: u32,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<PathBuf>,
}

impl BrokerUrl {
    /// Parses a URL. User and password may be percent-encoded (`%40` for
    /// `@`); an IPv6 host is written in brackets (`[::1]`). Query strings
    /// and fragments are refused rather than ignored.
    ///
    /// # Errors
    /// [`ConfigError::Url`] naming the URL (password hidden) and what is
    /// wrong: the scheme, the host, the port or the database number.
    pub fn parse(url: &str) -> Result<BrokerUrl, ConfigError> {
        let bad = |why: String| ConfigError::Url {
            url: redact(url),
            why,
        };
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(bad("the scheme must be redis:// or rediss:// (TLS)".into()));
        };
        // The last `@` ends the user part: a password may hold `@` or `/`.
        let (userinfo, hostpart) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        if hostpart.contains(['?', '#']) {
            return Err(bad("query strings and fragments are not supported".into()));
        }
        let (authority, path) = match hostpart.find('/') {
            Some(i) => hostpart.split_at(i),
            None => (hostpart, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 host lacks its closing `]`".into()))?;
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || ":.".contains(c))
            {
                return Err(bad(format!("bad IPv6 host `[{host}]`")));
            }
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad(format!("unexpected `{after}` after the host"))),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host".into()));
        }
        if !authority.starts_with('[')
            && !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        {
            return Err(bad(format!("bad host `{host}`")));
        }
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => return Err(bad(format!("bad port `{p}` (1 to 65535)"))),
            },
        };
        let db = match path.strip_prefix('/').unwrap_or(path) {
            "" => 0,
            n => match n.parse::<u32>() {
                Ok(db) if n.bytes().all(|b| b.is_ascii_digit()) => db,
                _ => return Err(bad(format!("bad database number `{n}`"))),
            },
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let decode = |s: &str, what: &str| {
                    percent_decode(s)
                        .ok_or_else(|| bad(format!("bad percent-encoding in the {what}")))
                };
                let user = decode(user, "user name")?;
                let pass = pass.map(|p| decode(p, "password")).transpose()?;
                (
                    Some(user).filter(|u| !u.is_empty()),
                    pass.filter(|p| !p.is_empty()),
                )
            }
        };
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
            db,
            username,
            password,
            ca_file: None,
        })
    }

    /// The URL from `url` (`--broker`), else `PSYNC_BROKER`; the password
    /// from `password_file` (`--broker-password-file`), else
    /// `PSYNC_BROKER_PASSWORD`, else the URL; the CA file from
    /// `PSYNC_BROKER_CA` (a `--broker-ca` given later replaces it, see
    /// [`BrokerUrl::with_ca_file`]). Empty variables count as unset.
    ///
    /// # Errors
    /// [`ConfigError::NoBroker`] when there is no URL; a password both in
    /// the URL and in a file or `PSYNC_BROKER_PASSWORD` (which one was
    /// meant?); what [`BrokerUrl::parse`] and
    /// [`BrokerUrl::with_password_file`] refuse.
    pub fn from_env_and_args(
        url: Option<&str>,
        password_file: Option<&Path>,
    ) -> Result<BrokerUrl, ConfigError> {
        from_sources(url, password_file, |k| std::env::var_os(k))
    }

    /// The password from the first line of the file at `path` (its line
    /// end stripped).
    ///
    /// The file must not be readable or writable by others (mode `o-rwx`,
    /// as ssh wants of a key): a password anyone on the node can read
    /// lets them write runs for the workers, which run as root. Group
    /// access is allowed, for a group of the service's operators.
    ///
    /// # Errors
    /// [`ConfigError::File`] naming the file: unreadable, open to others,
    /// an empty first line, not UTF-8; [`ConfigError::Url`] when the URL has a
    /// password already.
    pub fn with_password_file(mut self, path: &Path) -> Result<BrokerUrl, ConfigError> {
        let bad = |why: String| ConfigError::File {
            what: "password file",
            path: path.to_path_buf(),
            why,
        };
        if self.password.is_some() {
            return Err(self.conflict("the password file", path));
        }
        let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let mode = file
            .metadata()
            .map_err(|e| bad(format!("cannot be read: {e}")))?
            .permissions()
            .mode();
        if mode & 0o007 != 0 {
            return Err(bad(format!(
                "others have access to it (mode {:04o}): `chmod o-rwx` it",
                mode & 0o7777
            )));
        }
        let mut text = String::new();
        file.take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("cannot be read: {e}")))?;
        let line = text.lines().next().unwrap_or_default();
        if line.is_empty() {
            return Err(bad("its first line is empty".into()));
        }
        self.password = Some(line.to_owned());
        Ok(self)
    }

    /// Trusts the CA certificates (PEM) in `path` for the server's
    /// certificate, instead of the system's: for a cluster's own CA.
    /// Read when the client is built.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> BrokerUrl {
        self.ca_file = Some(path.into());
        self
    }

    /// True for `rediss://`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host (an IPv6 address without its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The database number.
    pub fn db(&self) -> u32 {
        self.db
    }

    /// The user name, if any (Redis's `default` user otherwise).
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// True when a password is set (from whichever source).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The CA file, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// A client for this URL: user, password, database and TLS (with the
    /// CA file's certificates when one is set). Connects to nothing yet.
    ///
    /// # Errors
    /// [`ConfigError::File`] for a CA file that cannot be read or holds
    /// no certificate; [`ConfigError::Url`] for a CA file with a plain
    /// `redis://` URL (TLS is off: the file would be ignored).
    pub fn client(&self) -> Result<redis::Client, ConfigError> {
        let mut settings = redis::RedisConnectionInfo::default().set_db(i64::from(self.db));
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password);
        }
        let addr = if self.tls {
            // The process's rustls provider, unless another part of it
            // installed one already (then that one is used).
            let _ = rustls::crypto::ring::default_provider().install_default();
            redis::ConnectionAddr::TcpTls {
                host: self.host.clone(),
                port: self.port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(self.host.clone(), self.port)
        };
        let bad = |e: redis::RedisError| ConfigError::Url {
            url: self.to_string(),
            why: e.to_string(),
        };
        let info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map_err(bad)?
            .set_redis_settings(settings);
        let Some(ca) = &self.ca_file else {
            return redis::Client::open(info).map_err(bad);
        };
        if !self.tls {
            return Err(ConfigError::Url {
                url: self.to_string(),
                why: format!(
                    "a CA file ({}) is set but the URL is not rediss:// (TLS)",
                    ca.display()
                ),
            });
        }
        let ca_bad = |why: String| ConfigError::File {
            what: "CA file",
            path: ca.clone(),
            why,
        };
        let pem = std::fs::read(ca).map_err(|e| ca_bad(format!("cannot be read: {e}")))?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(ca_bad("holds no PEM certificate".into()));
        }
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        redis::Client::build_with_tls(info, certs).map_err(|e| ca_bad(e.to_string()))
    }

    /// Connects (within `timeout`, handshake and authentication included)
    /// and checks the connection with a PING.
    ///
    /// # Errors
    /// What [`BrokerUrl::client`] refuses; [`ConfigError::Connect`] with
    /// the client's error (an unreachable server, a wrong password, an
    /// untrusted certificate), and a hint where one helps.
    pub fn connect(&self, timeout: Duration) -> Result<redis::Connection, ConfigError> {
        let client = self.client()?;
        let failed = |e: redis::RedisError| {
            let mut why = e.to_string();
            // A TLS server resets a plain client; a plain server waits
            // for the end of the line a TLS handshake never sends.
            let hint = if e.is_connection_refusal() {
                ""
            } else if self.tls && e.is_timeout() {
                " (no answer: if the server speaks plain Redis, use redis://)"
            } else if !self.tls && !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped())
            {
                " (if the server expects TLS, use rediss://)"
            } else if self.tls && self.ca_file.is_none() && why.contains("UnknownIssuer") {
                " (a cluster's own CA: give --broker-ca FILE or set PSYNC_BROKER_CA)"
            } else {
                ""
            };
            why.push_str(hint);
            ConfigError::Connect {
                url: self.to_string(),
                why,
            }
        };
        let mut con = client
            .get_connection_with_timeout(timeout)
            .map_err(failed)?;
        // The PING within the same time as the set-up.
        con.set_read_timeout(Some(timeout)).map_err(failed)?;
        redis::cmd("PING")
            .query::<String>(&mut con)
            .map_err(failed)?;
        con.set_read_timeout(None).map_err(failed)?;
        Ok(con)
    }

    fn conflict(&self, other: &str, path: &Path) -> ConfigError {
        ConfigError::Url {
            url: self.to_string(),
            why: format!(
                "a password is in the URL and in {other} {}: give one",
                path.display()
            ),
        }
    }
}

impl fmt::Display for BrokerUrl {
    /// `redis://user:***@host:port/db`: the password never shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.tls { "rediss://" } else { "redis://" })?;
        match (&self.username, &self.password) {
            (Some(u), Some(_)) => write!(f, "{u}:***@")?,
            (Some(u), None) => write!(f, "{u}@")?,
            (None, Some(_)) => f.write_str(":***@")?,
            (None, None) => {}
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.db)
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.db)
        }
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerUrl")
            .field("url", &format_args!("{self}"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// [`BrokerUrl::from_env_and_args`] with the environment as a function
/// (tests do not set the process's variables: other threads read them).
fn from_sources(
    url: Option<&str>,
    password_file: Option<&Path>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<BrokerUrl, ConfigError> {
    let var = |k: &str| env(k).filter(|v| !v.is_empty());
    let text = |k: &str| -> Result<Option<String>, ConfigError> {
        var(k)
            .map(|v| {
                v.into_string().map_err(|_| ConfigError::Url {
                    url: format!("${k}"),
                    why: "not UTF-8".into(),
                })
            })
            .transpose()
    };
    let mut broker = match url {
        Some(u) => BrokerUrl::parse(u)?,
        None => BrokerUrl::parse(&text(ENV_BROKER)?.ok_or(ConfigError::NoBroker)?)?,
    };
    if let Some(path) = password_file {
        broker = broker.with_password_file(path)?;
    } else if let Some(password) = text(ENV_PASSWORD)? {
        if broker.password.is_some() {
            return Err(broker.conflict("the environment variable", Path::new(ENV_PASSWORD)));
        }
        broker.password = Some(password);
    }
    if let Some(ca) = var(ENV_CA) {
        broker.ca_file = Some(PathBuf::from(ca));
    }
    Ok(broker)
}

/// `url` with what would be a password replaced by `***`, for messages
/// about a URL that may not parse.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (&url[..s.len() + 3], r),
        None => ("", url),
    };
    match rest.rsplit_once('@') {
        Some((info, host)) => match info.split_once(':') {
            Some((user, _)) => format!("{scheme}{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `%XX` decoded; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The directories a worker serves: a run is taken only when both its
/// roots are below (or equal to) one of them.
///
/// A worker without one refuses to start ([`ConfigError::NoAllow`])
/// rather than accept nothing (it would take runs' tasks and fail them)
/// or everything (whoever can write to Redis would choose what root
/// writes on every node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    /// Canonical: symlinks resolved when the worker started.
    dirs: Vec<PathBuf>,
}

impl Allow {
    /// The directories given (`--allow`, `allow =`), each an absolute,
    /// existing directory; resolved now, so a symlink among them counts
    /// as the directory it points to at start.
    ///
    /// # Errors
    /// [`ConfigError::NoAllow`] for none; [`ConfigError::Allow`] for one
    /// that is relative, has `.`/`..` or empty components, does not exist
    /// or is not a directory.
    pub fn new<P: AsRef<Path>>(dirs: impl IntoIterator<Item = P>) -> Result<Allow, ConfigError> {
        let mut out = Vec::new();
        for dir in dirs {
            let dir = dir.as_ref();
            let bad = |why: String| ConfigError::Allow {
                path: dir.to_path_buf(),
                why,
            };
            clean_absolute(dir).map_err(|why| bad(why.into()))?;
            let canon = std::fs::canonicalize(dir).map_err(|e| bad(e.to_string()))?;
            if !canon.is_dir() {
                return Err(bad("not a directory".into()));
            }
            out.push(canon);
        }
        if out.is_empty() {
            return Err(ConfigError::NoAllow);
        }
        Ok(Allow { dirs: out })
    }

    /// The allowed directories, resolved.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Accepts a run's roots: each must be absolute and clean (no `.` or
    /// `..` components, no `//`; one trailing `/` is fine), and below an
    /// allowed directory once resolved: symlinks in the part that exists
    /// are followed (`/allowed/link-to-etc/x` is `/etc/x`), and a missing
    /// target root must have no entry of its name (a dangling symlink).
    ///
    /// The check is made when the run is taken: a user who can rename
    /// directories on the path of a root below an allowed directory can
    /// still swap one for a symlink before the engine opens the roots.
    /// Allow only directories whose path other users cannot change.
    ///
    /// # Errors
    /// [`ConfigError::Root`] naming the root and why.
    pub fn check_spec(&self, src: &Path, dst: &Path) -> Result<(), ConfigError> {
        self.check_root(src)?;
        self.check_root(dst)
    }

    fn check_root(&self, root: &Path) -> Result<(), ConfigError> {
        let bad = |why: String| ConfigError::Root {
            path: root.to_path_buf(),
            why,
        };
        clean_absolute(root).map_err(|why| bad(why.into()))?;
        let resolved = resolve(root).map_err(bad)?;
        if self.dirs.iter().any(|d| resolved.starts_with(d)) {
            return Ok(());
        }
        let allowed: Vec<String> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        let seen = if resolved == root {
            String::new()
        } else {
            format!(" (resolved: {})", resolved.display())
        };
        Err(bad(format!(
            "not below an allowed directory{seen}; allowed: {}",
            allowed.join(", ")
        )))
    }
}

/// Refuses a path that is not absolute, or has `.`, `..` or empty
/// components (`//`) or a NUL; one trailing `/` is fine.
fn clean_absolute(p: &Path) -> Result<(), &'static str> {
    let b = p.as_os_str().as_bytes();
    let Some(body) = b.strip_prefix(b"/") else {
        return Err("not an absolute path");
    };
    if b.contains(&0) {
        return Err("has a NUL byte");
    }
    let body = body.strip_suffix(b"/").unwrap_or(body);
    if body.is_empty() {
        return Ok(());
    }
    for comp in body.split(|&c| c == b'/') {
        match comp {
            b"" => return Err("has an empty component (`//`)"),
            b"." | b".." => return Err("has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// `p` with its existing part canonicalized (symlinks followed) and the
/// missing names after it appended; refuses a path whose existing part
/// does not resolve (a dangling symlink: what it would create is
/// elsewhere).
fn resolve(p: &Path) -> Result<PathBuf, String> {
    let mut existing = p;
    let mut missing = Vec::new();
    loop {
        match std::fs::symlink_metadata(existing) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(format!("cannot be resolved: {e}"));
                };
                missing.push(name);
                existing = parent;
            }
            Err(e) => return Err(format!("cannot be resolved: {}: {e}", existing.display())),
        }
    }
    let mut out = std::fs::canonicalize(existing).map_err(|e| {
        format!(
            "cannot be resolved: {}: {e} (a dangling symlink?)",
            existing.display()
        )
    })?;
    out.extend(missing.into_iter().rev());
    Ok(out)
}

/// A worker's settings from its config file: lines `key = value`, `#`
/// at the start of a line for a comment. Keys: `broker` (a URL without a
/// password: the file is not a secret), `password-file`, `ca-file`,
/// `allow` (repeatable), `threads`, `name`. Paths must be absolute.
/// What the command line gives replaces what the file says (`allow`s
/// add up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// The broker's URL.
    pub broker: Option<String>,
    /// The file holding the broker's password.
    pub password_file: Option<PathBuf>,
    /// The CA file for a `rediss://` broker.
    pub ca_file: Option<PathBuf>,
    /// Allowed directories (see [`Allow`]).
    pub allow: Vec<PathBuf>,
    /// Threads running tasks.
    pub threads: Option<usize>,
    /// The worker's name (its consumer name in Redis).
    pub name: Option<String>,
}

impl WorkerConfig {
    /// Reads and checks the file at `path`. The file decides which
    /// directories root may write to: it must not be writable by others.
    ///
    /// # Errors
    /// [`ConfigError::File`] when it cannot be read, is writable by
    /// others or is not UTF-8; [`ConfigError::Line`] with the line's
    /// number for a line that is not `key = value`, an unknown or
    /// repeated key, or a bad value.
    pub fn from_file(path: &Path) -> Result<WorkerConfig, ConfigError> {
        let bad = |why: String| ConfigError::File {
            what: "config file",
            path: path.to_path_buf(),
            why,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        if meta.permissions().mode() & 0o002 != 0 {
            return Err(bad(format!(
                "others may write it (mode {:04o}): `chmod o-w` it",
                meta.permissions().mode() & 0o7777
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
        let mut cfg = WorkerConfig::default();
        for (i, line) in text.lines().enumerate() {
            cfg.read_line(line).map_err(|why| ConfigError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                why,
            })?;
        }
        Ok(cfg)
    }

    fn read_line(&mut self, line: &str) -> Result<(), String> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(());
        }
        let (key, value) = line.split_once('=').ok_or("expected `key = value`")?;
        let (key, value) = (key.trim(), value.trim());
        if value.is_empty() {
            return Err(format!("`{key}` has no value"));
        }
        let once = |set: bool| {
            if set {
                Err(format!("`{key}` given twice"))
            } else {
                Ok(())
            }
        };
        let absolute = |v: &str| {
            if v.starts_with('/') {
                Ok(PathBuf::from(v))
            } else {
                Err(format!("`{key}` must be an absolute path"))
            }
        };
        match key {
            "broker" => {
                once(self.broker.is_some())?;
                let url = BrokerUrl::parse(value).map_err(|e| e.to_string())?;
                if url.has_password() {
                    return Err(format!(
                        "the URL {url} holds a password: put it in a `password-file`"
                    ));
                }
                self.broker = Some(value.to_owned());
            }
            "password-file" => {
                once(self.password_file.is_some())?;
                self.password_file = Some(absolute(value)?);
            }
            "ca-file" => {
                once(self.ca_file.is_some())?;
                self.ca_file = Some(absolute(value)?);
            }
            "allow" => self.allow.push(absolute(value)?),
            "threads" => {
                once(self.threads.is_some())?;
                match value.parse::<usize>() {
                    Ok(n) if n > 0 => self.threads = Some(n),
                    _ => {
                        return Err(format!(
                            "`threads` must be a positive number, not `{value}`"
                        ));
                    }
                }
            }
            "name" => {
                once(self.name.is_some())?;
                if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err("`name` must have no spaces or control characters".into());
                }
                self.name = Some(value.to_owned());
            }
            _ => {
                return Err(format!(
                    "unknown key `{key}` (known: broker, password-file, ca-file, allow, \
                     threads, name)"
                ));
            }
        }
        Ok(())
    }
}

/// Refuses a task that carries a path which could lead out of the run's
/// roots: its directory (`rel`) must be relative with no empty, `.` or
/// `..` component and no NUL, and every name in its entries and actions
/// one such component (no `/`). A symlink's target is data, not a path
/// the engine resolves: it is not looked at.
///
/// [`Task::decode`] checks none of this ([`RelPath`] and [`Name`] take
/// any bytes): a worker calls this on every task it reads from Redis. The
/// engine opens a task's directory beneath the root (`openat2` with
/// `RESOLVE_BENEATH`, or component by component refusing `..`) and names
/// with `O_NOFOLLOW`, but a name with a `/` would be resolved as a path.
///
/// # Errors
/// [`ConfigError::Task`] saying which path and why; also for a kind of
/// task or action this version does not know (it cannot vouch for it).
pub fn check_task(task: &Task) -> Result<(), ConfigError> {
    let rel = task.rel();
    let bad = |why: String| ConfigError::Task {
        rel: rel.to_string(),
        why,
    };
    check_rel(rel).map_err(bad)?;
    // A directory's own entry (`Dir`, `FinishDir`) is named after its
    // last component, and the root's has no name.
    let dir_entry = |e: &Entry| {
        if e.name.as_bytes().is_empty() {
            Ok(())
        } else {
            check_name(&e.name)
        }
    };
    let entry = |e: &Entry| check_name(&e.name);
    let result =
        match task {
            Task::Dir { src, dst, .. } | Task::FinishDir { src, dst, .. } => {
                dir_entry(src).and_then(|()| dst.as_ref().map_or(Ok(()), dir_entry))
            }
            Task::Files { actions, .. } | Task::Links { actions, .. } => {
                actions.iter().try_for_each(check_action)
            }
            Task::BigFile { src, dst, .. } | Task::FinishFile { src, dst, .. } => {
                entry(src).and_then(|()| dst.as_ref().map_or(Ok(()), entry))
            }
            Task::Chunk { src, .. } | Task::CompareChunk { src, .. } => entry(src),
            Task::CompareBig { src, dst, .. } | Task::FinishCompare { src, dst, .. } => {
                entry(src).and_then(|()| entry(dst))
            }
            Task::DropLinks { bucket, .. } => check_name(bucket),
            Task::LinkSlots { .. } => Ok(()),
            // Names each followed by a NUL (one at the end).
            Task::DirPart {
                names, only_dst, ..
            } => [names, only_dst].into_iter().try_for_each(|list| {
                match psync_core::task::split_names(list) {
                    Some(names) => names
                        .into_iter()
                        .try_for_each(|n| check_name(&Name(n.to_vec()))),
                    None => {
                        Err("a part of a directory whose names are not each ended by a NUL".into())
                    }
                }
            }),
            // Refused rather than let through unchecked: a new kind must be
            // added above.
            _ => Err("a kind of task this worker does not know".into()),
        };
    result.map_err(bad)
}

fn check_action(a: &Action) -> Result<(), String> {
    let entry = |e: &Entry| check_name(&e.name);
    let maybe = |e: &Option<Entry>| e.as_ref().map_or(Ok(()), entry);
    match a {
        Action::Delete { dst, .. } => entry(dst),
        Action::Mkdir { src } | Action::TooYoung { src } => entry(src),
        Action::Descend { src, dst }
        | Action::Compare { src, dst, .. }
        | Action::Attrs { src, dst, .. } => entry(src).and_then(|()| entry(dst)),
        Action::Copy { src, dst, .. }
        | Action::Symlink { src, dst, .. }
        | Action::Special { src, dst, .. } => entry(src).and_then(|()| maybe(dst)),
        _ => Err("a kind of action this worker does not know".into()),
    }
}

/// A task's directory: the root (empty), or components joined by single
/// `/`s, each a valid name.
fn check_rel(rel: &RelPath) -> Result<(), String> {
    if rel.is_root() {
        return Ok(());
    }
    for comp in rel.as_bytes().split(|&b| b == b'/') {
        check_component(comp).map_err(|why| format!("its directory {why}"))?;
    }
    Ok(())
}

fn check_name(name: &Name) -> Result<(), String> {
    check_component(name.as_bytes()).map_err(|why| {
        format!(
            "the name {} {why}",
            psync_core::entry::escape(name.as_bytes())
        )
    })
}

fn check_component(c: &[u8]) -> Result<(), &'static str> {
    match c {
        b"" => Err("has an empty component (absolute, `//` or a trailing `/`)"),
        b"." | b".." => Err("has a `.` or `..` component"),
        _ if c.contains(&0) => Err("has a NUL byte"),
        _ if c.contains(&b'/') => Err("has a `/`"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use psync_core::entry::Kind;
    use psync_core::itemize::Change;
    use std::os::unix::fs::symlink;

    fn test_dir() -> tempfile::TempDir {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/unit-tmp");
        std::fs::create_dir_all(&base).expect("create target/unit-tmp");
        tempfile::tempdir_in(base).expect("create a temporary directory")
    }

    fn url_err(url: &str) -> String {
        BrokerUrl::parse(url).unwrap_err().to_string()
    }

    #[test]
    fn urls_parse() {
        let u = BrokerUrl::parse("redis://localhost").unwrap();
        assert!(!u.is_tls());
        assert_eq!((u.host(), u.port(), u.db()), ("localhost", 6379, 0));
        assert_eq!((u.username(), u.has_password()), (None, false));
        assert_eq!(u.to_string(), "redis://localhost:6379/0");

        let u = BrokerUrl::parse("rediss://psync:s%40cr%3At@redis-1.example:6380/3").unwrap();
        assert!(u.is_tls());
        assert_eq!((u.host(), u.port(), u.db()), ("redis-1.example", 6380, 3));
        assert_eq!(u.username(), Some("psync"));
        assert_eq!(u.password.as_deref(), Some("s@cr:t"));
        assert_eq!(u.to_string(), "rediss://psync:***@redis-1.example:6380/3");

        // A password with `@` and `/` as typed; a password without a user.
        let u = BrokerUrl::parse("redis://:p@ss/w@10.0.0.1/").unwrap();
        assert_eq!(u.password.as_deref(), Some("p@ss/w"));
        assert_eq!(u.username(), None);
        assert_eq!(u.to_string(), "redis://:***@10.0.0.1:6379/0");

        let u = BrokerUrl::parse("redis://[::1]:7000/2").unwrap();
        assert_eq!((u.host(), u.port(), u.db()), ("::1", 7000, 2));
        assert_eq!(u.to_string(), "redis://[::1]:7000/2");
        let u = BrokerUrl::parse("redis://worker@h").unwrap();
        assert_eq!(u.to_string(), "redis://worker@h:6379/0");
    }

    #[test]
    fn bad_urls_are_named_without_their_password() {
        for (url, why) in [
            ("http://h", "scheme must be redis://"),
            ("h:6379", "scheme must be redis://"),
            ("redis://", "no host"),
            ("redis://:6379", "no host"),
            ("redis://h:0", "bad port `0`"),
            ("redis://h:70000", "bad port `70000`"),
            ("redis://h:", "bad port ``"),
            ("redis://h:+1", "bad port `+1`"),
            ("redis://h/x", "bad database number `x`"),
            ("redis://h/-1", "bad database number `-1`"),
            ("redis://h/1/2", "bad database number `1/2`"),
            ("redis://h/?protocol=resp3", "query strings"),
            ("redis://h/#insecure", "query strings"),
            ("redis://h b", "bad host `h b`"),
            ("redis://[::1", "closing `]`"),
            ("redis://u:p%zz@h", "bad percent-encoding in the password"),
            ("redis://u:p%+1@h", "bad percent-encoding in the password"),
            ("redis://u%4@h", "bad percent-encoding in the user name"),
        ] {
            let msg = url_err(url);
            assert!(msg.contains(why), "{url}: {msg}");
        }
        let msg = url_err("redis://u:hunter2@h:99999");
        assert!(msg.contains("redis://u:***@h:99999"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let msg = url_err("ftp://u:hunter2@h");
        assert!(!msg.contains("hunter2"), "{msg}");
        let u = BrokerUrl::parse("redis://u:hunter2@h").unwrap();
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(!u.to_string().contains("hunter2"));
    }

    /// A password file with the given mode and text.
    fn pw_file(dir: &Path, name: &str, mode: u32, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn password_files() {
        let t = test_dir();
        let u = || BrokerUrl::parse("redis://psync@h").unwrap();
        let ok = pw_file(t.path(), "ok", 0o640, "s3cret\r\nsecond line\n");
        let b = u().with_password_file(&ok).unwrap();
        assert_eq!(b.password.as_deref(), Some("s3cret"));
        assert_eq!(b.to_string(), "redis://psync:***@h:6379/0");

        let open = pw_file(t.path(), "open", 0o644, "s3cret\n");
        let msg = u().with_password_file(&open).unwrap_err().to_string();
        assert!(
            msg.contains("password file") && msg.contains("open"),
            "{msg}"
        );
        assert!(
            msg.contains("mode 0644") && msg.contains("chmod o-rwx"),
            "{msg}"
        );
        let empty = pw_file(t.path(), "empty", 0o600, "\nx\n");
        let msg = u().with_password_file(&empty).unwrap_err().to_string();
        assert!(msg.contains("first line is empty"), "{msg}");
        let missing = t.path().join("missing");
        let msg = u().with_password_file(&missing).unwrap_err().to_string();
        assert!(
            msg.contains(&missing.display().to_string()) && msg.contains("cannot be read"),
            "{msg}"
        );
        let msg = BrokerUrl::parse("redis://psync:x@h")
            .unwrap()
            .with_password_file(&ok)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("a password is in the URL and in the password file"));
        assert!(!msg.contains(":x@"), "{msg}");
    }

    #[test]
    fn urls_and_passwords_from_arguments_and_environment() {
        let t = test_dir();
        let file = pw_file(t.path(), "pw", 0o600, "from-file\n");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        let none = env(&[]);
        assert!(matches!(
            from_sources(None, None, none),
            Err(ConfigError::NoBroker)
        ));
        assert!(matches!(
            from_sources(None, None, env(&[(ENV_BROKER, "")])),
            Err(ConfigError::NoBroker)
        ));
        let vars = env(&[
            (ENV_BROKER, "rediss://w@env-host"),
            (ENV_PASSWORD, "from-env"),
            (ENV_CA, "/etc/psync/ca.pem"),
        ]);
        let b = from_sources(None, None, vars).unwrap();
        assert_eq!(b.host(), "env-host");
        assert_eq!(b.password.as_deref(), Some("from-env"));
        assert_eq!(b.ca_file(), Some(Path::new("/etc/psync/ca.pem")));
        // The argument beats the variable; the file beats the variable.
        let b = from_sources(Some("redis://arg-host"), Some(&file), vars).unwrap();
        assert_eq!(b.host(), "arg-host");
        assert_eq!(b.password.as_deref(), Some("from-file"));
        let b = b.with_ca_file("/other.pem");
        assert_eq!(b.ca_file(), Some(Path::new("/other.pem")));
        // Two passwords: refused, whichever the second is.
        let msg = from_sources(Some("redis://u:x@h"), None, vars)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(ENV_PASSWORD), "{msg}");
        assert!(from_sources(Some("redis://u:x@h"), Some(&file), none).is_err());
        let b = from_sources(Some("redis://u:x@h"), None, none).unwrap();
        assert_eq!(b.password.as_deref(), Some("x"));
    }

    #[test]
    fn clients_are_built_from_the_settings() {
        let t = test_dir();
        let b = BrokerUrl::parse("redis://u:pw@127.0.0.1:7001/4").unwrap();
        let c = b.client().unwrap();
        let info = c.get_connection_info();
        assert!(matches!(info.addr(), redis::ConnectionAddr::Tcp(h, 7001) if h == "127.0.0.1"));
        let r = info.redis_settings();
        assert_eq!(
            (r.username(), r.password(), r.db()),
            (Some("u"), Some("pw"), 4)
        );
        let tls = BrokerUrl::parse("rediss://h:7002").unwrap();
        assert!(matches!(
            tls.client().unwrap().get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls {
                port: 7002,
                insecure: false,
                ..
            }
        ));
        // CA files: on a plain URL, missing, not PEM.
        let msg = b
            .clone()
            .with_ca_file("/ca.pem")
            .client()
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("not rediss://") && !msg.contains("pw@"),
            "{msg}"
        );
        let missing = t.path().join("no-ca.pem");
        let msg = tls
            .clone()
            .with_ca_file(&missing)
            .client()
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("CA file") && msg.contains("cannot be read"),
            "{msg}"
        );
        let junk = t.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let msg = tls.with_ca_file(&junk).client().unwrap_err().to_string();
        assert!(msg.contains("no PEM certificate"), "{msg}");
    }

    #[test]
    fn no_server_no_hint() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        for scheme in ["redis", "rediss"] {
            let b = BrokerUrl::parse(&format!("{scheme}://u:pw@127.0.0.1:{port}")).unwrap();
            let msg = b
                .connect(Duration::from_secs(5))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            let at =
                format!("cannot connect to the broker at {scheme}://u:***@127.0.0.1:{port}/0: ");
            assert!(msg.starts_with(&at) && msg.contains("refused"), "{msg}");
            assert!(!msg.contains("use redis") && !msg.contains(":pw@"), "{msg}");
        }
    }

    #[test]
    fn allowed_roots() {
        let t = test_dir();
        let base = t.path().canonicalize().unwrap();
        let allowed = base.join("allowed");
        let etc = base.join("etc");
        std::fs::create_dir_all(allowed.join("src")).unwrap();
        std::fs::create_dir_all(&etc).unwrap();
        symlink(&etc, allowed.join("link-to-etc")).unwrap();
        symlink(allowed.join("src"), allowed.join("link-to-src")).unwrap();
        symlink(etc.join("nothing"), allowed.join("dangling")).unwrap();
        // The allowed directory given through a symlink counts as its target.
        symlink(&allowed, base.join("alias")).unwrap();
        let allow = Allow::new([base.join("alias")]).unwrap();
        assert_eq!(allow.dirs(), std::slice::from_ref(&allowed));

        let src = allowed.join("src");
        let ok = |dst: PathBuf| allow.check_spec(&src, &dst);
        ok(allowed.join("dst")).unwrap();
        ok(allowed.join("new/deeper")).unwrap();
        ok(allowed.clone()).unwrap();
        ok(base.join("alias/dst")).unwrap();
        ok(allowed.join("link-to-src")).unwrap();
        allow
            .check_spec(Path::new(&format!("{}/", src.display())), &allowed)
            .unwrap();

        let refused = |dst: &str, why: &str| {
            let msg = allow
                .check_spec(&src, Path::new(dst))
                .unwrap_err()
                .to_string();
            assert!(msg.contains(why), "{dst}: {msg}");
            assert!(msg.starts_with("run root"), "{msg}");
        };
        let a = allowed.display().to_string();
        refused("relative/dst", "not an absolute path");
        refused(&format!("{a}/../etc"), "`..` component");
        refused(&format!("{a}/./dst"), "`.` or `..`");
        refused(&format!("{a}//dst"), "empty component");
        refused(
            &format!("{a}/link-to-etc"),
            "not below an allowed directory",
        );
        refused(&format!("{a}/link-to-etc/x"), "resolved: ");
        refused(
            &format!("{a}/link-to-etc/new/x"),
            "not below an allowed directory",
        );
        refused(&format!("{a}/dangling"), "dangling symlink");
        refused(&format!("{a}/dangling/x"), "cannot be resolved");
        refused(&etc.display().to_string(), "not below an allowed directory");
        // A sibling whose name starts like the allowed one.
        std::fs::create_dir_all(base.join("allowed2")).unwrap();
        refused(&format!("{a}2/x"), "not below an allowed directory");
        // The source is checked as well.
        let msg = allow.check_spec(&etc, &allowed).unwrap_err().to_string();
        assert!(msg.contains(&etc.display().to_string()), "{msg}");
    }

    #[test]
    fn allowed_directories_are_checked() {
        let t = test_dir();
        let base = t.path().canonicalize().unwrap();
        let none: [&Path; 0] = [];
        assert!(matches!(Allow::new(none), Err(ConfigError::NoAllow)));
        assert!(ConfigError::NoAllow.to_string().contains("--allow DIR"));
        let file = base.join("file");
        std::fs::write(&file, "").unwrap();
        for (dir, why) in [
            (PathBuf::from("rel"), "not an absolute path"),
            (base.join("missing"), "No such file"),
            (file, "not a directory"),
            (base.join("x/.."), "`..`"),
        ] {
            let msg = Allow::new([&dir]).unwrap_err().to_string();
            assert!(
                msg.contains(why) && msg.starts_with("allowed directory"),
                "{msg}"
            );
        }
        // Two allowed directories: either one does.
        let (a, b) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let allow = Allow::new([&a, &b]).unwrap();
        allow.check_spec(&a.join("s"), &b.join("d")).unwrap();
        assert!(allow.check_spec(&a.join("s"), &base).is_err());
    }

    fn config(text: &str) -> Result<WorkerConfig, ConfigError> {
        let t = test_dir();
        let p = pw_file(t.path(), "worker.conf", 0o644, text);
        WorkerConfig::from_file(&p)
    }

    #[test]
    fn config_files() {
        let cfg = config(
            "# a worker\n\
             broker = rediss://psync@redis.example:6380/1\n\
             \n  password-file = /etc/psync/password\n\
             ca-file=/etc/psync/ca.pem\n\
             allow = /data/a\n\
             allow = /data/with # hash\n\
             threads = 8\n\
             name = node-7\n",
        )
        .unwrap();
        assert_eq!(
            cfg,
            WorkerConfig {
                broker: Some("rediss://psync@redis.example:6380/1".into()),
                password_file: Some("/etc/psync/password".into()),
                ca_file: Some("/etc/psync/ca.pem".into()),
                allow: vec!["/data/a".into(), "/data/with # hash".into()],
                threads: Some(8),
                name: Some("node-7".into()),
            }
        );
        assert_eq!(config("").unwrap(), WorkerConfig::default());
        for (text, line, why) in [
            ("threads = 2\nthread = 3\n", 2, "unknown key `thread`"),
            ("allow /data\n", 1, "expected `key = value`"),
            ("# x\nallow =\n", 2, "`allow` has no value"),
            ("allow = data\n", 1, "absolute path"),
            ("threads = 0\n", 1, "positive number"),
            ("threads = 2\nthreads = 2\n", 2, "given twice"),
            ("name = a b\n", 1, "no spaces"),
            ("broker = http://h\n", 1, "scheme must be"),
            ("broker = redis://u:pw@h\n", 1, "password-file"),
        ] {
            let msg = config(text).unwrap_err().to_string();
            assert!(msg.contains(&format!(", line {line}: ")), "{text:?}: {msg}");
            assert!(msg.contains(why), "{text:?}: {msg}");
            assert!(!msg.contains(":pw@"), "{msg}");
        }
        let t = test_dir();
        let open = pw_file(t.path(), "open.conf", 0o666, "allow = /\n");
        let msg = WorkerConfig::from_file(&open).unwrap_err().to_string();
        assert!(msg.contains("others may write it"), "{msg}");
    }

    fn file(name: &[u8]) -> Entry {
        Entry::new(Name(name.to_vec()), Kind::File)
    }

    fn copy(name: &[u8]) -> Action {
        Action::Copy {
            src: file(name),
            dst: None,
            change: Change::new_entry(Kind::File),
        }
    }

    fn files(rel: &[u8], actions: Vec<Action>) -> Task {
        Task::Files {
            rel: RelPath::from_bytes(rel.to_vec()),
            actions,
            fresh: false,
            at: None,
            recheck: false,
        }
    }

    /// `Task::decode` takes any path: what the worker must check itself.
    fn decoded(t: &Task) -> Task {
        Task::decode(&t.encode().unwrap()).unwrap()
    }

    #[test]
    fn tasks_with_clean_paths_pass() {
        let root_dir = Task::Dir {
            rel: RelPath::root(),
            src: Entry::new(Name::default(), Kind::Dir),
            dst: None,
            at: None,
        };
        let sub = Task::FinishDir {
            rel: RelPath::from_bytes(b"a/b\xff c".to_vec()),
            src: Entry::new(Name::from("b\u{ff} c"), Kind::Dir),
            dst: None,
            touched: true,
            at: None,
            pass: 0,
        };
        let mut link = Entry::new(Name::from("l"), Kind::Symlink);
        link.link = Some(Name::from("../../../etc/passwd"));
        let batch = files(
            b"a",
            vec![
                copy(b"f"),
                copy(b".hidden"),
                copy(b"..."),
                Action::Symlink {
                    src: link,
                    dst: None,
                    change: Change::new_entry(Kind::Symlink),
                },
                Action::Delete {
                    dst: file(b"old"),
                    replaced: false,
                },
            ],
        );
        let chunk = Task::Chunk {
            rel: RelPath::root(),
            src: file(b"big"),
            index: 3,
            at: None,
        };
        let drop = Task::DropLinks {
            rel: RelPath::root(),
            bucket: Name::from("bucket-1"),
        };
        for t in [root_dir, sub, batch, chunk, drop] {
            check_task(&decoded(&t)).unwrap();
        }
    }

    #[test]
    fn tasks_with_paths_out_of_the_roots_are_refused() {
        let refused = |t: Task, why: &str| {
            let msg = check_task(&decoded(&t)).unwrap_err().to_string();
            assert!(
                msg.starts_with("task in ") && msg.contains(why),
                "{t:?}: {msg}"
            );
        };
        for rel in [
            &b"../etc"[..],
            b"/etc/passwd",
            b"a/../../b",
            b"a/./b",
            b".",
            b"a//b",
            b"a/",
            b"a\0b",
        ] {
            refused(files(rel, vec![copy(b"f")]), "its directory");
        }
        refused(files(b"a", vec![copy(b"x/y")]), "has a `/`");
        refused(files(b"a", vec![copy(b"/etc")]), "has a `/`");
        refused(files(b"a", vec![copy(b"..")]), "`..`");
        refused(files(b"a", vec![copy(b"")]), "empty");
        refused(files(b"a", vec![copy(b"n\0ul")]), "NUL");
        // One bad name among good ones; in a target entry; in a delete.
        refused(files(b"a", vec![copy(b"ok"), copy(b"../x")]), "`/`");
        refused(
            files(
                b"a",
                vec![Action::Copy {
                    src: file(b"ok"),
                    dst: Some(file(b"../../x")),
                    change: Change::new_entry(Kind::File),
                }],
            ),
            "`/`",
        );
        refused(
            files(
                b"a",
                vec![Action::Delete {
                    dst: file(b".."),
                    replaced: true,
                }],
            ),
            "`..`",
        );
        refused(
            Task::DropLinks {
                rel: RelPath::root(),
                bucket: Name::from("../../etc"),
            },
            "`/`",
        );
        refused(
            Task::BigFile {
                rel: RelPath::from_bytes(b"d".to_vec()),
                src: file(b""),
                dst: None,
                change: Change::new_entry(Kind::File),
                attempt: 0,
                at: None,
            },
            "empty",
        );
        refused(
            Task::Dir {
                rel: RelPath::from_bytes(b"d".to_vec()),
                src: Entry::new(Name::from("a/b"), Kind::Dir),
                dst: None,
                at: None,
            },
            "`/`",
        );
    }
}
