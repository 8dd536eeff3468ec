//! Lustre file layouts: the `lustre.lov` xattr as types.
//!
//! Lustre ignores a layout set on a file that already has one, and a file
//! gets one with its first write. So to keep a file's striping, a copier
//! reads the source's layout with `fgetxattr("lustre.lov")`, creates the
//! target without one (`O_LOV_DELAY_CREATE`) and sets it with
//! `fsetxattr("lustre.lov")` before any data. This module is the codec for
//! that value: [`Layout::decode`] the bytes read, [`Layout::for_target`] to
//! drop what belongs to the source file (its OST objects, where they were
//! placed), [`Layout::encode`] the bytes to set.
//!
//! The formats follow the public definitions in Lustre's `lustre_user.h`:
//! plain layouts (`lov_user_md_v1`, and `lov_user_md_v3` which adds an OST
//! pool name), composite ones (`lov_comp_md_v1`: a header, a table of
//! components, each pointing at a plain layout blob inside the same buffer;
//! progressive file layouts, Data-on-MDT, self-extending layouts and mirrors
//! are all this form) and foreign ones (`lov_foreign_md`, kept as opaque
//! bytes). Everything is little-endian and packed.
//!
//! Decoding never panics: every read is bounds-checked, every offset is
//! checked to lie inside the buffer and every count is bounded by the
//! bytes that are there, so a malformed value is a [`LayoutError`].

/// The xattr holding a file's (or a directory's default) layout.
pub const XATTR_LUSTRE_LOV: &str = "lustre.lov";

/// Magic of a plain layout without a pool name (`lov_user_md_v1`).
pub const LOV_USER_MAGIC_V1: u32 = 0x0BD1_0BD0;
/// Magic of a plain layout with a pool name (`lov_user_md_v3`).
pub const LOV_USER_MAGIC_V3: u32 = 0x0BD3_0BD0;
/// Magic of a composite layout (`lov_comp_md_v1`).
pub const LOV_USER_MAGIC_COMP_V1: u32 = 0x0BD6_0BD0;
/// Magic of a foreign layout (`lov_foreign_md`).
pub const LOV_USER_MAGIC_FOREIGN: u32 = 0x0BD7_0BD0;

/// Striping over OST objects.
pub const LOV_PATTERN_RAID0: u32 = 0x001;
/// Data on the MDT (the first component of a DoM layout).
pub const LOV_PATTERN_MDT: u32 = 0x100;
/// More than one stripe per OST.
pub const LOV_PATTERN_OVERSTRIPING: u32 = 0x200;
/// The layout has holes (objects lost); internal to the source.
pub const LOV_PATTERN_F_HOLE: u32 = 0x4000_0000;
/// HSM released: the data is in the archive, not on the OSTs.
pub const LOV_PATTERN_F_RELEASED: u32 = 0x8000_0000;

/// FLR: the component's data is stale.
pub const LCME_FL_STALE: u32 = 0x01;
/// FLR: the mirror preferred for reads.
pub const LCME_FL_PREF_RD: u32 = 0x02;
/// FLR: the mirror preferred for writes.
pub const LCME_FL_PREF_WR: u32 = 0x04;
/// The component has objects (is instantiated).
pub const LCME_FL_INIT: u32 = 0x10;
/// FLR: the mirror is not resynced.
pub const LCME_FL_NOSYNC: u32 = 0x20;
/// An extension component of a self-extending layout.
pub const LCME_FL_EXTENSION: u32 = 0x40;
/// The component flags one may give a new file; the others describe the
/// source file's state.
pub const LCME_USER_FLAGS: u32 =
    LCME_FL_PREF_RD | LCME_FL_PREF_WR | LCME_FL_NOSYNC | LCME_FL_EXTENSION;

/// A component extent's end meaning "to the end of the file".
pub const LUSTRE_EOF: u64 = u64::MAX;
/// A stripe offset (first OST index) meaning "any": the allocator chooses.
pub const STRIPE_OFFSET_ANY: u16 = 0xFFFF;
/// The longest pool name, in bytes (the field holds one more, for the NUL).
pub const POOL_NAME_MAX: usize = 15;

