//! Running a sync on a cluster from another program: submit SRC → DST to
//! the `psync worker` processes of a Redis broker and follow the run's
//! events (itemized changes, warnings, errors, progress) to its end.
//!
//! ```text
//! cargo run --release --example cluster_job -- redis://HOST:6379 SRC DST
//! ```
//!
//! The password, if any, comes from `PSYNC_BROKER_PASSWORD` (or the URL),
//! a CA file for `rediss://` from `PSYNC_BROKER_CA`, as for the CLI. SRC
//! and DST must be mounted here (the target root is created here) and on
//! the workers, below their `--allow` directories. Exit status as
//! `psync sync --broker`: 0 synced, 1 some entries failed, 2 fatal,
//! cancelled or refused by every worker, 3 the target is full or read-only.

use psync::Event;
use psync::broker::config::BrokerUrl;
use psync::broker::{Broker, End, Level};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, src, dst] = args.as_slice() else {
        eprintln!("usage: cluster_job BROKER_URL SRC DST");
        return ExitCode::from(2);
    };
    match run(url, Path::new(src), Path::new(dst)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cluster_job: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(url: &str, src: &Path, dst: &Path) -> Result<u8, Box<dyn std::error::Error>> {
    // The password from PSYNC_BROKER_PASSWORD, the CA from PSYNC_BROKER_CA.
    let url = BrokerUrl::from_env_and_args(Some(url), None)?;
    // A first contact, before anything is created on the target.
    url.connect(Duration::from_secs(10))?;
    let broker = Broker::open(&url)?;

    // The run is prepared here, as a local one would be: roots opened,
    // target root created, modify window detected, run id and secret
    // made. Workers check the roots against their --allow, which takes
    // absolute paths without `..`: resolve them on this side.
    let (tx, rx) = psync::events(4096);
    let mut b = psync::builder(resolved(src)?, resolved(dst)?);
    b.delete(true).itemize(true).events(tx.clone());
    let (spec, seed) = b.build()?.prepare()?;
    drop(b); // the builder holds a sender; the consumer ends when all are gone
    let run = broker.submit(&spec, &seed)?;
    eprintln!("cluster_job: run {run} submitted");

    // Events come from every worker through the run's log on the server.
    let consumer = std::thread::spawn(move || {
        let mut shown = Duration::ZERO;
        for ev in rx {
            match &ev {
                Event::Itemize { .. } => println!("{}", ev.itemize_line().unwrap_or_default()),
                Event::Warning { message, .. } => eprintln!("warning: {message}"),
                Event::Error { message, .. } => eprintln!("error: {message}"),
                // Four a second; one line every 5 s is enough here.
                Event::Progress(s) if s.elapsed() >= shown + Duration::from_secs(5) => {
                    shown = s.elapsed();
                    eprintln!(
                        "{} of {} entries, {} of {} bytes",
                        s.done, s.scanned, s.bytes_copied, s.bytes_to_copy
                    );
                }
                _ => {}
            }
        }
    });
    // Workers' own messages about the run (refusals, reclaimed tasks).
    let mut messages = |m: &psync::broker::LogEntry| {
        if m.level >= Level::Warn {
            eprintln!("{}", m.line());
        }
    };
    // Setting `quit` (from a signal handler, a UI) cancels the run.
    let quit = AtomicBool::new(false);
    let end = broker.follow(run, &tx, &mut messages, &quit);
    drop(tx);
    let _ = consumer.join();
    let end = end?;

    let r = &end.report;
    let s = &r.stats;
    println!(
        "run {run} {:?}: {} created, {} updated, {} deleted, {} unchanged, {} failed; {} bytes copied in {:.2?}",
        end.end,
        s.created,
        s.updated,
        s.deleted,
        s.unchanged,
        s.failed,
        s.bytes_copied,
        s.elapsed()
    );
    Ok(match end.end {
        End::Stopped => 3,
        End::Done if r.success() => 0,
        End::Done | End::ErrorLimit => 1,
        _ => 2,
    })
}

/// `p` absolute, symlinks and `..` resolved (a missing DST: its parent).
fn resolved(p: &Path) -> std::io::Result<PathBuf> {
    match (std::fs::canonicalize(p), p.parent(), p.file_name()) {
        (Ok(full), _, _) => Ok(full),
        (Err(_), Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            Ok(std::fs::canonicalize(parent)?.join(name))
        }
        (Err(e), _, _) => Err(e),
    }
}
