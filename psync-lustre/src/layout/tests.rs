//! Fixtures written field by field from `lustre_user.h`'s layouts, not with
//! the encoder, so the encoder is checked against them too.

use super::*;
use proptest::prelude::*;

/// Little-endian byte builder for fixtures.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl Bytes {
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
}

/// A `lov_user_md_v1` header (32 bytes).
fn v1_header(pattern: u32, size: u32, count: u16, offset: u16) -> Bytes {
    Bytes::default()
        .u32(0x0BD1_0BD0)
        .u32(pattern)
        .u64(0x2_0000_0401) // lmm_oi: id
        .u64(0x2_0000_0400) // lmm_oi: seq
        .u32(size)
        .u16(count)
        .u16(offset)
}

/// A `lov_user_md_v3` header (48 bytes).
fn v3_header(pattern: u32, size: u32, count: u16, offset: u16, pool: &str) -> Bytes {
    let mut field = [0u8; 16];
    field[..pool.len()].copy_from_slice(pool.as_bytes());
    Bytes::default()
        .u32(0x0BD3_0BD0)
        .u32(pattern)
        .u64(0x2_0000_0401)
        .u64(0x2_0000_0400)
        .u32(size)
        .u16(count)
        .u16(offset)
        .raw(&field)
}

/// A `lov_user_ost_data_v1` (24 bytes).
fn object(b: Bytes, id: u64, idx: u32) -> Bytes {
    b.u64(id)
        .u64(0x1_0000_0000 + u64::from(idx))
        .u32(0)
        .u32(idx)
}

fn v1_fixture() -> Vec<u8> {
    let b = v1_header(LOV_PATTERN_RAID0, 1 << 20, 2, 3);
    object(object(b, 0x1001, 3), 0x2002, 4).0
}

/// A `lov_comp_md_v1` of the given (entry fields, blob) pairs, blobs packed
/// after the table.
fn composite(gen_: u32, mirror_count: u16, entries: &[(u32, u32, u64, u64, Vec<u8>)]) -> Vec<u8> {
    let table_end = 32 + 48 * entries.len();
    let total = table_end + entries.iter().map(|e| e.4.len()).sum::<usize>();
    let mut b = Bytes::default()
        .u32(0x0BD6_0BD0)
        .u32(total as u32)
        .u32(gen_)
        .u16(0) // lcm_flags
        .u16(entries.len() as u16)
        .u16(mirror_count)
        .raw(&[0; 6])
        .u64(0);
    let mut offset = table_end;
    for (id, flags, start, end, blob) in entries {
        b = b
            .u32(*id)
            .u32(*flags)
            .u64(*start)
            .u64(*end)
            .u32(offset as u32)
            .u32(blob.len() as u32)
            .u32(7) // lcme_layout_gen
            .u64(0) // lcme_timestamp
            .u32(0);
        offset += blob.len();
    }
    for e in entries {
        b = b.raw(&e.4);
    }
    b.0
}

fn pfl_fixture() -> Vec<u8> {
    let first = object(v1_header(LOV_PATTERN_RAID0, 1 << 20, 1, 0), 0x10, 0).0;
    let second = v3_header(LOV_PATTERN_RAID0, 4 << 20, 4, 0xFFFF, "flash").0;
    let third = v1_header(LOV_PATTERN_RAID0, 4 << 20, 0xFFFF, 0xFFFF).0;
    composite(
        5,
        0,
        &[
            (1, LCME_FL_INIT, 0, 1 << 30, first),
            (2, 0, 1 << 30, 16 << 30, second),
            (3, 0, 16 << 30, LUSTRE_EOF, third),
        ],
    )
}

