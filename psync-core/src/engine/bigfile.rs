//! Large files: copied in chunks by any worker, into a part file named by
//! the source version, with a journal of finished chunks so a killed run
//! resumes mid-file (ADR 003).

use crate::copy::{DataJob, Strategy};
use crate::engine::{CopyFail, Engine, Filled, read_back, source_changed};
use crate::entry::{Entry, Kind, Name, RelPath};
use crate::error::Op;
use crate::fs::{Dir, Untrusted};
use crate::itemize::Change;
use crate::task::Task;
use crate::transport::TaskContext;
use crate::verify::hash_segments;
use crate::xattr::Node;
use std::fs::File;
use std::io;
use std::num::NonZeroU64;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;

/// Prefix of part files and their journals.
pub const PART_PREFIX: &str = ".psync-part.";
/// Version 2 added the source's ctime to the header. The run that made
/// or took over a journal (`RUN_AT`) came later, in bytes that version 2
/// left zero: a journal without it is an earlier run's, as it should be.
const JOURNAL_MAGIC: &[u8; 8] = b"PSYNCJR2";
/// Where the header keeps the id of the run that made or took over the
/// journal; the bytes before it say what the journal is of.
const RUN_AT: std::ops::Range<usize> = 48..56;
const RECORD_MAGIC: &[u8; 8] = b"PSYNCCHK";
const HEADER: u64 = 64;
const RECORD: u64 = 32;

/// `.psync-part.<key>`, `key` from [`Engine::part_key`].
pub fn part_name(key: u64) -> Name {
    Name(format!("{PART_PREFIX}{key:016x}").into_bytes())
}

fn journal_name(key: u64) -> Name {
    Name(format!("{PART_PREFIX}{key:016x}.journal").into_bytes())
}

/// What `name` (a part file's or journal's) is, for messages.
fn what_of(name: &Name) -> &'static str {
    if name.as_bytes().ends_with(b".journal") {
        "journal"
    } else {
        "part file"
    }
}

/// What a warning says of a part file or journal psync did not make.
fn untrusted_message(name: &Name, found: &Untrusted) -> String {
    format!("{} not created by psync ({found})", what_of(name))
}

/// Why a part file or journal `name` could not be created: the name is
/// taken by an entry psync did not make, which it could not remove or
/// which was put there again after it removed it.
fn taken(name: &Name) -> io::Error {
    io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "the name of its {} {name} is held by an entry not created by psync (which \
             could not be removed, or was put back): nothing written into it; not copied",
            what_of(name)
        ),
    )
}

/// The message of a planted part file or journal `name` in `dir`: one of
/// another owner (psync's own parts and journals are the process's). For
/// stale parts removed without being opened.
pub(crate) fn planted(dir: &Dir, name: &Name) -> Option<String> {
    part_name_key(name)?;
    let st = dir.stat(name.as_bytes()).ok()?;
    let found = Untrusted::of(&st)?;
    (found.uid != rustix::process::geteuid().as_raw()).then(|| untrusted_message(name, &found))
}

/// Removes the part file and journal of key `key` (nothing to resume
/// from).
pub(crate) fn discard_part(dir: &Dir, key: u64) {
    let _ = dir.unlink(part_name(key).as_bytes());
    let _ = dir.unlink(journal_name(key).as_bytes());
}

/// The key inside a part or journal name, if `name` is one.
pub fn part_name_key(name: &Name) -> Option<u64> {
    let rest = name.as_bytes().strip_prefix(PART_PREFIX.as_bytes())?;
    let (key, tail) = rest.split_at_checked(16)?;
    if !(tail.is_empty() || tail == b".journal") {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(key).ok()?, 16).ok()
}

/// A large file's copy, set up: the source as it is now, the chunks still
/// to copy (or to check), and the bytes of the chunks resumed from an
/// earlier run.
struct Prepared {
    cur: Entry,
    missing: Vec<u64>,
    kept: u64,
}

/// What a large file's finish needs besides its paths.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finish {
    /// What changed, for itemizing.
    pub(crate) change: Change,
    /// Attempts so far.
    pub(crate) attempt: u32,
    /// Bytes of chunks resumed from an earlier run (not copied by this one).
    pub(crate) kept: u64,
    /// The target directory's identity (see `Task::BigFile`).
    pub(crate) at: Option<(u64, u64)>,
}

/// Queues one task per chunk, last first: the spawning thread pops them
/// from the front of the file (LIFO), thieves take from the back.
pub(crate) fn spawn_chunks(
    cx: &mut dyn TaskContext,
    indices: impl DoubleEndedIterator<Item = u64>,
    task: impl Fn(u64) -> Task,
) {
    for index in indices.rev() {
        cx.spawn(task(index));
    }
}

/// One chunk's record in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    /// xxh3-128 of the chunk's bytes in the part (holes read as zeros),
    /// when it was verified; `None` with `--no-verify` and for a clone of
    /// the whole file, whose chunks a resume copies again.
    hash: Option<u128>,
    /// Recorded by an earlier run (marked so when this run took the
    /// journal over): checked before it is kept. A record without it is
    /// this run's, a chunk done (by an earlier delivery of its task).
    earlier: bool,
    strategy: Strategy,
    /// Bytes of data the chunk's copy wrote (its holes not included); 0 in
    /// records of versions that did not keep it.
    bytes: u64,
}

