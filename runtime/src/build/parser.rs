//! The Dockerfile's line syntax (BuildKit `frontend/dockerfile/parser`): parser directives,
//! comments, line continuations with the escape character, heredocs, and the split of each
//! logical line into an instruction keyword, `--flags` and the rest. What the rest *means* is
//! decided in [`super::instructions`].

use super::BuildError;

/// One heredoc attached to an instruction (`RUN <<EOF`, `COPY <<EOF /f`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (`EOF`).
    pub name: String,
    /// The body, each line ending in `\n` (leading tabs removed for `<<-`).
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): no variable expansion.
    pub expand: bool,
}

/// One logical line of a Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The instruction keyword, lower-cased (`run`).
    pub keyword: String,
    /// `--name=value` words before the arguments, as written (without the `--`).
    pub flags: Vec<String>,
    /// The rest of the line after keyword and flags (continuations joined).
    pub rest: String,
    pub heredocs: Vec<Heredoc>,
    /// First and last physical line (1-based).
    pub start: usize,
    pub end: usize,
    /// The line as Docker's classic builder prints it in `Step N/M : …` (keyword as written).
    pub original: String,
}

/// Parser directives (`# escape=`, `# syntax=`) and the logical lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub escape: char,
    pub syntax: Option<String>,
    pub lines: Vec<Line>,
}

fn parse_error(line: usize, msg: impl Into<String>) -> BuildError {
    BuildError::Parse {
        line,
        msg: msg.into(),
    }
}

/// A `# key=value` directive, if `line` is one.
fn directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

/// Keywords whose arguments may carry heredocs.
fn takes_heredocs(keyword: &str) -> bool {
    matches!(keyword, "run" | "copy" | "add")
}

/// Remove a trailing escape character (plus trailing blanks); true if the line continues.
fn strip_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    match t.strip_suffix(escape) {
        Some(s) => (s, true),
        None => (line, false),
    }
}

/// Parse a Dockerfile's text into logical lines.
pub fn parse(text: &str) -> Result<Parsed, BuildError> {
    let physical: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut escape = '\\';
    let mut syntax = None;
    let mut i = 0;
    // Directives: only at the very top, before any comment, blank line or instruction.
    let mut seen = std::collections::HashSet::new();
    while i < physical.len() {
        let Some((k, v)) = directive(physical[i]) else {
            break;
        };
        if !seen.insert(k.clone()) {
            return Err(parse_error(
                i + 1,
                format!("only one {k} parser directive can be used"),
            ));
        }
        match k.as_str() {
            "escape" => {
                escape = match v.as_str() {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(parse_error(
                            i + 1,
                            format!("invalid ESCAPE '{v}'. Must be ` or \\"),
                        ))
                    }
                }
            }
            "syntax" => syntax = Some(v),
            // Unknown directives are comments (Docker ignores them).
            _ => {}
        }
        i += 1;
    }

    let mut lines = Vec::new();
    while i < physical.len() {
        let raw = physical[i];
        let start = i + 1;
        i += 1;
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (first, mut continues) = strip_continuation(trimmed, escape);
        let mut joined = first.to_string();
        let mut end = start;
        while continues && i < physical.len() {
            let next = physical[i];
            i += 1;
            let t = next.trim_start();
            if t.starts_with('#') || t.is_empty() {
                // Comments and empty lines inside a continuation are dropped.
                continue;
            }
            end = i;
            let (part, more) = strip_continuation(next, escape);
            joined.push_str(part);
            continues = more;
        }
        let mut line = split_line(&joined, start, end, escape)?;
        if takes_heredocs(&line.keyword) {
            for (name, strip_tabs, expand) in heredoc_markers(&line.rest) {
                let mut content = String::new();
                let mut closed = false;
                while i < physical.len() {
                    let body = physical[i];
                    i += 1;
                    let body = if strip_tabs {
                        body.trim_start_matches('\t')
                    } else {
                        body
                    };
                    if body == name {
                        closed = true;
                        break;
                    }
                    content.push_str(body);
                    content.push('\n');
                }
                if !closed {
                    return Err(parse_error(
                        line.start,
                        format!("unterminated heredoc {name}"),
                    ));
                }
                line.end = i;
                line.heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                });
            }
        }
        lines.push(line);
    }
    Ok(Parsed {
        escape,
        syntax,
        lines,
    })
}

/// Split `KEYWORD [--flag=v]… rest`.
fn split_line(joined: &str, start: usize, end: usize, escape: char) -> Result<Line, BuildError> {
    let s = joined.trim();
    let (kw, rest) = match s.find(char::is_whitespace) {
        Some(p) => (&s[..p], s[p..].trim_start()),
        None => (s, ""),
    };
    let keyword = kw.to_ascii_lowercase();
    let (flags, rest) = split_flags(rest, escape);
    Ok(Line {
        keyword,
        flags,
        rest: rest.trim_end().to_string(),
        heredocs: Vec::new(),
        start,
        end,
        original: s.to_string(),
    })
}

