//! Tasks: plain, serializable data with paths relative to the run's roots,
//! so any worker (a thread here, a process on another node) can run them.

use crate::entry::{Entry, Name, RelPath};
use crate::itemize::Change;
use crate::plan::Action;
use serde::{Deserialize, Serialize};

/// The names of a [`Task::DirPart`] list, each followed by a NUL byte:
/// `None` for an empty name or a list not ended by a NUL (the engine and
/// a broker's worker both check a task's lists with it).
pub fn split_names(list: &[u8]) -> Option<Vec<&[u8]>> {
    let Some((&0, list)) = list.split_last() else {
        return list.is_empty().then(Vec::new);
    };
    let names: Vec<&[u8]> = list.split(|&b| b == 0).collect();
    names.iter().all(|n| !n.is_empty()).then_some(names)
}

/// Version byte in front of every encoded task (postcard is not
/// self-describing; a worker refuses tasks of another version).
pub const TASK_ENCODING_VERSION: u8 = 9;

/// A task's identity within a run: what [`Task::id`] derives from the
/// task's kind, its directory, the entry (or entries) it is about, its
/// chunk index and attempt where it has them, and the run's id. Two
/// deliveries of one task have the same id, on any node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskId(pub u128);

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Task {
    /// Sync one directory: list both sides, plan, do the cheap actions,
    /// spawn child directories and batches of file copies, and defer its
    /// own [`Task::FinishDir`].
    Dir {
        /// The directory, relative to both roots.
        rel: RelPath,
        /// The source directory's entry (for its attributes at finish).
        src: Entry,
        /// The target directory as it was before the run touched it; `None`
        /// when this run just created it (nothing to list there).
        dst: Option<Entry>,
        /// The target directory's device and inode as the parent's task
        /// listed or made it (`None` for the root): the directory opened
        /// must be that one (a user may rename another one to its path).
        at: Option<(u64, u64)>,
    },
    /// One range of names of a wide directory (ADR 021): its [`Task::Dir`]
    /// read only the names of both sides and spawned one of these per
    /// range; each looks its names up on both sides, plans them, acts,
    /// and spawns what they need. The directory's finish, deferred by its
    /// `Dir` task, runs after every part and what they spawned.
    DirPart {
        /// The directory, relative to both roots.
        rel: RelPath,
        /// The source's names of the range when it was cut (on the target
        /// too or not), sorted, each followed by a NUL byte. With the
        /// directory, the part's id: a second delivery of the directory's
        /// task cuts the same parts from the same source names, whatever
        /// the first delivery's parts deleted meanwhile (ADR 021).
        names: Vec<u8>,
        /// The names of the range only the target had when it was cut
        /// (to delete), the same way. Looked up like `names`; part of the
        /// id only of a part without source names.
        only_dst: Vec<u8>,
        /// The target directory's device and inode as its `Dir` task saw
        /// it (`None` only in a dry run of a directory the run would
        /// make): opened again, it must be the same directory.
        at: Option<(u64, u64)>,
        /// As [`Task::Files`]' `fresh`.
        fresh: bool,
        /// Spawned by a second delivery of its directory's task (as
        /// [`Task::Files`]' `recheck`; not part of the id).
        #[serde(default)]
        recheck: bool,
    },
    /// Copy a batch of files of one directory.
    Files {
        /// The directory, relative to both roots.
        rel: RelPath,
        /// `Copy` actions of that directory.
        actions: Vec<Action>,
        /// The target directory was created by this run: until its finish
        /// it has no default ACL, no setgid bit and no other entries, so a
        /// new file in it starts with the process's owner and no xattrs.
        fresh: bool,
        /// The target directory's device and inode when its walk opened
        /// it: opened again, it must be the same directory (a user who
        /// renames another directory to its path gets nothing written).
        at: Option<(u64, u64)>,
        /// Spawned by a second delivery of its directory's task: a batch
        /// of the first delivery (another id, other names) may have put
        /// some of these files in place meanwhile; each target is looked
        /// at again before its copy (not part of the id).
        #[serde(default)]
        recheck: bool,
    },
    /// Prepare the copy of a file larger than the chunk size: its part file
    /// and journal (resuming an interrupted copy), one `Chunk` per missing
    /// chunk, and a deferred `FinishFile`.
    BigFile {
        /// The directory, relative to both roots.
        rel: RelPath,
        /// The source file as listed.
        src: Entry,
        /// What the target holds now.
        dst: Option<Entry>,
        /// What changed, for itemizing.
        change: Change,
        /// Attempts so far (a source that changes during the copy is retried).
        attempt: u32,
        /// The target directory's device and inode as the task that made
        /// this one saw it: opened again, it must be the same directory.
        at: Option<(u64, u64)>,
    },
    /// Copy one chunk of a large file into its part file.
    Chunk {
        /// The directory.
        rel: RelPath,
        /// The source file as listed when its copy started.
        src: Entry,
        /// Chunk number.
        index: u64,
        /// The target directory's device and inode as the task that made
        /// this one saw it: opened again, it must be the same directory.
        at: Option<(u64, u64)>,
    },
    /// Check a large file's chunks, apply its attributes and rename it into place.
    FinishFile {
        /// The directory.
        rel: RelPath,
        /// The source file as listed when its copy started.
        src: Entry,
        /// What the target held.
        dst: Option<Entry>,
        /// What changed.
        change: Change,
        /// Attempts so far.
        attempt: u32,
        /// Bytes of the chunks an earlier run copied (resumed from the
        /// journal): not counted as copied by this run.
        kept: u64,
        /// The target directory's device and inode as the task that made
        /// this one saw it: opened again, it must be the same directory.
        at: Option<(u64, u64)>,
    },
    /// The run's last phase: copies of hard-link groups recorded during the
    /// walk, then the directory's times again (the links changed them).
    Links {
        /// The directory.
        rel: RelPath,
        /// `Copy` actions of hard-linked files in that directory.
        actions: Vec<Action>,
        /// The target directory's device and inode when its walk opened
        /// it (see `Files`).
        at: Option<(u64, u64)>,
    },
    /// The run's last phase when the walk's hard-link records did not fit
    /// in memory: decide the groups whose records are in the link area's
    /// slots `from..to` (as many slots as fit a bounded size, one task at
    /// a time), spawn their `Links`, and defer this again for the slots
    /// left.
    LinkSlots {
        /// The target root, where the link area is.
        rel: RelPath,
        /// The first slot to decide.
        from: u32,
        /// The end of this task's range of slots.
        to: u32,
    },
    /// The run's end, after the last [`Task::Links`]: remove one bucket
    /// (or other entry) of the hard-link area.
    DropLinks {
        /// The target root, where the area is.
        rel: RelPath,
        /// The bucket's name in the area.
        bucket: Name,
    },
    /// Apply a directory's attributes once everything inside it is done.
    FinishDir {
        /// The directory.
        rel: RelPath,
        /// The source directory's entry.
        src: Entry,
        /// The target directory before the run, if it existed.
        dst: Option<Entry>,
        /// The run created, removed or renamed entries in it (its mtime moved).
        touched: bool,
        /// The target directory's device and inode as the task that made
        /// this one saw it: opened again, it must be the same directory.
        at: Option<(u64, u64)>,
        /// 0, but for the root's finish, which runs once more for each
        /// pass of the run's last phase (see `engine::links`): the pass
        /// it starts. Part of the task's id: each pass is another task.
        pass: u32,
    },
    /// `--checksum` on a file larger than the chunk size: one
    /// `CompareChunk` per chunk, then a deferred `FinishCompare`.
    CompareBig {
        /// The directory.
        rel: RelPath,
        /// The source file as listed.
        src: Entry,
        /// The target file as listed (same size).
        dst: Entry,
        /// What differs already (attributes), for itemizing.
        change: Change,
        /// The target directory's device and inode as the task that made
        /// this one saw it: opened again, it must be the same directory.
        at: Option<(u64, u64)>,
    },
    /// Hash one chunk of both sides; if they differ, say so for the finish
    /// (a marker file in the target directory, so any node can tell).
    CompareChunk {
        /// The directory.
        rel: RelPath,
        /// The source file as listed.
        src: Entry,
        /// Chunk number.
        index: u64,
        /// The target directory's device and inode as the task that made
        /// this one saw it: opened again, it must be the same directory.
        at: Option<(u64, u64)>,
    },
    /// All chunks compared: copy the file (chunked) if any differed, else
    /// only its attributes.
    FinishCompare {
        /// The directory.
        rel: RelPath,
        /// The source file as listed.
        src: Entry,
        /// The target file as listed.
        dst: Entry,
        /// What differs already.
        change: Change,
        /// The target directory's device and inode as the task that made
        /// this one saw it: opened again, it must be the same directory.
        at: Option<(u64, u64)>,
    },
}

