//! `psync`: makes a target directory tree identical to a source tree, in
//! parallel. This binary parses the command line, runs the library and
//! prints what happens; all decisions live in `psync-core`.

mod args;
mod cluster;
mod logfile;
mod manifest;
mod manual;
mod output;
mod probe;
mod progress;
mod rsync;
mod signals;
mod units;

use args::{Cli, Command, SyncArgs, VerifyArgs};
use clap::Parser;
use output::Output;
use psync_core::Report;
use std::process::ExitCode;

/// Events queued between the workers and the printer. Bounded, so a slow
/// terminal slows the run down instead of filling memory.
pub(crate) const EVENT_QUEUE: usize = 4096;

/// Exit status: everything synced.
const SYNCED: u8 = 0;
/// Exit status: some entries failed, the rest synced.
const PARTIAL: u8 = 1;
/// Exit status: bad arguments, a fatal error, or interrupted.
pub(crate) const FATAL: u8 = 2;
/// Exit status: stopped at the first write the target file system refused
/// for good (full: ENOSPC, EDQUOT; read-only: EROFS).
const TARGET_UNWRITABLE: u8 = 3;

pub(crate) type Fatal = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version go to stdout with status 0.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            use std::io::Write;
            let _ = std::io::stderr().write_all(rsync::usage_error(&e).as_bytes());
            return ExitCode::from(FATAL);
        }
    };
    run(cli).unwrap_or_else(|e| {
        output::eprint(&e.to_string());
        ExitCode::from(FATAL)
    })
}

fn run(cli: Cli) -> Result<ExitCode, Fatal> {
    match cli.command {
        Command::Probe(args) => probe::probe(&args),
        Command::Sync(args) if args.broker.given() => cluster::sync(&args),
        Command::Sync(args) => sync(&args),
        Command::Verify(args) => verify(&args),
        Command::Worker(args) => cluster::worker(&args),
        Command::Wait { run, json, quiet } => cluster::wait(&run.broker, run.run, json, quiet),
        Command::Status { run, json } => cluster::status(&run.broker, run.run, json),
        Command::Pause { run, kill } => cluster::pause(&run.broker, run.run, kill),
        Command::Resume { run } => cluster::resume(&run.broker, run.run),
        Command::Workers {
            threads,
            name,
            broker,
        } => cluster::workers(&broker, threads, name.as_deref()),
        Command::Cancel { run } => cluster::cancel(&run.broker, run.run),
        Command::Shutdown { broker } => cluster::shutdown(&broker),
        Command::Logs {
            run,
            level,
            follow,
            json,
        } => cluster::logs(&run.broker, run.run, level, follow, json),
        Command::Completions { shell } => print(&manual::completions(shell)),
        Command::Man => print(&manual::man()?),
    }
}

/// Writes `bytes` to stdout.
fn print(bytes: &[u8]) -> Result<ExitCode, Fatal> {
    use std::io::Write;
    std::io::stdout().lock().write_all(bytes)?;
    Ok(ExitCode::from(SYNCED))
}

/// `psync sync`: the run on this thread, the printer on another.
fn sync(args: &SyncArgs) -> Result<ExitCode, Fatal> {
    // Before anything runs: a log that cannot be opened changes nothing.
    let log = open_log(args)?;
    let (tx, rx) = crossbeam_channel::bounded(EVENT_QUEUE);
    let builder = args.builder(tx);
    let syncer = builder.build()?;
    // The builder and the syncer each hold a sender: the printer's receive
    // loop ends only when both are gone.
    drop(builder);
    signals::stop_on_interrupt(syncer.quit_flag(), syncer.reaped_flag())?;
    let mut printer = Output::new(args, syncer.quit_flag()).limits(args, log);
    printer.note(&started(args));
    let printer = std::thread::Builder::new()
        .name("psync-output".into())
        .spawn(move || printer.consume(rx))?;
    let result = syncer.run();
    drop(syncer);
    let mut out = printer.join().map_err(|_| "the output thread panicked")?;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            out.close();
            if root_unwritable(&e) {
                output::eprint(&e.to_string());
                return Ok(ExitCode::from(TARGET_UNWRITABLE));
            }
            return Err(e.into());
        }
    };
    if args.verify_only || args.manifest.is_some() {
        let audit = finish_audit(&mut out, args, &report);
        if args.verify_only {
            let code = audit?;
            out.summary(&report, code);
            out.end(code);
            return Ok(ExitCode::from(code));
        }
        if let Err(e) = audit {
            out.close();
            return Err(e);
        }
    }
    Ok(ExitCode::from(finish(&mut out, &report)))
}

/// Exit status of `psync verify`: differences found.
const DIFFERENT: u8 = 1;

