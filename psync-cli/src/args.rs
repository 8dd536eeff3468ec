//! The command line (clap derive: the doc comments are the help text) and
//! the one conversion from it to the library's [`SyncBuilder`].

use clap::{Args, Parser, Subcommand};
use crossbeam_channel::Sender;
use psync_core::{AttrMode, Backend, Event, Flush, Preserve, Reflink, SyncBuilder};
use psync_generic::GenericCopier;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the engine sends a progress snapshot: the bar redraws and
/// `--json` prints at most this often (4 per second).
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Makes a target directory tree identical to a source tree, in parallel.
#[derive(Debug, Parser)]
#[command(name = "psync", version, arg_required_else_help = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// Parsed once per process: the size of `sync`'s arguments costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Show what each PATH's file system is and can do; given SRC DST, also
    /// which copier a sync between them would use and why.
    ///
    /// Per path: the file system type and statfs magic, its mount (point,
    /// source, options, from /proc/self/mountinfo), and capabilities, each
    /// yes, no or unknown with a reason: reflink, copy_file_range offload,
    /// direct-I/O alignment, user xattrs, POSIX ACLs, sparse files
    /// (SEEK_HOLE), timestamp resolution, project ids, Lustre layouts.
    /// Nothing is written to PATH unless --write-test is given. Exit
    /// status: 0, or 1 when a path could not be probed or no copier fits
    /// the pair.
    Probe(ProbeArgs),

    /// Make DST identical to SRC, like `rsync -a SRC/ DST/`.
    ///
    /// Exit status: 0 everything synced, 1 some entries failed (each is
    /// reported on stderr), --max-delete skipped deletions or --max-errors
    /// stopped the run, 2 fatal error or interrupted (SIGINT, SIGTERM,
    /// SIGHUP: the first stops the run cleanly, temporaries removed; a
    /// second exits at once), 3 stopped because
    /// the target file system is full (ENOSPC, EDQUOT) or read-only (EROFS):
    /// reported once, with the path; copies under way were abandoned and
    /// their old targets kept.
    #[command(disable_help_flag = true)]
    Sync(SyncArgs),

    /// Compare SRC and DST completely, changing nothing: content (xxh3-128),
    /// type, mode, owner, group, mtime, xattrs, ACLs, hard-link groups,
    /// holes, symlink targets, device numbers, and the file flags and
    /// project ids a sync compares. Differences are printed in path
    /// order, as `sync -i` prints the changes that would fix them
    /// (`*deleting` for an entry only DST has; `>f.........` for the same
    /// bytes with a source hole filled in DST; `hf......... NAME => LEADER`
    /// for a name in another hard-link group).
    ///
    /// With --manifest FILE and SRC DST: also write SRC's manifest.
    /// With --manifest FILE and DST alone: check DST's regular files
    /// against the manifest (missing, extra, size, mtime, content).
    ///
    /// Nothing is written to DST. Takes sync's options too when given as
    /// `psync sync --verify-only [OPTIONS] SRC DST` (filters, attribute
    /// switches). Exit status: 0 identical, 1 differences found, 2 some
    /// entries could not be compared (reported on stderr), a fatal error,
    /// or interrupted.
    Verify(VerifyArgs),

    /// Print a shell completion script on stdout: `psync completions bash
    /// > /etc/bash_completion.d/psync`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff) on stdout: `psync man > psync.1`.
    Man,

    /// Take tasks of runs from a broker and run them, until SIGTERM or
    /// `psync shutdown`.
    ///
    /// Needs --allow (or a config file's allow lines). On SIGTERM it takes
    /// nothing new, lets tasks under way finish for --grace seconds, hands
    /// back the rest and leaves; a second signal hands everything back at
    /// once. Killed outright, its tasks are taken by other workers when
    /// its heartbeat expires.
    Worker(WorkerArgs),

    /// Follow a run submitted with `sync --detach` to its end.
    ///
    /// The same output and exit status as `sync`. An interrupt stops
    /// following (exit 2); the run goes on.
    Wait {
        #[command(flatten)]
        run: RunArg,
        /// Print events as JSON lines on stdout.
        #[arg(long)]
        json: bool,
        /// No progress bar and no summary.
        #[arg(short = 'q', long)]
        quiet: bool,
    },

    /// Show workers (threads, busy, tasks, rate, heartbeat, what each
    /// thread is on) and runs (state, entries, bytes, rate, ETA, errors).
    Status {
        #[command(flatten)]
        run: MaybeRunArg,
        /// As one JSON object.
        #[arg(long)]
        json: bool,
    },

    /// Pause a run (default: every run under way): nothing new starts,
    /// tasks under way finish.
    Pause {
        #[command(flatten)]
        run: MaybeRunArg,
        /// Stop tasks under way at once; they go back to the queue.
        #[arg(long)]
        kill: bool,
    },

    /// Resume a paused run (default: every run).
    Resume {
        #[command(flatten)]
        run: MaybeRunArg,
    },

    /// Set the thread count of live workers (all, or those matching
    /// --name PATTERN with * and ? wildcards).
    Workers {
        /// The new thread count.
        #[arg(long, value_name = "N",
              value_parser = clap::value_parser!(u16).range(1..=psync_core::MAX_THREADS as i64))]
        threads: u16,
        /// Only workers whose name matches.
        #[arg(long, value_name = "PATTERN")]
        name: Option<String>,
        #[command(flatten)]
        broker: BrokerArgs,
    },

    /// Cancel a run: it ends at once (its follower exits with status 2).
    Cancel {
        #[command(flatten)]
        run: RunArg,
    },

    /// Ask every live worker to leave cleanly.
    Shutdown {
        #[command(flatten)]
        broker: BrokerArgs,
    },

    /// Print the event log of a run, or the cluster's log (workers
    /// joining and leaving, reclaimed tasks, refused runs) without one.
    Logs {
        #[command(flatten)]
        run: MaybeRunArg,
        /// The lowest level shown: error, warn or info.
        #[arg(long, default_value = "info")]
        level: psync_broker::Level,
        /// Keep printing new entries until interrupted.
        #[arg(short = 'f', long)]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `psync sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Source directory. Its contents are synced: a trailing slash makes no
    /// difference (unlike rsync).
    pub src: PathBuf,

    /// Target directory. Created if missing (its parent must exist).
    pub dst: PathBuf,

    /// Delete entries in DST that are not in SRC. Default: keep them.
    #[arg(long)]
    pub delete: bool,

    /// Let a type change replace a non-empty target directory (a directory
    /// in DST where SRC now has a file, symlink or special). Default: such
    /// a directory is left in place and reported as an error, as rsync
    /// does; --delete implies --force.
    #[arg(long)]
    pub force: bool,

    /// Do not cross file system boundaries in SRC (rsync -x): a directory
    /// mounted below SRC is copied as an empty directory, and nothing in
    /// its target is deleted. (Mount points inside DST are never entered
    /// or deleted into, with or without this option.)
    #[arg(short = 'x', long)]
    pub one_file_system: bool,

    /// Show what would change without changing anything.
    #[arg(short = 'n', long)]
    pub dry_run: bool,

    /// `psync verify`: compare both trees completely and change nothing
    /// (see `psync verify --help`).
    #[arg(long)]
    pub verify_only: bool,

    /// Write FILE: a line per regular file of SRC (xxh3-128, size, mtime,
    /// path), sorted by path. A file the run does not read is read for
    /// it. Checked later with `psync verify --manifest FILE DST`.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Worker threads, 1 to 256. Default: eight per CPU, 16 to 64, as
    /// most of them wait on I/O; two per CPU, 4 to 64, into tmpfs or
    /// ramfs, where nothing does. Each holds a few MiB of buffers.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=psync_core::MAX_THREADS as i64))]
    pub threads: Option<u16>,

    /// Treat modification times that differ by at most SECS seconds as
    /// equal (0 to 2147483647, as rsync). Default: the target file
    /// system's timestamp resolution, detected per run (0 where it keeps
    /// nanoseconds).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=psync_core::MAX_SECS))]
    pub modify_window: Option<u64>,

    /// Copy every file, even when size and modification time match.
    #[arg(short = 'I', long)]
    pub ignore_times: bool,

    /// Times to retry a file that changes while it is being copied (0 to 100).
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(psync_core::MAX_RETRIES)))]
    pub retries: u32,

    /// After an interrupt, wait at most SECS seconds (0 to 86400) for
    /// tasks under way (a read from a hung server may never return), then
    /// remove this run's temporaries without them and exit (status 2).
    #[arg(long, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=psync_core::MAX_STOP_GRACE.as_secs()))]
    pub stop_grace: u64,

    /// Do not preserve permissions. Default: preserve them.
    #[arg(long, help_heading = "Attributes")]
    pub no_perms: bool,

    /// Do not preserve modification times. Default: preserve them.
    ///
    /// Files are then copied again on every run, as size and time decide
    /// what is unchanged.
    #[arg(long, help_heading = "Attributes")]
    pub no_times: bool,

    /// Do not preserve the owner. Default: preserve it when run as root.
    #[arg(long, help_heading = "Attributes")]
    pub no_owner: bool,

    /// Do not preserve the group. Default: preserve it when run as root.
    #[arg(long, help_heading = "Attributes")]
    pub no_group: bool,

    /// Do not keep hard links. Default: all paths of one source inode
    /// become links to one target inode, whose data is copied once (rsync -H).
    #[arg(long, help_heading = "Attributes")]
    pub no_hard_links: bool,

    /// Require extended attributes: one the target cannot hold is an error.
    /// Default: copy them (user, trusted, security, as far as the process
    /// may) and warn about those the target cannot hold.
    #[arg(
        short = 'X',
        long,
        help_heading = "Attributes",
        conflicts_with = "no_xattrs"
    )]
    pub xattrs: bool,

    /// Compare the xattrs and ACLs of existing targets only when their
    /// source changed status (ctime) since the target was written: about
    /// three times cheaper on a no-op run, but misses changes made on the
    /// target side and targets pre-seeded by another tool. Default: compare
    /// every entry on every run, as rsync -X does.
    #[arg(long, help_heading = "Attributes")]
    pub fast_xattr_check: bool,

    /// Do not copy extended attributes (other than ACLs).
    #[arg(long, help_heading = "Attributes")]
    pub no_xattrs: bool,

    /// Require POSIX ACLs (access and default): one the target cannot hold
    /// is an error. Default: copy them, and warn when the target cannot.
    #[arg(
        short = 'A',
        long,
        help_heading = "Attributes",
        conflicts_with = "no_acls"
    )]
    pub acls: bool,

    /// Do not copy POSIX ACLs.
    #[arg(long, help_heading = "Attributes")]
    pub no_acls: bool,

    /// Do not copy inode flags. Default: the immutable, append-only, sync,
    /// noatime and nodump flags (`chattr` i a S A d) of files and
    /// directories are copied, immutable and append-only last; what the
    /// target cannot hold is a warning, once per run.
    #[arg(long, help_heading = "Attributes")]
    pub no_file_flags: bool,

    /// Do not copy project ids. Default: the project id and the
    /// project-inherit flag of files and directories (ext4, XFS, Lustre
    /// project quotas) are copied; a target without them is a warning,
    /// once per run.
    #[arg(long, help_heading = "Attributes")]
    pub no_project_ids: bool,

    /// Clone file data instead of copying it: `auto` clones when source and
    /// target are on one file system that can (XFS with reflink, btrfs),
    /// `always` fails files that cannot be cloned, `never` copies bytes.
    #[arg(long, value_name = "WHEN", default_value = "auto")]
    pub reflink: ReflinkArg,

    /// The copier: `auto` (the default) picks by the file systems of SRC
    /// and DST (statfs magics: `lustre` for Lustre on both sides, else
    /// `generic`); a name forces that copier, and is refused when it is
    /// not in this build or not made for this pair of file systems
    /// (`lustre` on ext4). `psync probe SRC DST` shows the choice.
    #[arg(long, value_name = "NAME", default_value = "auto")]
    pub backend: Backend,

    /// Do not verify copies. Default: hash the data as it is copied
    /// (xxh3-128), read the target back and compare; a mismatch fails the
    /// file and leaves its target unchanged.
    #[arg(long)]
    pub no_verify: bool,

    /// Write the chunks of large files through the page cache. Default:
    /// with O_DIRECT where the target's file system supports it, several
    /// chunks of one file at once.
    #[arg(long)]
    pub no_direct_io: bool,

    /// Keep the source's data in the page cache. Default: each file's
    /// source pages are dropped from the cache once it is copied (a large
    /// file's chunk by chunk), so a migration does not evict what the
    /// machine has cached (the rest of its own source included), and the
    /// pages freed serve the target's writes.
    #[arg(long)]
    pub keep_source_cache: bool,

    /// Make every file durable before it counts as done: each batch of
    /// files is flushed to stable storage (one syncfs of the target file
    /// system) before their names are put in place, and each directory
    /// whose entries changed is flushed (fsync) when the task that changed
    /// it ends; a flush that fails (EIO, ENOSPC on write-back) fails the
    /// files and the run (exit 1). Default: off: psync exits with its
    /// writes in the page cache, and a device that fails on write-back
    /// later loses them unreported. Cost measured on ext4: about 2x the
    /// time of a run of 100,000 small files, 1.7x on 4 x 1 GiB (1.45x and
    /// 1.3x a run followed by `sync`; docs/adr/009-durability.md).
    #[arg(long)]
    pub fsync: bool,

    /// How to flush (implies --fsync): `batch` (the default of --fsync:
    /// one syncfs per batch of up to 64 files), `parallel` (an fsync per
    /// file, a batch's all at once: flushes only psync's own writes, for
    /// file systems other writers use heavily; ~2x the cost of batch on
    /// small files), `file` (an fsync per file, one after another: several
    /// times that), `end` (one syncfs when the run ends: cheapest, but
    /// nothing is durable before then).
    #[arg(long, value_name = "MODE")]
    pub fsync_mode: Option<FlushArg>,

    /// Decide by content: files of equal size are compared by hash
    /// (xxh3-128, both sides read at once) instead of by modification time.
    #[arg(short = 'c', long)]
    pub checksum: bool,

    /// Leave alone files, symlinks and specials whose status changed less
    /// than SECS seconds before the run started (still being written on a
    /// live file system); they are counted and reported as skipped.
    /// 0 to 2147483647; default: 0 (off).
    #[arg(long, value_name = "SECS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=psync_core::MAX_SECS))]
    pub min_age: u64,

    /// Files larger than SIZE are copied in chunks of SIZE by all threads
    /// at once (suffixes K, M, G, T: powers of 1024; 1M to 1T, a multiple
    /// of 4K).
    #[arg(long, value_name = "SIZE", default_value = "64M", value_parser = parse_chunk_size)]
    pub chunk_size: u64,

    /// Chunked files of at least SIZE keep a journal of finished chunks, so
    /// a killed run resumes them mid-file; smaller ones start over (0:
    /// every chunked file resumes).
    #[arg(long, value_name = "SIZE", default_value = "1G", value_parser = parse_size)]
    pub resume_threshold: u64,

    /// Lustre to Lustre: the layout new files (and directories) get:
    /// `copy` the source's, `default` none (the target directory's), or
    /// `count=N,size=S[,pool=P]` for every file.
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "copy",
        help_heading = "Lustre"
    )]
    pub lustre_layout: psync_lustre::LayoutPolicy,

    /// Lustre: keep the source's first OST for each file (by default the
    /// target places the stripes).
    #[arg(long, help_heading = "Lustre")]
    pub lustre_keep_ost_indices: bool,

    /// Lustre: layouts naming OST pool OLD name NEW instead (`OLD=`
    /// drops the pool). Repeatable. A pool the target refuses is dropped
    /// with a warning.
    #[arg(long, value_name = "OLD=NEW", value_parser = check_pool_map, help_heading = "Lustre")]
    pub lustre_pool: Vec<String>,

    /// Lustre: copy files whose data is released to HSM (reading them
    /// restores it from the archive); by default they are skipped and
    /// counted.
    #[arg(long, help_heading = "Lustre")]
    pub hsm_restore: bool,

    /// Print a line per change, in rsync's `%i %n%L` format, on stdout.
    #[arg(short = 'i', long, help_heading = "Output")]
    pub itemize_changes: bool,

    /// Print events as JSON lines on stdout, and nothing else.
    ///
    /// One object per line, with an "event" field: "progress" four times a
    /// second, "itemize" per change (with -i; "code" is rsync's change
    /// code), "error", "warning", "notice" (once, at the start: what this
    /// pair of file systems cannot keep), and "summary" at the end (with
    /// "copier": the copier that ran). -q does not
    /// affect these lines.
    #[arg(long, help_heading = "Output")]
    pub json: bool,

    /// No progress bar (unless --progress) and no summary. Errors still
    /// go to stderr.
    #[arg(short = 'q', long, help_heading = "Output")]
    pub quiet: bool,

    /// Show progress on stderr, also with -q or --json: redrawn in place
    /// on a terminal (the default there), elsewhere a line every 5
    /// seconds (for a batch job's log).
    #[arg(long, overrides_with = "no_progress", help_heading = "Output")]
    pub progress: bool,

    /// No progress, also on a terminal.
    #[arg(long, overrides_with = "progress", help_heading = "Output")]
    pub no_progress: bool,

    /// Limits, `-v`, `--stats`, `--log-file`.
    #[command(flatten)]
    pub limits: LimitsArgs,

    /// Include/exclude rules.
    #[command(flatten)]
    pub filters: FilterArgs,

    /// The broker to run on (see `psync worker`).
    #[command(flatten)]
    pub broker: BrokerArgs,

    /// With a broker: print the run's id and return once it is submitted
    /// (`psync wait RUN` follows it).
    #[arg(long, help_heading = "Cluster")]
    pub detach: bool,

    /// rsync's archive-family flags, accepted for what psync does anyway.
    #[command(flatten)]
    pub rsync: RsyncFlags,
}

