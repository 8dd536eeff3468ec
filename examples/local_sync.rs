//! Embedding psync: sync SRC into DST from another program, consuming the
//! run's events (itemized changes, warnings, errors, progress).
//!
//! ```text
//! cargo run --release --example local_sync -- SRC DST
//! ```

use psync::Event;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst] = args.as_slice() else {
        eprintln!("usage: local_sync SRC DST");
        return ExitCode::from(2);
    };
    let (tx, rx) = psync::events(4096);
    let mut b = psync::builder(src, dst);
    b.delete(true).itemize(true).events(tx);
    let sync = match b.build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("local_sync: {e}");
            return ExitCode::from(2);
        }
    };
    drop(b); // the builder holds a sender; the consumer ends when all are gone
    let consumer = std::thread::spawn(move || {
        let mut last_progress = None;
        for ev in rx {
            match &ev {
                Event::Itemize { .. } => println!("{}", ev.itemize_line().unwrap_or_default()),
                Event::Warning { message, .. } => eprintln!("warning: {message}"),
                Event::Error { message, .. } => eprintln!("error: {message}"),
                Event::Progress(s) => last_progress = Some(*s),
                _ => {}
            }
        }
        last_progress
    });
    let report = sync.run();
    drop(sync);
    let _ = consumer.join();
    match report {
        Ok(r) => {
            let s = &r.stats;
            println!(
                "scanned {} entries: {} created, {} updated, {} deleted, {} unchanged, {} failed; {} bytes copied in {:.2?}",
                s.scanned,
                s.created,
                s.updated,
                s.deleted,
                s.unchanged,
                s.failed,
                s.bytes_copied,
                s.elapsed()
            );
            if r.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("local_sync: {e}");
            ExitCode::from(2)
        }
    }
}