fn dom_fixture() -> Vec<u8> {
    let mdt = v1_header(LOV_PATTERN_MDT, 1 << 20, 0, 0xFFFF).0;
    let osts = object(v1_header(LOV_PATTERN_RAID0, 1 << 20, 1, 2), 0x77, 2).0;
    composite(
        2,
        0,
        &[
            (1, LCME_FL_INIT, 0, 1 << 20, mdt),
            (2, LCME_FL_INIT, 1 << 20, LUSTRE_EOF, osts),
        ],
    )
}

/// Self-extending: a 64 MiB component then an extension component whose
/// stripe size holds the extension size in KiB.
fn sel_fixture() -> Vec<u8> {
    let head = object(v3_header(LOV_PATTERN_RAID0, 1 << 20, 1, 0, "ssd"), 0x5, 0).0;
    let ext = v3_header(LOV_PATTERN_RAID0, 64 << 10, 1, 0xFFFF, "ssd").0;
    composite(
        3,
        0,
        &[
            (1, LCME_FL_INIT, 0, 64 << 20, head),
            (2, LCME_FL_EXTENSION, 64 << 20, LUSTRE_EOF, ext),
        ],
    )
}

fn released_fixture() -> Vec<u8> {
    v1_header(LOV_PATTERN_RAID0 | LOV_PATTERN_F_RELEASED, 1 << 20, 2, 0).0
}

fn all_fixtures() -> Vec<Vec<u8>> {
    vec![
        v1_fixture(),
        object(v3_header(LOV_PATTERN_RAID0, 1 << 20, 1, 0, "archive"), 9, 5).0,
        pfl_fixture(),
        dom_fixture(),
        sel_fixture(),
        released_fixture(),
    ]
}

#[test]
fn v1_decodes_field_by_field() {
    let Layout::Plain(p) = Layout::decode(&v1_fixture()).unwrap() else {
        panic!("not plain")
    };
    assert_eq!(p.pattern, LOV_PATTERN_RAID0);
    assert_eq!(
        p.oi,
        OstId {
            id: 0x2_0000_0401,
            seq: 0x2_0000_0400
        }
    );
    assert_eq!(
        (p.stripe_size, p.stripe_count, p.stripe_offset),
        (1 << 20, 2, 3)
    );
    assert_eq!(p.pool, None);
    assert_eq!(
        p.objects,
        vec![
            OstObject {
                oi: OstId {
                    id: 0x1001,
                    seq: 0x1_0000_0003
                },
                ost_gen: 0,
                ost_idx: 3
            },
            OstObject {
                oi: OstId {
                    id: 0x2002,
                    seq: 0x1_0000_0004
                },
                ost_gen: 0,
                ost_idx: 4
            },
        ]
    );
    let l = Layout::Plain(p);
    assert!(!l.is_released() && !l.is_dom());
    assert_eq!(l.pool(), None);
}

#[test]
fn v3_keeps_its_pool() {
    let bytes = object(v3_header(LOV_PATTERN_RAID0, 1 << 20, 1, 0, "archive"), 9, 5).0;
    assert_eq!(bytes.len(), 48 + 24);
    let l = Layout::decode(&bytes).unwrap();
    assert_eq!(l.pool(), Some("archive"));
    let Layout::Plain(p) = &l else {
        panic!("not plain")
    };
    assert_eq!(p.objects.len(), 1);
    assert_eq!(p.objects[0].ost_idx, 5);
    // A v3 layout naming no pool stays v3 but has no pool.
    let empty = Layout::decode(&v3_header(LOV_PATTERN_RAID0, 1 << 20, 1, 0, "").0).unwrap();
    assert_eq!(empty.pool(), None);
    assert_eq!(empty.encode().len(), 48);
}

