//! The Lustre copier: the generic copier, with each new file given its
//! layout before any data and each new directory its default layout.

use crate::layout::{
    LCME_FL_EXTENSION, LOV_PATTERN_F_HOLE, LOV_PATTERN_F_RELEASED, LOV_PATTERN_RAID0,
};
use crate::layout::{Layout, PlainLayout, PoolName, STRIPE_OFFSET_ANY};
use crate::options::{LayoutPolicy, LustreOptions};
use crate::sys::{Fid, LustreSys, RealLustre};
use psync_core::copy::kit;
use psync_core::{
    Copied, Copier, CopyOptions, DataJob, Dir, Entry, FsData, Kind, Name, Node, Op, RelPath,
    StepError, StepExt, XattrReport,
};
use psync_generic::GenericCopier;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

/// `statfs` magic of Lustre (`LL_SUPER_MAGIC`).
pub const LL_SUPER_MAGIC: u64 = 0x0BD0_0BD0;

/// What the copier keeps with a source entry ([`Entry::fs_data`]), read
/// once when its directory is listed and carried to every node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kept {
    /// The file's data is released to HSM.
    pub released: bool,
    /// The file's chunks are multiples of this (its stripes); 0: no layout.
    pub stripe_unit: u32,
    /// Its FID.
    pub fid: Option<Fid>,
}

const KEPT_VERSION: u8 = 1;
const KEPT_LEN: usize = 22;

impl Kept {
    /// The bytes kept: version, flags, stripe unit, FID (little-endian).
    pub fn encode(&self) -> Vec<u8> {
        let flags = u8::from(self.released) | (u8::from(self.fid.is_some()) << 1);
        let fid = self.fid.unwrap_or_default();
        let mut out = Vec::with_capacity(KEPT_LEN);
        out.extend([KEPT_VERSION, flags]);
        out.extend(self.stripe_unit.to_le_bytes());
        out.extend(fid.seq.to_le_bytes());
        out.extend(fid.oid.to_le_bytes());
        out.extend(fid.ver.to_le_bytes());
        out
    }

    /// What [`Kept::encode`] made; `None` for other bytes (none kept).
    pub fn decode(b: &[u8]) -> Option<Kept> {
        if b.len() != KEPT_LEN || b[0] != KEPT_VERSION {
            return None;
        }
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[6..14]);
        Some(Kept {
            released: b[1] & 1 != 0,
            stripe_unit: u32_at(2),
            fid: (b[1] & 2 != 0).then(|| Fid {
                seq: u64::from_le_bytes(seq),
                oid: u32_at(14),
                ver: u32_at(18),
            }),
        })
    }

    /// What the entry carries.
    pub fn of(e: &Entry) -> Option<Kept> {
        Kept::decode(e.fs_data.bytes())
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn lcm(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        return a.max(b);
    }
    (a / gcd(a, b)).saturating_mul(b)
}

/// The unit a file's chunks are whole multiples of: the least common
/// multiple of its components' stripe sizes (one stripe size for a plain
/// layout; an extension component's size field is not a stripe's). 0
/// when the layout gives none.
pub fn stripe_unit(layout: &Layout) -> u64 {
    let sizes: Vec<u64> = match layout {
        Layout::Plain(p) => vec![u64::from(p.stripe_size)],
        Layout::Composite(c) => c
            .components
            .iter()
            .filter(|c| c.flags & LCME_FL_EXTENSION == 0)
            .map(|c| u64::from(c.layout.stripe_size))
            .collect(),
        Layout::Foreign(_) => Vec::new(),
    };
    let unit = sizes.iter().fold(0, |u, &s| lcm(u, s));
    // Sizes without a small common multiple: the largest stripe.
    if unit > u64::from(u32::MAX) {
        sizes.into_iter().max().unwrap_or(0)
    } else {
        unit
    }
}

