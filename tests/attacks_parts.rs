//! Part files and journals another user plants (issue 13, "safe among
//! users").
//!
//! A large file is copied in chunks into `.psync-part.<key>` beside a
//! journal `.psync-part.<key>.journal`, and the key is a hash of the
//! source's status that any user who can `stat` the source computes. In a
//! shared sticky directory (1777) of the target, a user could plant both
//! names, keep the part open, and read another user's data through that fd
//! once psync had written it in. psync trusts only the parts and journals
//! it made itself (a regular file, its own, mode 0600, one link): anything
//! else under those names is removed and reported as a warning naming it,
//! and the copy starts over in a part psync creates (`O_EXCL`).
//!
//! The attacker here is the test user (`util::user`); its fd is one this
//! process keeps open on the file it planted for it. Chunks of 1 MiB keep
//! the files small.

use crate::util::run::{cli_available, json_lines, run_cli};
use crate::util::tree::random_bytes;
use crate::util::user::{User, assert_exit, test_user};
use crate::util::{TestDir, read};
use serde_json::Value;
use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

const MIB: u64 = 1 << 20;
/// The owner of the victim's file: neither root nor the test user.
const VICTIM: u32 = 3917;
/// Chunks of 1 MiB, resumable from 1 MiB: the victim's file is resumable.
const ARGS: [&str; 7] = [
    "--json",
    "--threads",
    "2",
    "--chunk-size",
    "1M",
    "--resume-threshold",
    "1M",
];
/// What the attacker's part holds before the run.
const BAIT: &[u8] = b"the attacker's own bytes\n";

/// The key of a source version, as psync computes it (`ident::part_key`,
/// fixed by its `part_key_is_stable` test) from what `stat` tells anyone:
/// XXH3-64 of its file system's id, inode, size and mtime.
fn part_key(m: &Metadata) -> u64 {
    use std::hash::Hasher as _;
    let mut h = twox_hash::XxHash3_64::new();
    for v in [
        src_root_fs_id(),
        m.ino(),
        m.size(),
        m.mtime() as u64,
        m.mtime_nsec() as u64,
    ] {
        h.write(&v.to_le_bytes());
    }
    h.finish()
}

/// The run's id of the file system of the source root, which holds the
/// victim's file (ADR 014; `fsid::Basis::SrcRoot`): a constant, the same
/// for every run, so anyone can compute it.
fn src_root_fs_id() -> u64 {
    use std::hash::Hasher as _;
    let mut h = twox_hash::XxHash3_64::new();
    h.write(b"psync file system ");
    h.write(b"src-root");
    for v in [0u64; 3] {
        h.write(&v.to_le_bytes());
    }
    h.finish()
}

fn part_path(dir: &Path, m: &Metadata) -> PathBuf {
    dir.join(format!(".psync-part.{:016x}", part_key(m)))
}

fn journal_path(dir: &Path, m: &Metadata) -> PathBuf {
    dir.join(format!(".psync-part.{:016x}.journal", part_key(m)))
}

/// A journal header psync accepts for this source version and 1 MiB chunks.
fn journal_header(m: &Metadata) -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(b"PSYNCJR2");
    h.extend_from_slice(&MIB.to_le_bytes());
    h.extend_from_slice(&m.size().to_le_bytes());
    h.extend_from_slice(&part_key(m).to_le_bytes());
    h.extend_from_slice(&m.ctime().to_le_bytes());
    h.extend_from_slice(&(m.ctime_nsec() as u32).to_le_bytes());
    h.resize(64, 0);
    h
}

/// One record per chunk claiming it done, without a hash (as records of
/// `--no-verify` runs are).
fn hashless_records(m: &Metadata) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..m.size().div_ceil(MIB) {
        let len = MIB.min(m.size() - i * MIB);
        out.extend_from_slice(b"PSYNCCHK");
        out.extend_from_slice(&[0; 16]); // the hash
        out.extend_from_slice(&[0, 4]); // no hash; read/write
        out.extend_from_slice(&len.to_le_bytes()[..6]);
    }
    out
}

