//! Go's `filepath.Match` (COPY sources) and `.dockerignore` rules (moby `patternmatcher`):
//! patterns are cleaned paths relative to the context root, `**` matches any number of
//! directories, a leading `!` re-includes, the last matching line wins, and a pattern that
//! matches a directory excludes everything below it.

/// Go's `filepath.Match` of one whole path: `*` and `?` never match `/`; `[a-z]`, `[^x]`,
/// `[!x]` classes; `\` escapes. A malformed pattern matches nothing.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches_at(&p, &n)
}

fn matches_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => {
            let rest = &p[1..];
            for i in 0..=n.len() {
                if matches_at(rest, &n[i..]) {
                    return true;
                }
                if i < n.len() && n[i] == '/' {
                    break;
                }
            }
            false
        }
        Some('?') => !n.is_empty() && n[0] != '/' && matches_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(c) = n.first() else { return false };
            match class(&p[1..], *c) {
                Some((ok, used)) => ok && *c != '/' && matches_at(&p[1 + used..], &n[1..]),
                None => false,
            }
        }
        Some('\\') if p.len() > 1 => !n.is_empty() && n[0] == p[1] && matches_at(&p[2..], &n[1..]),
        Some(c) => !n.is_empty() && n[0] == *c && matches_at(&p[1..], &n[1..]),
    }
}

/// A `[...]` class (after the `[`): whether `c` is in it and how many pattern chars it used.
fn class(p: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = matches!(p.first(), Some('^') | Some('!'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if lo == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            lo
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|x| *x != ']') {
            i += 1;
            let h = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        if lo <= c && c <= hi {
            found = true;
        }
    }
    Some((found != negate, i))
}

/// True if `s` has glob metacharacters.
pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Lexically clean a relative path (Go `filepath.Clean`, then strip a leading `/`): `./a//b/`
/// → `a/b`; `..` that climbs above the start is kept as a leading `..`.
pub fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else {
                    out.push("..");
                }
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

#[derive(Debug, Clone)]
struct Pattern {
    parts: Vec<String>,
    exclusion: bool,
}

impl Pattern {
    /// Does the pattern match `path` (components) exactly?
    fn matches(&self, path: &[&str]) -> bool {
        fn go(p: &[String], n: &[&str]) -> bool {
            match p.first() {
                None => n.is_empty(),
                Some(x) if x == "**" => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
                Some(x) => !n.is_empty() && glob_match(x, n[0]) && go(&p[1..], &n[1..]),
            }
        }
        go(&self.parts, path)
    }
}

/// The rules of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

impl Ignore {
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (exclusion, p) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let cleaned = clean(p);
            if cleaned.is_empty() {
                continue;
            }
            patterns.push(Pattern {
                parts: cleaned.split('/').map(str::to_string).collect(),
                exclusion,
            });
        }
        Ignore { patterns }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Some `!` line exists (an excluded directory may still hold included files).
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Is the context path `rel` (clean, `/`-separated, relative) excluded?
    pub fn excluded(&self, rel: &str) -> bool {
        if rel.is_empty() {
            return false;
        }
        let parts: Vec<&str> = rel.split('/').collect();
        let mut excluded = false;
        for p in &self.patterns {
            // The path or one of its parents.
            let hit = (1..=parts.len()).any(|k| p.matches(&parts[..k]));
            if hit {
                excluded = !p.exclusion;
            }
        }
        excluded
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_match() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("d/*.txt", "d/a.txt"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("[a-c]x", "bx"));
        assert!(!glob_match("[^a-c]x", "bx"));
        assert!(glob_match("[!a-c]x", "dx"));
        assert!(glob_match("a\\*", "a*"));
        assert!(!glob_match("[a-", "a"));
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("./a//b/"), "a/b");
        assert_eq!(clean("/a/../b"), "b");
        assert_eq!(clean("../x"), "../x");
        assert_eq!(clean("a/../../x"), "../x");
    }

    #[test]
    fn dockerignore_rules() {
        let ig = Ignore::parse(
            "# comment\n*.md\n!README.md\nbuild\n**/*.tmp\nsecret/**\n!secret/keep\n/abs\n",
        );
        assert!(ig.excluded("notes.md"));
        assert!(!ig.excluded("README.md"));
        assert!(!ig.excluded("docs/notes.md"), "*.md is for the root only");
        assert!(ig.excluded("build"));
        assert!(ig.excluded("build/out/x"));
        assert!(ig.excluded("a/b/c.tmp"));
        assert!(ig.excluded("x.tmp"));
        assert!(ig.excluded("secret/key"));
        assert!(!ig.excluded("secret/keep"));
        assert!(ig.excluded("abs"));
        assert!(!ig.excluded("src/main.rs"));
        assert!(ig.has_exceptions());
        // Last match wins.
        let ig = Ignore::parse("!a\na\n");
        assert!(ig.excluded("a"));
    }
}
