//! The copier's protocol against the test double: what it asks of Lustre,
//! in which order, and what it reports.

use super::*;
use crate::double::layouts::{dom, instantiated, pfl3, plain, released};
use crate::double::{Call, FakeLustre};
use crate::layout::STRIPE_OFFSET_ANY;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

fn tmp() -> tempfile::TempDir {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/unit-tmp");
    std::fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

/// A scratch directory with a source file `s` of `data`, given `layout`.
struct Scene {
    t: tempfile::TempDir,
    fake: Arc<FakeLustre>,
}

impl Scene {
    fn new(data: &[u8], layout: Option<&Layout>) -> Scene {
        let t = tmp();
        std::fs::File::create(t.path().join("s"))
            .unwrap()
            .write_all(data)
            .unwrap();
        let fake = Arc::new(FakeLustre::new());
        if let Some(l) = layout {
            fake.put(&t.path().join("s"), l).unwrap();
        }
        Scene { t, fake }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.t.path().join(name)
    }

    fn copier(&self, opts: LustreOptions) -> LustreCopier {
        LustreCopier::with_sys(Arc::clone(&self.fake) as Arc<dyn LustreSys>, opts)
    }

    fn dir(&self) -> Dir {
        Dir::open_root(self.t.path()).unwrap()
    }

    fn entry(&self, c: &LustreCopier, name: &str) -> Entry {
        let d = self.dir();
        let mut e = [Entry::from_stat(
            Name::from(name),
            &d.stat(name.as_bytes()).unwrap(),
        )];
        c.annotate(&d, &mut e).unwrap();
        let [e] = e;
        e
    }

    /// `create` then a whole-file `copy_data` of `s` into `t`: the
    /// warnings the steps made.
    fn copy(&self, c: &LustreCopier) -> Vec<(Op, String)> {
        let d = self.dir();
        let e = self.entry(c, "s");
        kit::take_notes();
        let src = d.open_read(b"s").unwrap();
        let dst = c.create(&d, &Name::from("t"), &e, &src).unwrap();
        let notes = kit::take_notes();
        let opts = CopyOptions::default();
        c.copy_data(
            &DataJob::new(&src, &dst, &e, &opts),
            &AtomicBool::new(false),
        )
        .unwrap();
        notes
    }

    fn ino(&self, name: &str) -> u64 {
        std::fs::symlink_metadata(self.path(name)).unwrap().ino()
    }

    fn layout(&self, name: &str) -> Option<Layout> {
        self.fake.layout_at(&self.path(name)).unwrap()
    }
}

fn opts(f: impl FnOnce(&mut LustreOptions)) -> LustreOptions {
    let mut o = LustreOptions::default();
    f(&mut o);
    o
}

#[test]
fn a_file_gets_its_layout_before_any_data_and_it_is_read_back() {
    let source = instantiated(&plain(4, 1 << 20, None), 5);
    let s = Scene::new(b"some data", Some(&source));
    let c = s.copier(LustreOptions::default());
    let notes = s.copy(&c);
    assert!(notes.is_empty(), "{notes:?}");
    let (src, dst) = (s.ino("s"), s.ino("t"));
    let calls = s.fake.calls();
    let from_create: Vec<_> = calls
        .iter()
        .skip_while(|c| !matches!(c, Call::GetLayout(i) if *i == src))
        .cloned()
        .collect();
    assert_eq!(
        from_create,
        [
            Call::GetLayout(src),
            Call::CreateDelayed("t".into()),
            Call::SetLayout { ino: dst, size: 0 },
            Call::GetLayout(dst),
        ],
        "read the source's layout, create without one, set it before any data, read it back"
    );
    assert_eq!(std::fs::read(s.path("t")).unwrap(), b"some data");
    let got = s.layout("t").expect("a layout");
    assert_eq!(got, source.for_target(false));
    let Layout::Plain(p) = got else { panic!() };
    assert!(p.objects.is_empty() && p.stripe_offset == STRIPE_OFFSET_ANY);
}

#[test]
fn a_refused_layout_is_a_warning() {
    let s = Scene::new(b"x", Some(&plain(2, 1 << 20, None)));
    s.fake.refuse(Some(libc::EPERM));
    let notes = s.copy(&s.copier(LustreOptions::default()));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, Op::Create);
    assert!(notes[0].1.contains("layout not set"), "{notes:?}");
    assert_eq!(
        std::fs::read(s.path("t")).unwrap(),
        b"x",
        "the data is copied all the same"
    );
}