/// Where a record keeps its `bytes`: 6 bytes, little-endian (a chunk is
/// at most 1 TiB, 2^40).
const BYTES_AT: std::ops::Range<usize> = 26..32;
/// The bit of a record's flags byte (whose bit 0 says a hash is there)
/// for `Record::earlier`.
const EARLIER: u8 = 2;

fn strategy_byte(s: Strategy) -> u8 {
    match s {
        Strategy::Reflink => 1,
        Strategy::CopyRange => 2,
        Strategy::Sendfile => 3,
        Strategy::ReadWrite => 4,
        Strategy::Empty => 5,
        Strategy::Direct => 6,
        Strategy::Mapped => 7,
    }
}

fn strategy_of(b: u8) -> Strategy {
    match b {
        1 => Strategy::Reflink,
        3 => Strategy::Sendfile,
        4 => Strategy::ReadWrite,
        5 => Strategy::Empty,
        6 => Strategy::Direct,
        7 => Strategy::Mapped,
        _ => Strategy::CopyRange,
    }
}

/// The journal beside a part file: a header, then one fixed slot per
/// chunk that only that chunk's task writes.
struct Journal {
    file: File,
}

impl Journal {
    /// The source version the journal belongs to. The ctime is here
    /// (not in the part's key, so parts keep their names) because an
    /// in-place rewrite can restore the mtime, never the ctime.
    fn header(chunk: u64, key: u64, e: &Entry) -> [u8; HEADER as usize] {
        let mut h = [0u8; HEADER as usize];
        h[..8].copy_from_slice(JOURNAL_MAGIC);
        h[8..16].copy_from_slice(&chunk.to_le_bytes());
        h[16..24].copy_from_slice(&e.size.to_le_bytes());
        h[24..32].copy_from_slice(&key.to_le_bytes());
        h[32..40].copy_from_slice(&e.ctime.sec.to_le_bytes());
        h[40..44].copy_from_slice(&e.ctime.nsec.to_le_bytes());
        h
    }

    /// The journal `f` (opened with [`Engine::open_own`]) when it is of
    /// this chunk size and source version, with the id of the run that
    /// made or took it over.
    fn matching(f: File, chunk: u64, key: u64, e: &Entry) -> Option<(Journal, u64)> {
        let mut h = [0u8; HEADER as usize];
        f.read_exact_at(&mut h, 0).ok()?;
        let run = u64::from_le_bytes(h[RUN_AT].try_into().ok()?);
        h[RUN_AT].fill(0);
        (h == Self::header(chunk, key, e)).then_some((Journal { file: f }, run))
    }

    /// A new journal for `e` (`O_EXCL`, mode 0600) of the run `run`,
    /// replacing one of ours.
    fn create(dir: &Dir, chunk: u64, key: u64, e: &Entry, run: u64) -> io::Result<Journal> {
        let name = journal_name(key);
        let _ = dir.unlink(name.as_bytes());
        let f = dir
            .create_excl(name.as_bytes())
            .map_err(|err| match err.kind() {
                io::ErrorKind::AlreadyExists => taken(&name),
                _ => err,
            })?;
        let mut h = Self::header(chunk, key, e);
        h[RUN_AT].copy_from_slice(&run.to_le_bytes());
        f.write_all_at(&h, 0)?;
        Ok(Journal { file: f })
    }

    /// Takes over an earlier run's journal of `chunks` chunks for the run
    /// `run`: its records are marked as the earlier run's (each chunk
    /// checks its own before keeping it), then the header names `run`.
    fn take_over(&self, chunks: u64, run: u64) -> io::Result<()> {
        // 2,048 records at a time: a 1 TiB file in 1 MiB chunks has a
        // million.
        const PIECE: u64 = 2048 * RECORD;
        let end = HEADER + chunks * RECORD;
        let mut buf = vec![0u8; PIECE.min(chunks * RECORD) as usize];
        let mut at = HEADER;
        while at < end {
            let want = &mut buf[..PIECE.min(end - at) as usize];
            // A journal shorter than its table lacks the last records.
            let mut got = 0;
            while got < want.len() {
                match self.file.read_at(&mut want[got..], at + got as u64)? {
                    0 => break,
                    n => got += n,
                }
            }
            let got = got - got % RECORD as usize;
            for r in want[..got].chunks_exact_mut(RECORD as usize) {
                if &r[..8] == RECORD_MAGIC {
                    r[24] |= EARLIER;
                }
            }
            self.file.write_all_at(&want[..got], at)?;
            if got < want.len() {
                break;
            }
            at += got as u64;
        }
        self.file
            .write_all_at(&run.to_le_bytes(), RUN_AT.start as u64)
    }

    fn read(&self, index: u64) -> Option<Record> {
        let mut r = [0u8; RECORD as usize];
        self.file
            .read_exact_at(&mut r, HEADER + index * RECORD)
            .ok()?;
        if &r[..8] != RECORD_MAGIC {
            return None;
        }
        let hash =
            (r[24] & 1 == 1).then(|| u128::from_le_bytes(r[8..24].try_into().unwrap_or_default()));
        let earlier = r[24] & EARLIER != 0;
        let mut bytes = [0u8; 8];
        bytes[..BYTES_AT.len()].copy_from_slice(&r[BYTES_AT]);
        Some(Record {
            hash,
            earlier,
            strategy: strategy_of(r[25]),
            bytes: u64::from_le_bytes(bytes),
        })
    }