#[test]
fn pfl_has_three_components_with_their_extents() {
    let Layout::Composite(c) = Layout::decode(&pfl_fixture()).unwrap() else {
        panic!("not composite")
    };
    assert_eq!((c.layout_gen, c.mirror_count), (5, 0));
    let extents: Vec<_> = c
        .components
        .iter()
        .map(|c| (c.id, c.start, c.end))
        .collect();
    assert_eq!(
        extents,
        vec![
            (1, 0, 1 << 30),
            (2, 1 << 30, 16 << 30),
            (3, 16 << 30, LUSTRE_EOF)
        ]
    );
    assert_eq!(c.components[0].flags, LCME_FL_INIT);
    assert_eq!(c.components[0].layout.objects.len(), 1);
    assert_eq!(c.components[1].layout.pool(), Some("flash"));
    assert_eq!(c.components[1].layout.stripe_count, 4);
    assert_eq!(c.components[2].layout.stripe_count, 0xFFFF);
    assert_eq!(c.components[2].layout_gen, 7);
    let l = Layout::Composite(c);
    assert_eq!(l.pool(), Some("flash"));
    assert!(!l.is_dom() && !l.is_released());
}

#[test]
fn dom_is_the_first_component_on_the_mdt() {
    let l = Layout::decode(&dom_fixture()).unwrap();
    assert!(l.is_dom());
    assert!(!Layout::decode(&pfl_fixture()).unwrap().is_dom());
}

#[test]
fn self_extending_keeps_the_extension_flag_and_size() {
    let Layout::Composite(c) = Layout::decode(&sel_fixture()).unwrap() else {
        panic!("not composite")
    };
    assert_eq!(c.components[1].flags, LCME_FL_EXTENSION);
    assert_eq!(c.components[1].layout.stripe_size, 64 << 10);
    let Layout::Composite(t) = Layout::Composite(c).for_target(false) else {
        panic!("not composite")
    };
    // INIT is the source's state; EXTENSION is what makes it self-extending.
    assert_eq!(t.components[0].flags, 0);
    assert_eq!(t.components[1].flags, LCME_FL_EXTENSION);
}

#[test]
fn released_is_seen_and_cleared_for_the_target() {
    let l = Layout::decode(&released_fixture()).unwrap();
    assert!(l.is_released());
    assert!(!l.for_target(false).is_released());
    assert!(!Layout::decode(&v1_fixture()).unwrap().is_released());
}

#[test]
fn encode_gives_the_fixture_bytes_back() {
    for bytes in all_fixtures() {
        assert_eq!(Layout::decode(&bytes).unwrap().encode(), bytes);
    }
}

#[test]
fn for_target_drops_objects_and_resets_ost_indices() {
    let l = Layout::decode(&v1_fixture()).unwrap();
    let Layout::Plain(any) = l.for_target(false) else {
        panic!("not plain")
    };
    assert!(any.objects.is_empty());
    assert_eq!(any.stripe_offset, STRIPE_OFFSET_ANY);
    assert_eq!(any.oi, OstId::default());
    assert_eq!((any.stripe_size, any.stripe_count), (1 << 20, 2));
    let Layout::Plain(kept) = l.for_target(true) else {
        panic!("not plain")
    };
    assert_eq!(kept.stripe_offset, 3);
    assert!(kept.objects.is_empty());

    let Layout::Composite(c) = Layout::decode(&pfl_fixture()).unwrap().for_target(false) else {
        panic!("not composite")
    };
    assert_eq!(c.layout_gen, 0);
    for comp in &c.components {
        assert!(comp.layout.objects.is_empty());
        assert_eq!(comp.layout.stripe_offset, STRIPE_OFFSET_ANY);
        assert_eq!(comp.flags & LCME_FL_INIT, 0);
        assert_eq!(comp.layout_gen, 0);
    }
    assert_eq!(c.components[1].layout.pool(), Some("flash"));
    assert_eq!(c.components[2].end, LUSTRE_EOF);
    // What is set decodes as itself.
    let target = Layout::Composite(c);
    assert_eq!(Layout::decode(&target.encode()).unwrap(), target);
}

