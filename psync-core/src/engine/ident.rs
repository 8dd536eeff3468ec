//! What the engines name a source file by in what they share: hard-link
//! records and a large file's part, journal and `-c` marker (ADR 014,
//! ADR 017 addendum). Local checks against `fstat` keep the file
//! system's id and the inode.

use crate::copy::Copier;
use crate::engine::Engine;
use crate::entry::{Entry, Name};
use std::hash::Hasher as _;

/// A source file's identity, the same whichever engine listed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum SourceId {
    /// The run's id of its file system (ADR 014) and its inode.
    Inode { dev: u64, ino: u64 },
    /// The run's id of its file system and the copier's id of the file
    /// in it ([`Copier::file_id`]: a Lustre FID, unique within one file
    /// system only: two Lustre file systems number their files alike).
    File { dev: u64, id: u128 },
}

/// The first byte hashed for a [`SourceId::File`]: with it, the input of
/// every hash of a file id is one byte longer than the input of the same
/// hash of an inode, so the two kinds never hash the same bytes.
const FILE_DOMAIN: u8 = 0x46;

impl SourceId {
    /// `e`'s identity: the copier's file id, else `(dev, ino)`.
    pub(crate) fn of(copier: &dyn Copier, e: &Entry) -> SourceId {
        copier
            .file_id(e)
            .map_or_else(|| SourceId::inode(e), |id| SourceId::file(e, id))
    }

    /// `e`'s identity by its file system and the copier's id `id` of it.
    pub(crate) fn file(e: &Entry, id: u128) -> SourceId {
        SourceId::File { dev: e.dev, id }
    }

    /// `e`'s identity by its file system and inode (no file id).
    pub(crate) fn inode(e: &Entry) -> SourceId {
        SourceId::Inode {
            dev: e.dev,
            ino: e.ino,
        }
    }

    /// The name of its hard-link group in the link area: `<dev>-<ino>`
    /// (as before file ids), or `f<dev><id>` (16 and 32 hex digits, no
    /// `-`, so never an inode's).
    pub(crate) fn key(self) -> Name {
        Name(self.text().into_bytes())
    }

    /// [`SourceId::key`] followed by `suffix` (the group's notes).
    pub(crate) fn note(self, suffix: &str) -> Name {
        Name(format!("{}{suffix}", self.text()).into_bytes())
    }

    fn text(self) -> String {
        match self {
            SourceId::Inode { dev, ino } => format!("{dev:x}-{ino:x}"),
            SourceId::File { dev, id } => format!("f{dev:016x}{id:032x}"),
        }
    }

    /// A 64-bit hash (a group's bucket, slot and filter bit).
    pub(crate) fn hash(self) -> u64 {
        match self {
            SourceId::Inode { dev, ino } => {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&dev.to_le_bytes());
                id[8..].copy_from_slice(&ino.to_le_bytes());
                twox_hash::XxHash3_64::oneshot(&id)
            }
            SourceId::File { dev, id: f } => {
                let mut id = [0u8; 25];
                id[0] = FILE_DOMAIN;
                id[1..9].copy_from_slice(&dev.to_le_bytes());
                id[9..].copy_from_slice(&f.to_le_bytes());
                twox_hash::XxHash3_64::oneshot(&id)
            }
        }
    }

    /// Feeds the identity to a hash of a source version (`part_key`).
    pub(crate) fn write(self, h: &mut impl std::hash::Hasher) {
        match self {
            SourceId::Inode { dev, ino } => {
                h.write(&dev.to_le_bytes());
                h.write(&ino.to_le_bytes());
            }
            SourceId::File { dev, id } => {
                h.write(&[FILE_DOMAIN]);
                h.write(&dev.to_le_bytes());
                h.write(&id.to_le_bytes());
            }
        }
    }
}

/// The key of a source version (its identity, size and mtime): a changed
/// file gets another part file. The one function behind every name of a
/// part, journal (and its header) and `-c` marker, so that one engine's
/// part is found by another and by the next run.
pub(crate) fn part_key(id: SourceId, e: &Entry) -> u64 {
    let mut h = twox_hash::XxHash3_64::new();
    id.write(&mut h);
    for v in [e.size, e.mtime.sec as u64, u64::from(e.mtime.nsec)] {
        h.write(&v.to_le_bytes());
    }
    h.finish()
}

