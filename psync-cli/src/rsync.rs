//! rsync options psync does not implement: refused with a message that
//! says so and what to use instead, not clap's "unexpected argument"
//! with its tip to pass the option as a value after `--`. The flags
//! psync accepts are in args.rs (`RsyncFlags`); the README's "Coming
//! from rsync" table lists both.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// rsync options psync refuses: their spellings, and why.
const REFUSED: &[(&[&str], &str)] = &[
    (
        &["-z", "--compress", "--compress-level", "--zc", "--zl"],
        "psync copies between local (or mounted) file systems, with no wire to compress",
    ),
    (
        &["-e", "--rsh", "--rsync-path"],
        "psync has no remote shell; mount both trees, or run workers on the nodes (psync worker, --broker)",
    ),
    (
        &["--inplace", "--append", "--append-verify"],
        "psync never writes into an existing target file: each changed file is written to a private temporary and renamed over the target, so a reader never sees half a file (large files resume chunk by chunk instead: --resume-threshold)",
    ),
    (
        &["--partial", "--partial-dir", "-P"],
        "an interrupted psync removes its temporaries; large files resume mid-file on the next run (--resume-threshold)",
    ),
    (
        &["-u", "--update"],
        "psync makes DST identical to SRC, also where the target is newer",
    ),
    (
        &["-b", "--backup", "--backup-dir", "--suffix"],
        "psync keeps no backups of replaced or deleted files; snapshot the target first",
    ),
    (
        &["--link-dest", "--compare-dest", "--copy-dest"],
        "psync syncs one tree into one target",
    ),
    (
        &["--chmod", "--chown", "--usermap", "--groupmap"],
        "psync copies modes and ids as they are (--no-perms, --no-owner, --no-group leave them alone)",
    ),
    (
        &[
            "-L",
            "--copy-links",
            "--copy-unsafe-links",
            "--safe-links",
            "-k",
            "--copy-dirlinks",
            "-K",
            "--keep-dirlinks",
            "--munge-links",
        ],
        "psync copies symlinks as symlinks and never follows one, in SRC or DST",
    ),
    (
        &["--size-only"],
        "psync compares size and modification time (-c: content)",
    ),
    (
        &["--existing", "--ignore-existing"],
        "psync creates and updates every entry",
    ),
    (&["--remove-source-files"], "psync never changes SRC"),
    (
        &["-R", "--relative"],
        "psync syncs the contents of SRC into DST; name the directories you want as SRC and DST",
    ),
    (
        &[
            "-E",
            "--executability",
            "-U",
            "--atimes",
            "-N",
            "--crtimes",
            "-O",
            "--omit-dir-times",
            "-J",
            "--omit-link-times",
        ],
        "psync keeps modes and modification times of every entry, and no access or creation times",
    ),
    (
        &[
            "-d",
            "--dirs",
            "-m",
            "--prune-empty-dirs",
            "-y",
            "--fuzzy",
            "-T",
            "--temp-dir",
            "-B",
            "--block-size",
            "-C",
            "--cvs-exclude",
            "--delay-updates",
        ],
        "see the README's \"Coming from rsync\"",
    ),
];

/// Why psync refuses the rsync option `arg` (as clap reports it: `-z`,
/// `--compress`, `--chmod=x`), or None when it is not one of them.
pub fn refusal(arg: &str) -> Option<(&'static str, &'static str)> {
    let name = arg.split_once('=').map_or(arg, |(n, _)| n);
    REFUSED
        .iter()
        .find_map(|(names, why)| names.iter().find(|n| **n == name).map(|n| (*n, *why)))
}

/// The message for a command-line error: for a refused rsync option,
/// that psync does not implement it and why; otherwise clap's own,
/// without its tip to pass an option as a value after `--` (to an rsync
/// user it reads as the way to get the option).
pub fn usage_error(e: &clap::Error) -> String {
    if e.kind() == ErrorKind::UnknownArgument
        && let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg)
        && let Some((name, why)) = refusal(arg)
    {
        return format!(
            "error: psync does not implement rsync's {name}: {why}.\n\
             (rsync options and psync: the README's \"Coming from rsync\".)\n"
        );
    }
    let mut out = String::new();
    for l in e.render().to_string().lines() {
        if l.trim_start().starts_with("tip: to pass '") || (l.is_empty() && out.ends_with("\n\n")) {
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::Parser;

    fn err(argv: &[&str]) -> clap::Error {
        Cli::try_parse_from(argv).expect_err("refused")
    }

    #[test]
    fn refused_options_say_psync_does_not_implement_them() {
        for (argv, name) in [
            (&["psync", "sync", "-z", "a", "b"][..], "-z"),
            (&["psync", "sync", "-aHAXz", "a", "b"], "-z"),
            (&["psync", "sync", "--compress", "a", "b"], "--compress"),
            (&["psync", "sync", "-e", "ssh", "a", "b"], "-e"),
            (&["psync", "sync", "--rsh=ssh", "a", "b"], "--rsh"),
            (&["psync", "sync", "--inplace", "a", "b"], "--inplace"),
            (&["psync", "sync", "--chmod=u+w", "a", "b"], "--chmod"),
            (
                &["psync", "sync", "--link-dest", "x", "a", "b"],
                "--link-dest",
            ),
            (&["psync", "sync", "-u", "a", "b"], "-u"),
            (&["psync", "sync", "-aL", "a", "b"], "-L"),
            (&["psync", "sync", "-R", "a", "b"], "-R"),
        ] {
            let e = err(argv);
            assert_eq!(e.exit_code(), 2, "{argv:?}");
            let msg = usage_error(&e);
            assert!(
                msg.contains(&format!("psync does not implement rsync's {name}: ")),
                "{argv:?}: {msg}"
            );
            assert!(!msg.contains("tip:"), "{msg}");
        }
    }

    #[test]
    fn inplace_says_why() {
        let msg = usage_error(&err(&["psync", "sync", "--inplace", "a", "b"]));
        assert!(
            msg.contains("never writes into an existing target file"),
            "{msg}"
        );
    }

    #[test]
    fn other_unknown_options_lose_only_the_tip() {
        let msg = usage_error(&err(&["psync", "sync", "--frobnicate", "a", "b"]));
        assert!(msg.contains("unexpected argument '--frobnicate'"), "{msg}");
        assert!(!msg.contains("-- --frobnicate"), "{msg}");
        assert!(!msg.contains("does not implement"), "{msg}");
        assert!(!msg.contains("\n\n\n"), "{msg:?}");
    }

    #[test]
    fn no_refused_spelling_is_a_psync_option() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        let sync = cmd.find_subcommand("sync").unwrap();
        for (names, _) in REFUSED {
            for n in *names {
                let known = sync.get_arguments().any(|a| {
                    n.strip_prefix("--").is_some_and(|l| {
                        a.get_long_and_visible_aliases()
                            .into_iter()
                            .flatten()
                            .any(|x| x == l)
                    }) || n
                        .strip_prefix('-')
                        .and_then(|c| c.chars().next())
                        .is_some_and(|c| n.len() == 2 && a.get_short() == Some(c))
                });
                assert!(!known, "{n} is refused but is a psync option");
            }
        }
    }
}