/// The largest multiple of `unit` (rounded up to a multiple of 4 KiB) not
/// above `default`, and at least one `unit`; `default` when there is no
/// unit or its 4 KiB multiple is over 4 GiB (no stripe Lustre makes: an
/// odd size near 4 GiB would give a chunk of terabytes).
pub fn aligned_chunk(unit: u64, default: u64) -> u64 {
    let unit = lcm(unit, 4096);
    if unit == 4096 || unit > u64::from(u32::MAX) {
        return default;
    }
    (default / unit).max(1).saturating_mul(unit)
}

fn base_pattern(p: u32) -> u32 {
    p & !(LOV_PATTERN_F_RELEASED | LOV_PATTERN_F_HOLE)
}

fn plain_differences(at: &str, want: &PlainLayout, got: &PlainLayout, out: &mut Vec<String>) {
    if base_pattern(want.pattern) != 0 && base_pattern(want.pattern) != base_pattern(got.pattern) {
        out.push(format!(
            "{at}pattern {:#x} became {:#x}",
            want.pattern, got.pattern
        ));
    }
    // 0 is the file system's default, 0xFFFF every OST: any count is it.
    if !matches!(want.stripe_count, 0 | 0xFFFF) && want.stripe_count != got.stripe_count {
        out.push(format!(
            "{at}stripe count {} became {}",
            want.stripe_count, got.stripe_count
        ));
    }
    if want.stripe_size != 0 && want.stripe_size != got.stripe_size {
        out.push(format!(
            "{at}stripe size {} became {}",
            want.stripe_size, got.stripe_size
        ));
    }
    if want.pool().is_some() && want.pool() != got.pool() {
        out.push(format!(
            "{at}pool {:?} became {:?}",
            want.pool().unwrap_or_default(),
            got.pool().unwrap_or_default()
        ));
    }
}

/// How the layout read back differs from the one set: pattern, stripe
/// count and size, pool, per component (and the components' extents).
/// Empty when it is the one asked for.
pub fn differences(want: &Layout, got: &Layout) -> Vec<String> {
    let mut out = Vec::new();
    match (want, got) {
        (Layout::Plain(w), Layout::Plain(g)) => plain_differences("", w, g, &mut out),
        (Layout::Composite(w), Layout::Composite(g)) => {
            if w.components.len() != g.components.len() {
                out.push(format!(
                    "{} components became {}",
                    w.components.len(),
                    g.components.len()
                ));
                return out;
            }
            for (i, (w, g)) in w.components.iter().zip(&g.components).enumerate() {
                let at = format!("component {i}: ");
                if (w.start, w.end) != (g.start, g.end) {
                    out.push(format!(
                        "{at}extent {}..{} became {}..{}",
                        w.start, w.end, g.start, g.end
                    ));
                }
                plain_differences(&at, &w.layout, &g.layout, &mut out);
            }
        }
        (Layout::Foreign(w), Layout::Foreign(g)) if w == g => {}
        (w, g) => out.push(format!("{} layout became {}", kind(w), kind(g))),
    }
    out
}

fn kind(l: &Layout) -> &'static str {
    match l {
        Layout::Plain(_) => "a plain",
        Layout::Composite(_) => "a composite",
        Layout::Foreign(_) => "a foreign",
    }
}

fn without_pools(layout: &Layout) -> Layout {
    let mut l = layout.clone();
    match &mut l {
        Layout::Plain(p) => p.pool = None,
        Layout::Composite(c) => c.components.iter_mut().for_each(|c| c.layout.pool = None),
        Layout::Foreign(_) => {}
    }
    l
}

/// The end of a warning about the source entry `src`: its FID, which
/// `lfs fid2path` turns into its paths on any client (the warning names
/// the path of the copy).
fn about(src: &Entry) -> String {
    Kept::of(src)
        .and_then(|k| k.fid)
        .map_or_else(String::new, |f| format!(" (source FID {f})"))
}

/// The Lustre copier: [`GenericCopier`] for data and attributes; layouts
/// through a [`LustreSys`] ([`RealLustre`] on a Lustre client).
#[derive(Debug)]
pub struct LustreCopier {
    inner: GenericCopier,
    sys: Arc<dyn LustreSys>,
    opts: LustreOptions,
    /// The target is not Lustre: no layout is set (the generic copier's
    /// files and directories), but the source is read as Lustre's:
    /// released files skipped, chunks of whole stripes, FIDs kept.
    source_only: bool,
}