impl Engine {
    /// `e`'s identity as this run's copier sees it (see [`SourceId`]).
    pub(crate) fn source_id(&self, e: &Entry) -> SourceId {
        SourceId::of(&*self.copier, e)
    }

    /// The key of `e`'s part file, journal and marker.
    pub(crate) fn part_key(&self, e: &Entry) -> u64 {
        part_key(self.source_id(e), e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::bigfile::{part_name, part_name_key};
    use crate::entry::{Kind, Time};

    fn entry(dev: u64, ino: u64) -> Entry {
        let mut e = Entry::from_stat(Name::from("f"), &rustix::fs::stat(".").unwrap());
        e.kind = Kind::File;
        (e.dev, e.ino, e.size, e.mtime) = (dev, ino, 3, Time::new(4, 5));
        e
    }

    /// Without a file id the keys are those of earlier versions: an
    /// earlier run's parts and a group's `<dev>-<ino>` are found again.
    #[test]
    fn inode_keys_are_unchanged() {
        let e = entry(1, 2);
        let id = SourceId::inode(&e);
        assert_eq!(part_key(id, &e), 0xa918_8c14_90e6_95af);
        assert_eq!(id.key(), Name::from("1-2"));
        assert_eq!(id.note(".names"), Name::from("1-2.names"));
        let mut old = [0u8; 16];
        old[..8].copy_from_slice(&1u64.to_le_bytes());
        old[8..].copy_from_slice(&2u64.to_le_bytes());
        assert_eq!(id.hash(), twox_hash::XxHash3_64::oneshot(&old));
    }

    /// One file id on one file system, whatever inode each node saw: one
    /// key, one part; another file id, other keys.
    #[test]
    fn a_file_id_names_alike_whatever_the_inode() {
        let fid = 0x2_0000_0401_u128 << 64 | 0x1234 << 32;
        let (a, b) = (entry(1, 2), entry(1, 0x7fff_0001));
        let id = SourceId::file(&a, fid);
        assert_eq!(id, SourceId::file(&b, fid));
        assert_eq!(part_key(id, &a), part_key(id, &b));
        assert_eq!(
            id.key(),
            Name::from("f000000000000000100000002000004010000123400000000")
        );
        let other = SourceId::file(&a, fid + 1);
        assert_ne!(other.key(), id.key());
        assert_ne!(other.hash(), id.hash());
        assert_ne!(part_key(other, &a), part_key(id, &a));
        // A changed version of the file: another part.
        let mut c = a.clone();
        c.mtime.nsec += 1;
        assert_ne!(part_key(id, &c), part_key(id, &a));
        // Part names still parse.
        let name = part_name(part_key(id, &a));
        assert_eq!(part_name_key(&name), Some(part_key(id, &a)));
    }

    /// A file id never names what an inode names: the group keys differ
    /// in form (`f…` has no `-`), the hashes in their input's length.
    #[test]
    fn file_ids_and_inodes_never_share_a_key() {
        let e = entry(0, 0);
        let inode = SourceId::Inode { dev: 0, ino: 0 };
        let file = SourceId::file(&e, 0);
        assert_ne!(inode.key(), file.key());
        assert!(!file.key().as_bytes().contains(&b'-'));
        assert_ne!(inode.hash(), file.hash());
        assert_ne!(part_key(inode, &e), part_key(file, &e));
        // The same 16 bytes as an inode's (dev, ino) and as a file id.
        let (dev, ino) = (0x1111_u64, 0x2222_u64);
        let same = SourceId::File {
            dev: 0,
            id: u128::from(ino) << 64 | u128::from(dev),
        };
        assert_ne!(SourceId::Inode { dev, ino }.hash(), same.hash());
    }

    /// One FID on two file systems (two Lustre file systems in the
    /// source tree number their files alike): two files, two keys.
    #[test]
    fn one_file_id_on_two_file_systems_names_two_files() {
        let fid = 0x2_0000_0401_u128 << 64 | 1 << 32;
        let (a, b) = (entry(1, 2), entry(9, 2));
        let (x, y) = (SourceId::file(&a, fid), SourceId::file(&b, fid));
        assert_ne!(x, y);
        assert_ne!(x.key(), y.key());
        assert_ne!(x.hash(), y.hash());
        assert_ne!(x.note(".names"), y.note(".names"));
        assert_ne!(part_key(x, &a), part_key(y, &b));
    }
}