#[test]
fn an_ignored_layout_is_a_warning() {
    let s = Scene::new(b"x", Some(&plain(2, 1 << 20, None)));
    s.fake.ignore(true);
    let notes = s.copy(&s.copier(LustreOptions::default()));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].1.contains("none read back"), "{notes:?}");
}

#[test]
fn a_layout_read_back_otherwise_is_a_warning_that_says_how() {
    let s = Scene::new(b"x", Some(&pfl3()));
    s.fake.alter(Some(|l| {
        if let Layout::Composite(c) = l {
            c.components[2].layout.stripe_count = 2;
            c.components[1].layout.stripe_size = 2 << 20;
        }
    }));
    let notes = s.copy(&s.copier(LustreOptions::default()));
    assert_eq!(notes.len(), 1, "{notes:?}");
    let msg = &notes[0].1;
    assert!(
        msg.contains("component 2: stripe count 8 became 2"),
        "{msg}"
    );
    assert!(
        msg.contains("component 1: stripe size 1048576 became 2097152"),
        "{msg}"
    );
}

#[test]
fn a_layout_set_after_data_is_ignored_by_lustre_and_seen() {
    // The double is Lustre here: a file with data keeps its layout.
    let s = Scene::new(b"x", None);
    std::fs::write(s.path("t"), b"data").unwrap();
    let t = std::fs::File::open(s.path("t")).unwrap();
    let r = s
        .fake
        .set_layout(t.as_fd(), &plain(2, 1 << 20, None).encode());
    assert!(r.is_ok());
    assert_eq!(s.layout("t"), None);
}

#[test]
fn pools_are_kept_renamed_or_dropped() {
    let source = plain(2, 1 << 20, Some("flash"));
    let pool_of = |o: LustreOptions| {
        let s = Scene::new(b"x", Some(&source));
        let notes = s.copy(&s.copier(o));
        assert!(notes.is_empty(), "{notes:?}");
        s.layout("t").unwrap().pool().map(str::to_string)
    };
    assert_eq!(pool_of(LustreOptions::default()).as_deref(), Some("flash"));
    let renamed = opts(|o| {
        o.map_pool("flash=ssd").unwrap();
    });
    assert_eq!(pool_of(renamed).as_deref(), Some("ssd"));
    let dropped = opts(|o| {
        o.map_pool("flash=").unwrap();
    });
    assert_eq!(pool_of(dropped), None);
    let other = opts(|o| {
        o.map_pool("disk=ssd").unwrap();
    });
    assert_eq!(pool_of(other).as_deref(), Some("flash"));
}

#[test]
fn a_pool_the_target_lacks_is_dropped_with_a_warning() {
    let s = Scene::new(b"x", Some(&pfl3()));
    let mut with_pool = pfl3();
    if let Layout::Composite(c) = &mut with_pool {
        c.components[2].layout.pool = Some(PoolName::new("flash").unwrap());
    }
    s.fake.put(&s.path("s"), &with_pool).unwrap();
    s.fake.missing_pool("flash");
    let notes = s.copy(&s.copier(LustreOptions::default()));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].1.contains("pool \"flash\" refused"), "{notes:?}");
    let got = s.layout("t").unwrap();
    assert_eq!(got.pool(), None);
    assert_eq!(got, without_pools(&with_pool.for_target(false)));
}

#[test]
fn an_imposed_layout_replaces_the_source_s() {
    let s = Scene::new(b"x", Some(&pfl3()));
    let o = opts(|o| o.layout = "count=2,size=2M,pool=fast".parse().unwrap());
    let notes = s.copy(&s.copier(o));
    assert!(notes.is_empty(), "{notes:?}");
    let Some(Layout::Plain(p)) = s.layout("t") else {
        panic!("a plain layout")
    };
    assert_eq!((p.stripe_count, p.stripe_size), (2, 2 << 20));
    assert_eq!(p.pool(), Some("fast"));
}

#[test]
fn the_default_policy_sets_nothing() {
    let s = Scene::new(b"x", Some(&pfl3()));
    let c = s.copier(opts(|o| o.layout = LayoutPolicy::Default));
    let notes = s.copy(&c);
    assert!(notes.is_empty(), "{notes:?}");
    assert!(
        !s.fake.calls().iter().any(|c| matches!(
            c,
            Call::CreateDelayed(_) | Call::SetLayout { .. } | Call::GetLayout(_)
        )),
        "{:?}",
        s.fake.calls()
    );
    assert_eq!(s.layout("t"), None);
}

#[test]
fn a_source_without_a_layout_gives_a_plain_create() {
    let s = Scene::new(b"x", None);
    let notes = s.copy(&s.copier(LustreOptions::default()));
    assert!(notes.is_empty(), "{notes:?}");
    assert!(
        !s.fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::CreateDelayed(_)))
    );
}

