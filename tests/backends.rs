//! Backend selection and `psync probe` on real file systems (tmpfs, and
//! ext4, XFS with reflink and btrfs loop-mounted): the `statfs` magic read,
//! the generic copier chosen by default, a copier registered for a magic
//! chosen for it, `--backend generic` and `--backend lustre` (refused off
//! Lustre), what `psync probe` says of each, and the custom copier example.

use crate::util::mounts::{self, Fs, Mounts, Scratch};
use crate::util::run::{json_lines, psync_cmd, run_cli};
use crate::util::{TestDir, read};
use psync::backend::Backend;
use psync::probe::{fs_label, fs_magic_of, magic};
use psync::{
    Copied, Copier, CopyOptions, DataJob, Dir, Entry, GenericCopier, Name, Node, StepError,
    XattrReport, XattrSync,
};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The file systems of these tests.
const KINDS: [Fs; 4] = [Fs::Tmpfs, Fs::Ext4, Fs::Xfs, Fs::Btrfs];

/// The `statfs` magic of each kind, and the type mountinfo gives it.
fn expected(fs: Fs) -> (u64, &'static str) {
    match fs {
        Fs::Tmpfs => (magic::TMPFS, "tmpfs"),
        Fs::Ext4 | Fs::Ext4Coarse => (magic::EXT4, "ext4"),
        Fs::Xfs => (magic::XFS, "xfs"),
        Fs::Btrfs => (magic::BTRFS, "btrfs"),
    }
}