/// Creates `path` holding `data`, owned by `owner` with `mode`, and returns
/// an fd on it kept open (the attacker's).
fn plant(path: &Path, data: &[u8], owner: u32, mode: u32) -> File {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("plant {}: {e}", path.display()));
    if owner != rustix::process::geteuid().as_raw() {
        std::os::unix::fs::chown(path, Some(owner), Some(owner)).expect("chown the planted file");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    File::open(path).expect("open the planted file")
}

/// Everything readable through `f` now, from its start.
fn contents(mut f: &File) -> Vec<u8> {
    use std::io::Seek as _;
    f.rewind().expect("rewind");
    let mut v = Vec::new();
    f.read_to_end(&mut v).expect("read the planted file");
    v
}

/// Panics unless the file behind `held` still holds exactly `BAIT`.
#[track_caller]
fn assert_untouched(held: &File, victim: &[u8]) {
    let got = contents(held);
    let leaked = got.windows(4096).any(|w| w == &victim[..4096]);
    assert!(
        got == BAIT,
        "psync wrote into the planted part ({} bytes, victim's data readable through the \
         attacker's fd: {leaked})",
        got.len()
    );
}

/// What a `--json` CLI run reported.
struct Run {
    out: Output,
    /// (path, message) of each warning.
    warnings: Vec<(String, String)>,
    /// (path, message) of each error.
    errors: Vec<(String, String)>,
}

fn parse(out: Output) -> Run {
    let mut run = Run {
        warnings: Vec::new(),
        errors: Vec::new(),
        out,
    };
    let text = |ev: &Value, k: &str| ev[k].as_str().unwrap_or_default().to_string();
    for ev in json_lines(&String::from_utf8_lossy(&run.out.stdout)) {
        let pair = (text(&ev, "path"), text(&ev, "message"));
        match ev["event"].as_str() {
            Some("warning") => run.warnings.push(pair),
            Some("error") => run.errors.push(pair),
            _ => {}
        }
    }
    run
}

/// `psync sync ARGS SRC DST` as root.
fn sync(t: &TestDir) -> Run {
    parse(run_cli(&ARGS, &t.src(), &t.dst()))
}

impl Run {
    /// Panics unless a warning names `path` (relative, and as the target's
    /// full path in its message) and says it was removed as untrusted.
    #[track_caller]
    fn assert_removed(&self, rel: &str, full: &Path) {
        let full = full.display().to_string();
        assert!(
            self.warnings.iter().any(|(p, m)| p == rel
                && m.contains(&full)
                && m.contains("not created by psync")
                && m.contains("removed")),
            "no warning that {full} was removed: {:#?}\n{}",
            self.warnings,
            String::from_utf8_lossy(&self.out.stderr)
        );
    }
}

/// A counter of the run's `--json` summary.
#[track_caller]
fn summary(run: &Run, name: &str) -> u64 {
    json_lines(&String::from_utf8_lossy(&run.out.stdout))
        .iter()
        .find(|ev| ev["event"] == "summary")
        .and_then(|ev| ev[name].as_u64())
        .unwrap_or_else(|| panic!("no {name} in the summary"))
}

/// Names in `dir` starting with `.psync-part.`.
fn parts_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".psync-part."))
        .collect()
}

/// The test user, when the suite runs as root and the CLI is built (a
/// skip otherwise; a failure under CI).
fn attacker(test: &str) -> Option<User> {
    if !cli_available() {
        eprintln!("SKIPPED {test}: the psync binary is not built");
        return None;
    }
    test_user(test)
}

/// A shared sticky directory `shared` (1777) synced into the target, then
/// the victim's file `shared/victim` (its own, mode 0600, 3 MiB and a bit:
/// four chunks) appears in the source: new, or (`changed`) a new version
/// of one the first run copied. Returns the victim's data.
fn victim_appears(t: &TestDir, changed: bool) -> Vec<u8> {
    tree!(t.src(), { "shared" => dir() mode(0o1777) });
    if changed {
        tree!(t.src(), {
            "shared/victim" => random(2 * MIB + 5) mode(0o600) owner(VICTIM, VICTIM),
        });
    }
    let first = sync(t);
    assert_exit(&first.out, 0, "the first run");
    let data = random_bytes(0x5eed, 3 * MIB + 4321);
    tree!(t.src(), {
        "shared/victim" => file(&data) mode(0o600) owner(VICTIM, VICTIM),
    });
    data
}