// --- Filters (rsync's --exclude, --include, --filter) ---

/// Include/exclude rules, as rsync reads them: in the order given across
/// all the options, the first rule that matches an entry deciding.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Leave out entries matching PATTERN (rsync's pattern rules: `*`
    /// within a component, `**` across `/`, a leading `/` anchors at the
    /// transfer root, a trailing `/` matches directories only). Excluded
    /// target entries are kept from --delete.
    #[arg(long, value_name = "PATTERN", value_parser = rule_of(FilterOp::Exclude),
          allow_hyphen_values = true, help_heading = "Filters")]
    pub exclude: Vec<Tagged>,

    /// Do not exclude entries matching PATTERN (the first matching rule
    /// wins, so give it before the --exclude it overrides).
    #[arg(long, value_name = "PATTERN", value_parser = rule_of(FilterOp::Include),
          allow_hyphen_values = true, help_heading = "Filters")]
    pub include: Vec<Tagged>,

    /// A filter rule: `- PATTERN` or `exclude PATTERN`, `+ PATTERN` or
    /// `include PATTERN`, `!` to clear the rules so far. (The value may
    /// start with `-`, as rsync's `-f '- *.o'`.)
    #[arg(short = 'f', long, value_name = "RULE", value_parser = rule_of(FilterOp::Filter),
          allow_hyphen_values = true, help_heading = "Filters")]
    pub filter: Vec<Tagged>,

    /// Exclude patterns read from FILE, one a line (blank lines and lines
    /// starting with `#` or `;` skipped; `+ `/`- ` prefixes honoured).
    #[arg(long, value_name = "FILE", value_parser = rule_of(FilterOp::ExcludeFrom),
          help_heading = "Filters")]
    pub exclude_from: Vec<Tagged>,

    /// Include patterns read from FILE, as --exclude-from reads them.
    #[arg(long, value_name = "FILE", value_parser = rule_of(FilterOp::IncludeFrom),
          help_heading = "Filters")]
    pub include_from: Vec<Tagged>,

    /// Delete excluded entries from DST too (implies --delete).
    #[arg(long, help_heading = "Filters")]
    pub delete_excluded: bool,

    /// Sync only the paths listed in FILE (`-` for stdin), one a line,
    /// relative to SRC: their parent directories are made, nothing else
    /// in them is synced or deleted; a listed directory is synced whole,
    /// as `rsync -a -r --files-from` does (psync always recurses).
    #[arg(long, value_name = "FILE", value_parser = read_files_from, help_heading = "Filters")]
    pub files_from: Option<FileText>,

    /// --files-from's paths are separated by NULs, not newlines.
    #[arg(short = '0', long, help_heading = "Filters")]
    pub from0: bool,
}