/// The shared mounts, or `None` after saying why (a failure under CI).
fn mounted(test: &str) -> Option<Arc<Mounts>> {
    match mounts::shared() {
        Ok(m) => Some(m),
        Err(why) => {
            assert!(
                !mounts::must_have_mounts(),
                "CI=true but {test} cannot mount file systems: {why}"
            );
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// A scratch pair on `fs` with a small tree in its source.
fn scratch(m: &Arc<Mounts>, test: &str, from: Fs, to: Fs) -> Scratch {
    let s = m
        .scratch(test, from, to)
        .unwrap_or_else(|why| panic!("{test}: {from} -> {to}: {why}"));
    tree!(s.src(), {
        "a/f" => file("some data") mode(0o640),
        "a/big" => random(300_000),
        "l" => symlink("a/f"),
    });
    s
}

/// The generic copier, recording that it ran: files created and bytes copied.
#[derive(Debug)]
struct Recording {
    name: &'static str,
    inner: GenericCopier,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Recording {
    fn new(name: &'static str) -> Arc<Recording> {
        Arc::new(Recording {
            name,
            inner: GenericCopier::new(),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    fn ran(&self) -> (u64, u64) {
        (
            self.files.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

impl Copier for Recording {
    fn name(&self) -> &str {
        self.name
    }
    fn create(&self, dir: &Dir, tmp: &Name, src: &Entry, f: &File) -> Result<File, StepError> {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.inner.create(dir, tmp, src, f)
    }
    fn create_unnamed(&self, dir: &Dir, src: &Entry, f: &File) -> Result<Option<File>, StepError> {
        let made = self.inner.create_unnamed(dir, src, f)?;
        if made.is_some() {
            self.files.fetch_add(1, Ordering::Relaxed);
        }
        Ok(made)
    }
    fn try_clone(&self, src: &File, dst: &File, o: &CopyOptions) -> Result<bool, StepError> {
        self.inner.try_clone(src, dst, o)
    }
    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        let c = self.inner.copy_data(job, quit)?;
        self.bytes.fetch_add(c.bytes, Ordering::Relaxed);
        Ok(c)
    }
    fn set_attrs(
        &self,
        t: Node<'_>,
        src: &Entry,
        from: Option<Node<'_>>,
        o: &CopyOptions,
    ) -> Result<XattrReport, StepError> {
        self.inner.set_attrs(t, src, from, o)
    }
    fn make_dir(&self, dir: &Dir, n: &Name, src: &Entry, from: Node<'_>) -> Result<(), StepError> {
        self.inner.make_dir(dir, n, src, from)
    }
    fn sync_xattrs(
        &self,
        from: Node<'_>,
        t: Node<'_>,
        how: XattrSync,
    ) -> std::io::Result<XattrReport> {
        self.inner.sync_xattrs(from, t, how)
    }
    fn make_symlink(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_symlink(dir, n, src)
    }
    fn make_special(&self, dir: &Dir, n: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_special(dir, n, src)
    }
    fn remove(&self, dir: &Dir, e: &Entry) -> Result<u64, StepError> {
        self.inner.remove(dir, e)
    }
}

fn run(b: &psync::SyncBuilder) -> Result<psync::Report, psync::Error> {
    b.build().and_then(|s| s.run())
}

#[test]
fn each_file_system_is_told_by_its_magic_and_copied_by_the_generic_copier() {
    let test = "each_file_system_is_told_by_its_magic_and_copied_by_the_generic_copier";
    let Some(m) = mounted(test) else { return };
    for fs in KINDS {
        let s = scratch(&m, test, fs, fs);
        let (want, _) = expected(fs);
        let src_magic = fs_magic_of(&s.src()).unwrap();
        assert_eq!(src_magic, want, "{fs}: {}", fs_label(src_magic));
        assert_eq!(Dir::open_root(&s.src()).unwrap().fs_magic().unwrap(), want);
        let b = psync::builder(s.src(), s.dst());
        // The target does not exist yet: its mount's file system counts.
        let sel = b.selection().unwrap();
        assert_eq!((sel.src_magic, sel.dst_magic), (want, want), "{fs}");
        assert_eq!(sel.copier, "generic", "{fs}");
        assert!(
            sel.reason.starts_with("the default"),
            "{fs}: {}",
            sel.reason
        );
        assert!(sel.notes.is_empty(), "{fs}: {:?}", sel.notes);
        let report = run(&b).unwrap();
        assert!(report.success(), "{fs}: {report:?}");
        assert_eq!(report.copier, "generic", "{fs}");
        assert_synced!(s.src(), s.dst());
    }
}

#[test]
fn a_copier_registered_for_a_magic_runs_on_that_file_system_only() {
    let test = "a_copier_registered_for_a_magic_runs_on_that_file_system_only";
    let Some(m) = mounted(test) else { return };
    for fs in KINDS {
        let (want, _) = expected(fs);
        let s = scratch(&m, test, fs, fs);
        let mine = Recording::new("recording");
        // Registered for another file system's target: never chosen here.
        let other = Recording::new("other");
        let elsewhere = if fs == Fs::Tmpfs {
            magic::XFS
        } else {
            magic::TMPFS
        };
        let mut b = psync::builder(s.src(), s.dst());
        b.register_copier(None, Some(want), Arc::clone(&mine) as Arc<dyn Copier>)
            .register_copier(None, Some(elsewhere), Arc::clone(&other) as Arc<dyn Copier>);
        let sel = b.selection().unwrap();
        assert_eq!(sel.copier, "recording", "{fs}");
        assert_eq!(
            sel.reason,
            format!("registered for any -> {}", fs_label(want))
        );
        let report = run(&b).unwrap();
        assert!(report.success(), "{fs}: {report:?}");
        assert_eq!(report.copier, "recording", "{fs}");
        // a/f and a/big: 9 + 300,000 bytes through it.
        assert_eq!(mine.ran(), (2, 300_009), "{fs}");
        assert_eq!(other.ran(), (0, 0), "{fs}");
        assert_synced!(s.src(), s.dst());

        // Forced by name past it: the generic copier, and the recorder idle.
        std::fs::write(s.src().join("a/f"), "changed data").unwrap();
        b.backend(Backend::Named("generic".into()));
        let report = run(&b).unwrap();
        assert!(report.success(), "{fs}: {report:?}");
        assert_eq!(report.copier, "generic", "{fs}");
        assert_eq!(mine.ran(), (2, 300_009), "{fs}: not run again");
        assert_eq!(read(s.dst().join("a/f")), b"changed data");
    }
}

#[test]
fn a_named_backend_must_be_registered_and_made_for_the_pair() {
    let t = TestDir::new("a_named_backend_must_be_registered_and_made_for_the_pair");
    tree!(t.src(), { "f" => file("x") });
    // The generic copier only (`psync::builder` registers Lustre's too).
    let mut b = psync::SyncBuilder::new(t.src(), t.dst());
    b.default_copier(Arc::new(psync::GenericCopier::new()));
    b.backend(Backend::Named("nonesuch".into()));
    let e = b.build().unwrap_err().to_string();
    assert!(
        e.contains("\"nonesuch\" is not available in this build (available: auto, generic)"),
        "{e}"
    );
    // A copier for Lustre only, forced on another file system: refused
    // before the target root is made.
    let lustre = Recording::new("lustre");
    b.register_copier(
        Some(magic::LUSTRE),
        Some(magic::LUSTRE),
        Arc::clone(&lustre) as Arc<dyn Copier>,
    )
    .backend(Backend::Named("lustre".into()));
    let e = run(&b).unwrap_err().to_string();
    let here = fs_label(fs_magic_of(&t.src()).unwrap());
    assert!(
        e.contains(&format!(
            "backend \"lustre\" is for lustre (0x0bd00bd0) -> lustre (0x0bd00bd0), not for {here} -> "
        )),
        "{e}"
    );
    assert!(!t.dst().exists(), "nothing made");
    assert_eq!(lustre.ran(), (0, 0));
    // Auto does not pick it either.
    b.backend(Backend::Auto);
    let report = run(&b).unwrap();
    assert_eq!(report.copier, "generic");
    assert_eq!(lustre.ran(), (0, 0));
}

/// The JSON summary of a `--json` CLI run.
fn summary(stdout: &[u8]) -> Value {
    let lines = json_lines(&String::from_utf8_lossy(stdout));
    lines
        .into_iter()
        .rfind(|e| e["event"] == "summary")
        .expect("a summary line")
}

#[test]
fn backend_generic_runs_and_backend_lustre_is_refused_off_lustre() {
    let test = "backend_generic_runs_and_backend_lustre_is_refused_off_lustre";
    let Some(m) = mounted(test) else { return };
    for fs in KINDS {
        let s = scratch(&m, test, fs, fs);
        let o = run_cli(&["--json", "--backend", "generic"], &s.src(), &s.dst());
        assert_eq!(o.status.code(), Some(0), "{fs}: {o:?}");
        assert_eq!(summary(&o.stdout)["copier"], "generic", "{fs}");
        assert_synced!(s.src(), s.dst());
        // The text summary says which copier ran.
        let o = run_cli(&[], &s.src(), &s.dst());
        assert_eq!(o.status.code(), Some(0), "{fs}: {o:?}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.lines().any(|l| l == "copier    generic"), "{fs}: {out}");

        // Lustre is not this file system: refused, named, nothing made.
        let fresh = s.dst().with_file_name("lustre-dst");
        let o = run_cli(&["--backend", "lustre"], &s.src(), &fresh);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{fs}: {err}");
        // Before the Lustre copier is registered in the CLI: not
        // available; after: not made for this pair.
        let (_, name) = expected(fs);
        assert!(
            err.contains("\"lustre\" is not available in this build")
                || (err.contains("\"lustre\" is for lustre (0x0bd00bd0)") && err.contains(name)),
            "{fs}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{fs}: one clear line: {err}");
        assert!(!fresh.exists(), "{fs}: nothing made");
    }
}

/// `psync probe ARGS...`.
fn probe(args: &[&str], paths: &[&Path]) -> std::process::Output {
    psync_cmd()
        .arg("probe")
        .args(args)
        .args(paths)
        .output()
        .expect("run psync probe")
}

fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn probe_reports_type_magic_mount_and_capabilities_of_each_file_system() {
    let test = "probe_reports_type_magic_mount_and_capabilities_of_each_file_system";
    let Some(m) = mounted(test) else { return };
    for fs in KINDS {
        let s = scratch(&m, test, fs, fs);
        let (want, name) = expected(fs);
        let point = std::fs::canonicalize(m.dir(fs).unwrap()).unwrap();
        let before = listing(&s.src());
        let reflink = if fs.reflinks() { "yes" } else { "no" };

        let o = probe(&[], &[&s.src()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(0), "{fs}: {o:?}");
        let line = |key: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(&format!("{key} ")))
                .unwrap_or_else(|| panic!("{fs}: no {key} line in\n{text}"))
                .split_whitespace()
                .skip(1)
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert!(
            line("type").starts_with(&format!("{name} (magic {want:#010x}")),
            "{fs}: {text}"
        );
        assert!(
            line("mount").starts_with(&point.display().to_string()),
            "{fs}: {text}"
        );
        assert!(line("reflink").starts_with(reflink), "{fs}: {text}");
        assert!(line("xattrs").starts_with("yes"), "{fs}: {text}");

        let o = probe(&["--json"], &[&s.src()]);
        assert_eq!(o.status.code(), Some(0), "{fs}: {o:?}");
        let doc: Value = serde_json::from_slice(&o.stdout).expect("one JSON document");
        assert_eq!(doc["copier"], Value::Null, "one path: no copier");
        let p = &doc["paths"][0];
        assert_eq!(p["magic"], want, "{fs}: {p}");
        assert_eq!(p["fs_type"], name, "{fs}: {p}");
        assert_eq!(
            p["mount"]["mount_point"],
            point.display().to_string(),
            "{fs}"
        );
        assert_eq!(p["mount"]["fs_type"], name, "{fs}");
        assert_eq!(p["write_test"], false);
        let cap = |k: &str| p["capabilities"][k]["state"].as_str().unwrap().to_string();
        assert_eq!(cap("reflink"), reflink, "{fs}: {p}");
        assert_eq!(cap("xattrs"), "yes", "{fs}: {p}");
        assert_eq!(cap("acls"), "yes", "{fs}: {p}");
        assert_eq!(cap("sparse"), "yes", "{fs}: {p}");
        assert_eq!(cap("lustre_layout"), "no", "{fs}: {p}");
        // Project ids: FS_IOC_FSGETXATTR answers 0 on all four, but only
        // XFS keeps them for sure; ext4 does with its `project` feature,
        // which only writing tells.
        let projid = match fs {
            Fs::Xfs => "yes",
            Fs::Ext4 | Fs::Ext4Coarse => "unknown",
            Fs::Tmpfs | Fs::Btrfs => "no",
        };
        assert_eq!(cap("project_ids"), projid, "{fs}: {p}");
        for (k, c) in p["capabilities"].as_object().unwrap() {
            let state = c["state"].as_str().unwrap();
            assert!(["yes", "no", "unknown"].contains(&state), "{fs}: {k}: {c}");
            assert!(!c["reason"].as_str().unwrap().is_empty(), "{fs}: {k}: {c}");
        }
        assert_eq!(listing(&s.src()), before, "{fs}: nothing written");

        // Tried by writing: the clone itself, and nothing left behind.
        let o = probe(&["--json", "--write-test"], &[&s.src()]);
        assert_eq!(o.status.code(), Some(0), "{fs}: {o:?}");
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        let p = &doc["paths"][0];
        assert_eq!(p["write_test"], true);
        let caps = &p["capabilities"];
        assert_eq!(caps["reflink"]["state"], reflink, "{fs}: {p}");
        assert!(
            caps["reflink"]["reason"]
                .as_str()
                .unwrap()
                .contains("FICLONE")
        );
        assert_eq!(caps["xattrs"]["state"], "yes", "{fs}: {p}");
        assert_eq!(caps["sparse"]["state"], "yes", "{fs}: {p}");
        assert_eq!(caps["timestamps"]["state"], "yes", "{fs}: {p}");
        assert_eq!(caps["timestamps"]["value"], 1, "{fs}: nanoseconds: {p}");
        // The oracle: chattr setting a project id on a file there.
        let f = s.src().join("projid-oracle");
        std::fs::write(&f, b"").unwrap();
        let kept = Command::new("chattr")
            .args(["-p", "7"])
            .arg(&f)
            .output()
            .unwrap()
            .status
            .success();
        std::fs::remove_file(&f).unwrap();
        let projid = if kept { "yes" } else { "no" };
        assert_eq!(caps["project_ids"]["state"], projid, "{fs}: {p}");
        // ext4 and XFS report a direct-I/O alignment (psync writes chunks
        // with O_DIRECT there); tmpfs and btrfs report none.
        match fs {
            Fs::Ext4 | Fs::Xfs => assert_eq!(caps["direct_io"]["state"], "yes", "{fs}: {p}"),
            _ => assert_ne!(caps["direct_io"]["state"], "yes", "{fs}: {p}"),
        }
        assert_eq!(
            listing(&s.src()),
            before,
            "{fs}: the write test leaves nothing"
        );
    }
}

/// A mount point whose name has a space (`\040` in mountinfo) is found.
#[test]
fn probe_finds_a_mount_point_with_a_space() {
    let test = "probe_finds_a_mount_point_with_a_space";
    if mounted(test).is_none() {
        return;
    }
    let t = TestDir::new(test);
    let point = t.join("with space");
    std::fs::create_dir(&point).unwrap();
    let _m = mounts::TestMount::tmpfs(&point, "1m").unwrap();
    std::fs::create_dir(point.join("d")).unwrap();
    let o = probe(&["--json"], &[&point.join("d")]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &doc["paths"][0]["mount"];
    let want = std::fs::canonicalize(&point).unwrap();
    assert_eq!(m["mount_point"], want.display().to_string(), "{m}");
    assert_eq!(m["fs_type"], "tmpfs");
    assert_eq!(m["source"], "psync-test");
    assert_eq!(doc["paths"][0]["magic"], magic::TMPFS);
}

#[test]
fn probe_of_two_paths_names_the_copier_a_sync_would_use() {
    let test = "probe_of_two_paths_names_the_copier_a_sync_would_use";
    let Some(m) = mounted(test) else { return };
    for (from, to) in [
        (Fs::Ext4, Fs::Xfs),
        (Fs::Btrfs, Fs::Btrfs),
        (Fs::Tmpfs, Fs::Ext4),
    ] {
        let s = scratch(&m, test, from, to);
        let (src, dst) = (s.src(), s.dst());
        let o = probe(&["--json"], &[&src, dst.parent().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "{from} -> {to}: {o:?}");
        let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
        let c = &doc["copier"];
        assert_eq!(c["name"], "generic", "{c}");
        assert_eq!(c["src_magic"], expected(from).0, "{c}");
        assert_eq!(c["dst_magic"], expected(to).0, "{c}");
        assert_eq!(c["src_fs"], fs_label(expected(from).0));
        assert!(
            c["reason"].as_str().unwrap().starts_with("the default"),
            "{c}"
        );
        assert_eq!(c["notes"], serde_json::json!([]));
        assert_eq!(doc["paths"].as_array().unwrap().len(), 2);

        // The target need not exist: a path that is missing is reported
        // (status 1), the copier still named for where it would be made.
        let o = probe(&[], &[&src, &dst]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{text}");
        let line = text.lines().find(|l| l.starts_with("copier ")).unwrap();
        assert!(
            line.contains(&format!(
                "generic ({} -> {})",
                fs_label(expected(from).0),
                fs_label(expected(to).0)
            )),
            "{line}"
        );
        assert!(!dst.exists(), "probe makes nothing");

        let o = probe(&["--backend", "lustre"], &[&src, dst.parent().unwrap()]);
        let text = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{text}");
        assert!(text.contains("copier            none: "), "{text}");
        assert!(text.contains("\"lustre\""), "{text}");
    }
}

#[test]
fn the_custom_copier_example_needs_only_psync_and_runs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let t = TestDir::new("the_custom_copier_example_needs_only_psync_and_runs");
    tree!(t.src(), {
        "d/f" => file("0123456789"),
        "g" => random(5000),
    });
    let krate = t.join("example");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        format!(
            "[package]\nname = \"custom-copier-example\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
             [dependencies]\npsync = {{ path = {:?} }}\n\n[workspace]\n",
            root.display().to_string()
        ),
    )
    .unwrap();
    std::fs::copy(
        root.join("examples/custom_copier.rs"),
        krate.join("src/main.rs"),
    )
    .unwrap();
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--offline", "--quiet", "--"])
        .arg(t.src())
        .arg(t.dst())
        .current_dir(&krate)
        .env("CARGO_TARGET_DIR", root.join("target/readme-example"))
        .output()
        .expect("run cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let here = fs_label(fs_magic_of(t.path()).unwrap());
    assert!(
        stdout.contains(&format!("target file system: {here}")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "chosen copier: counting (registered for any -> {here})"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("copier counting ran: 2 files created, 5010 bytes copied through it"),
        "{stdout}"
    );
    assert_synced!(t.src(), t.dst());
}