/// The attack of the issue: the test user plants the victim's part file
/// (its own, mode 0666, kept open) and a journal with a valid header (and,
/// with `hashless`, records claiming every chunk done without a hash).
/// psync as root removes both, says so, copies the file into a part of its
/// own, and the attacker's fd reads nothing of the victim's.
fn planted_part_in_a_sticky_directory(test: &str, changed: bool, hashless: bool) {
    let Some(user) = attacker(test) else { return };
    let t = TestDir::new(test);
    let data = victim_appears(&t, changed);
    let src_file = t.src().join("shared/victim");
    let shared = t.dst().join("shared");
    assert_eq!(
        std::fs::metadata(&shared).unwrap().mode() & 0o7777,
        0o1777,
        "the target directory is shared and sticky"
    );
    let meta = std::fs::metadata(&src_file).unwrap();
    let (part, journal) = (part_path(&shared, &meta), journal_path(&shared, &meta));
    let held = plant(&part, BAIT, user.uid, 0o666);
    let mut j = journal_header(&meta);
    if hashless {
        j.extend(hashless_records(&meta));
    }
    let _held_journal = plant(&journal, &j, user.uid, 0o666);

    let run = sync(&t);

    assert_exit(&run.out, 0, "the run with a planted part");
    assert_untouched(&held, &data);
    let dst_file = shared.join("victim");
    assert!(
        read(&dst_file) == data,
        "the target is not the source's data"
    );
    let m = std::fs::metadata(&dst_file).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (VICTIM, VICTIM, 0o600)
    );
    let name = |p: &Path| format!("shared/{}", p.file_name().unwrap().to_string_lossy());
    run.assert_removed(&name(&part), &part);
    run.assert_removed(&name(&journal), &journal);
    assert_eq!(parts_in(&shared), Vec::<String>::new(), "part names left");
    assert_synced!(t.src(), t.dst());
}

#[test]
fn planted_part_and_journal_header_for_a_new_file() {
    planted_part_in_a_sticky_directory(
        "planted_part_and_journal_header_for_a_new_file",
        false,
        false,
    );
}

#[test]
fn planted_part_and_hashless_records_for_a_changed_file() {
    planted_part_in_a_sticky_directory(
        "planted_part_and_hashless_records_for_a_changed_file",
        true,
        true,
    );
}

/// Planted part names no copy will resume (no source has their key) are
/// removed like any stale part, and reported as not psync's.
#[test]
fn planted_parts_of_no_file_are_removed_and_reported() {
    let test = "planted_parts_of_no_file_are_removed_and_reported";
    let Some(user) = attacker(test) else { return };
    let t = TestDir::new(test);
    victim_appears(&t, false);
    let shared = t.dst().join("shared");
    let part = shared.join(".psync-part.00000000deadbeef");
    let journal = shared.join(".psync-part.00000000deadbeef.journal");
    let held = plant(&part, BAIT, user.uid, 0o666);
    plant(&journal, b"", user.uid, 0o666);

    let run = sync(&t);

    assert_exit(&run.out, 0, "the run with planted parts");
    assert_eq!(contents(&held), BAIT);
    run.assert_removed("shared/.psync-part.00000000deadbeef", &part);
    run.assert_removed("shared/.psync-part.00000000deadbeef.journal", &journal);
    assert_eq!(parts_in(&shared), Vec::<String>::new(), "part names left");
    assert_synced!(t.src(), t.dst());
}

