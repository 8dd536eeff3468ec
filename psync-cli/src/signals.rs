//! Ctrl-C, SIGTERM and SIGHUP stop a run cleanly.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit status after a second interrupt, as shells report SIGINT.
const SECOND_INTERRUPT: i32 = 130;

/// The first signal sets the run's `quit` flag: workers finish their
/// current step, remove their temporaries and return, and the run reports
/// itself interrupted. A second signal exits at once, for a run stuck in
/// an uninterruptible call (a hung NFS server); temporaries may then remain
/// (the next run removes them).
///
/// # Errors
/// The handler cannot be installed.
pub fn stop_on_interrupt(quit: Arc<AtomicBool>) -> Result<(), ctrlc::Error> {
    let signalled = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if signalled.swap(true, Ordering::SeqCst) {
            // On a terminal, start below the progress bar.
            let newline = if std::io::stderr().is_terminal() {
                "\n"
            } else {
                ""
            };
            let _ = writeln!(
                std::io::stderr(),
                "{newline}psync: interrupted again, exiting now"
            );
            std::process::exit(SECOND_INTERRUPT);
        }
        quit.store(true, Ordering::SeqCst);
    })
}
