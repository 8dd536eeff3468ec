//! What the user sees: itemized changes or JSON events on stdout, errors
//! and warnings on stderr, the progress bar, and the summary at the end.

use crate::args::SyncArgs;
use crate::logfile::LogFile;
use crate::progress::{Progress, When};
use crate::units;
use crossbeam_channel::Receiver;
use psync_core::{Event, Kind, Report, Snapshot};
use serde::Serialize;
use std::io::{self, BufWriter, Stdout, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The run's output channels and how to format them.
#[derive(Debug)]
pub struct Output {
    out: BufWriter<Stdout>,
    json: bool,
    quiet: bool,
    dry_run: bool,
    /// Set once a write to stdout failed; nothing more is written there.
    stdout_gone: bool,
    quit: Arc<AtomicBool>,
    progress: Progress,
    /// Print itemize events in `-i` form (with `--json`: print them).
    itemize: bool,
    /// Print itemize events in `-v` form.
    verbose: bool,
    /// Print `--stats` after the summary.
    stats: bool,
    /// `--max-errors`, to tell its stop from an interrupt.
    pub max_errors: Option<u64>,
    log: Option<LogFile>,
    tally: Tally,
    /// `psync verify`: what it collects beyond the lines printed.
    pub audit: Audit,
}

/// What `psync verify` and `--manifest` collect from the events.
#[derive(Debug, Default)]
pub struct Audit {
    /// `psync verify`: compare hard-link groups.
    verify: bool,
    /// Itemize lines printed.
    pub differences: u64,
    /// `psync verify`'s differences, held until the end.
    pub diffs: psync_core::Differences,
    /// `--manifest`: the regular files and their hashes.
    pub manifest: crate::manifest::Manifest,
}

impl Audit {
    fn add(&mut self, ev: &Event) {
        match ev {
            Event::Itemize { .. } if !self.verify => self.differences += 1,
            Event::Hashed {
                path,
                size,
                mtime,
                hash,
            } => {
                let line = crate::manifest::Line {
                    size: *size,
                    mtime: *mtime,
                    hash: hash.clone(),
                };
                self.manifest.insert(path.clone(), line);
            }
            _ => {}
        }
        if self.verify {
            self.diffs.add(ev);
        }
    }
}

/// What `--stats` needs beyond the run's counters, from its itemize
/// events: created and deleted entries by type, files transferred.
#[derive(Debug, Default)]
struct Tally {
    created: [u64; KINDS],
    deleted: [u64; KINDS],
    transferred: u64,
}

/// rsync's `--stats` names of the entry types, in [`kind_index`] order.
const KIND_NAMES: [&str; KINDS] = ["reg", "dir", "link", "dev", "special"];
const KINDS: usize = 5;

fn kind_index(k: Kind) -> usize {
    match k {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::Symlink => 2,
        Kind::CharDev | Kind::BlockDev => 3,
        _ => 4,
    }
}

impl Tally {
    fn add(&mut self, ev: &Event) {
        let Event::Itemize { change, kind, .. } = ev else {
            return;
        };
        match change {
            None => self.deleted[kind_index(*kind)] += 1,
            Some(c) => {
                if c.new {
                    self.created[kind_index(*kind)] += 1;
                }
                if c.transfer && *kind == Kind::File {
                    self.transferred += 1;
                }
            }
        }
    }
}

impl Output {
    /// Output for `args`; `quit` stops the run when stdout goes away.
    pub fn new(args: &SyncArgs, quit: Arc<AtomicBool>) -> Output {
        Output::with(
            args.json,
            args.quiet || args.verify_only,
            args.dry_run || args.verify_only,
            quit,
        )
    }

    /// Sets what `args` asks beyond `with`'s flags: `-i`, `-v`,
    /// `--stats`, `--max-errors`, `--progress`/`--no-progress`, and the
    /// opened `--log-file`.
    pub fn limits(mut self, args: &SyncArgs, log: Option<LogFile>) -> Output {
        self.itemize = args.itemize_changes || args.verify_only;
        self.audit.verify = args.verify_only;
        self.verbose = args.limits.verbose;
        self.stats = args.limits.stats;
        self.max_errors = args.limits.max_errors;
        self.log = log;
        self.progress = Progress::new(args.progress_when(), self.quiet || self.json);
        self
    }

    /// Output with these flags (`--json`, `--quiet`, `--dry-run`).
    pub fn with(json: bool, quiet: bool, dry_run: bool, quit: Arc<AtomicBool>) -> Output {
        Output {
            out: BufWriter::new(io::stdout()),
            json,
            quiet,
            dry_run,
            stdout_gone: false,
            quit,
            progress: Progress::new(When::Auto, quiet || json),
            itemize: true,
            verbose: false,
            stats: false,
            max_errors: None,
            log: None,
            tally: Tally::default(),
            audit: Audit::default(),
        }
    }

    /// Handles events until every sender is gone, then hands itself back
    /// for the summary. Flushes whenever the queue runs dry, so lines
    /// appear promptly without a write per line on busy runs.
    pub fn consume(mut self, rx: Receiver<Event>) -> Output {
        for ev in rx.iter() {
            self.event(&ev);
            if rx.is_empty() {
                self.flush();
            }
        }
        self.flush();
        self
    }

    fn event(&mut self, ev: &Event) {
        self.audit.add(ev);
        // Gathered for the end of the run; `psync verify`'s lines too
        // (merged by path, printed sorted).
        let held = matches!(ev, Event::Itemize { .. }) && self.audit.verify;
        if held || matches!(ev, Event::Linked { .. } | Event::Hashed { .. }) {
            return;
        }
        self.show(ev);
    }

    fn show(&mut self, ev: &Event) {
        match ev {
            Event::Error { message, .. } => {
                self.print_err(message);
                self.log(&format!("error: {message}"));
            }
            Event::Warning { message, .. } => self.stderr(&format!("warning: {message}")),
            Event::Notice { message } => self.stderr(&format!("note: {message}")),
            Event::Skipped { path, reason } => self.log(&format!("skipped: {path}: {reason}")),
            Event::Itemize { .. } => {
                self.tally.add(ev);
                // Always in `-i` form: the log is for reviewing changes.
                if let Some(line) = ev.itemize_line() {
                    self.log(&line);
                }
            }
            _ => {}
        }
        let shown = self.itemize || self.verbose;
        if matches!(ev, Event::Itemize { .. }) && !shown {
            return;
        }
        if self.json {
            self.json_line(&JsonEvent::new(ev));
        } else if let Event::Progress(s) = ev {
            self.progress.update(s);
        } else if let Some(line) = ev.itemize_line() {
            match self.itemize {
                true => self.stdout_line(&line),
                false => self.stdout_line(&ev.verbose_line().unwrap_or(line)),
            }
        }
    }

    /// Prints an event made by the frontend (the end of `psync verify`).
    pub fn print(&mut self, ev: &Event) {
        if matches!(ev, Event::Itemize { .. }) {
            self.audit.differences += 1;
        }
        self.show(ev);
    }

    /// Appends `text` to the `--log-file`, if any; a failing log is
    /// reported once and closed.
    fn log(&mut self, text: &str) {
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.line(text)
        {
            self.log = None;
            self.print_err(&format!("--log-file: {e}; no more lines are logged"));
        }
    }

    fn flush_log(&mut self) {
        if let Some(log) = self.log.as_mut()
            && let Err(e) = log.flush()
        {
            self.log = None;
            self.print_err(&format!("--log-file: {e}; no more lines are logged"));
        }
    }

    /// Writes `text` to the log file only (the run's start).
    pub fn note(&mut self, text: &str) {
        self.log(text);
    }

    /// True when stdout went away (a closed pipe) or failed.
    pub fn stdout_gone(&self) -> bool {
        self.stdout_gone
    }

    /// Erases the progress bar and prints the summary (JSON, or text
    /// unless quiet).
    pub fn summary(&mut self, report: &Report, exit_code: u8) {
        self.progress.clear();
        let mut lines = summary_lines(&report.stats, self.dry_run);
        lines.push(format!("copier    {}", report.copier));
        let lines = fit(&lines, SUMMARY_WIDTH);
        let stats = stats_lines(&report.stats, &self.tally, self.dry_run);
        if self.json {
            self.json_line(&JsonSummary::new(report, exit_code));
        } else {
            if !self.quiet {
                for line in &lines {
                    self.stdout_line(line);
                }
            }
            if self.stats {
                self.stdout_line("");
                for line in &stats {
                    self.stdout_line(line);
                }
            }
        }
        for line in lines.iter().chain(&stats) {
            self.log(line);
        }
        self.flush();
    }

    /// Logs the run's exit status, its last line, and flushes.
    pub fn end(&mut self, exit_code: u8) {
        self.log(&format!("exit status {exit_code}"));
        self.flush();
    }

    /// Erases the progress bar and flushes stdout, when there is no summary.
    pub fn close(&mut self) {
        self.progress.clear();
        self.flush();
    }

    /// Prints `psync: <msg>` on stderr, around the progress bar, and logs it.
    pub fn stderr(&mut self, msg: &str) {
        self.print_err(msg);
        self.log(msg);
    }

    fn print_err(&self, msg: &str) {
        self.progress.suspend(|| eprint(msg));
    }

    fn json_line(&mut self, v: &impl Serialize) {
        match serde_json::to_string(v) {
            Ok(s) => self.stdout_line(&s),
            Err(e) => self.stderr(&format!("cannot encode event as JSON: {e}")),
        }
    }

    fn stdout_line(&mut self, line: &str) {
        if self.stdout_gone {
            return;
        }
        // With the bar on screen stdout is most likely the same terminal:
        // the line must be out before the bar is redrawn.
        let flush = self.progress.is_visible();
        let out = &mut self.out;
        let written = self.progress.suspend(|| {
            writeln!(out, "{line}")?;
            if flush { out.flush() } else { Ok(()) }
        });
        if let Err(e) = written {
            self.stdout_failed(&e);
        }
    }

    fn flush(&mut self) {
        self.flush_log();
        if self.stdout_gone {
            return;
        }
        if let Err(e) = self.out.flush() {
            self.stdout_failed(&e);
        }
    }

    /// Stops writing to stdout and stops the run: its output has nowhere
    /// to go (rsync dies of SIGPIPE here). A reader that left, as with
    /// `psync sync -i a b | head`, is normal and not worth a message.
    fn stdout_failed(&mut self, e: &io::Error) {
        self.stdout_gone = true;
        self.quit.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            self.stderr(&format!("write to stdout: {e}"));
        }
    }
}