#[test]
fn a_foreign_layout_is_not_copied_but_said() {
    let foreign = Layout::Foreign(psync_lustre_foreign());
    let s = Scene::new(b"x", Some(&foreign));
    let notes = s.copy(&s.copier(LustreOptions::default()));
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].1.contains("foreign"), "{notes:?}");
    assert_eq!(s.layout("t"), None, "no layout set");
}

fn psync_lustre_foreign() -> crate::layout::ForeignLayout {
    crate::layout::ForeignLayout {
        foreign_type: 0xcafe,
        flags: 0,
        value: b"/home/user/elsewhere".to_vec(),
    }
}

#[test]
fn ost_indices_are_reset_or_kept() {
    for source in [
        instantiated(&plain(4, 1 << 20, None), 5),
        instantiated(&pfl3(), 5),
    ] {
        for keep in [false, true] {
            let s = Scene::new(b"x", Some(&source));
            s.copy(&s.copier(opts(|o| o.keep_ost_indices = keep)));
            let offsets: Vec<u16> = match s.layout("t").unwrap() {
                Layout::Plain(p) => vec![p.stripe_offset],
                Layout::Composite(c) => c
                    .components
                    .iter()
                    .map(|c| c.layout.stripe_offset)
                    .collect(),
                Layout::Foreign(_) => unreachable!(),
            };
            let want = if keep { 5 } else { STRIPE_OFFSET_ANY };
            assert!(
                offsets.iter().all(|&o| o == want),
                "keep {keep}: {offsets:?}"
            );
        }
    }
}

#[test]
fn a_directory_gets_its_source_s_default_layout() {
    let s = Scene::new(b"", None);
    std::fs::create_dir(s.path("sd")).unwrap();
    std::fs::create_dir(s.path("plain")).unwrap();
    std::fs::create_dir(s.path("out")).unwrap();
    s.fake.put(&s.path("sd"), &pfl3()).unwrap();
    let c = s.copier(LustreOptions::default());
    let d = s.dir();
    let out = d.open_dir(b"out").unwrap();
    for name in ["sd", "plain"] {
        let e = s.entry(&c, name);
        kit::take_notes();
        let name = Name::from(name);
        c.make_dir(&out, &name, &e, Node::At(&d, &name)).unwrap();
        assert!(kit::take_notes().is_empty());
    }
    assert_eq!(s.layout("out/sd"), Some(pfl3().for_target(false)));
    assert_eq!(
        s.layout("out/plain"),
        None,
        "no default layout: nothing set"
    );
    let sets = s
        .fake
        .calls()
        .iter()
        .filter(|c| matches!(c, Call::SetLayout { .. }))
        .count();
    assert_eq!(sets, 1);
    // Refused on a directory: a warning too.
    s.fake.refuse(Some(libc::EACCES));
    let name = Name::from("sd");
    c.make_dir(
        &d,
        &Name::from("sd2"),
        &s.entry(&c, "sd"),
        Node::At(&d, &name),
    )
    .unwrap();
    let notes = kit::take_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, Op::Mkdir);
}

/// A user who can rename in the target directory swaps the directory
/// just made for one of theirs before its layout is set: theirs is left
/// alone (the engine then refuses the path, as for any new directory).
#[test]
fn a_directory_swapped_in_after_mkdir_gets_no_layout() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scene::new(b"", None);
    std::fs::create_dir(s.path("sd")).unwrap();
    std::fs::create_dir(s.path("out")).unwrap();
    s.fake.put(&s.path("sd"), &pfl3()).unwrap();
    let c = s.copier(LustreOptions::default());
    let d = s.dir();
    let out = d.open_dir(b"out").unwrap();
    let e = s.entry(&c, "sd");
    let (made, theirs) = (s.path("out/sd"), s.path("out/theirs"));
    std::fs::create_dir(&theirs).unwrap();
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (m, t) = (made.clone(), theirs.clone());
    // Between the mkdir and the layout: the source's is read then.
    s.fake.on_next_get(move || {
        std::fs::rename(&m, m.with_extension("old")).unwrap();
        std::fs::rename(&t, &m).unwrap();
    });
    kit::take_notes();
    let name = Name::from("sd");
    c.make_dir(&out, &name, &e, Node::At(&d, &name)).unwrap();
    let notes = kit::take_notes();
    assert_eq!(
        s.layout("out/sd"),
        None,
        "the swapped-in directory is not touched"
    );
    assert!(
        !s.fake
            .calls()
            .iter()
            .any(|c| matches!(c, Call::SetLayout { .. })),
        "{:?}",
        s.fake.calls()
    );
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].0, Op::Mkdir);
    assert!(notes[0].1.contains("not the one just made"), "{notes:?}");
}

