//! Ctrl-C, SIGTERM and SIGHUP stop a run cleanly.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Exit status of an interrupted run, however it ends (the `FATAL` status
/// of `main`, documented in `--help`).
const INTERRUPTED: i32 = 2;

/// The first signal sets the run's `quit` flag: workers finish their
/// current step, remove their temporaries and return, and the run reports
/// itself interrupted (exit 2). Should a task be stuck in a call that does
/// not return (a hung NFS server), the library removes this run's
/// temporaries after its stop grace and sets `reaped`: the process then
/// exits with status 2 without waiting for that task. A second signal
/// exits at once, also with status 2; temporaries a task under way holds
/// may then remain (the next run removes them).
///
/// # Errors
/// The handler cannot be installed.
pub fn stop_on_interrupt(
    quit: Arc<AtomicBool>,
    reaped: Arc<AtomicBool>,
) -> Result<(), ctrlc::Error> {
    let signalled = AtomicBool::new(false);
    ctrlc::set_handler(move || {
        if signalled.swap(true, Ordering::SeqCst) {
            say("interrupted again, exiting now");
            std::process::exit(INTERRUPTED);
        }
        quit.store(true, Ordering::SeqCst);
        let reaped = Arc::clone(&reaped);
        std::thread::spawn(move || exit_once_reaped(&reaped));
    })
}

/// Exits (status 2) once the library gave up on stuck tasks and removed
/// the run's temporaries; a run whose tasks all return ends normally first.
fn exit_once_reaped(reaped: &AtomicBool) {
    while !reaped.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
    }
    say("interrupted; tasks still stuck in system calls are left behind, temporaries removed");
    std::process::exit(INTERRUPTED);
}

fn say(what: &str) {
    // On a terminal, start below the progress bar.
    let newline = if std::io::stderr().is_terminal() {
        "\n"
    } else {
        ""
    };
    let _ = writeln!(std::io::stderr(), "{newline}psync: {what}");
}
