//! Names are bytes: anything but `/` and NUL must survive a sync.

use crate::util::{Opts, each_config, rsync_oracle};

/// 255 bytes: NAME_MAX on Linux file systems.
fn long_name(fill: char) -> String {
    std::iter::repeat_n(fill, 255).collect()
}

#[test]
fn odd_names_survive() {
    each_config("odd_names_survive", |cfg, t| {
        let long = long_name('x');
        let long_dir = long_name('D');
        // 85 three-byte characters: 255 bytes of UTF-8.
        let long_unicode: String = std::iter::repeat_n('€', 85).collect();
        tree!(t.src(), {
            b"latin1-\xe9t\xe9" => file("not UTF-8"),
            b"\xff\xfe" => file("invalid bytes only"),
            b"dir-\x80/inner-\xc3" => file("nested non-UTF-8"),
            "new\nline" => file("newline"),
            "tab\there" => file("tab"),
            "with spaces " => file("trailing space"),
            " leading space" => file("leading space"),
            "-leading-dash" => file("dash"),
            "--delete" => file("looks like an option"),
            "-" => dir(),
            "back\\slash" => file("backslash"),
            "star*?[x]" => file("glob"),
            "quote'\"" => file("quotes"),
            "\\#012" => file("looks like an rsync escape"),
            "unicode-ñ-日本語-🦀" => file("unicode"),
            "e\u{301}-decomposed" => file("combining accent"),
            "é-composed" => file("precomposed"),
            &long => file("255 bytes"),
            format!("{long_dir}/{long}") => file("long in long"),
            &long_unicode => file("255 bytes of UTF-8"),
            ".hidden" => file("dot"),
            "..double" => file("dots"),
            b"link-\xff" => symlink(b"target-\xfe\n"),
            "link-to-long" => symlink(&long),
            b"pipe-\xa0" => fifo(),
        });
        let out = cfg.sync(&t.src(), &t.dst());
        out.assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
        // Names are escaped in itemized output the way rsync does it (the
        // full comparison with rsync is in `itemize`).
        for expected in [
            ">f+++++++++ new\\#012line",
            ">f+++++++++ latin1-\\#351t\\#351",
        ] {
            assert!(
                out.itemized.iter().any(|l| l == expected),
                "no {expected:?} in {:#?}",
                out.itemized
            );
        }
        let again = cfg.sync_with(&t.src(), &t.dst(), &Opts::delete());
        again.assert_ok();
        assert!(again.itemized.is_empty(), "{:#?}", again.itemized);
    });
}

#[test]
fn odd_names_are_deleted_and_replaced() {
    each_config("odd_names_are_deleted_and_replaced", |cfg, t| {
        tree!(t.src(), { b"keep-\xff" => file("v2"), "x\ny" => dir() });
        tree!(t.dst(), {
            b"keep-\xff" => file("v1"),
            "x\ny" => file("was a file"),
            b"gone-\xfe/sub\n" => file("extraneous"),
            "-rf" => file("extraneous"),
        });
        cfg.sync_with(&t.src(), &t.dst(), &Opts::delete())
            .assert_ok();
        assert_synced!(t.src(), t.dst());
        rsync_oracle(&t.src(), &t.dst());
    });
}