/// The text of a --files-from file, read as the line is parsed.
#[derive(Debug, Clone)]
pub struct FileText(Vec<u8>);

fn read_files_from(s: &str) -> Result<FileText, String> {
    use std::io::Read;
    let mut text = Vec::new();
    let read = match s {
        "-" => std::io::stdin().read_to_end(&mut text).map(|_| ()),
        _ => std::fs::read(s).map(|t| text = t),
    };
    read.map_err(|e| format!("cannot read {s}: {e}"))?;
    // `..` in a path, whether the paths end in newlines or NULs.
    if text
        .split(|c| matches!(c, b'/' | b'\n' | b'\r' | b'\0'))
        .any(|p| p == b"..")
    {
        return Err(format!(
            "{s}: a path goes up with `..`: paths are relative to SRC"
        ));
    }
    Ok(FileText(text))
}

/// Which option a filter value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterOp {
    Exclude,
    Include,
    Filter,
    ExcludeFrom,
    IncludeFrom,
}

/// One filter option's value with its place on the command line: clap
/// keeps each option's values apart, and the rules' order across them
/// decides. Files are read, and rules checked, as the line is parsed.
#[derive(Debug, Clone)]
pub struct Tagged {
    seq: u64,
    op: FilterOp,
    text: Vec<u8>,
}

