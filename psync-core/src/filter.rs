//! Include/exclude rules with rsync's semantics (`--exclude`,
//! `--include`, `--filter '+ P'`/`'- P'`): the first rule that matches an
//! entry decides; an entry no rule matches is included. A pattern with a
//! `/` other than a trailing one (or with `**`) is matched against the
//! path from the transfer root — from its start when it begins with `/`,
//! else at any component boundary — otherwise against the final
//! component; a trailing `/` matches directories only. `*` and `?` match
//! within a component, `**` across `/`, `[...]` a class, `\` escapes;
//! `dir/***` matches `dir` and everything in it.
//!
//! Rules are parsed once per run and travel in the run spec
//! ([`crate::PlanOptions::filters`]); matching allocates nothing.

use serde::{Deserialize, Serialize};

/// One parsed rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// `+` (include) or `-` (exclude).
    pub include: bool,
    /// The pattern, without a leading `/` or trailing `/`.
    pattern: Vec<u8>,
    /// It had a leading `/`: matched from the transfer root only.
    anchored: bool,
    /// It had a trailing `/`: matches directories only.
    dir_only: bool,
    /// Matched against the whole path, not the final component.
    full_path: bool,
    /// It ended in `/***`: also matches the directory itself.
    with_dir: bool,
}

impl Rule {
    /// A rule of `pattern` as rsync reads it after its `+ `/`- `.
    pub fn new(include: bool, pattern: &[u8]) -> Rule {
        let mut p = pattern;
        let anchored = p.first() == Some(&b'/');
        if anchored {
            p = &p[1..];
        }
        let mut dir_only = false;
        while p.len() > 1 && p.last() == Some(&b'/') {
            p = &p[..p.len() - 1];
            dir_only = true;
        }
        let mut with_dir = false;
        let mut pattern = p.to_vec();
        if let Some(stem) = p.strip_suffix(b"/***") {
            // `dir/***`: `dir` itself, and `dir/**`.
            with_dir = true;
            pattern = [stem, b"/**"].concat();
        }
        let full_path = anchored || pattern.contains(&b'/') || contains(&pattern, b"**");
        Rule {
            include,
            pattern,
            anchored,
            dir_only,
            full_path,
            with_dir,
        }
    }

    /// True when the rule matches the entry at `path` (from the transfer
    /// root, no leading `/`) whose final component starts at `name_at`.
    fn matches(&self, path: &[u8], name_at: usize, is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        if !self.full_path {
            return wildmatch(&self.pattern, &path[name_at..]);
        }
        if self.with_dir && is_dir {
            let stem = &self.pattern[..self.pattern.len() - 3];
            if self.matches_path(stem, path) {
                return true;
            }
        }
        self.matches_path(&self.pattern, path)
    }

    fn matches_path(&self, pattern: &[u8], path: &[u8]) -> bool {
        if self.anchored {
            return wildmatch(pattern, path);
        }
        // Unanchored: at the start or after any `/`.
        if wildmatch(pattern, path) {
            return true;
        }
        path.iter()
            .enumerate()
            .filter(|&(_, &c)| c == b'/')
            .any(|(i, _)| wildmatch(pattern, &path[i + 1..]))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Why a rule could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

/// The run's rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filters {
    rules: Vec<Rule>,
    /// Excluded target entries are deleted too (`--delete-excluded`),
    /// not protected from `--delete`.
    pub delete_excluded: bool,
    /// `--files-from`: the paths to sync, sorted; `None` for all.
    files: Option<Vec<Vec<u8>>>,
}

/// Where a directory stands with `--files-from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Listed, or below a listed directory: all of it is synced
    /// (psync recurses always, as rsync with `-r`).
    All,
    /// Above a listed path (or the root): only its entries on the way to
    /// listed paths are synced, and nothing in it is deleted.
    Implied,
}

