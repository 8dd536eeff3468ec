//! A real unprivileged user for the tests about permissions: created once
//! (idempotently, `useradd`) when the suite runs as root, with one
//! supplementary group (`groupadd`, `gpasswd -a`), and the `psync` binary
//! or rsync run as that user through `setpriv`.

use super::{in_ci, is_root};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The name of the test user.
pub const NAME: &str = "psync-test";

/// A supplementary group of the test user (not its primary one), for
/// "a non-root user gives a target a group it is a member of".
pub const GROUP: &str = "psync-test-g";

/// An unprivileged user: numeric ids.
#[derive(Debug, Clone, Copy)]
pub struct User {
    /// Its uid.
    pub uid: u32,
    /// Its primary gid.
    pub gid: u32,
    /// The gid of [`GROUP`], which it is a member of.
    pub extra_gid: u32,
}

fn ids() -> Option<(u32, u32)> {
    let out = Command::new("getent")
        .args(["passwd", NAME])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut f = line.trim().split(':').skip(2);
    Some((f.next()?.parse().ok()?, f.next()?.parse().ok()?))
}

/// The gid of [`GROUP`] and whether the test user is listed in it.
fn group() -> Option<(u32, bool)> {
    let out = Command::new("getent")
        .args(["group", GROUP])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut f = line.trim().split(':').skip(2);
    let gid = f.next()?.parse().ok()?;
    let member = f.next().is_some_and(|m| m.split(',').any(|u| u == NAME));
    Some((gid, member))
}

/// Runs an account tool; a failure counts only when `done` still says the
/// work is not done (another test process may have done it meanwhile).
fn admin(cmd: &mut Command, done: impl Fn() -> bool) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() && !done() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(())
}

/// Creates [`GROUP`] and adds the test user to it, both idempotently.
fn join_group() -> Result<u32, String> {
    if group().is_none() {
        admin(Command::new("groupadd").args(["--system", GROUP]), || {
            group().is_some()
        })?;
    }
    if !group().is_some_and(|(_, member)| member) {
        admin(Command::new("gpasswd").args(["-a", NAME, GROUP]), || {
            group().is_some_and(|(_, member)| member)
        })?;
    }
    group()
        .map(|(gid, _)| gid)
        .ok_or_else(|| format!("getent group {GROUP}: no such group"))
}

fn create() -> Result<User, String> {
    if !is_root() {
        return Err("not root: cannot create or switch to a test user".into());
    }
    if ids().is_none() {
        let out = Command::new("useradd")
            .args(["--system", "--user-group", "--no-create-home"])
            .args(["--shell", "/usr/sbin/nologin", NAME])
            .output()
            .map_err(|e| format!("useradd: {e}"))?;
        // Another test process may have created it meanwhile.
        if !out.status.success() && ids().is_none() {
            return Err(format!("useradd: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    let (uid, gid) = ids().ok_or("getent passwd psync-test: no such user")?;
    let extra_gid = join_group()?;
    Command::new("setpriv")
        .arg("--version")
        .output()
        .map_err(|e| format!("setpriv: {e}"))?;
    Ok(User {
        uid,
        gid,
        extra_gid,
    })
}

/// The test user, or why there is none: printed as a skip, and under
/// `CI=true` (which runs as root with util-linux) a failure.
#[track_caller]
pub fn test_user(test: &str) -> Option<User> {
    static USER: OnceLock<Result<User, String>> = OnceLock::new();
    match USER.get_or_init(create) {
        Ok(u) => Some(*u),
        Err(why) => {
            assert!(!in_ci(), "{test}: CI=true but no test user: {why}");
            eprintln!("SKIPPED {test} as a non-root user: {why}");
            None
        }
    }
}

impl User {
    /// `program args...` run as this user (its groups from /etc/group).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .args(["--init-groups", "--"])
            .arg(program);
        c
    }

    /// Runs `psync sync ARGS SRC DST` as this user.
    pub fn psync(&self, args: &[&str], src: &Path, dst: &Path) -> Output {
        self.command(super::run::psync_bin())
            .arg("sync")
            .args(args)
            .arg(src)
            .arg(dst)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run psync as the test user")
    }

    /// Runs `rsync ARGS SRC/ DST/` as this user.
    pub fn rsync(&self, args: &[&str], src: &Path, dst: &Path) -> Output {
        self.command("rsync")
            .args(args)
            .arg(super::slash(src))
            .arg(super::slash(dst))
            .output()
            .expect("run rsync as the test user")
    }

    /// Gives everything under `root` (symlinks themselves) to this user.
    pub fn own(&self, root: &Path) {
        let out = Command::new("chown")
            .args(["-R", "-h", &format!("{}:{}", self.uid, self.gid)])
            .arg(root)
            .output()
            .expect("chown -R");
        assert!(out.status.success(), "chown -R {}: {out:?}", root.display());
    }

    /// True when `p` belongs to this user.
    pub fn owns(&self, p: &Path) -> bool {
        p.symlink_metadata().is_ok_and(|m| m.uid() == self.uid)
    }
}

/// Panics with both streams unless the run exited with `code`.
#[track_caller]
pub fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `psync sync ARGS SRC DST` as `user`, or as this process (root) without one.
pub fn psync_as(user: Option<User>, args: &[&str], src: &Path, dst: &Path) -> Output {
    match user {
        Some(u) => u.psync(args, src, dst),
        None => super::run::run_cli(args, src, dst),
    }
}

/// `rsync ARGS SRC/ DST/` as `user`, or as this process without one.
pub fn rsync_as(user: Option<User>, args: &[&str], src: &Path, dst: &Path) -> Output {
    match user {
        Some(u) => u.rsync(args, src, dst),
        None => Command::new("rsync")
            .args(args)
            .arg(super::slash(src))
            .arg(super::slash(dst))
            .output()
            .expect("run rsync"),
    }
}