fn rule_of(op: FilterOp) -> impl Fn(&str) -> Result<Tagged, String> + Clone + Send + Sync {
    use std::os::unix::ffi::OsStrExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    // Clap parses values in command-line order.
    static SEQ: AtomicU64 = AtomicU64::new(0);
    move |s: &str| {
        let text = match op {
            FilterOp::ExcludeFrom | FilterOp::IncludeFrom => {
                let path = std::ffi::OsStr::new(s);
                std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.to_string_lossy()))?
            }
            FilterOp::Filter => {
                psync_core::filter::Filters::default()
                    .add_filter(s.as_bytes())
                    .map_err(|e| e.to_string())?;
                s.as_bytes().to_vec()
            }
            _ => std::ffi::OsStr::new(s).as_bytes().to_vec(),
        };
        Ok(Tagged {
            seq: SEQ.fetch_add(1, Ordering::Relaxed),
            op,
            text,
        })
    }
}

impl FilterArgs {
    /// The rules, in command-line order.
    pub fn filters(&self) -> psync_core::filter::Filters {
        let mut all: Vec<&Tagged> = [
            &self.exclude,
            &self.include,
            &self.filter,
            &self.exclude_from,
            &self.include_from,
        ]
        .into_iter()
        .flatten()
        .collect();
        all.sort_by_key(|t| t.seq);
        let mut f = psync_core::filter::Filters::default();
        for t in all {
            match t.op {
                FilterOp::Exclude => f.add_pattern(false, &t.text),
                FilterOp::Include => f.add_pattern(true, &t.text),
                FilterOp::Filter => f.add_filter(&t.text).expect("checked when parsed"),
                FilterOp::ExcludeFrom => f.add_pattern_lines(false, &t.text),
                FilterOp::IncludeFrom => f.add_pattern_lines(true, &t.text),
            }
        }
        f.delete_excluded = self.delete_excluded;
        if let Some(FileText(text)) = &self.files_from {
            f.set_files_from(text, self.from0)
                .expect("`..` checked when read");
        }
        f
    }
}

// --- end of filters ---

// ---- rsync's habits (issue 17) ----------------------------------------
// Flags an rsync user types out of habit, which name what psync does by
// default. They are accepted and change nothing, except the --delete-WHEN
// forms, which imply --delete as in rsync. Hidden from --help (it would
// double in length); the README's "Coming from rsync" table lists them.
// Options psync does not implement are refused in rsync.rs.