/// [`Copier::name`] of the Lustre copier, Lustre on both sides.
pub const NAME: &str = "lustre";
/// [`Copier::name`] of the Lustre copier for a Lustre source and another
/// target ([`LustreCopier::source_only`]).
pub const SOURCE_NAME: &str = "lustre-source";

impl LustreCopier {
    /// True when no file gets a layout of this copier's making: the
    /// target is not Lustre, or the layout policy is the default.
    fn sets_no_layout(&self) -> bool {
        self.source_only || self.opts.layout == LayoutPolicy::Default
    }

    /// The copier on a Lustre client, with `opts`.
    pub fn new(opts: LustreOptions) -> LustreCopier {
        LustreCopier::with_sys(Arc::new(RealLustre), opts)
    }

    /// The copier making its Lustre calls through `sys` (a test double).
    pub fn with_sys(sys: Arc<dyn LustreSys>, opts: LustreOptions) -> LustreCopier {
        LustreCopier {
            inner: GenericCopier::new(),
            sys,
            opts,
            source_only: false,
        }
    }

    /// The copier for a Lustre source and a target of another file
    /// system (registered for Lustre to any): files and directories made
    /// as the generic copier makes them, no layout set whatever the
    /// layout policy; released files still skipped (reading one would
    /// restore it from the archive) unless `hsm_restore`, chunks still of
    /// whole stripes. Named [`SOURCE_NAME`].
    pub fn source_only(self) -> LustreCopier {
        LustreCopier {
            source_only: true,
            ..self
        }
    }

    /// Its options.
    pub fn options_set(&self) -> &LustreOptions {
        &self.opts
    }

    /// The layout a copy of a file whose source is open as `src` gets;
    /// `None` for none (the target directory's default).
    fn file_layout(&self, src: &File, about: &str) -> Option<Layout> {
        if self.source_only {
            return None;
        }
        match &self.opts.layout {
            LayoutPolicy::Default => None,
            LayoutPolicy::Imposed { count, size, pool } => Some(Layout::Plain(PlainLayout {
                pattern: LOV_PATTERN_RAID0,
                stripe_size: *size,
                stripe_count: *count,
                stripe_offset: STRIPE_OFFSET_ANY,
                pool: pool.as_deref().and_then(|p| PoolName::new(p).ok()),
                ..PlainLayout::default()
            })),
            LayoutPolicy::Copy => self.source_layout(self.sys.get_layout(src.as_fd()), about),
        }
    }