/// `psync verify`: SRC DST as `sync --verify-only` (which takes all of
/// sync's options), or DST against a `--manifest`.
fn verify(args: &VerifyArgs) -> Result<ExitCode, Fatal> {
    let threads = args.threads.to_string();
    match (&args.paths[..], &args.manifest) {
        ([dst], Some(file)) => check_manifest(file, dst, usize::from(args.threads)),
        ([_], None) => Err("psync verify: give SRC DST, or --manifest FILE DST".into()),
        (paths, manifest) => {
            let mut argv: Vec<std::ffi::OsString> = ["psync", "sync", "--verify-only"]
                .iter()
                .map(Into::into)
                .collect();
            argv.extend(["--threads".into(), threads.into()]);
            if let Some(file) = manifest {
                argv.extend(["--manifest".into(), file.into()]);
            }
            argv.push("--".into());
            argv.extend(paths.iter().map(Into::into));
            match Cli::try_parse_from(argv)?.command {
                Command::Sync(sync_args) => sync(&sync_args),
                _ => unreachable!("parsed as sync"),
            }
        }
    }
}

/// `psync verify --manifest FILE DST`.
fn check_manifest(
    file: &std::path::Path,
    dst: &std::path::Path,
    threads: usize,
) -> Result<ExitCode, Fatal> {
    let m = manifest::read(file).map_err(|e| format!("--manifest {}: {e}", file.display()))?;
    if !dst.is_dir() {
        return Err(format!("{}: not a directory", dst.display()).into());
    }
    let (diffs, errors) = manifest::check(&m, dst, threads);
    let quit = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut out = Output::with(false, true, true, quit);
    for ev in &diffs {
        out.print(ev);
    }
    out.close();
    Ok(ExitCode::from(match (errors, diffs.is_empty()) {
        (0, true) => SYNCED,
        (0, false) => DIFFERENT,
        _ => FATAL,
    }))
}

/// The end of a run with `--verify-only` or `--manifest`: the hard-link
/// groups compared, the manifest written. Returns the exit status for
/// `--verify-only` (0 identical, 1 different, 2 errors).
fn finish_audit(out: &mut Output, args: &SyncArgs, report: &Report) -> Result<u8, Fatal> {
    for ev in std::mem::take(&mut out.audit.diffs).events() {
        out.print(&ev);
    }
    if let Some(file) = &args.manifest {
        if report.interrupted || report.stopped.is_some() {
            // Not every file was seen: an older manifest is kept rather
            // than replaced by part of one.
            out.stderr(&format!(
                "--manifest {}: not written, the run did not finish",
                file.display()
            ));
        } else {
            manifest::write(file, &out.audit.manifest)
                .map_err(|e| format!("--manifest {}: {e}", file.display()))?;
        }
    }
    Ok(
        if report.stats.failed > 0 || report.interrupted || report.stopped.is_some() {
            FATAL
        } else if out.audit.differences > 0 {
            DIFFERENT
        } else {
            SYNCED
        },
    )
}

/// The `--log-file`, opened.
pub(crate) fn open_log(args: &SyncArgs) -> Result<Option<logfile::LogFile>, Fatal> {
    let Some(path) = &args.limits.log_file else {
        return Ok(None);
    };
    logfile::LogFile::open(path)
        .map(Some)
        .map_err(|e| format!("--log-file {}: {e}", path.display()).into())
}

/// The log's first line for a run.
pub(crate) fn started(args: &SyncArgs) -> String {
    format!(
        "psync {} sync {} {}{}",
        env!("CARGO_PKG_VERSION"),
        args.src.display(),
        args.dst.display(),
        if args.dry_run { " (dry run)" } else { "" }
    )
}

/// True when the run could not even create the target root because its
/// file system is full or read-only: the same status as a run stopped
/// for that reason later.
fn root_unwritable(e: &psync_core::Error) -> bool {
    e.op() == psync_core::Op::Mkdir && psync_core::StopReason::of(e.io()).is_some()
}

/// Prints the summary and says how the run ended; returns the exit status.
pub(crate) fn finish(out: &mut Output, report: &Report) -> u8 {
    let error_limit = out
        .max_errors
        .filter(|&max| report.interrupted && report.stats.failed >= max);
    let code = match error_limit {
        Some(_) if report.stopped.is_none() => PARTIAL,
        _ => exit_code(report),
    };
    out.summary(report, code);
    deletes_skipped(out, report);
    if let Some(max) = error_limit {
        out.stderr(&format!(
            "stopped after {} failed entries (--max-errors {max})",
            report.stats.failed
        ));
    } else if report.interrupted && !out.stdout_gone() {
        // When stdout's reader left, the run was stopped on purpose: quietly.
        out.stderr("interrupted");
    }
    out.end(code);
    code
}

/// The warning for the deletions `--max-delete` left, if any.
pub(crate) fn deletes_skipped(out: &mut Output, report: &Report) {
    let skipped = report.stats.deletes_skipped;
    if skipped > 0 {
        let entries = if skipped == 1 { "entry" } else { "entries" };
        out.stderr(&format!(
            "warning: deletions stopped by --max-delete ({skipped} {entries} not deleted)"
        ));
    }
}

fn exit_code(report: &Report) -> u8 {
    if report.stopped.is_some() {
        TARGET_UNWRITABLE
    } else if report.interrupted {
        FATAL
    } else if report.success() && report.stats.deletes_skipped == 0 {
        SYNCED
    } else {
        PARTIAL
    }
}