/// A part psync made but left with its final mode (killed between setting
/// the attributes and the rename) is not trusted: it is removed, reported,
/// and the copy starts over and succeeds; the file is not blocked.
#[test]
fn a_part_left_with_its_final_mode_is_replaced() {
    let test = "a_part_left_with_its_final_mode_is_replaced";
    if attacker(test).is_none() {
        return;
    }
    let t = TestDir::new(test);
    tree!(t.src(), { "d" => dir() });
    assert_exit(&sync(&t).out, 0, "the first run");
    let data = random_bytes(0xf1a1, 3 * MIB + 17);
    tree!(t.src(), { "d/f" => file(&data) mode(0o644) });
    let meta = std::fs::metadata(t.src().join("d/f")).unwrap();
    let dir = t.dst().join("d");
    let part = part_path(&dir, &meta);
    plant(&part, &data, 0, 0o644);
    plant(&journal_path(&dir, &meta), &journal_header(&meta), 0, 0o600);

    let run = sync(&t);

    assert_exit(&run.out, 0, "the run after the kill");
    run.assert_removed(
        &format!("d/{}", part.file_name().unwrap().to_string_lossy()),
        &part,
    );
    assert!(read(dir.join("f")) == data);
    assert_eq!(parts_in(&dir), Vec::<String>::new(), "part names left");
    assert_synced!(t.src(), t.dst());
}

/// Without root, psync cannot remove another user's part in a sticky
/// directory: the file fails with an error that says why, and nothing is
/// written into the planted file.
#[test]
fn a_part_psync_cannot_remove_fails_the_file() {
    let test = "a_part_psync_cannot_remove_fails_the_file";
    let Some(user) = attacker(test) else { return };
    let t = TestDir::new(test);
    let data = random_bytes(0xab, 3 * MIB + 1);
    tree!(t.src(), { "shared/victim" => file(&data) mode(0o600) });
    user.own(&t.src());
    let shared = t.dst().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    user.own(&t.dst());
    std::os::unix::fs::chown(&shared, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let meta = std::fs::metadata(t.src().join("shared/victim")).unwrap();
    let part = part_path(&shared, &meta);
    // Root's: the test user can neither remove it nor make it its own.
    let held = plant(&part, BAIT, 0, 0o644);
    plant(
        &journal_path(&shared, &meta),
        &journal_header(&meta),
        0,
        0o644,
    );

    let run = parse(user.psync(&ARGS, &t.src(), &t.dst()));

    assert_exit(&run.out, 1, "the run as the test user");
    assert_untouched(&held, &data);
    assert!(
        run.errors
            .iter()
            .any(|(p, m)| p == "shared/victim" && m.contains("not created by psync")),
        "no error for shared/victim: {:#?}",
        run.errors
    );
    assert!(!shared.join("victim").exists());
}

/// A journal whose records carry no hash (as `--no-verify` runs and
/// whole-file clones write them), beside psync's own part holding the
/// source's very bytes: no chunk is taken as done, every one is copied
/// again, and the run ends as any other.
#[test]
fn records_without_a_hash_are_not_finished_chunks() {
    if !cli_available() {
        skip!("the psync binary is not built");
    }
    let t = TestDir::new("records_without_a_hash_are_not_finished_chunks");
    tree!(t.src(), { "d" => dir() });
    assert_exit(&sync(&t).out, 0, "the first run");
    let data = random_bytes(0x4a5, 3 * MIB + 99);
    tree!(t.src(), { "d/f" => file(&data) mode(0o640) });
    let meta = std::fs::metadata(t.src().join("d/f")).unwrap();
    let dir = t.dst().join("d");
    let me = rustix::process::geteuid().as_raw();
    plant(&part_path(&dir, &meta), &data, me, 0o600);
    let mut j = journal_header(&meta);
    j.extend(hashless_records(&meta));
    plant(&journal_path(&dir, &meta), &j, me, 0o600);

    let run = sync(&t);

    assert_exit(&run.out, 0, "the resumed run");
    assert!(run.warnings.is_empty(), "{:#?}", run.warnings);
    assert_eq!(summary(&run, "chunks_resumed"), 0, "a hashless record kept");
    assert_eq!(summary(&run, "chunks"), 4);
    assert!(read(dir.join("f")) == data);
    assert_eq!(parts_in(&dir), Vec::<String>::new(), "part names left");
    assert_synced!(t.src(), t.dst());
}