/// Prints `psync: <msg>` on stderr, as one line: control characters
/// (a newline in a file name) are escaped like rsync does (`\#012`). A
/// failing stderr is ignored: there is nowhere left to report it.
pub fn eprint(msg: &str) {
    let _ = writeln!(
        io::stderr().lock(),
        "psync: {}",
        psync_core::entry::escape(msg.as_bytes())
    );
}

/// An event as one JSON line; itemize events carry rsync's 11-character
/// change code as well.
#[derive(Serialize)]
struct JsonEvent<'a> {
    #[serde(flatten)]
    event: &'a Event,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    /// The whole rsync-style line (`%i %n%L`), as `-i` prints it.
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<String>,
}

impl<'a> JsonEvent<'a> {
    fn new(event: &'a Event) -> JsonEvent<'a> {
        JsonEvent {
            event,
            code: event.itemize_code(),
            line: event.itemize_line(),
        }
    }
}

/// The last JSON line: the final counters flat, then the rest of the
/// [`Report`] (how the run ended, copier, transport, ...) and the exit status.
#[derive(Serialize)]
struct JsonSummary<'a> {
    event: &'static str,
    #[serde(flatten)]
    stats: &'a Snapshot,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
    exit_code: u8,
}

impl<'a> JsonSummary<'a> {
    fn new(r: &'a Report, exit_code: u8) -> JsonSummary<'a> {
        JsonSummary::of(&r.stats, report_fields(r), exit_code)
    }

    fn of(
        stats: &'a Snapshot,
        rest: serde_json::Map<String, serde_json::Value>,
        exit_code: u8,
    ) -> JsonSummary<'a> {
        JsonSummary {
            event: "summary",
            stats,
            rest,
            exit_code,
        }
    }
}