/// Every cut is an error, except a plain layout cut right after its header:
/// that is the same layout without objects, which is valid (and not the
/// original).
#[test]
fn every_truncation_is_an_error() {
    for bytes in all_fixtures() {
        let original = Layout::decode(&bytes).unwrap();
        for len in 0..bytes.len() {
            match Layout::decode(&bytes[..len]) {
                Err(_) => {}
                Ok(Layout::Plain(p)) if (len == 32 || len == 48) && p.objects.is_empty() => {
                    assert_ne!(Layout::Plain(p), original);
                }
                Ok(l) => panic!("{len} of {} bytes decoded as {l:?}", bytes.len()),
            }
        }
    }
}

#[test]
fn wrong_magic_and_garbage_are_errors() {
    let mut bytes = v1_fixture();
    bytes[0] ^= 0xFF;
    assert!(matches!(
        Layout::decode(&bytes),
        Err(LayoutError::BadMagic(_))
    ));
    // Big-endian bytes are not taken for a layout.
    let mut swapped = v1_fixture();
    swapped[..4].copy_from_slice(&0x0BD1_0BD0u32.to_be_bytes());
    assert_eq!(
        Layout::decode(&swapped),
        Err(LayoutError::BadMagic(0xD00B_D10B))
    );
    assert!(Layout::decode(&[0xA5; 200]).is_err());
    assert!(Layout::decode(b"not a layout at all, just text").is_err());
    // One object for two stripes.
    assert_eq!(
        Layout::decode(&v1_fixture()[..56]),
        Err(LayoutError::ObjectCount {
            objects: 1,
            stripe_count: 2
        })
    );
    // A partial object after the header.
    let mut extra = v1_fixture();
    extra.extend_from_slice(&[0; 5]);
    assert_eq!(Layout::decode(&extra), Err(LayoutError::PartialObject(53)));
    // A pool name filling its field with no NUL.
    let mut pool = v3_header(LOV_PATTERN_RAID0, 1 << 20, 1, 0, "").0;
    pool[32..48].fill(b'p');
    assert!(matches!(
        Layout::decode(&pool),
        Err(LayoutError::BadPool(_))
    ));
}

#[test]
fn composite_offsets_and_counts_are_checked() {
    let good = pfl_fixture();
    let entry = |i: usize| 32 + 48 * i;
    // The second entry's blob starts past the end.
    let mut past = good.clone();
    past[entry(1) + 24..entry(1) + 28].copy_from_slice(&(good.len() as u32).to_le_bytes());
    assert!(matches!(
        Layout::decode(&past),
        Err(LayoutError::EntryOutOfBounds { index: 1, .. })
    ));
    // Its size runs past the end.
    let mut long = good.clone();
    long[entry(1) + 28..entry(1) + 32].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        Layout::decode(&long),
        Err(LayoutError::EntryOutOfBounds { index: 1, .. })
    ));
    // Its offset points into the header.
    let mut inside = good.clone();
    inside[entry(0) + 24..entry(0) + 28].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        Layout::decode(&inside),
        Err(LayoutError::EntryOutOfBounds { index: 0, .. })
    ));
    // An entry count larger than the value holds.
    let mut count = good.clone();
    count[14..16].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(matches!(
        Layout::decode(&count),
        Err(LayoutError::Truncated { .. })
    ));
    // A recorded size that is not the value's.
    let mut size = good.clone();
    size[4..8].copy_from_slice(&(good.len() as u32 + 1).to_le_bytes());
    assert!(matches!(
        Layout::decode(&size),
        Err(LayoutError::SizeMismatch { .. })
    ));
    // A component that is itself composite.
    let nested = composite(1, 0, &[(1, 0, 0, LUSTRE_EOF, good.clone())]);
    assert!(matches!(
        Layout::decode(&nested),
        Err(LayoutError::NestedNotPlain { index: 0, .. })
    ));
}