impl Task {
    /// The directory the task works in.
    pub fn rel(&self) -> &RelPath {
        match self {
            Task::Dir { rel, .. }
            | Task::DirPart { rel, .. }
            | Task::Files { rel, .. }
            | Task::BigFile { rel, .. }
            | Task::Chunk { rel, .. }
            | Task::FinishFile { rel, .. }
            | Task::Links { rel, .. }
            | Task::DropLinks { rel, .. }
            | Task::LinkSlots { rel, .. }
            | Task::FinishDir { rel, .. }
            | Task::CompareBig { rel, .. }
            | Task::CompareChunk { rel, .. }
            | Task::FinishCompare { rel, .. } => rel,
        }
    }

    /// The task's deterministic id in the run `run_id`: xxh3-128 (stable
    /// across processes, nodes and versions of Rust) of the run id, the
    /// variant, the directory, and what names the task within it — the
    /// entry's name (`BigFile`, `Chunk`, `FinishFile`, `CompareBig`,
    /// `CompareChunk`, `FinishCompare`), the names of all its actions
    /// (`Files`, `Links`: a batch is the set of files it copies), the
    /// bucket (`DropLinks`), the range of slots (`LinkSlots`), the pass
    /// (`FinishDir`), the chunk index (`Chunk`, `CompareChunk`) and the
    /// attempt (`BigFile`, `FinishFile`: a retry after the source changed
    /// is another task). Everything else a task carries (the
    /// entries' metadata, `at`, `touched`, `kept`) is left out: it is what
    /// one delivery saw, and a second delivery of the same work may see
    /// it otherwise.
    ///
    /// What the id is for: a transport spawns a child only once per id
    /// among the children of one task (a task delivered twice spawns
    /// nothing twice), and acknowledges it by id. Every field is length-
    /// or tag-prefixed, so distinct tasks collide only by a 128-bit hash
    /// collision (about 2^-64 for 2^32 tasks of one parent). A collision
    /// between two children of one task would drop the second child as a
    /// redelivery of the first: its work is not done and not reported
    /// (the next run does it). Two tasks that share an id by construction
    /// (two batches of one directory with the same names, which one plan
    /// never makes) would be the same.
    pub fn id(&self, run_id: u64) -> TaskId {
        let mut h = twox_hash::XxHash3_128::new();
        let mut put = |bytes: &[u8]| {
            h.write(&(bytes.len() as u64).to_le_bytes());
            h.write(bytes);
        };
        put(b"psync-task-id-1");
        put(&run_id.to_le_bytes());
        let tag: &[u8] = match self {
            Task::Dir { .. } => b"dir",
            Task::DirPart { .. } => b"dirpart",
            Task::Files { .. } => b"files",
            Task::BigFile { .. } => b"bigfile",
            Task::Chunk { .. } => b"chunk",
            Task::FinishFile { .. } => b"finishfile",
            Task::Links { .. } => b"links",
            Task::LinkSlots { .. } => b"linkslots",
            Task::DropLinks { .. } => b"droplinks",
            Task::FinishDir { .. } => b"finishdir",
            Task::CompareBig { .. } => b"comparebig",
            Task::CompareChunk { .. } => b"comparechunk",
            Task::FinishCompare { .. } => b"finishcompare",
        };
        put(tag);
        put(self.rel().as_bytes());
        match self {
            Task::Dir { .. } => {}
            Task::DirPart {
                names, only_dst, ..
            } => {
                put(names);
                if names.is_empty() {
                    put(only_dst);
                }
            }
            Task::FinishDir { pass, .. } => put(&pass.to_le_bytes()),
            Task::Files { actions, .. } | Task::Links { actions, .. } => {
                put(&(actions.len() as u64).to_le_bytes());
                for a in actions {
                    put(a.name().as_bytes());
                }
            }
            Task::BigFile { src, attempt, .. } | Task::FinishFile { src, attempt, .. } => {
                put(src.name.as_bytes());
                put(&attempt.to_le_bytes());
            }
            Task::Chunk { src, index, .. } | Task::CompareChunk { src, index, .. } => {
                put(src.name.as_bytes());
                put(&index.to_le_bytes());
            }
            Task::CompareBig { src, .. } | Task::FinishCompare { src, .. } => {
                put(src.name.as_bytes());
            }
            Task::DropLinks { bucket, .. } => put(bucket.as_bytes()),
            Task::LinkSlots { from, to, .. } => {
                put(&from.to_le_bytes());
                put(&to.to_le_bytes());
            }
        }
        TaskId(h.finish_128())
    }