/// The report's fields other than the counters, whatever the library adds.
fn report_fields(r: &Report) -> serde_json::Map<String, serde_json::Value> {
    let mut fields = match serde_json::to_value(r) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    fields.remove("stats");
    fields
}

/// The summary's width: an 80-column terminal's.
const SUMMARY_WIDTH: usize = 80;

/// The labels' width (`changes   `): continuation lines are indented so.
const LABEL: usize = 10;

/// `lines` wrapped to `width` columns: each broken after a `, ` or `; `
/// (after a space when a part is too long, anywhere when a word is), its
/// continuation lines indented under the text after its label.
fn fit(lines: &[String], width: usize) -> Vec<String> {
    let room = width.saturating_sub(LABEL).max(1);
    let mut out = Vec::new();
    for line in lines {
        if line.chars().count() <= width || line.chars().count() <= LABEL {
            out.push(line.clone());
            continue;
        }
        let (label, text) = line.split_at(
            line.char_indices()
                .nth(LABEL)
                .map_or(line.len(), |(i, _)| i),
        );
        // Pieces that each fit in `room` (trailing spaces aside).
        let mut atoms: Vec<String> = Vec::new();
        for part in text.split_inclusive([',', ';']) {
            for word in split_to(part, room) {
                atoms.push(word);
            }
        }
        let mut cur = label.to_string();
        let mut empty = true;
        for atom in atoms {
            let used = cur.chars().count();
            if !empty && used + atom.trim_end().chars().count() > width {
                out.push(cur.trim_end().to_string());
                cur = " ".repeat(LABEL);
            }
            let fresh = cur.trim_end().chars().count() <= LABEL;
            cur.push_str(if fresh { atom.trim_start() } else { &atom });
            empty = false;
        }
        out.push(cur.trim_end().to_string());
    }
    out
}