#[test]
fn internal_and_lustre_xattrs_are_not_copied() {
    let s = Scene::new(b"x", None);
    std::fs::write(s.path("t"), b"x").unwrap();
    let set = |name: &str, v: &[u8]| {
        rustix::fs::setxattr(
            s.path("s").as_path(),
            name,
            v,
            rustix::fs::XattrFlags::empty(),
        )
    };
    set("user.kept", b"1").unwrap();
    // trusted.* needs root; lustre.* exists on Lustre only.
    let trusted = set("trusted.lma", b"fid").is_ok() && set("trusted.link", b"l").is_ok();
    let c = s.copier(LustreOptions::default());
    let (src, dst) = (
        std::fs::File::open(s.path("s")).unwrap(),
        std::fs::File::open(s.path("t")).unwrap(),
    );
    let e = s.entry(&c, "s");
    let report = c
        .set_attrs(
            Node::Fd(dst.as_fd()),
            &e,
            Some(Node::Fd(src.as_fd())),
            &CopyOptions::default(),
        )
        .unwrap();
    assert!(report.dropped.is_empty(), "{:?}", report.dropped);
    let names = Node::Fd(dst.as_fd()).list().unwrap();
    assert_eq!(
        names,
        [b"user.kept".to_vec()],
        "trusted xattrs set: {trusted}"
    );
    for n in [
        "lustre.lov",
        "lustre.lma",
        "trusted.lov",
        "trusted.lma",
        "trusted.hsm",
        "trusted.som",
    ] {
        assert!(kit::is_never_copied(n.as_bytes()), "{n}");
    }
}

#[test]
fn chunks_are_whole_stripes() {
    assert_eq!(
        aligned_chunk(0, 64 << 20),
        64 << 20,
        "no layout: the default"
    );
    assert_eq!(aligned_chunk(4 << 20, 64 << 20), 64 << 20);
    assert_eq!(aligned_chunk(3 << 20, 64 << 20), 63 << 20);
    assert_eq!(
        aligned_chunk(8 << 20, 1 << 20),
        8 << 20,
        "at least one stripe"
    );
    // An odd size (never Lustre's) still gives 4 KiB multiples.
    let odd = aligned_chunk(1000, 1 << 20);
    assert_eq!((odd % 4096, odd % 1000), (0, 0));
    assert!(odd <= 1 << 20);
    // Sizes no Lustre makes, whose 4 KiB multiple is over 4 GiB: the
    // run's chunk, not one of terabytes.
    for unit in [u64::from(u32::MAX), (4 << 30) - 2] {
        assert_eq!(aligned_chunk(unit, 64 << 20), 64 << 20, "{unit}");
    }
    let largest = (4 << 30) - (64 << 10);
    assert_eq!(aligned_chunk(largest, 64 << 20), largest);
    assert_eq!(stripe_unit(&plain(4, 3 << 20, None)), 3 << 20);
    assert_eq!(stripe_unit(&pfl3()), 4 << 20);
    let mixed = crate::double::layouts::progressive(&[
        (
            6 << 20,
            crate::double::layouts::striped(LOV_PATTERN_RAID0, 1, 2 << 20, None),
        ),
        (
            crate::layout::LUSTRE_EOF,
            crate::double::layouts::striped(LOV_PATTERN_RAID0, 2, 3 << 20, None),
        ),
    ]);
    assert_eq!(stripe_unit(&mixed), 6 << 20);
    assert_eq!(stripe_unit(&dom()), 1 << 20);
    // Through the entry: what annotate kept decides.
    for (layout, default, want) in [
        (plain(4, 3 << 20, None), 64 << 20, 63 << 20),
        (pfl3(), 10 << 20, 8 << 20),
        (mixed, 64 << 20, 60 << 20),
    ] {
        let s = Scene::new(b"x", Some(&layout));
        let c = s.copier(LustreOptions::default());
        let e = s.entry(&c, "s");
        assert_eq!(c.chunk_size(&e, default), want);
    }
    let s = Scene::new(b"x", None);
    let c = s.copier(LustreOptions::default());
    assert_eq!(c.chunk_size(&s.entry(&c, "s"), 5 << 20), 5 << 20);
}

