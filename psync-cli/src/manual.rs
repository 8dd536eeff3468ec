//! `psync completions SHELL` and `psync man`: generated from the clap
//! definitions, so they never disagree with `--help`. Subcommands rather
//! than a build script: they need no build step, and print what the
//! installed binary actually accepts.

use crate::args::Cli;
use clap::CommandFactory;
use std::io::Write;

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "psync", &mut out);
    out
}

/// The man page (roff): psync(1), with a section per subcommand.
pub fn man() -> std::io::Result<Vec<u8>> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let bin = format!("psync {}", sub.get_name());
        // The subcommand's synopsis, text and options, without a second title.
        let man = clap_mangen::Man::new(sub.clone().bin_name(bin));
        writeln!(out, ".SH \"PSYNC {}\"", sub.get_name().to_uppercase())?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_name_the_subcommands_and_options() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let s = String::from_utf8(completions(shell)).unwrap();
            for word in [
                "sync",
                "probe",
                "worker",
                "delete",
                "checksum",
                "one-file-system",
            ] {
                assert!(s.contains(word), "{shell}: no {word}");
            }
        }
    }

    #[test]
    fn the_man_page_has_every_subcommand_and_the_options() {
        let m = String::from_utf8(man().unwrap()).unwrap();
        assert!(
            m.starts_with(".ie") || m.contains(".TH psync 1"),
            "{}",
            &m[..200.min(m.len())]
        );
        for word in [
            "SYNC",
            "PROBE",
            "WORKER",
            "STATUS",
            "COMPLETIONS",
            "\\-\\-delete",
            "\\-\\-checksum",
            "\\-\\-threads",
        ] {
            assert!(m.contains(word), "no {word} in the man page");
        }
        assert!(
            !m.contains("\\-\\-numeric\\-ids"),
            "hidden rsync flags stay out"
        );
    }
}
