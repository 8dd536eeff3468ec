//! Sixth adversarial review of issue 13 (ADR 010): combined attacks by a
//! real racing process. psync runs as root (the CLI) over a tree where the
//! unprivileged test user owns `u/` (with `u/w`, `u/w/sub`) and shares the
//! 1777 root and `tmp/` with a victim (uid 4242) whose private data sits in
//! `u/v` (0700, in the attacker's directory), `p/` and `tmp/`. During each
//! run the user runs `review6_attacker.py`: directory swaps with
//! `RENAME_EXCHANGE`, symlinks out of DST, the victim's directory renamed
//! to the attacker's names, planted `.psync-tmp.*` / `.psync-part.*`
//! names, psync's temporaries exchanged, hard links to the attacker's own
//! files outside DST and to the victim's world-writable file, names made
//! and removed, type changes and mode changes. The source changes between
//! runs (contents, modes, hard-link groups, type changes, large files
//! chunked at 1 MiB with journals), with `--delete`, `-c` and `--force`.
//!
//! After every run: nothing outside DST changed, no private data of the
//! victim is readable or writable by the attacker or in an inode they own,
//! no victim data the source still has was lost, the exit status is 0 or
//! 1 with no panic; at the end an undisturbed run converges to an exact
//! copy (`assert_synced!`). Seeded: `PSYNC_REVIEW6_SEED=N` replays a run.

use crate::util::compare::StatSnapshot;
use crate::util::user::{User, test_user};
use crate::util::{TestDir, stat_snapshot};
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// The victim: the owner of private data psync syncs as root.
const VICTIM: u32 = 4242;
/// Every private file of the victim starts with this and a unique id.
const MARK: &[u8] = b"PRIVSECRET-";
const ATTACKER: &str = include_str!("review6_attacker.py");
/// 1 MiB chunks (the smallest), every chunked file journaled.
const CHUNKS: &[&str] = &["--chunk-size", "1M", "--resume-threshold", "0"];

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(p: &Path, uid: u32, gid: u32, mode: u32) {
    if !p.is_dir() {
        let _ = std::fs::remove_file(p);
        std::fs::create_dir_all(p).unwrap();
    }
    chown(p, uid, gid);
    chmod(p, mode);
}

/// Removes what is at `p`, whatever it is.
fn remove(p: &Path) {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).unwrap(),
        Ok(_) => std::fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

fn put(p: &Path, data: &[u8], uid: u32, gid: u32, mode: u32) {
    if p.symlink_metadata().is_ok_and(|m| !m.is_file()) {
        remove(p);
    }
    // Through a new inode, so a hard-link group is not rewritten.
    let tmp = p.with_extension("rv6-new");
    std::fs::write(&tmp, data).unwrap();
    chown(&tmp, uid, gid);
    chmod(&tmp, mode);
    std::fs::rename(&tmp, p).unwrap();
}

/// The ids of the source's owners.
#[derive(Clone, Copy)]
struct Ids {
    att: (u32, u32),
    vic: (u32, u32),
}

/// A private file of the victim: unique marker, then `len` random bytes.
fn secret(rng: &mut Rng, seq: &mut u64, len: usize) -> Vec<u8> {
    *seq += 1;
    let mut v = format!("{}{:08}-", String::from_utf8_lossy(MARK), *seq).into_bytes();
    v.extend(rng.bytes(len));
    v
}

