//! A test double of [`LustreSys`] on any file system (tmpfs in psync's
//! tests): layouts live in memory keyed by (device, inode), each inode
//! gets a FID the first time it is looked at (numbered in that order,
//! not made from the inode, as Lustre's are not from a client's inode
//! numbers), and every call is recorded in order. It behaves
//! as Lustre does where the copier's protocol depends on it: a layout set
//! on a file that has one, or has data, is ignored without an error; a
//! pool the target lacks is refused (EINVAL). It can also refuse every
//! layout, ignore every layout, or give back another than the one set.

use crate::layout::Layout;
use crate::sys::{EntryInfo, Fid, LustreSys};
use psync_core::{Dir, Name};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Mutex;

/// One call the double saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`LustreSys::create_delayed`] of this name.
    CreateDelayed(String),
    /// [`LustreSys::set_layout`] on this inode, whose size was `size`
    /// then (0 for a file: before any data).
    SetLayout {
        /// The inode.
        ino: u64,
        /// Its size at the call.
        size: u64,
    },
    /// [`LustreSys::get_layout`] on this inode.
    GetLayout(u64),
    /// [`LustreSys::entry_info`] of this name.
    EntryInfo(String),
}

#[derive(Default)]
struct State {
    layouts: HashMap<(u64, u64), Vec<u8>>,
    delayed: HashSet<(u64, u64)>,
    calls: Vec<Call>,
    refuse: Option<i32>,
    ignore: bool,
    alter: Option<fn(&mut Layout)>,
    missing_pools: Vec<String>,
    on_get: Option<Box<dyn FnOnce() + Send>>,
    fids: HashMap<(u64, u64), Fid>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("layouts", &self.layouts.len())
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl State {
    /// The FID of the inode `key`, given at first sight.
    fn fid(&mut self, key: (u64, u64)) -> Fid {
        let next = u32::try_from(self.fids.len()).unwrap_or(u32::MAX);
        *self.fids.entry(key).or_insert(Fid {
            seq: FID_SEQ,
            oid: FIRST_OID + next,
            ver: 0,
        })
    }
}

/// The sequence of the double's FIDs (a normal one, above
/// `FID_SEQ_NORMAL`), and the first object id given.
pub const FID_SEQ: u64 = 0x2_0000_0401;
const FIRST_OID: u32 = 0x1_0000;

/// Lustre's layout calls, imitated on any file system.
#[derive(Debug, Default)]
pub struct FakeLustre {
    state: Mutex<State>,
}

fn key_of(st: &rustix::fs::Stat) -> (u64, u64) {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    (st.st_dev as u64, st.st_ino as u64)
}

fn stat_path(p: &Path) -> io::Result<rustix::fs::Stat> {
    Ok(rustix::fs::lstat(p)?)
}

impl FakeLustre {
    /// A double with no layouts that accepts every layout set.
    pub fn new() -> FakeLustre {
        FakeLustre::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Gives the file or directory at `path` the layout `layout` (a
    /// source as `lfs setstripe` would make it).
    ///
    /// # Errors
    /// `path` cannot be looked at.
    pub fn put(&self, path: &Path, layout: &Layout) -> io::Result<()> {
        let key = key_of(&stat_path(path)?);
        self.state().layouts.insert(key, layout.encode());
        Ok(())
    }

    /// The layout of the file or directory at `path`, decoded.
    ///
    /// # Errors
    /// `path` cannot be looked at.
    ///
    /// # Panics
    /// On a value the double holds that does not decode (never set so).
    pub fn layout_at(&self, path: &Path) -> io::Result<Option<Layout>> {
        let key = key_of(&stat_path(path)?);
        let value = self.state().layouts.get(&key).cloned();
        Ok(value.map(|v| Layout::decode(&v).expect("a layout the double holds")))
    }

    /// The FID of the file or directory at `path` (given now if it has
    /// none yet).
    ///
    /// # Errors
    /// `path` cannot be looked at.
    pub fn fid_at(&self, path: &Path) -> io::Result<Fid> {
        let key = key_of(&stat_path(path)?);
        Ok(self.state().fid(key))
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// Every layout set from now on fails with `errno` (`None`: none do).
    pub fn refuse(&self, errno: Option<i32>) {
        self.state().refuse = errno;
    }

    /// Every layout set from now on is ignored (succeeds, changes nothing).
    pub fn ignore(&self, on: bool) {
        self.state().ignore = on;
    }

    /// Every layout set from now on is changed by `f` before it is kept
    /// (read back other than set).
    pub fn alter(&self, f: Option<fn(&mut Layout)>) {
        self.state().alter = f;
    }

    /// Runs `f` at the next [`LustreSys::get_layout`], before it reads:
    /// what another process does between two of the copier's calls.
    pub fn on_next_get(&self, f: impl FnOnce() + Send + 'static) {
        self.state().on_get = Some(Box::new(f));
    }

    /// The target has no OST pool `name`: a layout naming it is refused.
    pub fn missing_pool(&self, name: &str) {
        self.state().missing_pools.push(name.to_string());
    }
}

fn names_pool(layout: &Layout, pools: &[String]) -> bool {
    let named =
        |p: &crate::layout::PlainLayout| p.pool().is_some_and(|p| pools.iter().any(|m| m == p));
    match layout {
        Layout::Plain(p) => named(p),
        Layout::Composite(c) => c.components.iter().any(|c| named(&c.layout)),
        Layout::Foreign(_) => false,
    }
}

impl LustreSys for FakeLustre {
    fn create_delayed(&self, dir: &Dir, name: &Name) -> io::Result<File> {
        self.state()
            .calls
            .push(Call::CreateDelayed(name.to_string()));
        let f = dir.create_excl(name.as_bytes())?;
        let key = key_of(&rustix::fs::fstat(&f)?);
        let mut s = self.state();
        // A new inode: whatever an old one of that number had is gone.
        s.layouts.remove(&key);
        s.delayed.insert(key);
        Ok(f)
    }

    fn get_layout(&self, fd: BorrowedFd<'_>) -> io::Result<Option<Vec<u8>>> {
        let hook = self.state().on_get.take();
        if let Some(f) = hook {
            f();
        }
        let key = key_of(&rustix::fs::fstat(fd)?);
        let mut s = self.state();
        s.calls.push(Call::GetLayout(key.1));
        Ok(s.layouts.get(&key).cloned())
    }

    fn set_layout(&self, fd: BorrowedFd<'_>, value: &[u8]) -> io::Result<()> {
        let st = rustix::fs::fstat(fd)?;
        let key = key_of(&st);
        let is_dir =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
        let mut s = self.state();
        #[allow(clippy::unnecessary_cast)]
        s.calls.push(Call::SetLayout {
            ino: key.1,
            size: st.st_size as u64,
        });
        if let Some(errno) = s.refuse {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let mut layout =
            Layout::decode(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        if names_pool(&layout, &s.missing_pools) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // Lustre: a file that has a layout (its own, or the default one
        // its first write gave it) keeps it.
        let has_one = s.layouts.contains_key(&key) || !s.delayed.contains(&key) || st.st_size > 0;
        if s.ignore || (!is_dir && has_one) {
            return Ok(());
        }
        if let Some(f) = s.alter {
            f(&mut layout);
        }
        s.delayed.remove(&key);
        s.layouts.insert(key, layout.encode());
        Ok(())
    }

    fn entry_info(&self, dir: &Dir, name: &Name, layout: bool) -> io::Result<EntryInfo> {
        let st = dir.stat(name.as_bytes())?;
        let key = key_of(&st);
        let mut s = self.state();
        s.calls.push(Call::EntryInfo(name.to_string()));
        Ok(EntryInfo {
            fid: Some(s.fid(key)),
            layout: if layout {
                s.layouts.get(&key).cloned()
            } else {
                None
            },
        })
    }
}

/// Layouts to give a double's files, as `lfs setstripe` makes them.
pub mod layouts {
    use crate::layout::{
        Component, CompositeLayout, LCME_FL_INIT, LOV_PATTERN_F_RELEASED, LOV_PATTERN_MDT,
        LOV_PATTERN_RAID0, LUSTRE_EOF, Layout, OstId, OstObject, PlainLayout, PoolName,
        STRIPE_OFFSET_ANY,
    };

    /// A plain RAID0 layout (v3 when it names a pool) without objects.
    ///
    /// # Panics
    /// A pool name too long.
    pub fn striped(pattern: u32, count: u16, size: u32, pool: Option<&str>) -> PlainLayout {
        PlainLayout {
            pattern,
            stripe_size: size,
            stripe_count: count,
            stripe_offset: STRIPE_OFFSET_ANY,
            pool: pool.map(|p| PoolName::new(p).expect("a pool name")),
            ..PlainLayout::default()
        }
    }

    /// `lfs setstripe -c count -S size [-p pool]`.
    pub fn plain(count: u16, size: u32, pool: Option<&str>) -> Layout {
        Layout::Plain(striped(LOV_PATTERN_RAID0, count, size, pool))
    }

    /// `layout` as a file that has data reports it: one object per
    /// stripe, on OSTs `first`, `first + 1`, ... (every component).
    pub fn instantiated(layout: &Layout, first: u32) -> Layout {
        let fill = |p: &mut PlainLayout| {
            if p.pattern & LOV_PATTERN_MDT != 0 {
                return;
            }
            p.objects = (0..u32::from(p.stripe_count))
                .map(|i| OstObject {
                    oi: OstId {
                        id: 0x1000 + u64::from(i),
                        seq: 0,
                    },
                    ost_gen: 0,
                    ost_idx: first + i,
                })
                .collect();
            p.oi = OstId {
                id: 7,
                seq: 0x2_0000_0400,
            };
        };
        let mut l = layout.clone();
        match &mut l {
            Layout::Plain(p) => fill(p),
            Layout::Composite(c) => {
                c.layout_gen = 3;
                for comp in &mut c.components {
                    comp.flags |= LCME_FL_INIT;
                    fill(&mut comp.layout);
                }
            }
            Layout::Foreign(_) => {}
        }
        l
    }

    /// A composite layout of `(end, layout)` components, each starting
    /// where the one before ends (a PFL; the last should end at
    /// [`LUSTRE_EOF`]).
    pub fn progressive(parts: &[(u64, PlainLayout)]) -> Layout {
        let mut start = 0;
        let components = parts
            .iter()
            .zip(1u32..)
            .map(|((end, layout), id)| {
                let c = Component {
                    id,
                    start,
                    end: *end,
                    layout: layout.clone(),
                    ..Component::default()
                };
                start = *end;
                c
            })
            .collect();
        Layout::Composite(CompositeLayout {
            components,
            ..CompositeLayout::default()
        })
    }

    /// A three-component PFL: 1 stripe of 1 MiB to 4 MiB, 4 of 1 MiB to
    /// 64 MiB, 8 of 4 MiB to the end.
    pub fn pfl3() -> Layout {
        progressive(&[
            (4 << 20, striped(LOV_PATTERN_RAID0, 1, 1 << 20, None)),
            (64 << 20, striped(LOV_PATTERN_RAID0, 4, 1 << 20, None)),
            (LUSTRE_EOF, striped(LOV_PATTERN_RAID0, 8, 4 << 20, None)),
        ])
    }

    /// Data-on-MDT: the first 1 MiB on the MDT, the rest on 2 OSTs.
    pub fn dom() -> Layout {
        progressive(&[
            (1 << 20, striped(LOV_PATTERN_MDT, 0, 1 << 20, None)),
            (LUSTRE_EOF, striped(LOV_PATTERN_RAID0, 2, 1 << 20, None)),
        ])
    }

    /// `layout` with its data released to HSM (`lfs hsm_release`).
    pub fn released(layout: &Layout) -> Layout {
        let mut l = layout.clone();
        match &mut l {
            Layout::Plain(p) => {
                p.pattern |= LOV_PATTERN_F_RELEASED;
                p.objects.clear();
            }
            Layout::Composite(c) => {
                for comp in &mut c.components {
                    comp.layout.pattern |= LOV_PATTERN_F_RELEASED;
                    comp.layout.objects.clear();
                }
            }
            Layout::Foreign(_) => {}
        }
        l
    }
}
