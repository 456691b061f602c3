//! Docker's word processing for the instructions the builder expands itself (BuildKit
//! `frontend/dockerfile/shell/lex.go`): quotes are removed, the escape character escapes the next
//! character, and `$V`, `${V}`, `${V:-w}`, `${V-w}`, `${V:+w}`, `${V+w}`, `${V:?m}`, `${V?m}` are
//! replaced from the build's variables. `RUN`, `CMD` and `ENTRYPOINT` are never processed here:
//! their shell does it.

use std::collections::BTreeMap;

/// The variables in scope: `ENV`s of the stage and `ARG`s with a value.
pub type Vars = BTreeMap<String, String>;

/// Why a word could not be processed (BuildKit's texts).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellError {
    #[error("missing '}}' in '{0}'")]
    Unclosed(String),
    #[error("unexpected end of statement while looking for matching {0}")]
    UnclosedQuote(char),
    #[error("{name}: {msg}")]
    Required { name: String, msg: String },
    #[error("bad substitution in '{0}'")]
    Bad(String),
}

/// One output character, and whether it came from an unquoted expansion or literal text (only
/// those split words).
struct Out {
    words: Vec<String>,
    cur: String,
    in_word: bool,
}

impl Out {
    fn new() -> Out {
        Out {
            words: Vec::new(),
            cur: String::new(),
            in_word: false,
        }
    }
    fn push(&mut self, c: char) {
        self.cur.push(c);
        self.in_word = true;
    }
    fn push_str(&mut self, s: &str) {
        self.cur.push_str(s);
        self.in_word = true;
    }
    /// Characters that split words when not quoted.
    fn push_splitting(&mut self, s: &str) {
        for c in s.chars() {
            if c.is_whitespace() {
                self.boundary();
            } else {
                self.push(c);
            }
        }
    }
    fn boundary(&mut self) {
        if self.in_word {
            self.words.push(std::mem::take(&mut self.cur));
            self.in_word = false;
        }
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    vars: &'a Vars,
    escape: char,
    src: &'a str,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        self.pos += 1;
        c
    }

    /// Process until `stop` (not consumed) or the end; `split`: unquoted whitespace separates words.
    fn run(&mut self, out: &mut Out, split: bool, stop: Option<char>) -> Result<(), ShellError> {
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                return Ok(());
            }
            self.pos += 1;
            match c {
                '\'' => {
                    out.in_word = true;
                    loop {
                        match self.next() {
                            Some('\'') => break,
                            Some(x) => out.push(x),
                            None => return Err(ShellError::UnclosedQuote('\'')),
                        }
                    }
                }
                '"' => {
                    out.in_word = true;
                    loop {
                        match self.next() {
                            Some('"') => break,
                            Some('$') => {
                                let v = self.dollar()?;
                                out.push_str(&v);
                            }
                            Some(x) if x == self.escape => match self.peek() {
                                Some(n) if n == '"' || n == '$' || n == self.escape => {
                                    self.pos += 1;
                                    out.push(n);
                                }
                                _ => out.push(x),
                            },
                            Some(x) => out.push(x),
                            None => return Err(ShellError::UnclosedQuote('"')),
                        }
                    }
                }
                '$' => {
                    let v = self.dollar()?;
                    if split {
                        out.push_splitting(&v);
                    } else {
                        out.push_str(&v);
                    }
                }
                x if x == self.escape => match self.next() {
                    Some(n) => out.push(n),
                    // A trailing escape stays (BuildKit keeps it).
                    None => out.push(x),
                },
                x if split && x.is_whitespace() => out.boundary(),
                x => out.push(x),
            }
        }
        Ok(())
    }

    fn name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// After a `$`: the expansion (or a literal `$`).
    fn dollar(&mut self) -> Result<String, ShellError> {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced()
            }
            Some(c) if c.is_ascii_digit() => {
                // Positional parameters are always empty.
                self.pos += 1;
                Ok(String::new())
            }
            Some(c) if Self::name_char(c) => {
                let start = self.pos;
                while self.peek().is_some_and(Self::name_char) {
                    self.pos += 1;
                }
                let name: String = self.chars[start..self.pos].iter().collect();
                Ok(self.vars.get(&name).cloned().unwrap_or_default())
            }
            _ => Ok("$".to_string()),
        }
    }

    fn braced(&mut self) -> Result<String, ShellError> {
        let start = self.pos;
        while self.peek().is_some_and(Self::name_char) {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        if name.is_empty() {
            return Err(ShellError::Bad(self.src.to_string()));
        }
        let value = self.vars.get(&name);
        match self.next() {
            Some('}') => Ok(value.cloned().unwrap_or_default()),
            Some(op @ (':' | '-' | '+' | '?')) => {
                let colon = op == ':';
                let op = if colon {
                    match self.next() {
                        Some(o @ ('-' | '+' | '?')) => o,
                        _ => return Err(ShellError::Bad(self.src.to_string())),
                    }
                } else {
                    op
                };
                let mut word = Out::new();
                self.run(&mut word, false, Some('}'))?;
                if self.next() != Some('}') {
                    return Err(ShellError::Unclosed(self.src.to_string()));
                }
                let word = word.cur;
                let set = match value {
                    Some(v) => !(colon && v.is_empty()),
                    None => false,
                };
                Ok(match op {
                    '-' if set => value.cloned().unwrap_or_default(),
                    '-' => word,
                    '+' if set => word,
                    '+' => String::new(),
                    _ if set => value.cloned().unwrap_or_default(),
                    _ => {
                        let msg = if word.is_empty() {
                            "is not allowed to be unset".to_string()
                        } else {
                            word
                        };
                        return Err(ShellError::Required { name, msg });
                    }
                })
            }
            _ => Err(ShellError::Unclosed(self.src.to_string())),
        }
    }
}