/// `part` as is when it fits in `room` columns, else its words (each
/// with its spaces), and a word longer than `room` in pieces of `room`.
fn split_to(part: &str, room: usize) -> Vec<String> {
    if part.trim().chars().count() <= room {
        return vec![part.to_string()];
    }
    let mut out = Vec::new();
    for word in part.split_inclusive(' ') {
        let chars: Vec<char> = word.chars().collect();
        if word.trim().chars().count() <= room {
            out.push(word.to_string());
        } else {
            out.extend(chars.chunks(room).map(|c| c.iter().collect::<String>()));
        }
    }
    out
}

/// The human summary: a few lines with aligned labels.
fn summary_lines(s: &Snapshot, dry_run: bool) -> Vec<String> {
    let data = if dry_run {
        format!(
            "to copy   {} (dry run: nothing was changed)",
            units::bytes(s.bytes_to_copy)
        )
    } else {
        format!(
            "copied    {}{}",
            units::bytes(s.bytes_copied),
            strategies(s)
        )
    };
    vec![
        format!(
            "scanned   {} in {}, {}",
            count(s.scanned, "entry", "entries"),
            count(s.dirs, "directory", "directories"),
            units::bytes(s.bytes_total)
        ),
        format!(
            "changes   {} created, {} updated, {} attrs updated, {} deleted, {} unchanged",
            s.created, s.updated, s.attrs_updated, s.deleted, s.unchanged
        ),
        problems(s),
        data,
    ]
    .into_iter()
    .chain(integrity(s))
    .chain([timing(s, dry_run)])
    .collect()
}

/// `1 file`, `2 files`: the summary's counts with their noun.
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Runs shorter than this get no rates: a few entries over a millisecond
/// would read as millions a second.
const RATE_MIN_MS: u64 = 100;

fn timing(s: &Snapshot, dry_run: bool) -> String {
    let wall = units::wall(s.elapsed());
    if s.elapsed_ms < RATE_MIN_MS {
        return format!("time      {wall}");
    }
    let mut line = format!("time      {wall}, {:.0} entries/s", s.entries_per_sec());
    if !dry_run {
        line += &format!(", {}", units::byte_rate(s.bytes_per_sec()));
    }
    line
}

fn problems(s: &Snapshot) -> String {
    let mut line = format!(
        "problems  {} failed, {}",
        s.failed,
        count(s.warnings, "warning", "warnings")
    );
    if s.changed_during_copy > 0 {
        line += &format!(", {} changed while copied", s.changed_during_copy);
    }
    if s.stale_removed > 0 {
        let n = count(s.stale_removed, "stale temporary", "stale temporaries");
        line += &format!(", {n} removed");
    }
    if s.skipped_young > 0 {
        line += &format!(", {} skipped as too recent (--min-age)", s.skipped_young);
    }
    if s.skipped_by_copier > 0 {
        line += &format!(", {} skipped by the copier", s.skipped_by_copier);
    }
    line
}