/// The first source: see the module's documentation.
fn first_source(src: &Path, ids: Ids, rng: &mut Rng, seq: &mut u64) {
    let (a, v) = (ids.att, ids.vic);
    mkdir(src, 0, 0, 0o1777);
    mkdir(&src.join("u"), a.0, a.1, 0o755);
    mkdir(&src.join("u/w/sub"), a.0, a.1, 0o755);
    mkdir(&src.join("u/w"), a.0, a.1, 0o755);
    for i in 0..5 {
        put(
            &src.join(format!("u/w/f{i}")),
            &rng.bytes(100 + i * 37),
            a.0,
            a.1,
            0o644,
        );
        put(
            &src.join(format!("u/w/sub/g{i}")),
            &rng.bytes(50 + i),
            a.0,
            a.1,
            0o644,
        );
    }
    put(
        &src.join("u/w/big"),
        &rng.bytes((1 << 20) + 5000),
        a.0,
        a.1,
        0o644,
    );
    // Bulk, so a run lasts long enough for the attacker to race it.
    for i in 0..150 {
        let d = format!("u/w/sub/m{}", i % 10);
        mkdir(&src.join(&d), a.0, a.1, 0o755);
        put(
            &src.join(format!("{d}/f{i}")),
            &rng.bytes(200),
            a.0,
            a.1,
            0o644,
        );
        let d = format!("u/v/m{}", i % 10);
        mkdir(&src.join(&d), v.0, v.1, 0o700);
        put(
            &src.join(format!("{d}/f{i}")),
            &secret(rng, seq, 100),
            v.0,
            v.1,
            0o600,
        );
    }
    put(
        &src.join("u/w/h1"),
        b"attacker's linked file",
        a.0,
        a.1,
        0o644,
    );
    std::fs::hard_link(src.join("u/w/h1"), src.join("u/w/sub/h2")).unwrap();
    put(&src.join("u/w/tc"), b"a file first", a.0, a.1, 0o644);
    put(&src.join("u/tc"), b"a file first", a.0, a.1, 0o644);
    // The victim's directory in the attacker's.
    mkdir(&src.join("u/v"), v.0, v.1, 0o700);
    for i in 0..4 {
        put(
            &src.join(format!("u/v/s{i}")),
            &secret(rng, seq, 64),
            v.0,
            v.1,
            0o600,
        );
    }
    put(
        &src.join("u/v/vbig"),
        &secret(rng, seq, (1 << 20) + 777),
        v.0,
        v.1,
        0o600,
    );
    put(&src.join("u/vf1"), &secret(rng, seq, 10), v.0, v.1, 0o600);
    put(&src.join("u/vf2"), &secret(rng, seq, 10), v.0, v.1, 0o600);
    // The victim's own area, with a group linked into u/v.
    mkdir(&src.join("p"), v.0, v.1, 0o700);
    put(&src.join("p/vh"), &secret(rng, seq, 30), v.0, v.1, 0o600);
    std::fs::hard_link(src.join("p/vh"), src.join("u/v/vh")).unwrap();
    put(
        &src.join("p/pbig"),
        &secret(rng, seq, 2 * (1 << 20) + 3),
        v.0,
        v.1,
        0o600,
    );
    // The shared scratch.
    mkdir(&src.join("tmp"), 0, 0, 0o1777);
    for i in 0..3 {
        put(
            &src.join(format!("tmp/a-{i}")),
            &rng.bytes(40),
            a.0,
            a.1,
            0o644,
        );
        put(
            &src.join(format!("tmp/v-s{i}")),
            &secret(rng, seq, 40),
            v.0,
            v.1,
            0o600,
        );
    }
    put(
        &src.join("tmp/v-shared"),
        b"the victim's shared file\n",
        v.0,
        v.1,
        0o666,
    );
    mkdir(&src.join("tmp/vd"), v.0, v.1, 0o700);
    put(
        &src.join("tmp/vd/s"),
        &secret(rng, seq, 20),
        v.0,
        v.1,
        0o600,
    );
    put(&src.join("tmp/vtc"), &secret(rng, seq, 20), v.0, v.1, 0o600);
    // root's.
    mkdir(&src.join("r"), 0, 0, 0o755);
    put(&src.join("r/x"), b"root's x", 0, 0, 0o644);
    std::fs::hard_link(src.join("r/x"), src.join("r/y")).unwrap();
}