const POOL_FIELD: usize = POOL_NAME_MAX + 1;
/// `lov_user_md_v1` without its objects.
const V1_HEADER: usize = 32;
/// `lov_user_md_v3` without its objects.
const V3_HEADER: usize = V1_HEADER + POOL_FIELD;
/// `lov_user_ost_data_v1`.
const OBJECT_SIZE: usize = 24;
/// `lov_comp_md_v1` without its entries.
const COMP_HEADER: usize = 32;
/// `lov_comp_md_entry_v1`.
const ENTRY_SIZE: usize = 48;
/// `lov_foreign_md` without its value.
const FOREIGN_HEADER: usize = 16;

/// Why a `lustre.lov` value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// The buffer ends inside a field.
    #[error("layout truncated: {what} needs bytes {at}..{end}, the value has {len}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Where it starts.
        at: usize,
        /// Where it would end.
        end: usize,
        /// The length available.
        len: usize,
    },
    /// Not a layout magic this codec knows.
    #[error("unknown layout magic {0:#010x}")]
    BadMagic(u32),
    /// The bytes after a plain layout's header are not whole OST objects.
    #[error("{0} bytes after a plain layout header are not a whole number of OST objects")]
    PartialObject(usize),
    /// A plain layout has objects, but not one per stripe.
    #[error("{objects} OST objects for a stripe count of {stripe_count}")]
    ObjectCount {
        /// Objects present.
        objects: usize,
        /// `lmm_stripe_count`.
        stripe_count: u16,
    },
    /// A composite layout's recorded size is not the value's length.
    #[error("composite layout records {recorded} bytes, the value has {len}")]
    SizeMismatch {
        /// `lcm_size`.
        recorded: u32,
        /// The length available.
        len: usize,
    },
    /// A component's blob is not inside the value, after the entry table.
    #[error("component {index}: blob at {offset} of {size} bytes is outside {start}..{len}")]
    EntryOutOfBounds {
        /// The component's position in the table.
        index: usize,
        /// `lcme_offset`.
        offset: u32,
        /// `lcme_size`.
        size: u32,
        /// Where blobs may start (after the entry table).
        start: usize,
        /// The value's length.
        len: usize,
    },
    /// A component's blob is not a plain layout.
    #[error("component {index}: magic {magic:#010x} is not a plain layout")]
    NestedNotPlain {
        /// The component's position in the table.
        index: usize,
        /// The blob's magic.
        magic: u32,
    },
    /// A foreign layout's value length runs past the buffer (or stops short).
    #[error("foreign layout records {recorded} value bytes, the value has {len}")]
    ForeignLength {
        /// `lfm_length`.
        recorded: u32,
        /// Bytes after the header.
        len: usize,
    },
    /// A pool name that is longer than the field or is not UTF-8.
    #[error("invalid pool name: {0}")]
    BadPool(String),
}

/// An object identifier (`ost_id`): the MDT inode for a layout, the object
/// for a stripe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OstId {
    /// Object id.
    pub id: u64,
    /// Sequence.
    pub seq: u64,
}

/// One stripe's object (`lov_user_ost_data_v1`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct OstObject {
    /// The object.
    pub oi: OstId,
    /// Generation of the OST index.
    pub ost_gen: u32,
    /// The OST holding the object.
    pub ost_idx: u32,
}

/// An OST pool name: at most [`POOL_NAME_MAX`] bytes, no NUL.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PoolName(String);