#[test]
fn released_files_are_skipped_unless_restored() {
    let s = Scene::new(b"archived", Some(&released(&plain(2, 1 << 20, None))));
    let c = s.copier(LustreOptions::default());
    let e = s.entry(&c, "s");
    assert!(Kept::of(&e).unwrap().released);
    let why = c.skip(&e).expect("skipped");
    assert!(
        why.contains("released") && why.contains("--hsm-restore"),
        "{why}"
    );
    let restoring = s.copier(opts(|o| o.hsm_restore = true));
    assert_eq!(restoring.skip(&e), None);
    let notes = s.copy(&restoring);
    assert!(notes.is_empty(), "{notes:?}");
    let got = s.layout("t").unwrap();
    assert!(!got.is_released(), "the copy has its data");
    assert_eq!(got, plain(2, 1 << 20, None));
    let s = Scene::new(b"x", Some(&plain(2, 1 << 20, None)));
    assert_eq!(c.skip(&s.entry(&c, "s")), None);
}

#[test]
fn fids_are_kept_with_entries() {
    let s = Scene::new(b"x", Some(&pfl3()));
    std::fs::create_dir(s.path("d")).unwrap();
    let c = s.copier(LustreOptions::default());
    for name in ["s", "d"] {
        let kept = Kept::of(&s.entry(&c, name)).expect("kept");
        assert_eq!(kept.fid, Some(s.fake.fid_at(&s.path(name)).unwrap()));
        assert_eq!(Kept::decode(&kept.encode()), Some(kept));
    }
    assert_eq!(Kept::decode(b"other"), None);
    // A directory's layout is not read at listing.
    assert_eq!(Kept::of(&s.entry(&c, "d")).unwrap().stripe_unit, 0);
}

#[test]
fn options_reach_a_copier_made_from_them() {
    let s = Scene::new(b"x", None);
    let o = opts(|o| {
        o.hsm_restore = true;
        o.layout = "count=3,size=1M".parse().unwrap();
    });
    let configured = s.copier(o.clone());
    let plain_one = s.copier(LustreOptions::default());
    assert_eq!(plain_one.options(), "");
    assert!(plain_one.with_options("").unwrap().is_none());
    let made = plain_one
        .with_options(&configured.options())
        .unwrap()
        .expect("a copier");
    assert_eq!(made.name(), "lustre");
    assert_eq!(made.options(), configured.options());
    assert!(plain_one.with_options("nonsense").is_err());
    // Made over the same calls: it sets the imposed layout through them.
    let d = s.dir();
    let e = s.entry(&plain_one, "s");
    let src = d.open_read(b"s").unwrap();
    made.create(&d, &Name::from("t"), &e, &src).unwrap();
    let Some(Layout::Plain(p)) = s.layout("t") else {
        panic!()
    };
    assert_eq!(p.stripe_count, 3);
}

/// The engine's identity of a file is its FID (not its inode): one for
/// every name of an inode, another for another file; none without a
/// FID kept (the engine keys by inode then).
#[test]
fn file_ids_are_the_fids() {
    let s = Scene::new(b"x", None);
    std::fs::hard_link(s.path("s"), s.path("s2")).unwrap();
    std::fs::write(s.path("o"), b"other").unwrap();
    let c = s.copier(LustreOptions::default());
    let fid = s.fake.fid_at(&s.path("s")).unwrap();
    let id = c.file_id(&s.entry(&c, "s")).expect("a file id");
    assert_eq!(id, fid.packed());
    assert_eq!(id >> 64, u128::from(crate::double::FID_SEQ));
    assert_ne!(id & 0xffff_ffff_ffff_ffff, u128::from(s.ino("s")) << 32);
    assert_eq!(c.file_id(&s.entry(&c, "s2")), Some(id), "a hard link");
    assert_ne!(c.file_id(&s.entry(&c, "o")), Some(id));
    let bare = Entry::from_stat(Name::from("s"), &s.dir().stat(b"s").unwrap());
    assert_eq!(c.file_id(&bare), None);
    let f = Fid {
        seq: 0x2_0000_0401,
        oid: 0x1234,
        ver: 7,
    };
    assert_eq!(f.packed(), 0x2_0000_0401_0000_1234_0000_0007);
}

/// A layout warning names the source's FID.
#[test]
fn layout_warnings_name_the_fid() {
    let s = Scene::new(b"data", Some(&plain(2, 1 << 20, None)));
    s.fake.refuse(Some(libc::EPERM));
    let c = s.copier(LustreOptions::default());
    let notes = s.copy(&c);
    let fid = s.fake.fid_at(&s.path("s")).unwrap();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].1.ends_with(&format!(" (source FID {fid})")),
        "{notes:?}"
    );
}