#[test]
fn foreign_layouts_round_trip() {
    let bytes = Bytes::default()
        .u32(0x0BD7_0BD0)
        .u32(5)
        .u32(0xda05)
        .u32(0)
        .raw(b"hello")
        .0;
    let l = Layout::decode(&bytes).unwrap();
    assert_eq!(
        l,
        Layout::Foreign(ForeignLayout {
            foreign_type: 0xda05,
            flags: 0,
            value: b"hello".to_vec()
        })
    );
    assert_eq!(l.encode(), bytes);
    assert!(Layout::decode(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn pool_names_are_checked() {
    assert!(PoolName::new("fifteen_chars__").is_ok());
    assert!(PoolName::new("sixteen_chars___").is_err());
    assert!(PoolName::new("a\0b").is_err());
}

fn plain() -> impl Strategy<Value = PlainLayout> {
    let object = (any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>()).prop_map(
        |(id, seq, ost_gen, ost_idx)| OstObject {
            oi: OstId { id, seq },
            ost_gen,
            ost_idx,
        },
    );
    (
        any::<u32>(),
        any::<(u64, u64)>(),
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        proptest::option::of("[a-z0-9_]{0,15}"),
        proptest::collection::vec(object, 0..5),
    )
        .prop_map(
            |(pattern, (id, seq), stripe_size, stripe_count, stripe_offset, pool, objects)| {
                PlainLayout {
                    pattern,
                    oi: OstId { id, seq },
                    stripe_size,
                    // One object per stripe, or none.
                    stripe_count: if objects.is_empty() {
                        stripe_count
                    } else {
                        objects.len() as u16
                    },
                    stripe_offset,
                    pool: pool.map(|p| PoolName::new(&p).unwrap()),
                    objects,
                }
            },
        )
}

fn layout() -> impl Strategy<Value = Layout> {
    let component = (
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u64>(),
        plain(),
    )
        .prop_map(
            |(id, flags, start, end, layout_gen, timestamp, layout)| Component {
                id,
                flags,
                start,
                end,
                layout_gen,
                timestamp,
                layout,
            },
        );
    let composite = (
        any::<u32>(),
        any::<u16>(),
        any::<u16>(),
        proptest::collection::vec(component, 0..5),
    )
        .prop_map(
            |(layout_gen, flags, mirror_count, components)| CompositeLayout {
                layout_gen,
                flags,
                mirror_count,
                components,
            },
        );
    let foreign = (
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(foreign_type, flags, value)| ForeignLayout {
            foreign_type,
            flags,
            value,
        });
    prop_oneof![
        plain().prop_map(Layout::Plain),
        composite.prop_map(Layout::Composite),
        foreign.prop_map(Layout::Foreign),
    ]
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Layout::decode(&bytes);
    }

    /// Arbitrary bytes behind each known magic, so the decoders get past it.
    #[test]
    fn decode_never_panics_behind_a_magic(
        magic in prop_oneof![
            Just(LOV_USER_MAGIC_V1),
            Just(LOV_USER_MAGIC_V3),
            Just(LOV_USER_MAGIC_COMP_V1),
            Just(LOV_USER_MAGIC_FOREIGN),
        ],
        rest in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let mut bytes = magic.to_le_bytes().to_vec();
        bytes.extend_from_slice(&rest);
        let _ = Layout::decode(&bytes);
    }

    /// Corrupting one byte of a valid layout is an error or another layout,
    /// never a panic.
    #[test]
    fn decode_survives_a_corrupted_byte(l in layout(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = l.encode();
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = Layout::decode(&bytes);
    }

    #[test]
    fn decode_inverts_encode(l in layout()) {
        let bytes = l.encode();
        prop_assert_eq!(Layout::decode(&bytes).unwrap(), l.clone());
        prop_assert_eq!(Layout::decode(&bytes).unwrap().encode(), bytes);
        let target = l.for_target(false);
        prop_assert_eq!(Layout::decode(&target.encode()).unwrap(), target);
    }
}