    fn write(&self, index: u64, rec: Record) -> io::Result<()> {
        let mut r = [0u8; RECORD as usize];
        r[..8].copy_from_slice(RECORD_MAGIC);
        r[8..24].copy_from_slice(&rec.hash.unwrap_or(0).to_le_bytes());
        r[24] = u8::from(rec.hash.is_some()) | if rec.earlier { EARLIER } else { 0 };
        r[25] = strategy_byte(rec.strategy);
        r[BYTES_AT].copy_from_slice(&rec.bytes.to_le_bytes()[..BYTES_AT.len()]);
        self.file.write_all_at(&r, HEADER + index * RECORD)
    }
}

impl Engine {
    /// True when `e` is copied in chunks.
    pub(crate) fn is_big(&self, e: &Entry) -> bool {
        e.kind == Kind::File && e.size > self.chunk_of(e)
    }

    /// The chunk size of the large file `e`: the run's, or what the
    /// copier makes of it for this file (a layout's stripes), rounded
    /// down to a multiple of 4 KiB (at least 4 KiB).
    pub(crate) fn chunk_of(&self, e: &Entry) -> u64 {
        let c = self.copier.chunk_size(e, self.chunk_size);
        if c == self.chunk_size {
            return c;
        }
        (c & !4095).max(4096)
    }

    pub(crate) fn chunks(&self, e: &Entry) -> u64 {
        e.size.div_ceil(self.chunk_of(e))
    }

    pub(crate) fn chunk_range(&self, e: &Entry, index: u64) -> (u64, u64) {
        let chunk = self.chunk_of(e);
        let start = index * chunk;
        (start, chunk.min(e.size - start))
    }

    /// Sets up the part file and journal, resuming a matching one, and
    /// queues the missing chunks.
    pub(crate) fn big_file(
        &self,
        rel: &RelPath,
        listed: &Entry,
        dst: Option<Entry>,
        (change, attempt, at): (Change, u32, Option<(u64, u64)>),
        cx: &mut dyn TaskContext,
    ) {
        let path = rel.join(&listed.name);
        match self.prepare_big(rel, listed, at) {
            Ok(Prepared { cur, missing, kept }) => {
                self.part_started(rel, &cur);
                spawn_chunks(cx, missing.into_iter(), |index| Task::Chunk {
                    rel: rel.clone(),
                    src: cur.clone(),
                    index,
                    at,
                });
                self.defer(
                    cx,
                    Task::FinishFile {
                        rel: rel.clone(),
                        src: cur,
                        dst,
                        change,
                        attempt,
                        kept,
                        at,
                    },
                );
            }
            Err(CopyFail::Vanished) => {
                self.count(|c| c.done += 1);
                self.warn(&path, false, Op::Open, "vanished before it could be copied");
            }
            Err(CopyFail::Interrupted) => {}
            Err(CopyFail::Failed { on_target, op, err }) => self.fail(&path, on_target, op, err),
        }
    }

    /// Returns the source as it is now and the chunks still to copy.
    fn prepare_big(
        &self,
        rel: &RelPath,
        listed: &Entry,
        at: Option<(u64, u64)>,
    ) -> Result<Prepared, CopyFail> {
        let (src_dir, dst_dir) = self.open_pair(rel, at)?;
        let src = src_dir
            .open_read(listed.name.as_bytes())
            .map_err(|e| CopyFail::source(Op::Open, e))?;
        let st = rustix::fs::fstat(&src).map_err(|e| CopyFail::source(Op::Stat, e.into()))?;
        let mut cur = Entry::from_stat(listed.name.clone(), &st);
        // Its part's name comes from it: the run's id of its file system.
        cur.dev = self.fs.of(cur.dev, src.as_fd());
        // What the backend keeps with it is not in its status.
        cur.fs_data = listed.fs_data.clone();
        if cur.kind != Kind::File {
            return Err(CopyFail::source(
                Op::Open,
                io::Error::other("no longer a regular file"),
            ));
        }
        match self.found_part(&dst_dir, rel, &cur) {
            // This run's own: an earlier delivery of this task made it (a
            // broker delivers at least once), and its chunks may be
            // writing into it. Queued again: the chunks not recorded yet
            // (those the earlier delivery queued are not queued twice).
            Some((journal, run)) if run == self.run_id => {
                let missing = (0..self.chunks(&cur))
                    .filter(|&i| journal.read(i).is_none_or(|r| r.earlier))
                    .collect();
                return Ok(Prepared {
                    cur,
                    missing,
                    kept: 0,
                });
            }
            // An earlier run's, to resume: every chunk is queued, and each
            // checks its own record against the source and the part as
            // they are now (`resumed_chunk_ok`), on any worker.
            Some((journal, _)) if cur.size >= self.resume_threshold => {
                journal
                    .take_over(self.chunks(&cur), self.run_id)
                    .map_err(|e| CopyFail::target_io(Op::CopyData, e))?;
                let missing = (0..self.chunks(&cur)).collect();
                return Ok(Prepared {
                    cur,
                    missing,
                    kept: 0,
                });
            }
            _ => {}
        }
        discard_part(&dst_dir, self.part_key(&cur));
        let path = rel.join(&cur.name);
        let out = self.noted(&path, || self.create_part(&dst_dir, &src, &cur))?;
        let missing = self
            .start_part(&dst_dir, &src, &out, &cur)
            .inspect_err(|_| {
                // Nothing this run made stays behind (a full target included).
                discard_part(&dst_dir, self.part_key(&cur));
            })?;
        Ok(Prepared {
            cur,
            missing,
            kept: 0,
        })
    }