impl Filters {
    /// No rules and no `--files-from`: every entry is included, and
    /// nothing is matched.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.files.is_none()
    }

    /// Sets the `--files-from` list from its text: paths separated by
    /// newlines (a trailing `\r` dropped), or by NULs with `nul` (`-0`);
    /// blank ones and ones starting with `#` or `;` skipped, with `-0`
    /// too, as rsync (3.2) skips them. Relative to the source root, as
    /// rsync takes them: leading `/`s, `.` components and a trailing `/`
    /// dropped (a line left empty, `.` or `/`, lists the root: all of
    /// it); `..` refused.
    pub fn set_files_from(&mut self, text: &[u8], nul: bool) -> Result<(), RuleError> {
        let sep = if nul { b'\0' } else { b'\n' };
        let mut files = Vec::new();
        for line in text.split(|&c| c == sep) {
            let line = match nul {
                true => line,
                false => line.strip_suffix(b"\r").unwrap_or(line),
            };
            if line.is_empty() || line[0] == b'#' || line[0] == b';' {
                continue;
            }
            let mut path = Vec::with_capacity(line.len());
            for part in line.split(|&c| c == b'/') {
                match part {
                    b"" | b"." => {}
                    b".." => {
                        return Err(RuleError(format!(
                            "--files-from path {:?} goes up with `..`: paths are relative to the source",
                            String::from_utf8_lossy(line)
                        )));
                    }
                    p => {
                        if !path.is_empty() {
                            path.push(b'/');
                        }
                        path.extend_from_slice(p);
                    }
                }
            }
            // Empty: the root itself (`.`, `/`), listed whole.
            files.push(path);
        }
        files.sort();
        files.dedup();
        self.files = Some(files);
        Ok(())
    }

    /// The scope of the directory at `rel` (no leading `/`, empty for
    /// the root), when there is a `--files-from` list.
    pub fn scope(&self, rel: &[u8]) -> Scope {
        let Some(files) = &self.files else {
            return Scope::All;
        };
        let listed = |p: &[u8]| files.binary_search_by(|f| f.as_slice().cmp(p)).is_ok();
        // The root listed (sorted first), the directory itself, or one
        // above it.
        if files.first().is_some_and(|f| f.is_empty()) {
            return Scope::All;
        }
        if !rel.is_empty()
            && (listed(rel)
                || rel
                    .iter()
                    .enumerate()
                    .any(|(i, &c)| c == b'/' && listed(&rel[..i])))
        {
            return Scope::All;
        }
        Scope::Implied
    }

    /// In a directory of [`Scope::Implied`]: true when the entry at
    /// `path` is listed or on the way to a listed path.
    pub fn on_the_list(&self, path: &[u8]) -> bool {
        let Some(files) = &self.files else {
            return true;
        };
        let from = files.partition_point(|f| f.as_slice() < path);
        files[from..]
            .iter()
            .take_while(|f| f.starts_with(path))
            .any(|f| f.len() == path.len() || f[path.len()] == b'/')
    }

    /// The `--files-from` paths that lie below the directory at `rel`
    /// (no leading `/`, empty for the root), each as the part after
    /// `rel/`, in order; none without a list.
    pub fn listed_below<'a>(&'a self, rel: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
        let files = self.files.as_deref().unwrap_or_default();
        let skip = if rel.is_empty() { 0 } else { rel.len() + 1 };
        let below = move |f: &[u8]| {
            rel.is_empty() || (f.starts_with(rel) && f.get(rel.len()) == Some(&b'/'))
        };
        // Sorted, and every path below `rel` sorts after `rel` itself.
        let from = files.partition_point(|f| f.as_slice() < rel);
        files[from..]
            .iter()
            .skip_while(move |f| f.as_slice() == rel)
            .take_while(move |f| f.starts_with(rel))
            .filter(move |f| below(f))
            .map(move |f| &f[skip..])
    }

    /// True when there are include/exclude rules.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Adds a rule.
    pub fn push(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    /// Adds an `--exclude` (`include` false) or `--include` pattern: a
    /// `- `/`+ ` prefix overrides the option's kind, and `!` clears the
    /// rules so far, as rsync reads them.
    pub fn add_pattern(&mut self, include: bool, pattern: &[u8]) {
        match pattern {
            b"!" => self.rules.clear(),
            [b'+', b' ', p @ ..] => self.push(Rule::new(true, p)),
            [b'-', b' ', p @ ..] => self.push(Rule::new(false, p)),
            p => self.push(Rule::new(include, p)),
        }
    }

    /// Adds a `--filter` rule: `+ P`, `- P`, `include P`, `exclude P`,
    /// or `!` (clear). Other rsync rules (merge files, modifiers,
    /// protect/risk) are refused.
    pub fn add_filter(&mut self, rule: &[u8]) -> Result<(), RuleError> {
        let (include, p) = match rule {
            b"!" | b"clear" => {
                self.rules.clear();
                return Ok(());
            }
            [b'+', b' ', p @ ..] | [b'+', b'_', p @ ..] => (true, p),
            [b'-', b' ', p @ ..] | [b'-', b'_', p @ ..] => (false, p),
            _ if rule.starts_with(b"include ") => (true, &rule[8..]),
            _ if rule.starts_with(b"exclude ") => (false, &rule[8..]),
            _ => {
                return Err(RuleError(format!(
                    "filter rule {:?}: psync supports `+ PATTERN`, `- PATTERN`, \
                     `include PATTERN`, `exclude PATTERN` and `!` only",
                    String::from_utf8_lossy(rule)
                )));
            }
        };
        if p.is_empty() {
            return Err(RuleError(format!(
                "filter rule {:?} has no pattern",
                String::from_utf8_lossy(rule)
            )));
        }
        self.push(Rule::new(include, p));
        Ok(())
    }

    /// Adds the patterns of an `--exclude-from`/`--include-from` file's
    /// text: one a line, blank lines and lines starting with `#` or `;`
    /// skipped, a trailing `\r` dropped, as rsync reads them.
    pub fn add_pattern_lines(&mut self, include: bool, text: &[u8]) {
        for line in text.split(|&c| c == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line[0] == b'#' || line[0] == b';' {
                continue;
            }
            self.add_pattern(include, line);
        }
    }

    /// True when the entry at `path` (from the transfer root, no leading
    /// `/`; its final component starts at `name_at`) is excluded: the
    /// first matching rule is an exclude.
    pub fn excluded(&self, path: &[u8], name_at: usize, is_dir: bool) -> bool {
        self.rules
            .iter()
            .find(|r| r.matches(path, name_at, is_dir))
            .is_some_and(|r| !r.include)
    }
}