/// Leading `--name[=value]` words (BuildKit `extractBuilderFlags`); a bare `--` ends them.
fn split_flags(rest: &str, escape: char) -> (Vec<String>, &str) {
    let mut flags = Vec::new();
    let mut r = rest;
    loop {
        let t = r.trim_start();
        if !t.starts_with("--") {
            return (flags, t);
        }
        let end = word_end(t, escape);
        let word = &t[2..end];
        if word.is_empty() {
            return (flags, t[end..].trim_start());
        }
        flags.push(unquote_flag(word));
        r = &t[end..];
    }
}

/// End of the first whitespace-delimited word of `s`, honouring quotes and the escape char.
fn word_end(s: &str, escape: char) -> usize {
    let mut quote: Option<char> = None;
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == escape => {
                chars.next();
            }
            None if c.is_whitespace() => return i,
            None => {}
        }
    }
    s.len()
}

/// `from="x"` → `from=x` (flag values may be quoted).
fn unquote_flag(word: &str) -> String {
    match word.split_once('=') {
        Some((k, v)) => {
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            format!("{k}={v}")
        }
        None => word.to_string(),
    }
}

/// Heredoc markers in `rest`, in order: `(name, strip leading tabs, expand variables)`.
pub fn heredoc_markers(rest: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let b = rest.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == b'\'' || c == b'"' {
            quote = Some(c);
            i += 1;
            continue;
        }
        if c == b'<' && b.get(i + 1) == Some(&b'<') && b.get(i + 2) != Some(&b'<') {
            let mut j = i + 2;
            let strip = b.get(j) == Some(&b'-');
            if strip {
                j += 1;
            }
            let (name, expand, next) = match b.get(j) {
                Some(&q @ (b'"' | b'\'')) => match rest[j + 1..].find(q as char) {
                    Some(e) => (rest[j + 1..j + 1 + e].to_string(), false, j + 2 + e),
                    None => (String::new(), false, b.len()),
                },
                _ => {
                    let e = rest[j..]
                        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '-'))
                        .map_or(b.len(), |e| j + e);
                    (rest[j..e].to_string(), true, e)
                }
            };
            if !name.is_empty() {
                out.push((name, strip, expand));
            }
            i = next.max(i + 2);
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(p: &Parsed) -> Vec<&str> {
        p.lines.iter().map(|l| l.keyword.as_str()).collect()
    }

    #[test]
    fn comments_blank_lines_and_continuations() {
        let p = parse(
            "# a comment\nFROM busybox\n\nRUN echo a \\\n  # inside\n\n    && echo b\nCMD [\"sh\"]\n",
        )
        .unwrap();
        assert_eq!(kw(&p), ["from", "run", "cmd"]);
        assert_eq!(p.lines[1].rest, "echo a     && echo b");
        assert_eq!((p.lines[1].start, p.lines[1].end), (4, 7));
        assert_eq!(p.lines[2].start, 8);
        assert_eq!(p.escape, '\\');
    }

    #[test]
    fn escape_directive() {
        let p = parse(
            "# escape=`\n# syntax=docker/dockerfile:1\nFROM x\nRUN dir c:\\ `\n  && echo b\n",
        )
        .unwrap();
        assert_eq!(p.escape, '`');
        assert_eq!(p.syntax.as_deref(), Some("docker/dockerfile:1"));
        assert_eq!(p.lines[1].rest, "dir c:\\   && echo b");
        // After the first instruction a directive is a comment.
        let p = parse("FROM x\n# escape=`\nRUN a \\\n b\n").unwrap();
        assert_eq!(p.escape, '\\');
        assert_eq!(p.lines[1].rest, "a  b");
        let e = parse("# escape=x\nFROM a\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "dockerfile parse error on line 1: invalid ESCAPE 'x'. Must be ` or \\"
        );
    }

    #[test]
    fn flags_are_split() {
        let p = parse("COPY --from=build --chown=\"1:2\" a b\n").unwrap();
        assert_eq!(p.lines[0].flags, ["from=build", "chown=1:2"]);
        assert_eq!(p.lines[0].rest, "a b");
        assert_eq!(p.lines[0].original, "COPY --from=build --chown=\"1:2\" a b");
    }

    #[test]
    fn heredocs() {
        let text = "FROM x\nRUN <<EOF\necho hi\n  echo $A\nEOF\nCOPY <<-\"END\" /f\n\tline\nEND\nRUN cat <<A <<B\n1\nA\n2\nB\nCMD x\n";
        let p = parse(text).unwrap();
        assert_eq!(kw(&p), ["from", "run", "copy", "run", "cmd"]);
        assert_eq!(p.lines[1].heredocs[0].content, "echo hi\n  echo $A\n");
        assert!(p.lines[1].heredocs[0].expand);
        assert_eq!(p.lines[1].end, 5);
        let h = &p.lines[2].heredocs[0];
        assert_eq!(
            (h.name.as_str(), h.content.as_str(), h.expand),
            ("END", "line\n", false)
        );
        assert_eq!(p.lines[3].heredocs.len(), 2);
        assert_eq!(p.lines[3].heredocs[1].content, "2\n");
        let e = parse("FROM x\nRUN <<EOF\necho\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        // `<<` inside quotes is no heredoc.
        assert!(heredoc_markers("echo '<<EOF'").is_empty());
    }
}