impl PoolName {
    /// Checks the name fits the on-disk field.
    pub fn new(name: &str) -> Result<Self, LayoutError> {
        if name.len() > POOL_NAME_MAX {
            return Err(LayoutError::BadPool(format!(
                "{name:?} is longer than {POOL_NAME_MAX} bytes"
            )));
        }
        if name.contains('\0') {
            return Err(LayoutError::BadPool(format!("{name:?} contains a NUL")));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name ("" when a v3 layout names no pool).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A plain layout (`lov_user_md_v1` or `_v3`): stripes over OST objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PlainLayout {
    /// `LOV_PATTERN_*` with `LOV_PATTERN_F_*` flags.
    pub pattern: u32,
    /// The MDT inode the layout belongs to.
    pub oi: OstId,
    /// Bytes per stripe (for an extension component: the extension size in
    /// KiB).
    pub stripe_size: u32,
    /// Stripes; 0 means the file system default, 0xFFFF all OSTs.
    pub stripe_count: u16,
    /// The first OST when setting ([`STRIPE_OFFSET_ANY`]: any); a value read
    /// back may hold the layout generation instead.
    pub stripe_offset: u16,
    /// `None` for v1; `Some` for v3, where an empty name means no pool.
    pub pool: Option<PoolName>,
    /// The stripes' objects: none (not instantiated yet, released, or a
    /// layout to set) or one per stripe.
    pub objects: Vec<OstObject>,
}

/// One component of a composite layout (`lov_comp_md_entry_v1` and its
/// blob).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Component {
    /// Component id (bits 16..31: the mirror id).
    pub id: u32,
    /// `LCME_FL_*`.
    pub flags: u32,
    /// First byte of the file this component covers.
    pub start: u64,
    /// End of the extent, exclusive ([`LUSTRE_EOF`]: to the end).
    pub end: u64,
    /// Layout generation of the component.
    pub layout_gen: u32,
    /// Snapshot time, if any.
    pub timestamp: u64,
    /// The component's striping.
    pub layout: PlainLayout,
}

/// A composite layout (`lov_comp_md_v1`): PFL, DoM, self-extending, FLR.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CompositeLayout {
    /// Layout generation.
    pub layout_gen: u32,
    /// `LCM_FL_*` (FLR state).
    pub flags: u16,
    /// Mirrors minus one.
    pub mirror_count: u16,
    /// The components, in table order.
    pub components: Vec<Component>,
}

/// A foreign layout (`lov_foreign_md`), kept as opaque bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ForeignLayout {
    /// `LU_FOREIGN_TYPE_*`.
    pub foreign_type: u32,
    /// Type-specific flags.
    pub flags: u32,
    /// The value.
    pub value: Vec<u8>,
}

/// A file's layout, as in the `lustre.lov` xattr.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Layout {
    /// v1 or v3.
    Plain(PlainLayout),
    /// Components over extents of the file.
    Composite(CompositeLayout),
    /// Not Lustre's striping (for instance an HSM or symlink reference).
    Foreign(ForeignLayout),
}

/// Bounds-checked little-endian reads of one buffer.
struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl Reader<'_> {
    fn bytes(&self, at: usize, n: usize) -> Result<&[u8], LayoutError> {
        let end = at.checked_add(n);
        end.and_then(|end| self.buf.get(at..end))
            .ok_or(LayoutError::Truncated {
                what: self.what,
                at,
                end: end.unwrap_or(usize::MAX),
                len: self.buf.len(),
            })
    }

    fn array<const N: usize>(&self, at: usize) -> Result<[u8; N], LayoutError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(at, N)?);
        Ok(out)
    }

    fn u16(&self, at: usize) -> Result<u16, LayoutError> {
        self.array(at).map(u16::from_le_bytes)
    }

    fn u32(&self, at: usize) -> Result<u32, LayoutError> {
        self.array(at).map(u32::from_le_bytes)
    }

    fn u64(&self, at: usize) -> Result<u64, LayoutError> {
        self.array(at).map(u64::from_le_bytes)
    }

    fn ost_id(&self, at: usize) -> Result<OstId, LayoutError> {
        Ok(OstId {
            id: self.u64(at)?,
            seq: self.u64(at + 8)?,
        })
    }
}

fn magic(buf: &[u8], what: &'static str) -> Result<u32, LayoutError> {
    Reader { buf, what }.u32(0)
}

impl Layout {
    /// Decodes a `lustre.lov` value (exactly the bytes `fgetxattr` returned).
    pub fn decode(buf: &[u8]) -> Result<Layout, LayoutError> {
        match magic(buf, "layout magic")? {
            LOV_USER_MAGIC_V1 | LOV_USER_MAGIC_V3 => PlainLayout::decode(buf).map(Layout::Plain),
            LOV_USER_MAGIC_COMP_V1 => CompositeLayout::decode(buf).map(Layout::Composite),
            LOV_USER_MAGIC_FOREIGN => ForeignLayout::decode(buf).map(Layout::Foreign),
            other => Err(LayoutError::BadMagic(other)),
        }
    }