/// What changes in the source between two runs.
fn change_source(src: &Path, ids: Ids, rng: &mut Rng, seq: &mut u64) {
    let (a, v) = (ids.att, ids.vic);
    let j = |r: &str| src.join(r);
    // Contents and modes.
    for i in 0..5 {
        if rng.chance(0.3) {
            let n = 100 + rng.below(300) as usize;
            put(&j(&format!("u/w/f{i}")), &rng.bytes(n), a.0, a.1, 0o644);
        }
        if rng.chance(0.2) {
            chmod(
                &j(&format!("u/w/sub/g{i}")),
                [0o600, 0o644, 0o640][rng.below(3) as usize],
            );
        }
    }
    for i in 0..4 {
        if rng.chance(0.3) {
            put(
                &j(&format!("u/v/s{i}")),
                &secret(rng, seq, 64),
                v.0,
                v.1,
                0o600,
            );
        }
    }
    if rng.chance(0.5) {
        let n = (1 << 20) + 5000 + rng.below(9000) as usize;
        put(&j("u/w/big"), &rng.bytes(n), a.0, a.1, 0o644);
    }
    if rng.chance(0.5) {
        put(
            &j("u/v/vbig"),
            &secret(rng, seq, (1 << 20) + 777),
            v.0,
            v.1,
            0o600,
        );
    }
    if rng.chance(0.3) {
        put(
            &j("p/pbig"),
            &secret(rng, seq, 2 * (1 << 20) + 3),
            v.0,
            v.1,
            0o600,
        );
    }
    // A mode change of the shared file and the linked group (attribute
    // fixes through hard links the attacker may have planted).
    if rng.chance(0.5) {
        chmod(
            &j("tmp/v-shared"),
            [0o666, 0o646, 0o664][rng.below(3) as usize],
        );
    }
    if rng.chance(0.5) {
        // The group's inode: same data, a new mtime.
        let t = 1_600_000_000 + rng.below(1_000_000) as i64;
        crate::util::tree::set_mtime(&j("p/vh"), t, 0);
    }
    // Hard-link groups gain and lose names.
    if j("u/v/vh2").exists() {
        std::fs::remove_file(j("u/v/vh2")).unwrap();
    } else {
        std::fs::hard_link(j("p/vh"), j("u/v/vh2")).unwrap();
    }
    if j("u/w/sub/h3").exists() {
        std::fs::remove_file(j("u/w/sub/h3")).unwrap();
    } else {
        std::fs::hard_link(j("u/w/h1"), j("u/w/sub/h3")).unwrap();
    }
    // Type changes: file -> dir -> symlink -> file.
    for (rel, own, secretly) in [
        ("u/w/tc", a, false),
        ("u/tc", a, false),
        ("tmp/vtc", v, true),
    ] {
        let p = j(rel);
        let m = p.symlink_metadata().unwrap();
        remove(&p);
        if m.is_file() {
            mkdir(&p, own.0, own.1, if secretly { 0o700 } else { 0o755 });
            let data = if secretly {
                secret(rng, seq, 9)
            } else {
                rng.bytes(9)
            };
            put(
                &p.join("in"),
                &data,
                own.0,
                own.1,
                if secretly { 0o600 } else { 0o644 },
            );
        } else if m.is_dir() {
            std::os::unix::fs::symlink("../somewhere", &p).unwrap();
            chown(&p, own.0, own.1);
        } else {
            let data = if secretly {
                secret(rng, seq, 9)
            } else {
                rng.bytes(9)
            };
            put(
                &p,
                &data,
                own.0,
                own.1,
                if secretly { 0o600 } else { 0o644 },
            );
        }
    }
    // A name of the attacker's that comes and goes: u/n, a directory.
    if j("u/n").exists() {
        remove(&j("u/n"));
    } else {
        mkdir(&j("u/n"), a.0, a.1, 0o755);
        put(&j("u/n/y"), b"the attacker's y", a.0, a.1, 0o644);
    }
    // A new private file of the victim, and one removed.
    put(
        &j(&format!("u/v/new{}", *seq)),
        &secret(rng, seq, 20),
        v.0,
        v.1,
        0o600,
    );
    let olds: Vec<PathBuf> = std::fs::read_dir(j("u/v"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("new"))
        .collect();
    if olds.len() > 2 {
        std::fs::remove_file(&olds[rng.below(olds.len() as u64) as usize]).unwrap();
    }
}

/// Outside DST: root's files (never linked by the attacker: every stamp
/// must stay), the attacker's own files (which it links into DST) and a
/// world-writable file of the victim's (linked too): owner, mode and
/// content must stay.
fn outside(t: &TestDir, ids: Ids) -> PathBuf {
    let o = t.join("outside");
    mkdir(&o, 0, 0, 0o755);
    mkdir(&o.join("root/d"), 0, 0, 0o755);
    for i in 0..3 {
        put(
            &o.join(format!("root/f{i}")),
            format!("root's f{i}\n").as_bytes(),
            0,
            0,
            0o644,
        );
        put(&o.join(format!("root/d/g{i}")), b"root's g", 0, 0, 0o600);
    }
    mkdir(&o.join("att"), ids.att.0, ids.att.1, 0o755);
    for i in 0..3 {
        let p = o.join(format!("att/af{i}"));
        put(
            &p,
            format!("the attacker's outside file {i}\n").as_bytes(),
            ids.att.0,
            ids.att.1,
            0o644,
        );
    }
    put(
        &o.join("vshared"),
        b"the victim's outside file\n",
        ids.vic.0,
        ids.vic.1,
        0o666,
    );
    o
}

/// (uid, gid, mode, content, xattrs) of every file under `dir`.
type Held = BTreeMap<PathBuf, (u32, u32, u32, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>)>;

fn held(dir: &Path) -> Held {
    let mut out = BTreeMap::new();
    for e in walk(dir) {
        let m = e.symlink_metadata().unwrap();
        let data = if m.is_file() {
            std::fs::read(&e).unwrap()
        } else {
            Vec::new()
        };
        out.insert(
            e.clone(),
            (
                m.uid(),
                m.gid(),
                m.mode(),
                data,
                crate::util::compare::xattrs_of(&e),
            ),
        );
    }
    out
}

/// Every path under `dir` (not following symlinks), `dir` included.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        i += 1;
        if p.symlink_metadata().is_ok_and(|m| m.is_dir())
            && let Ok(rd) = std::fs::read_dir(&p)
        {
            let mut names: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            names.sort();
            out.extend(names);
        }
    }
    out
}