    /// The journal of a part file of `cur` found here, and the id of the
    /// run it is of: both psync's own, the journal of this chunk size and
    /// source version. Both names are opened whatever is found: anything
    /// under them that psync did not make is removed and reported here.
    fn found_part(&self, dir: &Dir, rel: &RelPath, cur: &Entry) -> Option<(Journal, u64)> {
        let journal = self.open_own(dir, rel, &journal_name(self.part_key(cur)));
        let part = self.open_own(dir, rel, &part_name(self.part_key(cur)));
        part.ok()?;
        Journal::matching(journal.ok()?, self.chunk_of(cur), self.part_key(cur), cur)
    }

    /// A new part file for `cur`, created by the copier (`O_EXCL`) and
    /// checked to be private to psync as [`Dir::open_private`] wants it
    /// (a backend that made it otherwise would leave a part no later run
    /// resumes, or one another user can open).
    fn create_part(&self, dir: &Dir, src: &File, cur: &Entry) -> Result<File, CopyFail> {
        let part = part_name(self.part_key(cur));
        let out = self
            .copier
            .create(dir, &part, cur, src)
            .map_err(|e| match e.source.kind() {
                io::ErrorKind::AlreadyExists => CopyFail::target_io(e.op, taken(&part)),
                _ => CopyFail::target(e),
            })?;
        match Untrusted::of_file(&out) {
            Ok(None) => Ok(out),
            Ok(Some(found)) => {
                discard_part(dir, self.part_key(cur));
                let why = format!("new part file {part} is not private to psync ({found})");
                Err(CopyFail::target_io(Op::Create, io::Error::other(why)))
            }
            Err(e) => {
                discard_part(dir, self.part_key(cur));
                Err(CopyFail::target_io(Op::Stat, e))
            }
        }
    }

    /// Opens the part file or journal `name` in the target directory `dir`
    /// (`rel`) when psync made it ([`Dir::open_private`]). Anything else
    /// under that name (another user's file, which they may hold open; a
    /// part left with its final attributes by a run killed just before
    /// its rename) is removed and reported as a warning naming it, and
    /// the error says it is gone: the copy starts over in a new part.
    fn open_own(&self, dir: &Dir, rel: &RelPath, name: &Name) -> io::Result<File> {
        let found = match dir.open_private(name.as_bytes())? {
            Ok(f) => return Ok(f),
            Err(found) => found,
        };
        let what = untrusted_message(name, &found);
        let (message, kind) = match dir.unlink_file(name.as_bytes()) {
            Ok(_) => (format!("{what}: removed"), io::ErrorKind::NotFound),
            Err(e) => (
                format!("{what}: cannot be removed: {e}"),
                io::ErrorKind::AlreadyExists,
            ),
        };
        self.warn(&rel.join(name), true, Op::Open, &message);
        Err(io::Error::new(kind, message))
    }

    /// Gives a new part file its journal and its length (or clones it
    /// whole); returns the chunks to copy.
    fn start_part(
        &self,
        dir: &Dir,
        src: &File,
        out: &File,
        cur: &Entry,
    ) -> Result<Vec<u64>, CopyFail> {
        let journal = Journal::create(
            dir,
            self.chunk_of(cur),
            self.part_key(cur),
            cur,
            self.run_id,
        )
        .map_err(|e| CopyFail::target_io(Op::Create, e))?;
        // A clone of the whole file needs no chunks: record them all done.
        if self
            .copier
            .try_clone(src, out, &self.copy_opts)
            .map_err(CopyFail::target)?
        {
            for i in 0..self.chunks(cur) {
                let done = Record {
                    hash: None,
                    earlier: false,
                    strategy: Strategy::Reflink,
                    bytes: self.chunk_range(cur, i).1,
                };
                journal
                    .write(i, done)
                    .map_err(|e| CopyFail::target_io(Op::CopyData, e))?;
            }
            return Ok(Vec::new());
        }
        // The length first: chunks then write at their offsets in any
        // order, and holes past the last data stay holes.
        out.set_len(cur.size)
            .map_err(|e| CopyFail::target_io(Op::Create, e))?;
        Ok((0..self.chunks(cur)).collect())
    }

    /// The source and target directories `rel`, the target only if it is
    /// still the directory `at` (see [`Engine::open_dst_at`]).
    pub(crate) fn open_pair(
        &self,
        rel: &RelPath,
        at: Option<(u64, u64)>,
    ) -> Result<(Dir, Dir), CopyFail> {
        let s = self
            .src_root
            .open_beneath(rel)
            .map_err(|e| CopyFail::source(Op::OpenDir, e))?;
        let d = self
            .open_dst_at(rel, at)
            .map_err(|e| CopyFail::target_io(Op::OpenDir, e))?;
        Ok((s, d))
    }

    /// Copies, verifies and records one chunk. A failure is reported as an
    /// event here and counted once by the file's finish.
    pub(crate) fn chunk(&self, rel: &RelPath, src: &Entry, index: u64, at: Option<(u64, u64)>) {
        if let Err(CopyFail::Failed { on_target, op, err }) = self.copy_chunk(rel, src, index, at) {
            let path = rel.join(&src.name);
            // Before the error is wrapped: that loses its errno.
            if on_target && self.stop_if_unwritable(&path, op, &err) {
                return;
            }
            let (start, len) = self.chunk_range(src, index);
            let err = io::Error::new(
                err.kind(),
                format!("chunk {index} (bytes {start}..{}): {err}", start + len),
            );
            self.report(&path, on_target, op, err, false);
        }
    }