    /// The value to set with `fsetxattr("lustre.lov")`.
    ///
    /// # Panics
    /// If the layout would not fit the format's 32-bit sizes (4 GiB).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Layout::Plain(p) => p.encode_into(&mut out),
            Layout::Composite(c) => c.encode_into(&mut out),
            Layout::Foreign(f) => f.encode_into(&mut out),
        }
        out
    }

    /// Whether the file is HSM-released (any component, for a composite).
    pub fn is_released(&self) -> bool {
        match self {
            Layout::Plain(p) => p.is_released(),
            Layout::Composite(c) => c.components.iter().any(|c| c.layout.is_released()),
            Layout::Foreign(_) => false,
        }
    }

    /// Whether the file's first bytes live on the MDT (Data-on-MDT).
    pub fn is_dom(&self) -> bool {
        match self {
            Layout::Plain(p) => p.is_dom(),
            Layout::Composite(c) => c.components.first().is_some_and(|c| c.layout.is_dom()),
            Layout::Foreign(_) => false,
        }
    }

    /// The OST pool: a plain layout's, or the first one a composite's
    /// components name.
    pub fn pool(&self) -> Option<&str> {
        match self {
            Layout::Plain(p) => p.pool(),
            Layout::Composite(c) => c.components.iter().find_map(|c| c.layout.pool()),
            Layout::Foreign(_) => None,
        }
    }

    /// The layout to set on a new file: the source's striping without what
    /// belongs to the source file. Objects are dropped, object and inode ids,
    /// layout generations and the released and hole flags cleared (the copy
    /// has its data), and components lose the flags that describe state
    /// (instantiated, stale). The first OST becomes "any", so the target's
    /// allocator balances, unless `keep_ost_indices`, which keeps the first
    /// object's OST (or the offset given, for a layout without objects).
    /// Pools, patterns, stripe sizes and counts, extents, component ids and
    /// the mirror count (mirror ids live in the component ids) are kept.
    pub fn for_target(&self, keep_ost_indices: bool) -> Layout {
        match self {
            Layout::Plain(p) => Layout::Plain(p.for_target(keep_ost_indices)),
            Layout::Composite(c) => Layout::Composite(CompositeLayout {
                layout_gen: 0,
                flags: 0,
                mirror_count: c.mirror_count,
                components: c
                    .components
                    .iter()
                    .map(|comp| Component {
                        id: comp.id,
                        flags: comp.flags & LCME_USER_FLAGS,
                        start: comp.start,
                        end: comp.end,
                        layout_gen: 0,
                        timestamp: 0,
                        layout: comp.layout.for_target(keep_ost_indices),
                    })
                    .collect(),
            }),
            Layout::Foreign(f) => Layout::Foreign(f.clone()),
        }
    }
}

impl PlainLayout {
    /// Decodes a v1 or v3 blob; the bytes after the header must be whole
    /// objects, none or one per stripe.
    pub fn decode(buf: &[u8]) -> Result<PlainLayout, LayoutError> {
        let r = Reader {
            buf,
            what: "plain layout header",
        };
        let (header, pool) = match r.u32(0)? {
            LOV_USER_MAGIC_V1 => (V1_HEADER, None),
            LOV_USER_MAGIC_V3 => (
                V3_HEADER,
                Some(decode_pool(r.bytes(V1_HEADER, POOL_FIELD)?)?),
            ),
            other => return Err(LayoutError::BadMagic(other)),
        };
        let mut layout = PlainLayout {
            pattern: r.u32(4)?,
            oi: r.ost_id(8)?,
            stripe_size: r.u32(24)?,
            stripe_count: r.u16(28)?,
            stripe_offset: r.u16(30)?,
            pool,
            objects: Vec::new(),
        };
        let rest = buf.len().saturating_sub(header);
        if rest % OBJECT_SIZE != 0 {
            return Err(LayoutError::PartialObject(rest));
        }
        let r = Reader {
            buf,
            what: "OST object",
        };
        // The count comes from the bytes present, never from a field.
        layout.objects = (0..rest / OBJECT_SIZE)
            .map(|i| {
                let at = header + i * OBJECT_SIZE;
                Ok(OstObject {
                    oi: r.ost_id(at)?,
                    ost_gen: r.u32(at + 16)?,
                    ost_idx: r.u32(at + 20)?,
                })
            })
            .collect::<Result<_, LayoutError>>()?;
        // Lustre stores one object per stripe, or none (not instantiated,
        // released); anything else is a cut or corrupt value.
        let n = layout.objects.len();
        if n != 0 && n != usize::from(layout.stripe_count) {
            return Err(LayoutError::ObjectCount {
                objects: n,
                stripe_count: layout.stripe_count,
            });
        }
        Ok(layout)
    }