/// The marker of a private file's content.
fn marker(data: &[u8]) -> Option<Vec<u8>> {
    data.starts_with(MARK)
        .then(|| data[..MARK.len() + 9].to_vec())
}

/// marker -> paths, for every file under `root` that holds one.
fn markers(root: &Path) -> BTreeMap<Vec<u8>, Vec<PathBuf>> {
    let mut out: BTreeMap<Vec<u8>, Vec<PathBuf>> = BTreeMap::new();
    for p in walk(root) {
        if p.symlink_metadata().is_ok_and(|m| m.is_file())
            && let Ok(data) = std::fs::read(&p)
            && let Some(m) = marker(&data)
        {
            out.entry(m).or_default().push(p);
        }
    }
    out
}

/// The checker run as the attacker: every regular file under the roots it
/// can open for reading (with a marker in it) or for writing.
const PROBE: &str = r#"
import os, sys
for root in sys.argv[1:]:
    for d, dirs, files in os.walk(root):
        for n in files + dirs:
            p = os.path.join(d, n)
            try:
                fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                if os.read(fd, 11) == b"PRIVSECRET-":
                    print("R", p)
                os.close(fd)
            except OSError:
                pass
            try:
                fd = os.open(p, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
                print("W", p)
                os.close(fd)
            except OSError:
                pass
"#;

/// The invariants of ADR 010 after a run; the violations found.
fn check(
    user: User,
    t: &TestDir,
    round: usize,
    before: &Before,
    src_markers: &BTreeMap<Vec<u8>, Vec<PathBuf>>,
    delete: bool,
) -> Vec<String> {
    let mut bad = Vec::new();
    let (dst, out_dir) = (t.dst(), t.join("outside"));
    // (4) Nothing outside DST changed.
    let now = stat_snapshot(&out_dir.join("root"));
    for (rel, b) in &before.root_stamps {
        if now.get(rel) != Some(b) {
            bad.push(format!(
                "outside/root/{}: {b:?} -> {:?}",
                String::from_utf8_lossy(rel),
                now.get(rel)
            ));
        }
    }
    if now.len() != before.root_stamps.len() {
        bad.push("outside/root: entries added".into());
    }
    for (p, was) in &before.linkable {
        let m = p.symlink_metadata();
        let is = m.as_ref().ok().map(|m| {
            (
                m.uid(),
                m.gid(),
                m.mode(),
                std::fs::read(p).unwrap_or_default(),
            )
        });
        if is.as_ref() != Some(&(was.0, was.1, was.2, was.3.clone()))
            || crate::util::compare::xattrs_of(p) != was.4
        {
            bad.push(format!(
                "outside {}: {:o}/{}:{} -> {:?}",
                p.display(),
                was.2,
                was.0,
                was.1,
                is.map(|i| (format!("{:o}", i.2), i.0, i.1))
            ));
        }
    }
    let top: BTreeSet<String> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if top != before.top {
        bad.push(format!("next to DST: {:?} -> {top:?}", before.top));
    }
    let src_now = stat_snapshot(&t.src());
    for (rel, b) in &before.src_stamps {
        if src_now
            .get(rel)
            .is_none_or(|a| a.ctime != b.ctime || a.ino != b.ino || a.mode != b.mode)
        {
            bad.push(format!("source changed: {}", String::from_utf8_lossy(rel)));
        }
    }
    // (1) Private data: not in an inode the attacker owns, not readable
    // or writable by them.
    let now_markers = markers(&dst);
    for (m, paths) in markers(&out_dir).iter().chain(now_markers.iter()) {
        for p in paths {
            let md = p.symlink_metadata().unwrap();
            if md.uid() == user.uid || md.mode() & 0o077 != 0 {
                bad.push(format!(
                    "round {round}: {} holds {} with uid {} mode {:o}",
                    p.display(),
                    String::from_utf8_lossy(m),
                    md.uid(),
                    md.mode()
                ));
            }
        }
    }
    let probe = user
        .command("/usr/bin/python3")
        .args(["-c", PROBE])
        .arg(&dst)
        .arg(&out_dir)
        .output()
        .unwrap();
    let marked: BTreeSet<&PathBuf> = now_markers.values().flatten().collect();
    for line in String::from_utf8_lossy(&probe.stdout).lines() {
        let (k, p) = line.split_at(2);
        if k == "R " || marked.contains(&PathBuf::from(p)) {
            bad.push(format!(
                "round {round}: the attacker can {} {p}",
                if k == "R " { "read" } else { "write" }
            ));
        }
    }
    // (3) No victim data lost that the source still has.
    // (Those in the attacker's own directories it may delete itself.)
    let protected = |p: &PathBuf| {
        p.parent()
            .and_then(|d| d.symlink_metadata().ok())
            .is_some_and(|m| m.uid() != user.uid)
    };
    // With --delete, a copy the attacker moved to a name the source does
    // not have is extraneous and may go (as with rsync): only a copy at
    // its source path must stay.
    let at_home = |m: &Vec<u8>, p: &PathBuf| {
        src_markers[m]
            .iter()
            .any(|sp| dst.join(sp.strip_prefix(t.src()).unwrap()) == *p)
    };
    for m in before.markers.keys() {
        if src_markers.contains_key(m)
            && !now_markers.contains_key(m)
            && before.markers[m].iter().any(protected)
            && (!delete || before.markers[m].iter().any(|p| at_home(m, p)))
        {
            bad.push(format!(
                "round {round}: {} (was at {:?}) is gone from DST",
                String::from_utf8_lossy(m),
                before.markers[m]
            ));
        }
    }
    bad
}

/// What is recorded before a run.
struct Before {
    root_stamps: StatSnapshot,
    linkable: Held,
    top: BTreeSet<String>,
    src_stamps: StatSnapshot,
    markers: BTreeMap<Vec<u8>, Vec<PathBuf>>,
}

fn before(t: &TestDir) -> Before {
    let o = t.join("outside");
    let mut linkable = held(&o.join("att"));
    linkable.extend(held(&o.join("vshared")));
    Before {
        root_stamps: stat_snapshot(&o.join("root")),
        linkable,
        top: std::fs::read_dir(t.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        src_stamps: stat_snapshot(&t.src()),
        markers: markers(&t.dst()),
    }
}

fn psync(args: &[&str], t: &TestDir) -> Output {
    Command::new(crate::util::run::psync_bin())
        .arg("sync")
        .args(["-q", "-i", "--threads", "4"])
        .args(CHUNKS)
        .args(args)
        .arg(t.src())
        .arg(t.dst())
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run psync")
}

fn attacker(user: User, t: &TestDir, seed: u64, secs: f64) -> Child {
    let o = t.join("outside");
    user.command("/usr/bin/python3")
        .arg(t.join("attacker.py"))
        .arg(t.dst())
        .arg(&o)
        .arg(o.join("att"))
        .arg(o.join("vshared"))
        .arg(seed.to_string())
        .arg(secs.to_string())
        .arg("200000")
        .arg(t.join("stop"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the attacker")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The attacker's default ACLs on its directories: every name made in
/// them inherits rwx for the attacker (psync must not leave victim data
/// readable through them).
fn default_acls(user: User, dst: &Path) {
    for d in ["u", "u/w", "u/w/sub"] {
        let out = user
            .command("setfacl")
            .args(["-d", "-m", "u::rwx,g::rwx,o::rwx,u:psync-test:rwx"])
            .arg(dst.join(d))
            .output()
            .unwrap();
        assert!(out.status.success(), "setfacl as the attacker: {out:?}");
    }
}

/// The randomized stress test of the module's documentation.
#[test]
fn review6_racing_attacker_over_several_runs() {
    let test = "review6_racing_attacker_over_several_runs";
    let Some(user) = test_user(test) else { return };
    if !crate::util::run::cli_available() {
        return;
    }
    let seed = std::env::var("PSYNC_REVIEW6_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                % 1_000_000
        });
    eprintln!(
        "{test}: seed {seed} (PSYNC_REVIEW6_SEED={seed} replays the source changes and the attacker's choices)"
    );
    let started = Instant::now();
    let t = TestDir::new(test);
    let ids = Ids {
        att: (user.uid, user.gid),
        vic: (VICTIM, VICTIM),
    };
    let mut rng = Rng(seed);
    let mut seq = 0;
    chmod(t.path(), 0o755);
    first_source(&t.src(), ids, &mut rng, &mut seq);
    outside(&t, ids);
    std::fs::write(t.join("attacker.py"), ATTACKER).unwrap();
    chmod(&t.join("attacker.py"), 0o644);

    let first = psync(&["--delete"], &t);
    assert!(first.status.success(), "first run: {}", stderr(&first));
    assert_synced!(t.src(), t.dst());
    default_acls(user, &t.dst());

    let mut violations = Vec::new();
    let options: [&[&str]; 5] = [
        &["--delete"],
        &["-c"],
        &["--delete", "-c"],
        &["--force"],
        &[],
    ];
    let rounds = 8;
    for round in 0..rounds {
        change_source(&t.src(), ids, &mut rng, &mut seq);
        let src_markers = markers(&t.src());
        let b = before(&t);
        let _ = std::fs::remove_file(t.join("stop"));
        let args = options[(round + seed as usize) % 5];
        let att = attacker(
            user,
            &t,
            seed.wrapping_mul(31).wrapping_add(round as u64),
            4.0,
        );
        // Let the attacker start before psync lists.
        std::thread::sleep(Duration::from_millis(rng.below(150)));
        let out = psync(args, &t);
        std::fs::write(t.join("stop"), b"").unwrap();
        let att_out = att.wait_with_output().unwrap();
        std::fs::remove_file(t.join("stop")).unwrap();
        let code = out.status.code();
        let err = stderr(&out);
        eprintln!(
            "round {round}: psync {args:?} exit {code:?}, {} error lines; {}",
            err.lines().count(),
            String::from_utf8_lossy(&att_out.stdout).trim()
        );
        for l in err.lines().filter(|l| !l.contains("never used")) {
            eprintln!("    {l}");
        }
        if !matches!(code, Some(0 | 1)) || err.contains("panicked") {
            violations.push(format!(
                "round {round}: psync {args:?} exit {code:?}: {err}"
            ));
        }
        if !att_out.status.success() {
            eprintln!(
                "attacker failed: {}",
                String::from_utf8_lossy(&att_out.stderr)
            );
        }
        let found = check(
            user,
            &t,
            round,
            &b,
            &src_markers,
            args.contains(&"--delete"),
        );
        if !found.is_empty() {
            for l in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("deleting"))
            {
                eprintln!("    itemized: {l}");
            }
            for l in String::from_utf8_lossy(&att_out.stderr).lines() {
                eprintln!("    attacker: {l}");
            }
        }
        violations.extend(found);
    }

    // Undisturbed: converges. Directories of users named like psync's
    // temporaries (the attacker's, and the victim's or psync's new ones
    // that the attacker renamed so in its directories) are left alone by
    // design (ADR 010): the administrator removes them.
    for p in walk(&t.dst()) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let parent_attackers = p
            .parent()
            .and_then(|d| d.symlink_metadata().ok())
            .is_some_and(|m| m.uid() == user.uid);
        if name.starts_with(".psync-")
            && (parent_attackers || p.symlink_metadata().is_ok_and(|m| m.uid() != 0))
        {
            remove(&p);
        }
    }
    // What the attacker left in place that ADR 010
    // says stops a run by design (a victim's directory at a name of the
    // attacker's) is put back by the administrator first.
    let fin = psync(&["--delete", "--force"], &t);
    if !fin.status.success() {
        eprintln!(
            "final run, before the administrator's fix: {}",
            stderr(&fin)
        );
        let u = t.dst().join("u");
        for e in std::fs::read_dir(&u).unwrap().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            if m.is_dir() && m.uid() == VICTIM && e.file_name() != "v" {
                let v = u.join("v");
                if v.symlink_metadata().is_ok_and(|m| m.uid() == VICTIM) {
                    // The victim has a `v` again (made by a later run
                    // after the attacker renamed the first away): the
                    // administrator moves this one out of the target.
                    let rescued = t.join(format!("rescued-{}", e.file_name().to_string_lossy()));
                    std::fs::rename(e.path(), &rescued).unwrap();
                    continue;
                }
                let tmp = u.join("admin-moved");
                if v.symlink_metadata().is_ok() {
                    std::fs::rename(&v, &tmp).unwrap();
                }
                std::fs::rename(e.path(), &v).unwrap();
                if tmp.symlink_metadata().is_ok() {
                    std::fs::rename(&tmp, e.path()).unwrap();
                }
            }
        }
        let fin2 = psync(&["--delete", "--force"], &t);
        if !fin2.status.success() {
            violations.push(format!("final run after the fix: {}", stderr(&fin2)));
        }
    }
    let b = before(&t);
    let src_markers = markers(&t.src());
    violations.extend(check(user, &t, rounds, &b, &src_markers, true));
    eprintln!("{test}: {:.1}s", started.elapsed().as_secs_f64());
    assert!(
        violations.is_empty(),
        "seed {seed}: ADR 010 violated:\n{}",
        violations.join("\n")
    );
    let (diffs, _, _) = crate::util::compare::differences(&t.src(), &t.dst(), &[]);
    assert!(
        diffs.is_empty(),
        "seed {seed}: the final run did not converge:\n{}",
        diffs.join("\n")
    );
    assert_synced!(t.src(), t.dst());
    crate::util::assert_no_temps(&t.dst());
}
