//! `rediss://` against a real redis-server that speaks only TLS, with a
//! certificate from a CA made for the test and an ACL user: what
//! `psync_broker::config::BrokerUrl` builds connects, and each wrong
//! setting fails with an error that says what is wrong.

#[macro_use]
mod server;

use psync_broker::config::{BrokerUrl, ConfigError};
use server::TlsRedis;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The server's URL for `user` (no password: it comes from a file).
fn url(r: &TlsRedis, scheme: &str, host: &str) -> String {
    format!("{scheme}://{}@{host}:{}/0", TlsRedis::USER, r.port())
}

/// A password file (mode 0600) holding `password`.
fn password_file(r: &TlsRedis, password: &str) -> PathBuf {
    let p = r.dir().join(format!("password-{}", password.len()));
    std::fs::write(&p, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The error of connecting within `timeout`, which must not take longer.
fn connect_err_within(b: &BrokerUrl, timeout: Duration) -> String {
    let start = Instant::now();
    let e = b.connect(timeout).map(|_| ()).unwrap_err();
    assert!(start.elapsed() < timeout * 2, "{:?}", start.elapsed());
    assert!(matches!(e, ConfigError::Connect { .. }), "{e:?}");
    e.to_string()
}

fn connect_err(b: &BrokerUrl) -> String {
    connect_err_within(b, TIMEOUT)
}

#[test]
fn rediss_with_the_cluster_ca_and_an_acl_user() {
    let r = require_tls_redis!();
    let pw = password_file(&r, TlsRedis::PASSWORD);
    for host in ["127.0.0.1", "localhost"] {
        let b = BrokerUrl::from_env_and_args(Some(&url(&r, "rediss", host)), Some(&pw))
            .unwrap()
            .with_ca_file(r.ca_file());
        let mut con = b.connect(TIMEOUT).unwrap();
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        let who: String = redis::cmd("ACL").arg("WHOAMI").query(&mut con).unwrap();
        assert_eq!(who, TlsRedis::USER);
        let () = redis::cmd("SET")
            .arg("k")
            .arg(host)
            .query(&mut con)
            .unwrap();
        let v: String = redis::cmd("GET").arg("k").query(&mut con).unwrap();
        assert_eq!(v, host);
    }
    // The password percent-encoded in the URL works alike.
    let inline = format!(
        "rediss://{}:{}@127.0.0.1:{}/",
        TlsRedis::USER,
        TlsRedis::PASSWORD.replace('-', "%2D"),
        r.port()
    );
    let b = BrokerUrl::parse(&inline).unwrap().with_ca_file(r.ca_file());
    b.connect(TIMEOUT).unwrap();
}

#[test]
fn a_wrong_password_is_named_without_showing_it() {
    let r = require_tls_redis!();
    let pw = password_file(&r, "not-the-password");
    let b = BrokerUrl::from_env_and_args(Some(&url(&r, "rediss", "127.0.0.1")), Some(&pw))
        .unwrap()
        .with_ca_file(r.ca_file());
    let msg = connect_err(&b);
    assert!(msg.contains("authentication failed"), "{msg}");
    assert!(
        msg.contains(&format!("rediss://psync:***@127.0.0.1:{}/0", r.port())),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password"), "{msg}");
    // No password at all: the default user is off.
    let b = BrokerUrl::parse(&format!("rediss://127.0.0.1:{}", r.port()))
        .unwrap()
        .with_ca_file(r.ca_file());
    let b = b.connect(TIMEOUT).map(|_| ()).unwrap_err().to_string();
    assert!(b.contains("NOAUTH") || b.contains("Authentication"), "{b}");
}

#[test]
fn plain_redis_to_the_tls_port_fails_with_a_hint() {
    let r = require_tls_redis!();
    let pw = password_file(&r, TlsRedis::PASSWORD);
    let b = BrokerUrl::from_env_and_args(Some(&url(&r, "redis", "127.0.0.1")), Some(&pw)).unwrap();
    let msg = connect_err(&b);
    assert!(msg.contains("use rediss://"), "{msg}");
    // A CA file with a plain URL is refused before connecting.
    let msg = b
        .with_ca_file(r.ca_file())
        .client()
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not rediss://"), "{msg}");
}

#[test]
fn an_untrusted_certificate_fails_with_a_hint() {
    let r = require_tls_redis!();
    let pw = password_file(&r, TlsRedis::PASSWORD);
    let b = BrokerUrl::from_env_and_args(Some(&url(&r, "rediss", "127.0.0.1")), Some(&pw)).unwrap();
    // The system's CAs do not know the test's.
    let msg = connect_err(&b);
    assert!(
        msg.contains("certificate") && msg.contains("--broker-ca"),
        "{msg}"
    );
    // Another CA.
    let msg = connect_err(&b.clone().with_ca_file(r.other_ca_file()));
    assert!(msg.contains("certificate"), "{msg}");
    // A name the certificate does not carry (the CA is right).
    let other_name =
        BrokerUrl::from_env_and_args(Some(&url(&r, "rediss", "127.0.0.2")), Some(&pw)).unwrap();
    let msg = connect_err(&other_name.with_ca_file(r.ca_file()));
    assert!(msg.contains("certificate"), "{msg}");
}

#[test]
fn rediss_to_a_plain_port_fails() {
    let plain = require_redis!();
    let port = plain
        .url()
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let b = BrokerUrl::parse(&format!("rediss://127.0.0.1:{port}/")).unwrap();
    // The server waits for the end of a command line: the client's
    // timeout ends the handshake.
    let msg = connect_err_within(&b, Duration::from_secs(1));
    assert!(
        msg.contains(&format!("rediss://127.0.0.1:{port}/0")),
        "{msg}"
    );
    assert!(msg.contains("use redis://"), "{msg}");
}