/// rsync flags that psync accepts; see the README's "Coming from rsync".
#[derive(Debug, Args, Default)]
pub struct RsyncFlags {
    /// rsync -a (-rlptgoD): psync's default.
    #[arg(short = 'a', long, hide = true)]
    pub archive: bool,
    /// rsync -r: psync always recurses.
    #[arg(short = 'r', long, hide = true)]
    pub recursive: bool,
    /// rsync -l: symlinks are copied as symlinks.
    #[arg(short = 'l', long, hide = true)]
    pub links: bool,
    /// rsync -p: the default (--no-perms turns it off).
    #[arg(short = 'p', long, hide = true)]
    pub perms: bool,
    /// rsync -t: the default (--no-times turns it off).
    #[arg(short = 't', long, hide = true)]
    pub times: bool,
    /// rsync -g: the default as root (--no-group turns it off).
    #[arg(short = 'g', long, hide = true)]
    pub group: bool,
    /// rsync -o: the default as root (--no-owner turns it off).
    #[arg(short = 'o', long, hide = true)]
    pub owner: bool,
    /// rsync -D (--devices --specials): devices, FIFOs and sockets are copied.
    #[arg(short = 'D', hide = true)]
    pub devices_specials: bool,
    /// rsync --devices.
    #[arg(long, hide = true)]
    pub devices: bool,
    /// rsync --specials.
    #[arg(long, hide = true)]
    pub specials: bool,
    /// rsync -H: the default (--no-hard-links turns it off).
    #[arg(short = 'H', long, hide = true)]
    pub hard_links: bool,
    /// rsync -S: holes are always kept.
    #[arg(short = 'S', long, hide = true)]
    pub sparse: bool,
    /// rsync --numeric-ids: psync always keeps ids as numbers.
    #[arg(long, hide = true)]
    pub numeric_ids: bool,
    /// rsync -W: psync always copies whole files (no delta transfer).
    #[arg(short = 'W', long, hide = true)]
    pub whole_file: bool,
    /// rsync -h: psync's numbers are always human-readable.
    #[arg(short = 'h', long, hide = true)]
    pub human_readable: bool,
    /// Print help (-h is rsync's --human-readable here).
    #[arg(long, action = clap::ArgAction::HelpLong)]
    pub help: Option<bool>,
    /// rsync --delete-during (--del): --delete.
    #[arg(long, alias = "del", hide = true)]
    pub delete_during: bool,
    /// rsync --delete-before: --delete.
    #[arg(long, hide = true)]
    pub delete_before: bool,
    /// rsync --delete-after: --delete.
    #[arg(long, hide = true)]
    pub delete_after: bool,
    /// rsync --delete-delay: --delete.
    #[arg(long, hide = true)]
    pub delete_delay: bool,
}

impl RsyncFlags {
    /// True when a --delete-WHEN form was given: each means --delete, as
    /// in rsync. psync has one order: in each directory, extraneous
    /// entries are deleted before new ones are made (rsync's
    /// --delete-during); the finished tree is the same with every form.
    pub fn delete(&self) -> bool {
        self.delete_during || self.delete_before || self.delete_after || self.delete_delay
    }
}
// ---- end of rsync's habits ---------------------------------------------

/// Arguments of `psync verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// SRC DST, or DST alone with --manifest.
    #[arg(required = true, num_args = 1..=2, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// With SRC DST: write SRC's manifest to FILE. With DST alone: check
    /// DST against FILE.
    #[arg(long, value_name = "FILE")]
    pub manifest: Option<PathBuf>,

    /// Worker threads, 1 to 256.
    #[arg(long, value_name = "N", default_value_t = default_threads(),
          value_parser = clap::value_parser!(u16).range(1..=psync_core::MAX_THREADS as i64))]
    pub threads: u16,
}

/// Arguments of `psync probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The paths to probe (any file or directory; symlinks are followed).
    /// With exactly two, they are taken as SRC and DST of a sync (DST may
    /// be missing: its nearest existing parent is probed for the copier).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Print one JSON document on stdout: {"paths": [...], "copier": ...}.
    #[arg(long)]
    pub json: bool,

    /// Also try each capability by writing: two files of the probe's own
    /// in PATH (a directory; a file's parent otherwise), unnamed
    /// (O_TMPFILE) or unlinked as soon as they are made, so nothing stays
    /// even if the probe is killed. Needs write access there. Default:
    /// read-only calls, files already there and the file system type.
    #[arg(long)]
    pub write_test: bool,

    /// The copier choice to explain for SRC DST (as `sync --backend`).
    #[arg(long, value_name = "NAME", default_value = "auto")]
    pub backend: Backend,
}

impl ProbeArgs {
    /// The builder `psync sync --backend B SRC DST` would make: the
    /// same copiers, the same choice.
    pub fn sync_builder(
        &self,
        src: &std::path::Path,
        dst: &std::path::Path,
    ) -> Option<SyncBuilder> {
        let argv: Vec<std::ffi::OsString> = vec![
            "psync".into(),
            "sync".into(),
            "--backend".into(),
            self.backend.to_string().into(),
            "--".into(),
            src.into(),
            dst.into(),
        ];
        match Cli::try_parse_from(argv).ok()?.command {
            Command::Sync(a) => Some(a.builder(crossbeam_channel::bounded(1).0)),
            _ => None,
        }
    }
}

/// Where the broker is: for `sync` (a run on the cluster's workers) and
/// every cluster command.
#[derive(Debug, Args, Clone, Default)]
pub struct BrokerArgs {
    /// Run through this Redis broker:
    /// redis://[USER@]HOST[:PORT][/DB], or rediss:// for TLS. Default:
    /// $PSYNC_BROKER; `sync` without either runs here.
    #[arg(long, value_name = "URL", help_heading = "Cluster")]
    pub broker: Option<String>,

    /// Read the broker's password from the first line of FILE. Default:
    /// $PSYNC_BROKER_PASSWORD, or none. Never printed.
    #[arg(long, value_name = "FILE", help_heading = "Cluster")]
    pub broker_password_file: Option<PathBuf>,

    /// A CA certificate (PEM) to trust for a rediss:// broker. Default:
    /// $PSYNC_BROKER_CA, or the system's roots.
    #[arg(long, value_name = "FILE", help_heading = "Cluster")]
    pub broker_ca: Option<PathBuf>,
}