/// rsync's wildmatch: `*` any run within a component, `**` any run,
/// `?` one character but `/`, `[...]` a class (`!`/`^` negates, `a-z`
/// ranges, `[:alpha:]`-style classes), `\` escapes.
pub fn wildmatch(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    while p < pat.len() {
        match pat[p] {
            b'*' => {
                let double = pat.get(p + 1) == Some(&b'*');
                let mut rest = p + 1;
                while rest < pat.len() && pat[rest] == b'*' {
                    rest += 1;
                }
                // `a/**/b` also matches `a/b`, as rsync's wildmatch does.
                if double
                    && rest < pat.len()
                    && pat[rest] == b'/'
                    && (p == 0 || pat[p - 1] == b'/')
                    && wildmatch(&pat[rest + 1..], &text[t..])
                {
                    return true;
                }
                if rest == pat.len() {
                    return double || !text[t..].contains(&b'/');
                }
                for i in t..=text.len() {
                    if wildmatch(&pat[rest..], &text[i..]) {
                        return true;
                    }
                    if i < text.len() && !double && text[i] == b'/' {
                        return false;
                    }
                }
                return false;
            }
            b'?' => {
                if t >= text.len() || text[t] == b'/' {
                    return false;
                }
                p += 1;
                t += 1;
            }
            b'[' => {
                let Some(&c) = text.get(t) else { return false };
                match class(&pat[p + 1..], c) {
                    Some((matched, len)) => {
                        if !matched {
                            return false;
                        }
                        p += 1 + len;
                        t += 1;
                    }
                    // No closing `]`: a literal `[`.
                    None => {
                        if c != b'[' {
                            return false;
                        }
                        p += 1;
                        t += 1;
                    }
                }
            }
            b'\\' if p + 1 < pat.len() => {
                if text.get(t) != Some(&pat[p + 1]) {
                    return false;
                }
                p += 2;
                t += 1;
            }
            c => {
                if text.get(t) != Some(&c) {
                    return false;
                }
                p += 1;
                t += 1;
            }
        }
    }
    t == text.len()
}

