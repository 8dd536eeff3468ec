//! rsync's `%i` itemized-change codes (`YXcstpoguax`), so admins can diff
//! psync's `-i` output against rsync's.

use crate::entry::Kind;
use serde::{Deserialize, Serialize};

/// What changed about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Change {
    /// The entry's type.
    pub kind: Kind,
    /// Created (rsync prints `+++++++++`).
    pub new: bool,
    /// File data was transferred (`>`).
    pub transfer: bool,
    /// Made a hard link to an inode copied earlier (`h`).
    pub hardlink: bool,
    /// Content differs: a symlink target, a device number (`c`).
    pub checksum: bool,
    /// Size differs (`s`).
    pub size: bool,
    /// Modification time differs (`t`).
    pub time: bool,
    /// Permissions differ (`p`).
    pub perms: bool,
    /// Owner differs (`o`).
    pub owner: bool,
    /// Group differs (`g`).
    pub group: bool,
    /// ACL differs (`a`).
    pub acl: bool,
    /// Extended attributes differ (`x`).
    pub xattr: bool,
}

impl Change {
    /// A newly created entry.
    pub fn new_entry(kind: Kind) -> Change {
        Change {
            new: true,
            transfer: kind == Kind::File,
            ..Change::attrs_of(kind)
        }
    }

    /// Nothing changed yet; set fields as differences are found.
    pub fn attrs_of(kind: Kind) -> Change {
        Change {
            kind,
            new: false,
            transfer: false,
            hardlink: false,
            checksum: false,
            size: false,
            time: false,
            perms: false,
            owner: false,
            group: false,
            acl: false,
            xattr: false,
        }
    }

    /// True when any attribute differs.
    pub fn any(&self) -> bool {
        self.new
            || self.transfer
            || self.hardlink
            || self.checksum
            || self.size
            || self.time
            || self.perms
            || self.owner
            || self.group
            || self.acl
            || self.xattr
    }

    /// The 11-character code, e.g. `>f.st......`.
    pub fn code(&self) -> String {
        let y = if self.hardlink {
            'h'
        } else if self.transfer {
            '>'
        } else if self.new || self.checksum {
            'c'
        } else {
            '.'
        };
        let mut s = String::with_capacity(11);
        s.push(y);
        s.push(self.kind.itemize_char());
        if self.new {
            s.push_str("+++++++++");
            return s;
        }
        let flag = |on: bool, c: char| if on { c } else { '.' };
        s.push(flag(self.checksum, 'c'));
        s.push(flag(self.size, 's'));
        s.push(flag(self.time, 't'));
        s.push(flag(self.perms, 'p'));
        s.push(flag(self.owner, 'o'));
        s.push(flag(self.group, 'g'));
        s.push('.');
        s.push(flag(self.acl, 'a'));
        s.push(flag(self.xattr, 'x'));
        s
    }
}

/// rsync's code column for a deletion.
pub(crate) const DELETING: &str = "*deleting  ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_rsync() {
        assert_eq!(Change::new_entry(Kind::File).code(), ">f+++++++++");
        assert_eq!(Change::new_entry(Kind::Dir).code(), "cd+++++++++");
        assert_eq!(Change::new_entry(Kind::BlockDev).code(), "cD+++++++++");
        let mut c = Change::attrs_of(Kind::File);
        c.transfer = true;
        c.size = true;
        c.time = true;
        c.perms = true;
        assert_eq!(c.code(), ">f.stp.....");
        let mut l = Change::attrs_of(Kind::Symlink);
        l.time = true;
        assert_eq!(l.code(), ".L..t......");
        assert_eq!(DELETING.len(), 11);
        let h = Change {
            hardlink: true,
            transfer: false,
            ..Change::new_entry(Kind::File)
        };
        assert_eq!(h.code(), "hf+++++++++");
    }
}