/// Arguments of `psync worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Threads running tasks (default: as for `sync`).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=psync_core::MAX_THREADS as i64))]
    pub threads: Option<u16>,

    /// The worker's name, unique among live workers. Default: HOST-PID.
    #[arg(long)]
    pub name: Option<String>,

    /// Accept runs whose source and target are below DIR (repeatable).
    /// A worker takes no run outside them: whoever can write to the
    /// broker could otherwise have it copy anything anywhere.
    #[arg(long, value_name = "DIR")]
    pub allow: Vec<PathBuf>,

    /// Read settings from FILE: lines `key = value` with keys broker,
    /// password-file, ca-file, allow (repeatable), threads, name.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// A task idle this long is taken from a worker that is alive but
    /// does not renew it (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub lease: f64,

    /// On SIGTERM or `psync shutdown`, how long tasks under way may finish
    /// before they are handed back (seconds).
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub grace: f64,

    /// Heartbeat interval (seconds); a worker silent for 10 of them is
    /// dead and its tasks are taken by others.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub heartbeat: f64,

    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// A run id argument.
#[derive(Debug, Args)]
pub struct RunArg {
    /// The run's id (16 hex digits, as `psync sync --detach` and
    /// `psync status` print it).
    pub run: psync_broker::RunId,

    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// An optional run id argument.
#[derive(Debug, Args)]
pub struct MaybeRunArg {
    /// The run's id; default: every run under way.
    pub run: Option<psync_broker::RunId>,

    #[command(flatten)]
    pub broker: BrokerArgs,
}

/// `--reflink` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReflinkArg {
    /// Clone where possible, copy otherwise.
    Auto,
    /// Clone or fail.
    Always,
    /// Always copy.
    Never,
}

/// `--fsync-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlushArg {
    /// One syncfs per batch of files before publishing them.
    Batch,
    /// Concurrent fsyncs of a batch's files before publishing them.
    Parallel,
    /// An fsync per file before publishing it.
    File,
    /// One syncfs when the run ends.
    End,
}

/// Parses `64M`, `1G`, `4096`, `1.5T` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let v: f64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("not a size: {s:?}"));
    }
    Ok((v * mult as f64) as u64)
}

/// A `--lustre-pool` value: `OLD=NEW` with names that fit a pool.
fn check_pool_map(s: &str) -> Result<String, String> {
    psync_lustre::LustreOptions::default().map_pool(s)?;
    Ok(s.to_string())
}

/// An attribute kind's mode from its pair of flags.
fn attr_mode(required: bool, off: bool) -> AttrMode {
    match (required, off) {
        (true, _) => AttrMode::Required,
        (_, true) => AttrMode::Off,
        _ => AttrMode::Auto,
    }
}

pub(crate) fn default_threads() -> u16 {
    u16::try_from(psync_core::default_threads()).unwrap_or(1)
}

/// A chunk size in the range the engine supports.
fn parse_chunk_size(s: &str) -> Result<u64, String> {
    let v = parse_size(s)?;
    let ok = (psync_core::MIN_CHUNK_SIZE..=psync_core::MAX_CHUNK_SIZE).contains(&v)
        && v.is_multiple_of(psync_core::CHUNK_ALIGN);
    match ok {
        true => Ok(v),
        false => Err(format!(
            "{s:?} is {v} bytes; a chunk is 1M to 1T and a multiple of 4K"
        )),
    }
}

impl SyncArgs {
    /// `--progress` or `--no-progress`, the last given; or neither.
    pub fn progress_when(&self) -> crate::progress::When {
        use crate::progress::When;
        match (self.progress, self.no_progress) {
            (true, _) => When::Always,
            (_, true) => When::Never,
            _ => When::Auto,
        }
    }

    /// The Lustre copier's options from the `--lustre-*` flags.
    pub fn lustre_options(&self) -> psync_lustre::LustreOptions {
        let mut o = psync_lustre::LustreOptions::default();
        o.layout = self.lustre_layout.clone();
        o.keep_ost_indices = self.lustre_keep_ost_indices;
        o.hsm_restore = self.hsm_restore;
        for m in &self.lustre_pool {
            o.map_pool(m).expect("checked by check_pool_map");
        }
        o
    }