    fn encoded_len(&self) -> usize {
        let header = if self.pool.is_some() {
            V3_HEADER
        } else {
            V1_HEADER
        };
        header + self.objects.len() * OBJECT_SIZE
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        let magic = if self.pool.is_some() {
            LOV_USER_MAGIC_V3
        } else {
            LOV_USER_MAGIC_V1
        };
        out.extend_from_slice(&magic.to_le_bytes());
        out.extend_from_slice(&self.pattern.to_le_bytes());
        put_ost_id(out, self.oi);
        out.extend_from_slice(&self.stripe_size.to_le_bytes());
        out.extend_from_slice(&self.stripe_count.to_le_bytes());
        out.extend_from_slice(&self.stripe_offset.to_le_bytes());
        if let Some(pool) = &self.pool {
            let mut field = [0u8; POOL_FIELD];
            field[..pool.0.len()].copy_from_slice(pool.0.as_bytes());
            out.extend_from_slice(&field);
        }
        for o in &self.objects {
            put_ost_id(out, o.oi);
            out.extend_from_slice(&o.ost_gen.to_le_bytes());
            out.extend_from_slice(&o.ost_idx.to_le_bytes());
        }
    }

    /// Whether the released flag is set.
    pub fn is_released(&self) -> bool {
        self.pattern & LOV_PATTERN_F_RELEASED != 0
    }

    /// Whether the pattern is Data-on-MDT.
    pub fn is_dom(&self) -> bool {
        self.pattern & LOV_PATTERN_MDT != 0
    }

    /// The pool named, if any (a v3 layout may name none).
    pub fn pool(&self) -> Option<&str> {
        self.pool
            .as_ref()
            .map(PoolName::as_str)
            .filter(|p| !p.is_empty())
    }

    fn for_target(&self, keep_ost_indices: bool) -> PlainLayout {
        let stripe_offset = match (keep_ost_indices, self.objects.first()) {
            (false, _) => STRIPE_OFFSET_ANY,
            // An index that does not fit the field cannot be asked for.
            (true, Some(first)) => u16::try_from(first.ost_idx).unwrap_or(STRIPE_OFFSET_ANY),
            (true, None) => self.stripe_offset,
        };
        PlainLayout {
            pattern: self.pattern & !(LOV_PATTERN_F_RELEASED | LOV_PATTERN_F_HOLE),
            oi: OstId::default(),
            stripe_size: self.stripe_size,
            stripe_count: self.stripe_count,
            stripe_offset,
            pool: self.pool.clone(),
            objects: Vec::new(),
        }
    }
}

fn decode_pool(field: &[u8]) -> Result<PoolName, LayoutError> {
    let Some(nul) = field.iter().position(|&b| b == 0) else {
        return Err(LayoutError::BadPool("no NUL in the pool name field".into()));
    };
    let name = std::str::from_utf8(&field[..nul])
        .map_err(|_| LayoutError::BadPool(format!("{:?} is not UTF-8", &field[..nul])))?;
    PoolName::new(name)
}

fn put_ost_id(out: &mut Vec<u8>, oi: OstId) {
    out.extend_from_slice(&oi.id.to_le_bytes());
    out.extend_from_slice(&oi.seq.to_le_bytes());
}

fn u32_len(n: usize) -> u32 {
    u32::try_from(n).expect("a Lustre layout is under 4 GiB")
}