/// `verified  120 files/chunks read back and matched; 16 chunks copied, 4 resumed`
fn integrity(s: &Snapshot) -> Option<String> {
    if s.verified == 0 && s.chunks == 0 && s.chunks_resumed == 0 && s.chunks_compared == 0 {
        return None;
    }
    let mut line = format!(
        "verified  {} read back and matched",
        count(s.verified, "file/chunk", "files/chunks")
    );
    if s.chunks > 0 || s.chunks_resumed > 0 {
        line += &format!(
            "; {} copied, {} resumed from an earlier run",
            count(s.chunks, "chunk", "chunks"),
            s.chunks_resumed
        );
    }
    if s.chunks_compared > 0 {
        let n = count(s.chunks_compared, "chunk", "chunks");
        line += &format!("; {n} compared (--checksum)");
    }
    Some(line)
}

/// `--stats`: rsync's statistics block, from the counters and the tally
/// of itemize events.
fn stats_lines(s: &Snapshot, t: &Tally, dry_run: bool) -> Vec<String> {
    let by_kind = |counts: &[u64; KINDS]| {
        let parts: Vec<String> = KIND_NAMES
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n > 0)
            .map(|(name, n)| format!("{name}: {}", thousands(*n)))
            .collect();
        match parts.is_empty() {
            true => String::new(),
            false => format!(" ({})", parts.join(", ")),
        }
    };
    let transferred = if dry_run {
        s.bytes_to_copy
    } else {
        s.bytes_copied
    };
    let mut lines = vec![
        // rsync counts the root too.
        format!(
            "Number of files: {} (dir: {})",
            thousands(s.scanned + 1),
            thousands(s.dirs)
        ),
        format!(
            "Number of created files: {}{}",
            thousands(s.created),
            by_kind(&t.created)
        ),
        format!(
            "Number of deleted files: {}{}",
            thousands(s.deleted),
            by_kind(&t.deleted)
        ),
        format!(
            "Number of regular files transferred: {}",
            thousands(t.transferred)
        ),
        format!("Number of updated files: {}", thousands(s.updated)),
        format!(
            "Number of files with attributes updated: {}",
            thousands(s.attrs_updated)
        ),
        format!("Number of unchanged files: {}", thousands(s.unchanged)),
        format!("Number of failed files: {}", thousands(s.failed)),
        format!("Total file size: {} bytes", thousands(s.bytes_total)),
        format!(
            "Total transferred file size: {} bytes",
            thousands(transferred)
        ),
    ];
    if s.deletes_skipped > 0 {
        lines.push(format!(
            "Number of deletions skipped (--max-delete): {}",
            thousands(s.deletes_skipped)
        ));
    }
    lines
}