    /// The library builder for these arguments, sending events to `events`.
    /// This is the only place where arguments become library settings.
    pub fn builder(&self, events: Sender<Event>) -> SyncBuilder {
        let mut b = SyncBuilder::new(&self.src, &self.dst);
        b.default_copier(Arc::new(GenericCopier::new()));
        for (src, dst, copier) in psync_lustre::copiers(&self.lustre_options()) {
            b.register_copier(src, dst, copier);
        }
        if let Some(n) = self.threads {
            b.threads(usize::from(n));
        }
        b.delete(self.delete || self.rsync.delete() || self.filters.delete_excluded)
            .filters(self.filters.filters())
            .force(self.force)
            .one_file_system(self.one_file_system)
            .dry_run(self.dry_run)
            .verify_only(self.verify_only)
            .manifest(self.manifest.is_some())
            .itemize(self.itemize_changes || self.limits.wants_changes())
            .max_delete(self.limits.max_delete)
            .max_errors(self.limits.max_errors)
            .bwlimit(self.limits.bwlimit)
            .preserve(self.preserve())
            .ignore_times(self.ignore_times)
            .retries(self.retries)
            .stop_grace(Duration::from_secs(self.stop_grace))
            .hard_links(!self.no_hard_links)
            .fast_xattr_check(self.fast_xattr_check)
            .verify(!self.no_verify)
            .direct_io(!self.no_direct_io)
            .keep_source_cache(self.keep_source_cache)
            .checksum(self.checksum)
            .min_age(Duration::from_secs(self.min_age))
            .chunk_size(self.chunk_size)
            .resume_threshold(self.resume_threshold)
            .xattrs(attr_mode(self.xattrs, self.no_xattrs))
            .acls(attr_mode(self.acls, self.no_acls))
            .file_flags(attr_mode(false, self.no_file_flags))
            .project_ids(attr_mode(false, self.no_project_ids))
            .reflink(match self.reflink {
                ReflinkArg::Auto => Reflink::Auto,
                ReflinkArg::Always => Reflink::Always,
                ReflinkArg::Never => Reflink::Never,
            })
            .fsync(self.fsync)
            .progress_interval(PROGRESS_INTERVAL)
            .events(events);
        if let Some(mode) = self.fsync_mode {
            b.flush(match mode {
                FlushArg::File => Flush::File,
                FlushArg::Batch => Flush::Batch,
                FlushArg::Parallel => Flush::Parallel,
                FlushArg::End => Flush::End,
            });
        }
        // Only when given: unset, the library detects the right window.
        if let Some(secs) = self.modify_window {
            b.modify_window(Duration::from_secs(secs));
        }
        // A knob for tests (ADR 021): a few names make a wide directory.
        if let Some(n) = std::env::var("PSYNC_WIDE_DIR")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            b.wide_dir(n);
        }
        b.backend(self.backend.clone());
        b
    }

    /// Archive mode minus what was turned off. Owner and group apply only
    /// as root; the library checks that.
    fn preserve(&self) -> Preserve {
        let mut p = Preserve::ARCHIVE;
        p.perms = !self.no_perms;
        p.times = !self.no_times;
        p.owner = !self.no_owner;
        p.group = !self.no_group;
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn rates_are_rsyncs() {
        assert_eq!(parse_rate("100"), Ok(100 * 1024));
        assert_eq!(parse_rate("8M"), Ok(8 << 20));
        assert_eq!(parse_rate("1.5K"), Ok(1536));
        assert_eq!(parse_rate("0"), Ok(0));
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn sync_args(argv: &[&str]) -> SyncArgs {
        let cli = Cli::try_parse_from(argv).unwrap();
        match cli.command {
            Command::Sync(a) => a,
            other => panic!("not a sync: {other:?}"),
        }
    }

    #[test]
    fn the_last_progress_flag_wins() {
        use crate::progress::When;
        let when = |flags: &[&str]| {
            let argv: Vec<&str> = ["psync", "sync"]
                .iter()
                .chain(flags)
                .chain(&["a", "b"])
                .copied()
                .collect();
            sync_args(&argv).progress_when()
        };
        assert_eq!(when(&[]), When::Auto);
        assert_eq!(when(&["--progress"]), When::Always);
        assert_eq!(when(&["--no-progress"]), When::Never);
        assert_eq!(when(&["--no-progress", "--progress"]), When::Always);
        assert_eq!(when(&["--progress", "-q", "--no-progress"]), When::Never);
    }

    #[test]
    fn filter_options_keep_their_order_across_options() {
        let dir = std::env::temp_dir().join(format!("psync-filter-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let from = dir.join("ex");
        std::fs::write(&from, "# comment\n*.tmp\n+ keep.tmp\n").unwrap();
        let list = dir.join("list");
        std::fs::write(&list, "a/b\0c\0").unwrap();
        let from_arg = format!("--exclude-from={}", from.display());
        let list_arg = format!("--files-from={}", list.display());
        let a = sync_args(&[
            "psync",
            "sync",
            "--include=x.o",
            "--exclude=*.o",
            "-f",
            "- sub/",
            &from_arg,
            "--include=keep.tmp",
            "-0",
            &list_arg,
            "s",
            "d",
        ]);
        let f = a.filters.filters();
        let kinds: Vec<bool> = f.rules().iter().map(|r| r.include).collect();
        // x.o before *.o, then sub/, the file's two, the last include.
        assert_eq!(kinds, [true, false, false, false, true, true]);
        assert!(!f.excluded(b"x.o", 0, false));
        assert!(f.excluded(b"y.o", 0, false));
        assert!(f.excluded(b"sub", 0, true));
        assert!(
            f.excluded(b"keep.tmp", 0, false),
            "the file's *.tmp comes first"
        );
        assert!(f.on_the_list(b"a/b") && f.on_the_list(b"c") && !f.on_the_list(b"d"));
        // Refused when the line is parsed: an unknown rule, `..`, no file.
        for bad in [
            vec!["psync", "sync", "--filter=: .rsync-filter", "s", "d"],
            vec![
                "psync",
                "sync",
                "--exclude-from=/nonexistent/psync",
                "s",
                "d",
            ],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?}");
        }
        std::fs::write(&list, "a/../../etc\n").unwrap();
        assert!(Cli::try_parse_from(["psync", "sync", &list_arg, "s", "d"]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn archive_is_the_default() {
        let a = sync_args(&["psync", "sync", "a", "b"]);
        assert_eq!(a.preserve(), Preserve::ARCHIVE);
        assert_eq!(a.threads, None, "the builder's default, by the target");
        assert_eq!(a.retries, 2);
    }

    #[test]
    fn no_flags_turn_off_attributes() {
        let a = sync_args(&["psync", "sync", "--no-perms", "--no-owner", "a", "b"]);
        let p = a.preserve();
        assert_eq!(
            (p.perms, p.times, p.owner, p.group),
            (false, true, false, true)
        );
    }

    #[test]
    fn sizes_parse_with_binary_suffixes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn lustre_flags_make_the_lustre_options() {
        let a = sync_args(&["psync", "sync", "a", "b"]);
        assert_eq!(a.lustre_options(), psync_lustre::LustreOptions::default());
        let a = sync_args(&[
            "psync",
            "sync",
            "--lustre-layout=count=2,size=4M,pool=fast",
            "--lustre-keep-ost-indices",
            "--lustre-pool",
            "flash=ssd",
            "--lustre-pool=old=",
            "--hsm-restore",
            "a",
            "b",
        ]);
        let o = a.lustre_options();
        assert_eq!(o.layout.to_string(), "count=2,size=4194304,pool=fast");
        assert!(o.keep_ost_indices && o.hsm_restore);
        let map = [("flash", "ssd"), ("old", "")].map(|(a, b)| (a.to_string(), b.to_string()));
        assert_eq!(o.pool_map, map);
        for bad in ["--lustre-layout=stripes", "--lustre-pool=nopool"] {
            assert!(
                Cli::try_parse_from(["psync", "sync", bad, "a", "b"]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn backend_is_auto_unless_named() {
        assert_eq!(
            sync_args(&["psync", "sync", "a", "b"]).backend,
            Backend::Auto
        );
        let a = sync_args(&["psync", "sync", "--backend", "lustre", "a", "b"]);
        assert_eq!(a.backend, Backend::Named("lustre".into()));
    }

    #[test]
    fn probe_builds_the_sync_builder_of_its_paths() {
        let cli = Cli::try_parse_from(["psync", "probe", "--backend", "generic", "-x", "y"]);
        assert!(cli.is_err(), "sync options are not probe options");
        let cli = Cli::try_parse_from(["psync", "probe", "--json", "s", "-d"]);
        assert!(cli.is_err(), "a path that looks like an option needs --");
        let cli = Cli::try_parse_from(["psync", "probe", "--backend", "generic", "--", "s", "-d"]);
        let Command::Probe(p) = cli.unwrap().command else {
            panic!("not a probe")
        };
        assert_eq!(p.paths, [PathBuf::from("s"), PathBuf::from("-d")]);
        let b = p
            .sync_builder("s".as_ref(), "-d".as_ref())
            .expect("a builder");
        let shown = format!("{b:?}");
        assert!(shown.contains("dst: \"-d\""), "{shown}");
        assert!(shown.contains("Named(\"generic\")"), "{shown}");
    }

    #[test]
    fn rsync_archive_flags_change_nothing() {
        let plain = format!(
            "{:?}",
            sync_args(&["psync", "sync", "a", "b"]).builder(crossbeam_channel::bounded(1).0)
        );
        for argv in [
            &["psync", "sync", "-aHAX", "--numeric-ids", "a", "b"][..],
            &["psync", "sync", "-rlptgoD", "-S", "-W", "-h", "a", "b"],
            &[
                "psync",
                "sync",
                "--archive",
                "--recursive",
                "--links",
                "--perms",
                "--times",
            ],
            &[
                "psync",
                "sync",
                "--group",
                "--owner",
                "--devices",
                "--specials",
                "--hard-links",
            ],
            &[
                "psync",
                "sync",
                "--sparse",
                "--whole-file",
                "--human-readable",
                "a",
                "b",
            ],
            &["psync", "sync", "-aHSxch", "a", "b"],
        ] {
            let mut argv = argv.to_vec();
            if argv.last() != Some(&"b") {
                argv.extend(["a", "b"]);
            }
            let a = sync_args(&argv);
            assert_eq!(a.preserve(), Preserve::ARCHIVE, "{argv:?}");
            assert!(!a.delete && !a.rsync.delete(), "{argv:?}");
            // -X and -A require; -x and -c change the run.
            if !argv.iter().any(|w| w.starts_with("-a") && w.len() > 2) {
                let b = format!("{:?}", a.builder(crossbeam_channel::bounded(1).0));
                assert_eq!(b, plain, "{argv:?} changed the run");
            }
        }
        // -A and -X are psync's "require": an ACL or xattr the target
        // cannot hold is an error, as with rsync.
        let a = sync_args(&["psync", "sync", "-aHAX", "a", "b"]);
        assert!(a.acls && a.xattrs);
        let a = sync_args(&["psync", "sync", "-aHSxcnIiq", "a", "b"]);
        assert!(a.one_file_system && a.checksum && a.dry_run && a.ignore_times);
        assert!(a.itemize_changes && a.quiet);
    }

    #[test]
    fn rsync_delete_forms_mean_delete() {
        for form in [
            "--delete-during",
            "--del",
            "--delete-before",
            "--delete-after",
            "--delete-delay",
        ] {
            let a = sync_args(&["psync", "sync", "-a", form, "a", "b"]);
            assert!(!a.delete && a.rsync.delete(), "{form}");
            let b = format!("{:?}", a.builder(crossbeam_channel::bounded(1).0));
            let d = sync_args(&["psync", "sync", "--delete", "a", "b"]);
            assert_eq!(
                b,
                format!("{:?}", d.builder(crossbeam_channel::bounded(1).0)),
                "{form}"
            );
        }
    }

    #[test]
    fn sync_help_is_long_only() {
        let e = Cli::try_parse_from(["psync", "sync", "--help"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("--delete"));
        assert!(
            sync_args(&["psync", "sync", "-h", "a", "b"])
                .rsync
                .human_readable
        );
    }

    #[test]
    fn zero_threads_is_a_usage_error() {
        assert!(Cli::try_parse_from(["psync", "sync", "--threads", "0", "a", "b"]).is_err());
    }
}

/// Limits of a run and what it records: `--max-delete`, `--max-errors`,
/// `-v`, `--stats`, `--log-file`.
#[derive(Debug, Args)]
pub struct LimitsArgs {
    /// Delete at most N target entries (a directory counts with its
    /// contents, and is kept whole when they do not all fit; one another
    /// type replaces counts its contents, as in rsync, and stays, a
    /// failed entry, when they do not fit); the rest are skipped, with a
    /// warning at the end and exit status 1, as rsync's --max-delete
    /// (which exits 25). 0 deletes nothing. With a broker, the count is
    /// the run's over every worker.
    #[arg(long, value_name = "N", help_heading = "Limits and logs")]
    pub max_delete: Option<u64>,

    /// Stop cleanly once N entries failed, as an interrupt stops the run
    /// (temporaries removed), with exit status 1. With a broker, the
    /// workers end the run within a heartbeat of the Nth failure.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Limits and logs")]
    pub max_errors: Option<u64>,

    /// At most RATE bytes of file data per second over all threads, as
    /// rsync's --bwlimit: KiB/s without a suffix, or with K, M, G. 0: no
    /// limit. Clones (reflinks) move no data and are not limited. With a
    /// broker, the rate is the run's over every worker.
    #[arg(long, value_name = "RATE", value_parser = parse_rate, help_heading = "Limits and logs")]
    pub bwlimit: Option<u64>,

    /// Print the name of each changed entry on stdout (`deleting NAME`
    /// for deletions), as rsync -v; -i prints codes instead.
    #[arg(short = 'v', long, help_heading = "Limits and logs")]
    pub verbose: bool,

    /// Print rsync-like statistics after the summary.
    #[arg(long, help_heading = "Limits and logs")]
    pub stats: bool,

    /// Append every event to FILE with a UTC timestamp (RFC 3339): each
    /// change in -i form, warnings, errors, notes, skipped entries and the
    /// summary. A symlink at FILE is refused; a new FILE is made mode 0600.
    #[arg(long, value_name = "FILE", help_heading = "Limits and logs")]
    pub log_file: Option<PathBuf>,
}

/// A `--bwlimit` rate in bytes per second: rsync's units (a bare number
/// is KiB/s).
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    match t.parse::<u64>() {
        Ok(kib) => kib
            .checked_mul(1024)
            .ok_or_else(|| format!("{s:?} is too large")),
        Err(_) => parse_size(t),
    }
}

impl LimitsArgs {
    /// True when the engine must send itemize events (`--stats` counts
    /// them by type).
    pub fn wants_changes(&self) -> bool {
        self.verbose || self.stats || self.log_file.is_some()
    }
}