    /// Encodes with a version byte in front.
    ///
    /// # Errors
    /// Never for well-formed tasks; postcard's error otherwise.
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = vec![TASK_ENCODING_VERSION];
        out.extend(postcard::to_allocvec(self)?);
        Ok(out)
    }

    /// Decodes what [`Task::encode`] produced.
    ///
    /// # Errors
    /// A wrong version byte or malformed data.
    pub fn decode(bytes: &[u8]) -> Result<Task, postcard::Error> {
        match bytes.split_first() {
            Some((&TASK_ENCODING_VERSION, rest)) => postcard::from_bytes(rest),
            _ => Err(postcard::Error::DeserializeBadEncoding),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{Kind, Name, Time};

    #[test]
    fn encode_roundtrip_with_version() {
        let e = Entry {
            name: Name(b"\xffodd\nname".to_vec()),
            kind: Kind::Dir,
            size: 4096,
            mode: 0o755,
            uid: 1,
            gid: 2,
            mtime: Time::new(-5, 7),
            atime: Time::default(),
            ctime: Time::default(),
            nlink: 2,
            dev: 3,
            ino: 4,
            rdev: 0,
            blocks: 8,
            link: None,
            mount_root: false,
            flags: None,
            fs_data: Default::default(),
        };
        let rel = RelPath::from_bytes(b"a/\xff".to_vec());
        let t = Task::Dir {
            rel: rel.clone(),
            src: e.clone(),
            dst: None,
            at: Some((3, 4)),
        };
        let bytes = t.encode().unwrap();
        assert_eq!(bytes[0], TASK_ENCODING_VERSION);
        assert_eq!(Task::decode(&bytes).unwrap(), t);
        let mut bad = bytes.clone();
        bad[0] = 99;
        assert!(Task::decode(&bad).is_err());
        let change = Change {
            checksum: true,
            ..Change::new_entry(Kind::File)
        };
        for t in [
            Task::DirPart {
                rel: rel.clone(),
                names: b"a\0b\xff\0".to_vec(),
                only_dst: b"c\0".to_vec(),
                at: Some((1, 2)),
                fresh: true,
                recheck: false,
            },
            Task::CompareBig {
                rel: rel.clone(),
                src: e.clone(),
                dst: e.clone(),
                change,
                at: None,
            },
            Task::CompareChunk {
                rel: rel.clone(),
                src: e.clone(),
                index: 7,
                at: Some((1, 2)),
            },
            Task::FinishCompare {
                rel,
                src: e.clone(),
                dst: e,
                change,
                at: None,
            },
        ] {
            assert_eq!(Task::decode(&t.encode().unwrap()).unwrap(), t);
        }
    }

    #[test]
    fn ids_are_deterministic_and_tell_tasks_apart() {
        let e = |name: &[u8]| Entry {
            name: Name(name.to_vec()),
            kind: Kind::File,
            size: 1,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Time::default(),
            atime: Time::default(),
            ctime: Time::default(),
            nlink: 1,
            dev: 0,
            ino: 0,
            rdev: 0,
            blocks: 0,
            link: None,
            mount_root: false,
            flags: None,
            fs_data: Default::default(),
        };
        let rel = RelPath::from_bytes(b"a/b".to_vec());
        let chunk = |index, name: &[u8]| Task::Chunk {
            rel: rel.clone(),
            src: e(name),
            index,
            at: None,
        };
        // The same task, decoded anew and with other metadata: one id.
        let t = chunk(3, b"f");
        let again = Task::decode(&t.encode().unwrap()).unwrap();
        assert_eq!(t.id(7), again.id(7));
        let moved = Task::Chunk {
            rel: rel.clone(),
            src: Entry { size: 9, ..e(b"f") },
            index: 3,
            at: Some((1, 2)),
        };
        assert_eq!(t.id(7), moved.id(7));
        // Another run, chunk, name, directory or kind: another id.
        assert_ne!(t.id(7), t.id(8));
        assert_ne!(t.id(7), chunk(4, b"f").id(7));
        assert_ne!(t.id(7), chunk(3, b"g").id(7));
        let compare = Task::CompareChunk {
            rel: rel.clone(),
            src: e(b"f"),
            index: 3,
            at: None,
        };
        assert_ne!(t.id(7), compare.id(7));
        // Length-prefixed: "a/b" + "c" is not "a" + "b/c".
        let dir_and_name = |r: &[u8], n: &[u8]| Task::CompareBig {
            rel: RelPath::from_bytes(r.to_vec()),
            src: e(n),
            dst: e(n),
            change: Change::new_entry(Kind::File),
            at: None,
        };
        assert_ne!(
            dir_and_name(b"ab", b"c").id(1),
            dir_and_name(b"a", b"bc").id(1)
        );
        // A part of a wide directory is named by its source names; by the
        // target's only when it has none of the source's.
        let part = |names: &[u8], only_dst: &[u8], at| Task::DirPart {
            rel: rel.clone(),
            names: names.to_vec(),
            only_dst: only_dst.to_vec(),
            at,
            fresh: false,
            recheck: false,
        };
        assert_eq!(
            part(b"a\0b\0", b"", None).id(7),
            part(b"a\0b\0", b"", Some((1, 2))).id(7)
        );
        assert_ne!(
            part(b"a\0b\0", b"", None).id(7),
            part(b"a\0c\0", b"", None).id(7)
        );
        assert_eq!(
            part(b"a\0b\0", b"x\0", None).id(7),
            part(b"a\0b\0", b"", None).id(7)
        );
        assert_ne!(part(b"", b"x\0", None).id(7), part(b"", b"y\0", None).id(7));
        assert_ne!(part(b"x\0", b"", None).id(7), part(b"", b"x\0", None).id(7));
        // A stable value: the same on every node and every build.
        assert_eq!(t.id(7).to_string(), "f9e9d8f85811251fe19d341f8d09b1d9");
    }

    /// The root's finish defers itself once per pass of the last phase,
    /// and a `LinkSlots` lane defers itself once per range: a broker that
    /// acknowledges by id must tell them apart, and tell a second
    /// delivery of one of them from the next.
    #[test]
    fn passes_and_ranges_have_ids_of_their_own() {
        let mut d = Entry::new(Name::default(), Kind::Dir);
        (d.mode, d.nlink) = (0o755, 2);
        let finish = |pass, touched, dst: &Entry| Task::FinishDir {
            rel: RelPath::root(),
            src: dst.clone(),
            dst: Some(dst.clone()),
            touched,
            at: None,
            pass,
        };
        let ids: std::collections::HashSet<TaskId> =
            (0..50).map(|p| finish(p, false, &d).id(7)).collect();
        assert_eq!(ids.len(), 50);
        // What a delivery saw is not part of it.
        let first = finish(3, false, &d).id(7);
        d.mtime = Time::new(5, 0);
        assert_eq!(first, finish(3, true, &d).id(7));
        let slots = |from, to| Task::LinkSlots {
            rel: RelPath::root(),
            from,
            to,
        };
        let mut ranges = std::collections::HashSet::new();
        for lane in 0..4u32 {
            let to = (lane + 1) * 256;
            for from in lane * 256..to {
                assert!(ranges.insert(slots(from, to).id(7)), "{from}..{to}");
            }
        }
    }
}