/// Matches `c` against the class whose text (after `[`) is `pat`:
/// whether it matched and how many bytes of `pat` the class took
/// (through its `]`); `None` when it has no `]`.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(pat.first(), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let &x = pat.get(i)?;
        if x == b']' && !first {
            break;
        }
        first = false;
        if x == b'[' && pat.get(i + 1) == Some(&b':') {
            let rest = &pat[i + 2..];
            if let Some(end) = rest.windows(2).position(|w| w == b":]") {
                matched |= named_class(&rest[..end], c);
                i += 2 + end + 2;
                continue;
            }
        }
        let (lo, next) = match x {
            b'\\' => (*pat.get(i + 1)?, i + 2),
            _ => (x, i + 1),
        };
        if pat.get(next) == Some(&b'-') && pat.get(next + 1).is_some_and(|&h| h != b']') {
            let (hi, after) = match pat[next + 1] {
                b'\\' => (*pat.get(next + 2)?, next + 3),
                h => (h, next + 2),
            };
            matched |= lo <= c && c <= hi;
            i = after;
        } else {
            matched |= lo == c;
            i = next;
        }
    }
    // `/` is never matched by a class.
    Some((matched != negate && c != b'/', i + 1))
}

fn named_class(name: &[u8], c: u8) -> bool {
    match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"blank" => c == b' ' || c == b'\t',
        b"cntrl" => c.is_ascii_control(),
        b"digit" => c.is_ascii_digit(),
        b"graph" => c.is_ascii_graphic(),
        b"lower" => c.is_ascii_lowercase(),
        b"print" => c.is_ascii_graphic() || c == b' ',
        b"punct" => c.is_ascii_punctuation(),
        b"space" => c.is_ascii_whitespace(),
        b"upper" => c.is_ascii_uppercase(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn excluded(rules: &[&str], path: &str, is_dir: bool) -> bool {
        let mut f = Filters::default();
        for r in rules {
            f.add_filter(r.as_bytes()).unwrap();
        }
        let name_at = path.rfind('/').map_or(0, |i| i + 1);
        f.excluded(path.as_bytes(), name_at, is_dir)
    }

    #[test]
    fn wildmatch_table() {
        let table: &[(&str, &str, bool)] = &[
            ("foo", "foo", true),
            ("foo", "foobar", false),
            ("*.o", "a.o", true),
            ("*.o", "a/b.o", false),
            ("*", "", true),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "ax/b", false),
            ("a**b", "ax/yb", true),
            ("**/x", "a/b/x", true),
            ("**/x", "x", true),
            ("a/**/b", "a/b", true),
            ("a/**/b", "a/x/y/b", true),
            ("a/**", "a/x/y", true),
            ("a/**", "a", false),
            ("?", "a", true),
            ("?", "/", false),
            ("??", "a", false),
            ("[abc]", "b", true),
            ("[abc]", "d", false),
            ("[!abc]", "d", true),
            ("[^abc]", "a", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[]]", "]", true),
            ("[[:digit:]]*", "7up", true),
            ("[[:digit:]]*", "up", false),
            ("\\*", "*", true),
            ("\\*", "a", false),
            ("[ab", "[ab", true),
            (".snapshot", ".snapshot", true),
        ];
        for &(p, t, want) in table {
            assert_eq!(
                wildmatch(p.as_bytes(), t.as_bytes()),
                want,
                "{p:?} vs {t:?}"
            );
        }
    }

    #[test]
    fn rsync_rules_table() {
        // (rules, path, is_dir, excluded)
        let table: &[(&[&str], &str, bool, bool)] = &[
            (&["- *.o"], "a.o", false, true),
            (&["- *.o"], "sub/deep/a.o", false, true),
            (&["- *.o"], "a.c", false, false),
            (&["+ keep.o", "- *.o"], "x/keep.o", false, false),
            (&["- *.o", "+ keep.o"], "x/keep.o", false, true),
            (&["- .snapshot/"], "a/b/.snapshot", true, true),
            (&["- .snapshot/"], "a/b/.snapshot", false, false),
            (&["- /top"], "top", false, true),
            (&["- /top"], "sub/top", false, false),
            (&["- top"], "sub/top", false, true),
            (&["- sub/x"], "sub/x", false, true),
            (&["- sub/x"], "a/sub/x", false, true),
            (&["- sub/x"], "asub/x", false, false),
            (&["- /sub/x"], "a/sub/x", false, false),
            (&["- a/*/c"], "a/b/c", false, true),
            (&["- a/*/c"], "a/b/b/c", false, false),
            (&["- a/**/c"], "a/b/b/c", false, true),
            (&["- **/tmp"], "x/y/tmp", true, true),
            (&["- d/***"], "d", true, true),
            (&["- d/***"], "d/e/f", false, true),
            (&["- d/***"], "dd", true, false),
            (&["+ */", "- *"], "any/dir", true, false),
            (&["+ */", "- *"], "any/file", false, true),
            (&["exclude *.tmp"], "x.tmp", false, true),
            (&["include *.tmp", "exclude *"], "x.tmp", false, false),
            (&["- *.o", "!"], "a.o", false, false),
        ];
        for &(rules, path, is_dir, want) in table {
            assert_eq!(
                excluded(rules, path, is_dir),
                want,
                "{rules:?} on {path:?} (dir: {is_dir})"
            );
        }
    }

    #[test]
    fn files_from() {
        let mut f = Filters::default();
        assert!(f.is_empty());
        f.set_files_from(b"x/y\n# c\n/top\n./a/\n\nx//y/z\r\n", false)
            .unwrap();
        assert!(!f.is_empty());
        assert_eq!(f.scope(b""), Scope::Implied);
        assert_eq!(f.scope(b"x"), Scope::Implied);
        assert_eq!(f.scope(b"x/y"), Scope::All);
        assert_eq!(f.scope(b"x/y/q/r"), Scope::All);
        assert_eq!(f.scope(b"a"), Scope::All);
        assert_eq!(f.scope(b"ab"), Scope::Implied);
        for (p, want) in [
            ("x", true),
            ("top", true),
            ("a", true),
            ("x/y", true),
            ("x/z", false),
            ("xx", false),
            ("other", false),
            ("x-", false),
        ] {
            assert_eq!(f.on_the_list(p.as_bytes()), want, "{p}");
        }
        let below = |rel: &str| -> Vec<String> {
            f.listed_below(rel.as_bytes())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect()
        };
        assert_eq!(below(""), ["a", "top", "x/y", "x/y/z"]);
        assert_eq!(below("x"), ["y", "y/z"]);
        assert_eq!(below("x/y"), ["z"]);
        assert!(below("a").is_empty() && below("t").is_empty());
        assert!(Filters::default().listed_below(b"").next().is_none());
        let mut f = Filters::default();
        f.set_files_from(b"x/y\n./\n", false).unwrap();
        assert_eq!(f.scope(b""), Scope::All, "the root listed");
        assert_eq!(f.scope(b"q"), Scope::All);
        assert!(f.listed_below(b"").eq([&b"x/y"[..]]));
        let mut f = Filters::default();
        f.set_files_from(b"a b\0#a comment\0;another\0", true)
            .unwrap();
        assert!(f.on_the_list(b"a b"));
        assert!(!f.on_the_list(b"#a comment") && !f.on_the_list(b";another"));
        assert!(f.set_files_from(b"a/../../etc\n", false).is_err());
    }

    #[test]
    fn patterns_and_lines() {
        let mut f = Filters::default();
        f.add_pattern_lines(false, b"# comment\n; another\n\n*.o\r\n+ keep.o\nbuild/\n");
        assert_eq!(f.rules().len(), 3);
        // The `+ ` line is an include though read by --exclude-from.
        assert!(f.rules()[1].include);
        assert!(f.excluded(b"a.o", 0, false));
        assert!(f.excluded(b"build", 0, true));
        assert!(!f.excluded(b"build", 0, false));
        let mut f = Filters::default();
        assert!(f.add_filter(b": .rsync-filter").is_err());
        assert!(f.add_filter(b"- ").is_err());
    }
}