    /// A chunk this run recorded is done (this is a second delivery). One
    /// an earlier run recorded with a hash is kept when its range of the
    /// source still hashes as recorded and the part's range reads back
    /// from storage the same; otherwise (no hash: `--no-verify`, a
    /// whole-file clone; or on any error) it is copied.
    fn copy_chunk(
        &self,
        rel: &RelPath,
        src: &Entry,
        index: u64,
        at: Option<(u64, u64)>,
    ) -> Result<(), CopyFail> {
        let (src_dir, dst_dir) = self.open_pair(rel, at)?;
        let input = src_dir
            .open_read(src.name.as_bytes())
            .map_err(|e| CopyFail::source(Op::Open, e))?;
        let (part, journal) = self
            .open_part(&dst_dir, rel, src)
            .map_err(|e| CopyFail::target_io(Op::Open, e))?;
        let (offset, len) = self.chunk_range(src, index);
        let result = match journal.read(index) {
            Some(Record { earlier: false, .. }) => return Ok(()),
            Some(rec) if resumed_chunk_ok(&input, &part, (offset, len), rec) => {
                self.count(|c| c.chunks_resumed += 1);
                // An earlier run's bytes, not this one's (finish_big sums
                // the records' bytes); this run's record from now on.
                let rec = Record {
                    bytes: 0,
                    earlier: false,
                    ..rec
                };
                journal
                    .write(index, rec)
                    .map_err(|e| CopyFail::target_io(Op::CopyData, e))
            }
            _ => self.fill_chunk(&input, (&part, dst_dir.in_memory()), &journal, src, index),
        };
        self.drop_cached(&input, offset, NonZeroU64::new(len));
        match result {
            // Shorter than at the start: the file's finish sees the change
            // and copies it again (or reports it as changed).
            Err(f) if f.is_short_read() && source_changed(&input, src)? => Ok(()),
            r => r,
        }
    }

    /// The part file and journal of `src`, both psync's own ([`Engine::open_own`]).
    fn open_part(&self, dir: &Dir, rel: &RelPath, src: &Entry) -> io::Result<(File, Journal)> {
        let part = self.open_own(dir, rel, &part_name(self.part_key(src)))?;
        let file = self.open_own(dir, rel, &journal_name(self.part_key(src)))?;
        Ok((part, Journal { file }))
    }

    /// Copies, verifies and records chunk `index` of `src` into `part`.
    /// `in_memory`: the part's file system keeps data only in memory.
    fn fill_chunk(
        &self,
        input: &File,
        (part, in_memory): (&File, bool),
        journal: &Journal,
        src: &Entry,
        index: u64,
    ) -> Result<(), CopyFail> {
        let (offset, len) = self.chunk_range(src, index);
        let job = DataJob {
            src: input,
            dst: part,
            entry: src,
            offset,
            len,
            opts: &self.copy_opts,
            hash: self.verify,
            read_back: self.verify && in_memory,
        };
        let copied =
            crate::copy::pace::with(&self.pacer, || self.copier.copy_data(&job, &self.quit))
                .map_err(CopyFail::data)?;
        self.verify_written(part, &copied, in_memory)?;
        // On disk before the journal says the chunk is done.
        self.sync_chunk(part)?;
        // The journal keeps a hash of the whole chunk range as it reads
        // back (holes as zeros), to re-check it on resume. Without holes
        // that is the hash just verified.
        let whole = copied.segments == [(offset, len)];
        let hash = match (copied.hash, whole) {
            (Some(h), true) => Some(h),
            (Some(_), false) => Some(
                read_back(part, &[(offset, len)], in_memory)
                    .map_err(|e| CopyFail::target_io(Op::Verify, e))?,
            ),
            (None, _) => None,
        };
        // Its bytes count as copied when the file is finished (finish_big).
        self.count(|c| c.chunks += 1);
        journal
            .write(
                index,
                Record {
                    hash,
                    earlier: false,
                    strategy: copied.strategy,
                    bytes: copied.bytes,
                },
            )
            .map_err(|e| CopyFail::target_io(Op::CopyData, e))
    }

    /// After the last chunk: all recorded, source unchanged, attributes,
    /// rename into place, journal removed.
    pub(crate) fn finish_file(
        &self,
        rel: &RelPath,
        src: &Entry,
        dst: Option<&Entry>,
        how: Finish,
        cx: &mut dyn TaskContext,
    ) {
        let Finish {
            change,
            attempt,
            kept,
            at,
        } = how;
        let path = rel.join(&src.name);
        // From here the part is this task's to rename or remove.
        self.part_ended(rel, src);
        if self.finished_before(rel, src, change, at) {
            return;
        }
        let old = dst.filter(|_| !change.new).map(|d| d.mode);
        let finished = self
            .not_stopped()
            .and_then(|()| self.finish_big(rel, src, old, (kept, at)));
        match finished {
            Ok(Some(filled)) => {
                self.drop_differs(rel, src, change, at);
                self.count_filled(filled);
                self.itemize(path, Some(change), src);
                self.count_change(dst.is_some() && !change.new);
            }
            Ok(None) if attempt < self.retries => {
                self.count(|c| c.changed_during_copy += 1);
                cx.spawn(Task::BigFile {
                    rel: rel.clone(),
                    src: src.clone(),
                    dst: dst.cloned(),
                    change,
                    attempt: attempt + 1,
                    at,
                });
            }
            Ok(None) => {
                self.drop_differs(rel, src, change, at);
                self.count(|c| c.changed_during_copy += 1);
                self.fail(
                    &path,
                    false,
                    Op::CopyData,
                    io::Error::other("changed during copy; not replaced"),
                );
            }
            Err(CopyFail::Vanished) => {
                self.drop_differs(rel, src, change, at);
                self.count(|c| c.done += 1);
                self.warn(&path, false, Op::Open, "vanished during its copy");
            }
            Err(CopyFail::Interrupted) => self.abandon_part(rel, src),
            Err(CopyFail::Failed { on_target, op, err }) => {
                self.drop_differs(rel, src, change, at);
                self.fail(&path, on_target, op, err);
            }
        }
    }