    /// The layout for the target of a source layout read as `read`.
    /// `about` ends the warnings ([`about`]).
    fn source_layout(&self, read: io::Result<Option<Vec<u8>>>, about: &str) -> Option<Layout> {
        let why = match read {
            Ok(None) => return None,
            Ok(Some(v)) => match Layout::decode(&v) {
                // A foreign layout points the file at something outside
                // Lustre (a foreign symlink's target, an object store's
                // name) that its owner chose: root does not make a copy
                // point there.
                Ok(Layout::Foreign(f)) => format!(
                    "is foreign (type {:#x}): not copied, for the owner chose what it names",
                    f.foreign_type
                ),
                Ok(l) => {
                    let mut t = l.for_target(self.opts.keep_ost_indices);
                    match self.opts.map_pools(&mut t) {
                        Ok(()) => return Some(t),
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => format!("not understood: {e}"),
            },
            Err(e) => format!("not read: {e}"),
        };
        kit::warn(
            Op::Create,
            format!("source layout {why}; the target's default layout is used{about}"),
        );
        None
    }

    /// Sets `want` on the new file or directory `fd` and checks what it
    /// got: whatever it could not keep is a warning. A pool the target
    /// refuses is dropped and the layout set again without it. `about`
    /// ends the warnings ([`about`]).
    fn give_layout(&self, fd: BorrowedFd<'_>, want: &Layout, op: Op, about: &str) {
        let set = match self.sys.set_layout(fd, &want.encode()) {
            Ok(()) => want.clone(),
            Err(e) if want.pool().is_some() => {
                let plain = without_pools(want);
                if let Err(e2) = self.sys.set_layout(fd, &plain.encode()) {
                    let msg = format!("layout not set ({e2}); the target's default is used{about}");
                    return kit::warn(op, msg);
                }
                let pool = want.pool().unwrap_or_default();
                kit::warn(
                    op,
                    format!(
                        "OST pool {pool:?} refused by the target ({e}): layout set without it{about}"
                    ),
                );
                plain
            }
            Err(e) => {
                return kit::warn(
                    op,
                    format!("layout not set ({e}); the target's default is used{about}"),
                );
            }
        };
        let why = match self.sys.get_layout(fd) {
            Ok(Some(v)) => match Layout::decode(&v) {
                Ok(got) => {
                    let diffs = differences(&set, &got);
                    if diffs.is_empty() {
                        return;
                    }
                    diffs.join(", ")
                }
                Err(e) => format!("read back not understood: {e}"),
            },
            Ok(None) => "none read back".to_string(),
            Err(e) => format!("not read back: {e}"),
        };
        kit::warn(op, format!("layout not kept as set: {why}{about}"));
    }

    /// The source directory's default layout, for a new directory.
    fn dir_layout(&self, from: Node<'_>, about: &str) -> Option<Layout> {
        if self.source_only || self.opts.layout != LayoutPolicy::Copy {
            return None;
        }
        let read = match from {
            Node::Fd(fd) => self.sys.get_layout(fd),
            Node::At(d, n) => d
                .open_dir(n.as_bytes())
                .and_then(|d| self.sys.get_layout(d.fd())),
            Node::Path(_) => return None,
        };
        self.source_layout(read, about)
    }
}

impl Copier for LustreCopier {
    fn name(&self) -> &str {
        if self.source_only { SOURCE_NAME } else { NAME }
    }

    /// Without a layout to set, as the generic copier does; else the
    /// file is opened without one (`O_LOV_DELAY_CREATE`), given its
    /// layout, read back and compared, before any data.
    fn create(
        &self,
        dir: &Dir,
        tmp: &Name,
        src: &Entry,
        src_file: &File,
    ) -> Result<File, StepError> {
        let about = about(src);
        let Some(want) = self.file_layout(src_file, &about) else {
            return self.inner.create(dir, tmp, src, src_file);
        };
        let f = self.sys.create_delayed(dir, tmp).op(Op::Create)?;
        self.give_layout(f.as_fd(), &want, Op::Create, &about);
        Ok(f)
    }

    /// An unnamed file gets no layout of its own: only when none is set.
    fn create_unnamed(
        &self,
        dir: &Dir,
        src: &Entry,
        src_file: &File,
    ) -> Result<Option<File>, StepError> {
        match self.sets_no_layout() {
            true => self.inner.create_unnamed(dir, src, src_file),
            false => Ok(None),
        }
    }

    /// As [`Copier::create_unnamed`]: only when no layout is set.
    fn create_in_place(
        &self,
        dir: &Dir,
        src: &Entry,
        src_file: &File,
    ) -> Result<Option<File>, StepError> {
        match self.sets_no_layout() {
            true => self.inner.create_in_place(dir, src, src_file),
            false => Ok(None),
        }
    }

    fn try_clone(&self, src: &File, dst: &File, opts: &CopyOptions) -> Result<bool, StepError> {
        self.inner.try_clone(src, dst, opts)
    }

    fn copy_data(&self, job: &DataJob<'_>, quit: &AtomicBool) -> Result<Copied, StepError> {
        self.inner.copy_data(job, quit)
    }

    /// The generic copier's: `lustre.*` and Lustre's internal xattrs are
    /// never copied ([`kit::is_never_copied`]); the layout is set at
    /// creation, never after data.
    fn set_attrs(
        &self,
        target: Node<'_>,
        src: &Entry,
        from: Option<Node<'_>>,
        opts: &CopyOptions,
    ) -> Result<XattrReport, StepError> {
        self.inner.set_attrs(target, src, from, opts)
    }

    /// The directory, then the source directory's default layout (none
    /// when it has none), on the directory made and no other: one a user
    /// renamed to its name since is left alone.
    fn make_dir(
        &self,
        dir: &Dir,
        name: &Name,
        src: &Entry,
        from: Node<'_>,
    ) -> Result<(), StepError> {
        self.inner.make_dir(dir, name, src, from)?;
        let about = about(src);
        if let Some(want) = self.dir_layout(from, &about) {
            match kit::open_made_dir(dir, name.as_bytes()) {
                Ok(d) => self.give_layout(d.fd(), &want, Op::Mkdir, &about),
                Err(e) => kit::warn(Op::Mkdir, format!("default layout not set: {e}{about}")),
            }
        }
        Ok(())
    }

    fn set_mode(&self, target: Node<'_>, mode: u32) -> Result<(), StepError> {
        self.inner.set_mode(target, mode)
    }

    /// Each entry's FID, and for a file whether it is released and its
    /// stripe unit. An entry that cannot be looked at keeps nothing.
    fn annotate(&self, dir: &Dir, entries: &mut [Entry]) -> io::Result<()> {
        for e in entries {
            let Ok(info) = self.sys.entry_info(dir, &e.name, e.kind == Kind::File) else {
                continue;
            };
            let layout = info.layout.as_deref().and_then(|v| Layout::decode(v).ok());
            let kept = Kept {
                released: layout.as_ref().is_some_and(Layout::is_released),
                stripe_unit: layout
                    .as_ref()
                    .map_or(0, |l| u32::try_from(stripe_unit(l)).unwrap_or(0)),
                fid: info.fid,
            };
            e.fs_data = FsData::new(&kept.encode()).unwrap_or_default();
        }
        Ok(())
    }

    /// Whole stripes: the largest multiple of the file's stripe unit not
    /// above `default`, at least one.
    fn chunk_size(&self, src: &Entry, default: u64) -> u64 {
        let unit = Kept::of(src).map_or(0, |k| u64::from(k.stripe_unit));
        aligned_chunk(unit, default)
    }

    /// The FID kept by [`Copier::annotate`], packed ([`Fid::packed`]):
    /// the same on every client, whatever inode numbers it shows (a
    /// `32bitapi` mount's differ). `None` when none was read (the engine
    /// then keys the file by its inode).
    fn file_id(&self, src: &Entry) -> Option<u128> {
        Kept::of(src)?.fid.map(|f| f.packed())
    }

    fn skip(&self, src: &Entry) -> Option<String> {
        let released = Kept::of(src).is_some_and(|k| k.released);
        (released && !self.opts.hsm_restore).then(|| {
            "released to HSM (its data is in the archive): not copied (--hsm-restore copies it)"
                .to_string()
        })
    }

    fn options(&self) -> String {
        self.opts.encode()
    }

    fn with_options(&self, options: &str) -> io::Result<Option<Arc<dyn Copier>>> {
        let opts = LustreOptions::decode(options)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if opts == self.opts {
            return Ok(None);
        }
        let mut made = LustreCopier::with_sys(Arc::clone(&self.sys), opts);
        made.source_only = self.source_only;
        Ok(Some(Arc::new(made)))
    }

    fn make_symlink(&self, dir: &Dir, name: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_symlink(dir, name, src)
    }

    fn make_special(&self, dir: &Dir, name: &Name, src: &Entry) -> Result<(), StepError> {
        self.inner.make_special(dir, name, src)
    }

    fn remove(&self, dir: &Dir, listed: &Entry) -> Result<u64, StepError> {
        self.inner.remove(dir, listed)
    }

    fn remove_each(
        &self,
        dir: &Dir,
        listed: &Entry,
        removed: &mut dyn FnMut(&RelPath, Kind),
    ) -> Result<u64, StepError> {
        self.inner.remove_each(dir, listed, removed)
    }
}

#[cfg(test)]
mod tests;