/// `1234567` as `1,234,567`, as rsync prints its statistics.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// ` (copy_file_range: 100 files, read/write: 3 files)`: which copy
/// strategies won, so a slow run can be told from a slow path. (Empty
/// files need no strategy and are not counted.)
fn strategies(s: &Snapshot) -> String {
    let counts = [
        ("reflink", s.by_reflink),
        ("copy_file_range", s.by_copy_range),
        ("sendfile", s.by_sendfile),
        ("read/write", s.by_read_write),
        ("direct I/O", s.by_direct),
        ("mapped", s.by_mapped),
    ];
    let used: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name}: {}", count(*n, "file", "files")))
        .collect();
    if used.is_empty() {
        String::new()
    } else {
        format!(" ({})", used.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use psync_core::{Change, Kind, RelPath};
    use serde_json::Value;

    fn json(v: &impl Serialize) -> Value {
        serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
    }

    #[test]
    fn itemize_events_carry_the_code() {
        let ev = Event::Itemize {
            path: RelPath::from_bytes(&b"d/new\nline"[..]),
            change: Some(Change::new_entry(Kind::File)),
            kind: Kind::File,
            link: None,
        };
        let v = json(&JsonEvent::new(&ev));
        assert_eq!(v["event"], "itemize");
        assert_eq!(v["code"], ">f+++++++++");
        assert_eq!(v["path"], "d/new\\#012line");
        let del = Event::Itemize {
            path: RelPath::from_bytes("x"),
            change: None,
            kind: Kind::File,
            link: None,
        };
        assert_eq!(json(&JsonEvent::new(&del))["code"], "*deleting  ");
    }

    #[test]
    fn notices_are_json_lines_of_their_own() {
        let message = psync_core::backend::cross_fs_notice(
            psync_core::probe::magic::LUSTRE,
            psync_core::probe::magic::XFS,
        )
        .unwrap();
        let v = json(&JsonEvent::new(&Event::Notice {
            message: message.clone(),
        }));
        assert_eq!(v["event"], "notice");
        assert_eq!(v["message"], message);
        assert!(v.get("code").is_none());
    }

    #[test]
    fn progress_events_have_no_code() {
        let mut snap = Snapshot::default();
        snap.scanned = 7;
        let v = json(&JsonEvent::new(&Event::Progress(snap)));
        assert_eq!(v["event"], "progress");
        assert_eq!(v["scanned"], 7);
        assert!(v.get("code").is_none());
    }

    #[test]
    fn summary_counts_have_their_plurals() {
        let mut s = Snapshot::default();
        (s.scanned, s.dirs, s.warnings, s.verified, s.by_read_write) = (1, 1, 1, 1, 1);
        let text = summary_lines(&s, false).join("\n");
        for one in [
            "1 entry in 1 directory",
            "1 warning",
            "read/write: 1 file)",
            "1 file/chunk",
        ] {
            assert!(text.contains(one), "{one}: {text}");
        }
        (s.scanned, s.dirs, s.warnings, s.verified, s.by_read_write) = (2, 0, 3, 2, 2);
        let text = summary_lines(&s, false).join("\n");
        for many in [
            "2 entries in 0 directories",
            "3 warnings",
            "read/write: 2 files)",
            "2 files/chunks",
        ] {
            assert!(text.contains(many), "{many}: {text}");
        }
    }

    /// With every counter in the billions and every optional part, each
    /// A run of a millisecond gets no rates (4 entries would read as
    /// 4000 a second); a longer one does.
    #[test]
    fn no_rates_for_a_run_under_100_ms() {
        let mut s = Snapshot::default();
        (s.done, s.scanned, s.bytes_copied, s.elapsed_ms) = (4, 4, 400, 1);
        assert_eq!(timing(&s, false), "time      1ms");
        s.elapsed_ms = 2000;
        assert_eq!(timing(&s, false), "time      2.00s, 2 entries/s, 200 B/s");
    }

    /// line fits 80 columns and says the same words.
    #[test]
    fn summary_fits_80_columns() {
        let mut s = Snapshot::default();
        let big = 12_345_678_901;
        (s.scanned, s.dirs, s.bytes_total) = (big, big, 5 << 50);
        (s.created, s.updated, s.attrs_updated, s.deleted) = (big, big, big, big);
        (s.unchanged, s.failed, s.warnings) = (big, big, big);
        (s.changed_during_copy, s.stale_removed) = (big, big);
        (s.skipped_young, s.skipped_by_copier) = (big, big);
        (s.bytes_copied, s.bytes_to_copy) = (4 << 50, 5 << 50);
        (s.by_reflink, s.by_copy_range, s.by_sendfile) = (big, big, big);
        (s.by_read_write, s.by_direct, s.by_mapped) = (big, big, big);
        (s.verified, s.chunks, s.chunks_resumed, s.chunks_compared) = (big, big, big, big);
        (s.done, s.elapsed_ms) = (big, 90_061_000);
        for dry_run in [false, true] {
            let mut lines = summary_lines(&s, dry_run);
            lines.push(format!("copier    {}", "generic"));
            let fitted = fit(&lines, 80);
            for l in &fitted {
                assert!(l.chars().count() <= 80, "{l:?}\n{}", fitted.join("\n"));
                assert!(!l.ends_with(' '), "{l:?}");
            }
            let words = |v: &[String]| {
                v.join(" ")
                    .split_whitespace()
                    .map(String::from)
                    .collect::<Vec<_>>()
            };
            assert_eq!(words(&fitted), words(&lines));
            assert!(fitted.len() > lines.len(), "some lines wrapped");
            // Continuation lines are indented under the text.
            for l in &fitted {
                assert!(
                    !l.starts_with(' ') || l.starts_with(&" ".repeat(LABEL)),
                    "{l:?}"
                );
            }
        }
        let verified = fit(&[integrity(&s).unwrap()], 80);
        assert_eq!(
            verified[0],
            "verified  12345678901 files/chunks read back and matched;"
        );
        assert!(
            verified[1].starts_with("          12345678901 chunks copied, "),
            "{verified:?}"
        );
        // Short lines are left as they are.
        let short = vec!["copier    generic".to_string()];
        assert_eq!(fit(&short, 80), short);
    }

    #[test]
    fn summary_has_all_counters() {
        let mut stats = Snapshot::default();
        stats.created = 3;
        let mut rest = serde_json::Map::new();
        rest.insert("interrupted".into(), Value::Bool(false));
        rest.insert("copier".into(), "generic".into());
        let v = json(&JsonSummary::of(&stats, rest, 0));
        assert_eq!(v["event"], "summary");
        assert_eq!(v["created"], 3);
        assert_eq!(v["exit_code"], 0);
        assert_eq!(v["copier"], "generic");
        assert_eq!(v["interrupted"], false);
        for key in json(&stats).as_object().unwrap().keys() {
            assert!(v.get(key).is_some(), "{key} missing");
        }
    }

    #[test]
    fn stats_block_counts_by_type() {
        let mut s = Snapshot::default();
        (s.scanned, s.dirs, s.created, s.deleted) = (9, 2, 3, 1);
        (s.bytes_total, s.bytes_copied) = (1_234_567, 1000);
        let mut t = Tally::default();
        let new = |kind| Event::Itemize {
            path: RelPath::from_bytes("x"),
            change: Some(Change::new_entry(kind)),
            kind,
            link: None,
        };
        for ev in [new(Kind::File), new(Kind::File), new(Kind::Dir)] {
            t.add(&ev);
        }
        t.add(&Event::Itemize {
            path: RelPath::from_bytes("y"),
            change: None,
            kind: Kind::Symlink,
            link: None,
        });
        let lines = stats_lines(&s, &t, false);
        assert_eq!(lines[0], "Number of files: 10 (dir: 2)");
        assert_eq!(lines[1], "Number of created files: 3 (reg: 2, dir: 1)");
        assert_eq!(lines[2], "Number of deleted files: 1 (link: 1)");
        assert_eq!(lines[3], "Number of regular files transferred: 2");
        assert!(lines.contains(&"Total file size: 1,234,567 bytes".to_string()));
        assert!(lines.contains(&"Total transferred file size: 1,000 bytes".to_string()));
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(1000), "1,000");
    }

    /// Every kind of event reaches the log, each line after a timestamp;
    /// progress snapshots do not.
    #[test]
    fn the_log_has_every_kind_of_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let quit = Arc::new(AtomicBool::new(false));
        let mut out = Output::with(false, true, false, quit);
        out.itemize = false;
        out.log = Some(LogFile::open(&path).unwrap());
        out.note("psync sync a b");
        let at = RelPath::from_bytes("p");
        for ev in [
            Event::Progress(Snapshot::default()),
            Event::Itemize {
                path: at.clone(),
                change: Some(Change::new_entry(Kind::File)),
                kind: Kind::File,
                link: None,
            },
            Event::Warning {
                path: at.clone(),
                op: psync_core::Op::Stat,
                message: "a warning".into(),
            },
            Event::Notice {
                message: "a notice".into(),
            },
            Event::Skipped {
                path: at.clone(),
                reason: "too young".into(),
            },
            Event::Error {
                path: at,
                op: psync_core::Op::Stat,
                side: psync_core::Side::Source,
                errno: Some(13),
                message: "an error".into(),
            },
        ] {
            out.event(&ev);
        }
        out.summary(&Report::new(Snapshot::default(), "generic", "local", 0), 1);
        out.end(1);
        let text = std::fs::read_to_string(&path).unwrap();
        let texts: Vec<&str> = text
            .lines()
            .map(|l| {
                let (ts, rest) = l.split_once(' ').unwrap();
                assert!(ts.ends_with('Z') && ts.len() == 24, "{l}");
                rest
            })
            .collect();
        for want in [
            "psync sync a b",
            ">f+++++++++ p",
            "warning: a warning",
            "note: a notice",
            "skipped: p: too young",
            "error: an error",
            "copier    generic",
            "exit status 1",
        ] {
            assert!(texts.contains(&want), "{want:?} in\n{text}");
        }
        assert!(texts.iter().any(|t| t.starts_with("changes ")), "{text}");
        assert!(!text.contains("progress"), "{text}");
        assert_eq!(texts.last(), Some(&"exit status 1"));
    }

    #[test]
    fn strategies_list_only_those_used() {
        let mut s = Snapshot::default();
        (s.by_copy_range, s.by_read_write) = (100, 3);
        assert_eq!(
            strategies(&s),
            " (copy_file_range: 100 files, read/write: 3 files)"
        );
        assert_eq!(strategies(&Snapshot::default()), "");
    }
}