    /// Removes the marker `--checksum` left for a compared file that
    /// differed (see `finish_compare`), once its copy ended for good.
    fn drop_differs(&self, rel: &RelPath, src: &Entry, change: Change, at: Option<(u64, u64)>) {
        if change.checksum
            && let Ok(d) = self.open_dst_at(rel, at)
        {
            let _ = d.unlink(self.differs_marker(src).as_bytes());
        }
    }

    /// True when this finish was done by an earlier delivery of its task
    /// (a broker delivers at least once): no part file or journal of
    /// this source version is left, the target holds a regular file of
    /// its size and modification time, and for a compared file
    /// (`--checksum`) the marker of its difference is gone (a finish
    /// removes it only once the file is in place). Nothing is done or
    /// counted again. Without `--times` (target times are the copy's) a
    /// second delivery is not recognised: it reports the part missing.
    fn finished_before(
        &self,
        rel: &RelPath,
        src: &Entry,
        change: Change,
        at: Option<(u64, u64)>,
    ) -> bool {
        let Ok(dir) = self.open_dst_at(rel, at) else {
            return false;
        };
        let gone = |name: &Name| {
            dir.stat(name.as_bytes())
                .is_err_and(|e| e.kind() == io::ErrorKind::NotFound)
        };
        if !gone(&part_name(self.part_key(src))) || !gone(&journal_name(self.part_key(src))) {
            return false;
        }
        if change.checksum && !gone(&self.differs_marker(src)) {
            return false;
        }
        dir.stat(src.name.as_bytes()).is_ok_and(|st| {
            let now = Entry::from_stat(src.name.clone(), &st);
            (now.kind, now.size, now.mtime) == (Kind::File, src.size, src.mtime)
        })
    }

    /// Stopped before its finish: a file too small to resume leaves
    /// nothing behind; a larger one keeps its finished chunks.
    fn abandon_part(&self, rel: &RelPath, src: &Entry) {
        if src.size < self.resume_threshold
            && let Ok(d) = self.open_dst(rel)
        {
            discard_part(&d, self.part_key(src));
        }
    }

    /// `Ok(None)`: the source changed since its copy started (part
    /// removed). The bytes of a finished file are those its chunks' copies
    /// wrote, less `kept`, the bytes of chunks an earlier run copied.
    fn finish_big(
        &self,
        rel: &RelPath,
        src: &Entry,
        old: Option<u32>,
        (kept, at): (u64, Option<(u64, u64)>),
    ) -> Result<Option<Filled>, CopyFail> {
        let (src_dir, dst_dir) = self.open_pair(rel, at)?;
        let key = self.part_key(src);
        let part_n = part_name(key);
        let discard = || discard_part(&dst_dir, key);
        let input = match src_dir.open_read(src.name.as_bytes()) {
            Ok(f) => f,
            Err(e) => {
                // Gone (or unreadable) now: nothing left to resume from.
                discard();
                return Err(CopyFail::source(Op::Open, e));
            }
        };
        if source_changed(&input, src)? {
            discard();
            return Ok(None);
        }
        // Large folios that straddle a chunk boundary were kept by both
        // chunks' drops (only folios wholly inside a range are dropped).
        self.drop_cached(&input, 0, None);
        let (part, journal) = self
            .open_part(&dst_dir, rel, src)
            .map_err(|e| CopyFail::target_io(Op::Open, e))?;
        let records: Vec<Option<Record>> = (0..self.chunks(src)).map(|i| journal.read(i)).collect();
        let missing = records.iter().filter(|r| r.is_none()).count();
        if missing > 0 {
            // Chunk failures were reported. A file big enough to resume
            // keeps its part for the next run; a smaller one starts over.
            let resumable = src.size >= self.resume_threshold;
            if !resumable {
                discard();
            }
            let fate = if resumable {
                "finished chunks kept for the next run"
            } else {
                "copy abandoned"
            };
            return Err(CopyFail::target_io(
                Op::CopyData,
                io::Error::other(format!(
                    "{missing} of {} chunks failed (each reported with the side and path that failed); {fate}",
                    records.len()
                )),
            ));
        }
        let from = self.xattr_source_new().then_some(Node::Fd(input.as_fd()));
        let old = old.or_else(|| self.new_file_mode(&dst_dir, src));
        let (attrs, opts) = self.attrs_for(src, old);
        let report = self
            .copier
            .set_attrs(Node::Fd(part.as_fd()), &attrs, from, &opts)
            .map_err(CopyFail::target)?;
        self.report_dropped(&rel.join(&src.name), &report);
        // The source is the file listed (`source_changed` above).
        self.copy_fsattrs(&rel.join(&src.name), &input, &part, false)
            .map_err(|e| CopyFail::target_io(Op::FileAttr, e))?;
        self.sync_file(&part, false)?;
        // Stopped meanwhile (the target cannot be written): the old target stays.
        self.not_stopped()?;
        let rename = || dst_dir.rename(part_n.as_bytes(), src.name.as_bytes());
        let place = || self.in_project_dir(&dst_dir, &part, rename);
        match place() {
            // An immutable or append-only target: lifted, then replaced.
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    && self.unlock_name(&dst_dir, &src.name) =>
            {
                place()
            }
            r => r,
        }
        .map_err(|e| CopyFail::target_io(Op::Rename, e))?;
        self.seal_copy(&rel.join(&src.name), src, &part);
        drop(part);
        let _ = dst_dir.unlink(journal_name(self.part_key(src)).as_bytes());
        self.sync_dir(rel, &dst_dir);
        let written: u64 = records.iter().flatten().map(|r| r.bytes).sum();
        Ok(records.first().copied().flatten().map(|r| Filled {
            strategy: r.strategy,
            bytes: written.saturating_sub(kept),
        }))
    }
}