impl CompositeLayout {
    /// Decodes a `lov_comp_md_v1` value; every component's blob must lie in
    /// the value, after the entry table, and be a plain layout.
    pub fn decode(buf: &[u8]) -> Result<CompositeLayout, LayoutError> {
        let r = Reader {
            buf,
            what: "composite layout header",
        };
        let magic = r.u32(0)?;
        if magic != LOV_USER_MAGIC_COMP_V1 {
            return Err(LayoutError::BadMagic(magic));
        }
        let recorded = r.u32(4)?;
        // Checked before anything is read past the header.
        r.bytes(0, COMP_HEADER)?;
        if usize::try_from(recorded).ok() != Some(buf.len()) {
            return Err(LayoutError::SizeMismatch {
                recorded,
                len: buf.len(),
            });
        }
        let layout_gen = r.u32(8)?;
        let flags = r.u16(12)?;
        let count = usize::from(r.u16(14)?);
        let mirror_count = r.u16(16)?;
        let table_end = COMP_HEADER + count * ENTRY_SIZE;
        let r = Reader {
            buf,
            what: "component table",
        };
        // The whole table is in the value before any entry is decoded, so a
        // huge count costs nothing.
        r.bytes(COMP_HEADER, count * ENTRY_SIZE)?;
        let mut components = Vec::with_capacity(count);
        for index in 0..count {
            let at = COMP_HEADER + index * ENTRY_SIZE;
            let offset = r.u32(at + 24)?;
            let size = r.u32(at + 28)?;
            let blob = usize::try_from(offset)
                .ok()
                .filter(|&o| o >= table_end)
                .and_then(|o| Some(o..o.checked_add(usize::try_from(size).ok()?)?))
                .and_then(|range| buf.get(range))
                .ok_or(LayoutError::EntryOutOfBounds {
                    index,
                    offset,
                    size,
                    start: table_end,
                    len: buf.len(),
                })?;
            let layout = match magic_of_blob(blob)? {
                LOV_USER_MAGIC_V1 | LOV_USER_MAGIC_V3 => PlainLayout::decode(blob)?,
                magic => return Err(LayoutError::NestedNotPlain { index, magic }),
            };
            components.push(Component {
                id: r.u32(at)?,
                flags: r.u32(at + 4)?,
                start: r.u64(at + 8)?,
                end: r.u64(at + 16)?,
                layout_gen: r.u32(at + 32)?,
                timestamp: r.u64(at + 36)?,
                layout,
            });
        }
        Ok(CompositeLayout {
            layout_gen,
            flags,
            mirror_count,
            components,
        })
    }

    /// Blobs follow the entry table, in table order, as Lustre packs them.
    fn encode_into(&self, out: &mut Vec<u8>) {
        let table_end = COMP_HEADER + self.components.len() * ENTRY_SIZE;
        let total = table_end
            + self
                .components
                .iter()
                .map(|c| c.layout.encoded_len())
                .sum::<usize>();
        let count = u16::try_from(self.components.len()).expect("at most 65535 components");
        out.extend_from_slice(&LOV_USER_MAGIC_COMP_V1.to_le_bytes());
        out.extend_from_slice(&u32_len(total).to_le_bytes());
        out.extend_from_slice(&self.layout_gen.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&self.mirror_count.to_le_bytes());
        out.extend_from_slice(&[0; 14]); // padding
        let mut offset = table_end;
        for c in &self.components {
            let size = c.layout.encoded_len();
            out.extend_from_slice(&c.id.to_le_bytes());
            out.extend_from_slice(&c.flags.to_le_bytes());
            out.extend_from_slice(&c.start.to_le_bytes());
            out.extend_from_slice(&c.end.to_le_bytes());
            out.extend_from_slice(&u32_len(offset).to_le_bytes());
            out.extend_from_slice(&u32_len(size).to_le_bytes());
            out.extend_from_slice(&c.layout_gen.to_le_bytes());
            out.extend_from_slice(&c.timestamp.to_le_bytes());
            out.extend_from_slice(&[0; 4]); // padding
            offset += size;
        }
        for c in &self.components {
            c.layout.encode_into(out);
        }
    }
}

fn magic_of_blob(blob: &[u8]) -> Result<u32, LayoutError> {
    magic(blob, "component blob")
}

impl ForeignLayout {
    /// Decodes a `lov_foreign_md` value; its length must be the bytes after
    /// the header.
    pub fn decode(buf: &[u8]) -> Result<ForeignLayout, LayoutError> {
        let r = Reader {
            buf,
            what: "foreign layout header",
        };
        let magic = r.u32(0)?;
        if magic != LOV_USER_MAGIC_FOREIGN {
            return Err(LayoutError::BadMagic(magic));
        }
        let recorded = r.u32(4)?;
        let foreign_type = r.u32(8)?;
        let flags = r.u32(12)?;
        let value = &buf[FOREIGN_HEADER..];
        if usize::try_from(recorded).ok() != Some(value.len()) {
            return Err(LayoutError::ForeignLength {
                recorded,
                len: value.len(),
            });
        }
        Ok(ForeignLayout {
            foreign_type,
            flags,
            value: value.to_vec(),
        })
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&LOV_USER_MAGIC_FOREIGN.to_le_bytes());
        out.extend_from_slice(&u32_len(self.value.len()).to_le_bytes());
        out.extend_from_slice(&self.foreign_type.to_le_bytes());
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.extend_from_slice(&self.value);
    }
}

#[cfg(test)]
mod tests;