fn lexer<'a>(s: &'a str, vars: &'a Vars, escape: char) -> Lexer<'a> {
    Lexer {
        chars: s.chars().collect(),
        pos: 0,
        vars,
        escape,
        src: s,
    }
}

/// One word: quotes removed, variables replaced, no splitting (BuildKit `ProcessWord`).
pub fn process_word(s: &str, vars: &Vars, escape: char) -> Result<String, ShellError> {
    let mut out = Out::new();
    lexer(s, vars, escape).run(&mut out, false, None)?;
    Ok(out.cur)
}

/// Words split at unquoted whitespace, also inside unquoted expansions (BuildKit `ProcessWords`).
pub fn process_words(s: &str, vars: &Vars, escape: char) -> Result<Vec<String>, ShellError> {
    let mut out = Out::new();
    lexer(s, vars, escape).run(&mut out, true, None)?;
    out.boundary();
    Ok(out.words)
}

/// Split `s` at unquoted whitespace, keeping quotes and escapes (the parser's `parseWords`,
/// used before expansion by ENV/LABEL/ARG and the shell forms of COPY/ADD/VOLUME).
pub fn split_raw(s: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == q {
                    quote = None;
                } else if c == escape && q == '"' {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
            }
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            None => {
                cur.push(c);
                if c == '"' || c == '\'' {
                    quote = Some(c);
                } else if c == escape {
                    if let Some(n) = chars.next() {
                        cur.push(n);
                    }
                }
            }
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        [("A", "apple"), ("E", ""), ("S", "x y")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn w(s: &str) -> String {
        process_word(s, &vars(), '\\').unwrap()
    }

    #[test]
    fn variables() {
        assert_eq!(w("$A"), "apple");
        assert_eq!(w("${A}s"), "apples");
        assert_eq!(w("$Anope"), "");
        assert_eq!(w("${N:-dflt}"), "dflt");
        assert_eq!(w("${E:-dflt}"), "dflt");
        assert_eq!(w("${E-dflt}"), "");
        assert_eq!(w("${A:-dflt}"), "apple");
        assert_eq!(w("${A:+set}"), "set");
        assert_eq!(w("${E:+set}"), "");
        assert_eq!(w("${E+set}"), "set");
        assert_eq!(w("${N:+set}"), "");
        assert_eq!(w("${N:-$A/x}"), "apple/x");
        assert_eq!(w("a$"), "a$");
        assert_eq!(w("$1x"), "x");
        let e = process_word("${N:?need it}", &vars(), '\\').unwrap_err();
        assert_eq!(e.to_string(), "N: need it");
        assert!(process_word("${A", &vars(), '\\').is_err());
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A b\""), "apple b");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("\"a\\\"b\""), "a\"b");
        assert_eq!(w("\"a\\nb\""), "a\\nb");
        assert_eq!(w("a\\ b"), "a b");
        assert_eq!(process_word("`$A", &vars(), '`').unwrap(), "$A");
        assert!(process_word("'abc", &vars(), '\\').is_err());
    }

    #[test]
    fn words() {
        let ws = process_words("a \"b c\" $S '$S' d\\ e", &vars(), '\\').unwrap();
        assert_eq!(ws, ["a", "b c", "x", "y", "$S", "d e"]);
        assert!(process_words("  ", &vars(), '\\').unwrap().is_empty());
        assert_eq!(process_words("\"\"", &vars(), '\\').unwrap(), [""]);
    }

    #[test]
    fn raw_split() {
        assert_eq!(
            split_raw("A=1 B=\"x y\" C='p q' D=a\\ b", '\\'),
            ["A=1", "B=\"x y\"", "C='p q'", "D=a\\ b"]
        );
    }
}