/// True when a chunk recorded as `rec` by an earlier run is still right:
/// it was recorded with a hash, and the source's `range` hashes as
/// recorded and as the part's reads back from storage. The source is read
/// again because its status can lie: an in-place rewrite with the mtime
/// put back, and a clock set back can give even the ctime back. A record
/// without a hash (`--no-verify`, a whole-file clone) says only that a
/// copy was made, not what it holds: the chunk is copied again.
fn resumed_chunk_ok(input: &File, part: &File, range: (u64, u64), rec: Record) -> bool {
    let Some(recorded) = rec.hash else {
        return false;
    };
    hash_segments(input, &[range]).is_ok_and(|h| h == recorded)
        && read_back(part, &[range], false).is_ok_and(|h| h == recorded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Time;

    fn entry(size: u64) -> Entry {
        Entry {
            name: Name::from("big"),
            kind: Kind::File,
            size,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: Time::new(100, 5),
            atime: Time::default(),
            ctime: Time::default(),
            nlink: 1,
            dev: 1,
            ino: 2,
            rdev: 0,
            blocks: 0,
            link: None,
            mount_root: false,
            flags: None,
            fs_data: Default::default(),
        }
    }

    /// The key of `e` by its file system and inode (no file id).
    fn key(e: &Entry) -> u64 {
        crate::engine::ident::part_key(crate::engine::ident::SourceId::inode(e), e)
    }

    /// A part file left by an earlier version of psync is found again:
    /// the key is the reference XXH3-64 of the version's fields.
    #[test]
    fn part_key_is_stable() {
        let mut e = entry(3);
        (e.dev, e.ino, e.mtime) = (1, 2, Time::new(4, 5));
        assert_eq!(key(&e), 0xa918_8c14_90e6_95af);
    }

    #[test]
    fn part_names_follow_the_source_version() {
        let a = entry(10);
        let mut b = a.clone();
        assert_eq!(part_name(key(&a)), part_name(key(&b)));
        b.mtime.nsec += 1;
        assert_ne!(part_name(key(&a)), part_name(key(&b)));
        assert_eq!(part_name_key(&part_name(key(&a))), Some(key(&a)));
        assert_eq!(part_name_key(&journal_name(key(&a))), Some(key(&a)));
        assert_eq!(part_name_key(&Name::from(".psync-part.xyz")), None);
    }

    /// A recorded chunk is kept only while the source and the part both
    /// still hold what was recorded: a source rewritten in place (whatever
    /// its status says) or a part that reads back otherwise is recopied.
    #[test]
    fn resumed_chunks_are_checked_against_the_source_as_it_is_now() {
        let t = crate::test_dir();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 13 % 251) as u8).collect();
        std::fs::write(t.path().join("src"), &data).unwrap();
        std::fs::write(t.path().join("part"), &data).unwrap();
        let open = |n: &str| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(t.path().join(n))
                .unwrap()
        };
        let (src, part) = (open("src"), open("part"));
        let range = (1 << 20, 1 << 20);
        let want = hash_segments(&src, &[range]).unwrap();
        let rec = |hash| Record {
            hash,
            earlier: true,
            strategy: Strategy::ReadWrite,
            bytes: 1 << 20,
        };
        assert!(resumed_chunk_ok(&src, &part, range, rec(Some(want))));
        assert!(
            !resumed_chunk_ok(&src, &part, range, rec(None)),
            "a record without a hash is not a finished chunk"
        );
        assert!(
            !resumed_chunk_ok(&src, &part, range, rec(Some(want ^ 1))),
            "another hash recorded"
        );
        src.write_all_at(b"changed", (1 << 20) + 5).unwrap();
        assert!(
            !resumed_chunk_ok(&src, &part, range, rec(Some(want))),
            "source changed"
        );
        let first = hash_segments(&src, &[(0, 1 << 20)]).unwrap();
        assert!(
            resumed_chunk_ok(&src, &part, (0, 1 << 20), rec(Some(first))),
            "another chunk"
        );
        part.write_all_at(b"changed", (1 << 20) + 5).unwrap();
        let now = hash_segments(&src, &[range]).unwrap();
        assert!(
            !resumed_chunk_ok(&src, &part, range, rec(Some(want))),
            "recorded hash is stale"
        );
        assert!(resumed_chunk_ok(&src, &part, range, rec(Some(now))));
    }

    /// The journal of `e` in `d`, if it is psync's and of `chunk` and `e`.
    fn open_existing(d: &Dir, chunk: u64, e: &Entry) -> Option<Journal> {
        let f = d.open_private(journal_name(key(e)).as_bytes()).ok()?.ok()?;
        Journal::matching(f, chunk, key(e), e).map(|(j, _)| j)
    }

    #[test]
    fn journals_name_the_source_ctime() {
        let t = crate::test_dir();
        let d = Dir::open_root(t.path()).unwrap();
        let e = entry(1 << 30);
        Journal::create(&d, 64 << 20, key(&e), &e, 7).unwrap();
        let mut touched = e.clone();
        touched.ctime.nsec += 1;
        assert_eq!(
            part_name(key(&touched)),
            part_name(key(&e)),
            "parts keep their names"
        );
        assert!(open_existing(&d, 64 << 20, &touched).is_none());
        assert!(open_existing(&d, 64 << 20, &e).is_some());
    }

    /// A journal another user put in place under the name is not reused:
    /// a new one is created (`O_EXCL`, 0600) once it is gone, and creating
    /// it over one that is back fails with an error that says so.
    #[test]
    fn journals_are_created_private_and_never_over_a_planted_one() {
        use std::os::unix::fs::PermissionsExt;
        let t = crate::test_dir();
        let d = Dir::open_root(t.path()).unwrap();
        let e = entry(1 << 30);
        Journal::create(&d, 64 << 20, key(&e), &e, 7).unwrap();
        let path = t.path().join(journal_name(key(&e)).to_string());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(open_existing(&d, 64 << 20, &e).is_none(), "mode 0666");
        // Put back between the unlink and the create: a directory stands
        // in for a file planted again (the unlink cannot remove it).
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        let err = Journal::create(&d, 64 << 20, key(&e), &e, 7)
            .err()
            .expect("a planted name");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("not created by psync"), "{err}");
    }

    #[test]
    fn journal_records_roundtrip_and_reject_other_versions() {
        let t = crate::test_dir();
        let d = Dir::open_root(t.path()).unwrap();
        let e = entry(1 << 30);
        let j = Journal::create(&d, 64 << 20, key(&e), &e, 7).unwrap();
        j.write(
            3,
            Record {
                hash: Some(42),
                earlier: false,
                strategy: Strategy::ReadWrite,
                bytes: 3 << 20,
            },
        )
        .unwrap();
        j.write(
            5,
            Record {
                hash: None,
                earlier: true,
                strategy: Strategy::CopyRange,
                bytes: (1 << 40) - 1,
            },
        )
        .unwrap();
        let j = open_existing(&d, 64 << 20, &e).unwrap();
        assert_eq!(
            j.read(3),
            Some(Record {
                hash: Some(42),
                earlier: false,
                strategy: Strategy::ReadWrite,
                bytes: 3 << 20,
            })
        );
        assert_eq!(
            j.read(5),
            Some(Record {
                hash: None,
                earlier: true,
                strategy: Strategy::CopyRange,
                bytes: (1 << 40) - 1,
            })
        );
        assert_eq!(j.read(4), None);
        assert!(
            open_existing(&d, 32 << 20, &e).is_none(),
            "other chunk size"
        );
    }

    /// A journal says which run made it; a run that takes over an
    /// earlier run's marks its records as that run's (to be checked, not
    /// taken for chunks done by this run) and names itself. A journal of
    /// a version that had no run id (zeros there) is an earlier run's.
    #[test]
    fn journals_name_their_run_and_are_taken_over() {
        let t = crate::test_dir();
        let d = Dir::open_root(t.path()).unwrap();
        let e = entry(1 << 30);
        let chunk = 64 << 20;
        let j = Journal::create(&d, chunk, key(&e), &e, 0).unwrap();
        let done = |hash| Record {
            hash,
            earlier: false,
            strategy: Strategy::ReadWrite,
            bytes: 1 << 20,
        };
        // Records on both sides of the first 2,048 (read in pieces).
        for i in [0, 2047, 2048, 3000] {
            j.write(i, done(Some(9 + u128::from(i as u16)))).unwrap();
        }
        j.write(2, done(None)).unwrap();
        let f = d
            .open_private(journal_name(key(&e)).as_bytes())
            .unwrap()
            .unwrap();
        let (j, run) = Journal::matching(f, chunk, key(&e), &e).unwrap();
        assert_eq!(run, 0);
        j.take_over(5000, 42).unwrap();
        let f = d
            .open_private(journal_name(key(&e)).as_bytes())
            .unwrap()
            .unwrap();
        let (j, run) = Journal::matching(f, chunk, key(&e), &e).unwrap();
        assert_eq!(run, 42);
        let earlier = |hash| Record {
            earlier: true,
            ..done(hash)
        };
        for i in [0, 2047, 2048, 3000] {
            assert_eq!(j.read(i), Some(earlier(Some(9 + u128::from(i as u16)))));
        }
        assert_eq!(j.read(1), None, "no record, none made");
        assert_eq!(j.read(2), Some(earlier(None)));
        assert_eq!(j.read(3001), None);
        assert_eq!(j.read(4999), None);
    }
}
