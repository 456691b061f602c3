//! A small Go `text/template` for `--format`, shared by every verb.
//!
//! Supported: text and `{{ }}` actions (with `{{-`/`-}}` trimming), fields `.A.B` and `.`, string
//! and number literals, pipelines `a | b`, parenthesised sub-pipelines, `$` (the root),
//! `if`/`else`/`end`, `range`/`else`/`end`, `with`/`else`/`end`, and the functions Docker adds:
//! `json`, `join`, `split`, `lower`, `upper`, `title`, `truncate`, `pad`, `println`, plus Go's
//! `print`, `printf` (`%s %d %v %q`), `index`, `len`, `eq`, `ne`, `not`, `and`, `or`.
//! Data is a `serde_json::Value`. [`Format`] adds Docker's `table` prefix, `json`, and the
//! `\t`/`\n` escapes.

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
}

#[derive(Debug, Clone)]
struct Pipe(Vec<Cmd>);

#[derive(Debug, Clone)]
struct Cmd(Vec<Arg>);

#[derive(Debug, Clone)]
enum Arg {
    Field(Vec<String>),
    Root(Vec<String>),
    Str(String),
    Num(f64),
    Bool(bool),
    Func(String),
    Sub(Pipe),
}

#[derive(Debug, Clone)]
enum Tok {
    Field(Vec<String>),
    Root(Vec<String>),
    Str(String),
    Num(f64),
    Ident(String),
    Pipe,
    Open,
    Close,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
    /// Unknown fields are errors (Docker's typed contexts) instead of `<no value>` (maps).
    strict: bool,
}

fn tokenize(s: &str) -> Result<Vec<Tok>> {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let field_chain = |c: &[char], i: &mut usize| {
        let mut parts = Vec::new();
        while *i < c.len() && c[*i] == '.' {
            *i += 1;
            let start = *i;
            while *i < c.len() && (c[*i].is_alphanumeric() || c[*i] == '_') {
                *i += 1;
            }
            if *i > start {
                parts.push(c[start..*i].iter().collect::<String>());
            }
        }
        parts
    };
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == '|' {
            out.push(Tok::Pipe);
            i += 1;
        } else if ch == '(' {
            out.push(Tok::Open);
            i += 1;
        } else if ch == ')' {
            out.push(Tok::Close);
            i += 1;
        } else if ch == '.' {
            out.push(Tok::Field(field_chain(&c, &mut i)));
        } else if ch == '$' {
            i += 1;
            out.push(Tok::Root(field_chain(&c, &mut i)));
        } else if ch == '"' {
            i += 1;
            let mut s = String::new();
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' && i + 1 < c.len() {
                    i += 1;
                    s.push(match c[i] {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                } else {
                    s.push(c[i]);
                }
                i += 1;
            }
            if i >= c.len() {
                bail!("unterminated quoted string");
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if ch == '`' {
            i += 1;
            let start = i;
            while i < c.len() && c[i] != '`' {
                i += 1;
            }
            if i >= c.len() {
                bail!("unterminated raw quoted string");
            }
            out.push(Tok::Str(c[start..i].iter().collect()));
            i += 1;
        } else if ch.is_ascii_digit() || (ch == '-' && i + 1 < c.len() && c[i + 1].is_ascii_digit())
        {
            let start = i;
            i += 1;
            while i < c.len() && (c[i].is_ascii_digit() || c[i] == '.') {
                i += 1;
            }
            let t: String = c[start..i].iter().collect();
            out.push(Tok::Num(
                t.parse().map_err(|_| anyhow!("bad number syntax: {t:?}"))?,
            ));
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else {
            bail!("unexpected {ch:?} in command");
        }
    }
    Ok(out)
}

fn parse_pipe(toks: &[Tok], pos: &mut usize) -> Result<Pipe> {
    let mut cmds = Vec::new();
    let mut args = Vec::new();
    while *pos < toks.len() {
        match &toks[*pos] {
            Tok::Close => break,
            Tok::Pipe => {
                if args.is_empty() {
                    bail!("missing command");
                }
                cmds.push(Cmd(std::mem::take(&mut args)));
            }
            Tok::Open => {
                *pos += 1;
                let p = parse_pipe(toks, pos)?;
                if !matches!(toks.get(*pos), Some(Tok::Close)) {
                    bail!("unclosed left paren");
                }
                args.push(Arg::Sub(p));
            }
            Tok::Field(f) => args.push(Arg::Field(f.clone())),
            Tok::Root(f) => args.push(Arg::Root(f.clone())),
            Tok::Str(s) => args.push(Arg::Str(s.clone())),
            Tok::Num(n) => args.push(Arg::Num(*n)),
            Tok::Ident(id) if id == "true" || id == "false" => args.push(Arg::Bool(id == "true")),
            Tok::Ident(id) if id == "nil" => args.push(Arg::Str(String::new())),
            Tok::Ident(id) => {
                if !FUNCS.contains(&id.as_str()) {
                    bail!("function {id:?} not defined");
                }
                args.push(Arg::Func(id.clone()))
            }
        }
        *pos += 1;
    }
    if args.is_empty() {
        bail!("missing value for command");
    }
    cmds.push(Cmd(args));
    Ok(Pipe(cmds))
}

const FUNCS: &[&str] = &[
    "json", "join", "split", "lower", "upper", "title", "truncate", "pad", "println", "print",
    "printf", "index", "len", "eq", "ne", "not", "and", "or",
];

enum Item {
    Text(String),
    Action(String),
}

fn lex(src: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_left =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            text = text.trim_end();
        }
        items.push(Item::Text(text.to_string()));
        let end = after.find("}}").ok_or_else(|| anyhow!("unclosed action"))?;
        let mut inner = &after[..end];
        if trim_left {
            inner = &inner[1..];
        }
        trim_next = inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-");
        if trim_next {
            inner = &inner[..inner.len() - 1];
        }
        items.push(Item::Action(inner.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    items.push(Item::Text(text.to_string()));
    Ok(items)
}

enum Stop {
    End,
    Else,
    Eof,
}

fn parse_nodes(items: &[Item], pos: &mut usize) -> Result<(Vec<Node>, Stop)> {
    let mut out = Vec::new();
    while *pos < items.len() {
        let item = &items[*pos];
        *pos += 1;
        match item {
            Item::Text(t) => {
                if !t.is_empty() {
                    out.push(Node::Text(t.clone()))
                }
            }
            Item::Action(a) => {
                if a.starts_with("/*") {
                    continue;
                }
                let (word, rest) = a.split_once(char::is_whitespace).unwrap_or((a, ""));
                match word {
                    "end" => return Ok((out, Stop::End)),
                    "else" => return Ok((out, Stop::Else)),
                    "if" | "range" | "with" => {
                        let toks = tokenize(rest)?;
                        let pipe = parse_pipe(&toks, &mut 0)?;
                        let (body, stop) = parse_nodes(items, pos)?;
                        let alt = match stop {
                            Stop::Else => {
                                let (alt, stop) = parse_nodes(items, pos)?;
                                if !matches!(stop, Stop::End) {
                                    bail!("unexpected EOF");
                                }
                                alt
                            }
                            Stop::End => Vec::new(),
                            Stop::Eof => bail!("unexpected EOF"),
                        };
                        out.push(match word {
                            "if" => Node::If(pipe, body, alt),
                            "range" => Node::Range(pipe, body, alt),
                            _ => Node::With(pipe, body, alt),
                        });
                    }
                    _ => {
                        let toks = tokenize(a)?;
                        let mut p = 0;
                        let pipe = parse_pipe(&toks, &mut p)?;
                        if p < toks.len() {
                            bail!("unexpected right paren");
                        }
                        out.push(Node::Action(pipe));
                    }
                }
            }
        }
    }
    Ok((out, Stop::Eof))
}

impl Template {
    pub fn parse(src: &str) -> Result<Template> {
        let items = lex(src).map_err(|e| anyhow!("template parsing error: template: :1: {e}"))?;
        let (nodes, stop) = parse_nodes(&items, &mut 0)
            .map_err(|e| anyhow!("template parsing error: template: :1: {e}"))?;
        if !matches!(stop, Stop::Eof) {
            bail!("template parsing error: template: :1: unexpected {{{{end}}}}");
        }
        Ok(Template {
            nodes,
            strict: false,
        })
    }

    /// Unknown fields are errors rather than `<no value>`.
    pub fn strict(mut self) -> Template {
        self.strict = true;
        self
    }

    pub fn render(&self, data: &Value) -> Result<String> {
        let mut out = String::new();
        let ctx = Ctx {
            root: data,
            strict: self.strict,
        };
        ctx.nodes(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

struct Ctx<'a> {
    root: &'a Value,
    strict: bool,
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Go's `%v` of a value.
pub fn go_string(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(go_string).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(o) => format!(
            "map[{}]",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", go_string(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

fn num(v: &Value) -> Result<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| anyhow!("expected integer")),
        Value::String(s) => s
            .parse()
            .map_err(|_| anyhow!("expected integer; found {s:?}")),
        _ => bail!("expected integer; found {}", go_string(v)),
    }
}

fn printf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = fmt.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('q') => out.push_str(&format!(
                "{:?}",
                it.next().map(go_string).unwrap_or_default()
            )),
            Some(_) => out.push_str(
                &it.next()
                    .map(go_string)
                    .unwrap_or_else(|| "%!v(MISSING)".into()),
            ),
            None => out.push('%'),
        }
    }
    out
}

impl Ctx<'_> {
    fn nodes(&self, nodes: &[Node], dot: &Value, out: &mut String) -> Result<()> {
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => out.push_str(&go_string(&self.pipe(p, dot)?)),
                Node::If(p, body, alt) => {
                    let v = self.pipe(p, dot)?;
                    self.nodes(if truthy(&v) { body } else { alt }, dot, out)?;
                }
                Node::With(p, body, alt) => {
                    let v = self.pipe(p, dot)?;
                    if truthy(&v) {
                        self.nodes(body, &v, out)?;
                    } else {
                        self.nodes(alt, dot, out)?;
                    }
                }
                Node::Range(p, body, alt) => {
                    let v = self.pipe(p, dot)?;
                    let items: Vec<Value> = match v {
                        Value::Array(a) => a,
                        Value::Object(o) => o.into_iter().map(|(_, v)| v).collect(),
                        Value::Null => Vec::new(),
                        other => bail!("range can't iterate over {}", go_string(&other)),
                    };
                    if items.is_empty() {
                        self.nodes(alt, dot, out)?;
                    }
                    for it in &items {
                        self.nodes(body, it, out)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn field(&self, base: &Value, path: &[String]) -> Result<Value> {
        let mut cur = base.clone();
        for (i, name) in path.iter().enumerate() {
            cur = match &cur {
                Value::Object(o) => match o.get(name) {
                    Some(v) => v.clone(),
                    None if self.strict && i == 0 => bail!(
                        "template: :1: executing \"\" at <.{name}>: can't evaluate field {name}"
                    ),
                    None => Value::Null,
                },
                Value::Null => Value::Null,
                _ => {
                    bail!("template: :1: executing \"\" at <.{name}>: can't evaluate field {name}")
                }
            };
        }
        Ok(cur)
    }

    fn arg(&self, a: &Arg, dot: &Value) -> Result<Value> {
        Ok(match a {
            Arg::Field(f) => self.field(dot, f)?,
            Arg::Root(f) => self.field(self.root, f)?,
            Arg::Str(s) => Value::String(s.clone()),
            Arg::Num(n) => serde_json::json!(if n.fract() == 0.0 {
                Value::from(*n as i64)
            } else {
                Value::from(*n)
            }),
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Sub(p) => self.pipe(p, dot)?,
            Arg::Func(f) => self.call(f, Vec::new())?,
        })
    }

    fn pipe(&self, p: &Pipe, dot: &Value) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for Cmd(args) in &p.0 {
            let v = match &args[0] {
                Arg::Func(f) => {
                    let mut vals = args[1..]
                        .iter()
                        .map(|a| self.arg(a, dot))
                        .collect::<Result<Vec<_>>>()?;
                    vals.extend(prev.take());
                    self.call(f, vals)?
                }
                // Docker's `.Label "key"` method of the ps/images/volume/network contexts: the
                // value of one label of the object's `Labels` (`k=v,…` text or a map), "" when
                // it has none.
                Arg::Field(f)
                    if args.len() == 2
                        && prev.is_none()
                        && f.last().is_some_and(|l| l == "Label") =>
                {
                    let obj = self.field(dot, &f[..f.len() - 1])?;
                    let key = go_string(&self.arg(&args[1], dot)?);
                    label_of(&obj, &key)
                }
                a => {
                    if args.len() > 1 || prev.is_some() {
                        bail!("can't give argument to non-function");
                    }
                    self.arg(a, dot)?
                }
            };
            prev = Some(v);
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    fn call(&self, f: &str, a: Vec<Value>) -> Result<Value> {
        let s = |i: usize| a.get(i).map(go_string).unwrap_or_default();
        let need = |n: usize| -> Result<()> {
            if a.len() < n {
                bail!("wrong number of args for {f}: want {n} got {}", a.len());
            }
            Ok(())
        };
        Ok(match f {
            "json" => {
                need(1)?;
                Value::String(serde_json::to_string(&a[0])?)
            }
            "join" => {
                need(2)?;
                let list = match &a[0] {
                    Value::Array(v) => v.iter().map(go_string).collect::<Vec<_>>(),
                    Value::Null => Vec::new(),
                    other => vec![go_string(other)],
                };
                Value::String(list.join(&s(1)))
            }
            "split" => {
                need(2)?;
                Value::Array(s(0).split(&s(1)).map(|x| Value::String(x.into())).collect())
            }
            "lower" => Value::String(s(0).to_lowercase()),
            "upper" => Value::String(s(0).to_uppercase()),
            "title" => Value::String(
                s(0).split(' ')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_uppercase().chain(c).collect())
                            .unwrap_or_default()
                    })
                    .collect::<Vec<String>>()
                    .join(" "),
            ),
            "truncate" => {
                need(2)?;
                let n = num(&a[1])?.max(0) as usize;
                Value::String(s(0).chars().take(n).collect())
            }
            "pad" => {
                need(3)?;
                let (l, r) = (num(&a[1])?.max(0) as usize, num(&a[2])?.max(0) as usize);
                Value::String(format!("{}{}{}", " ".repeat(l), s(0), " ".repeat(r)))
            }
            "println" => {
                Value::String(a.iter().map(go_string).collect::<Vec<_>>().join(" ") + "\n")
            }
            "print" => Value::String(a.iter().map(go_string).collect::<Vec<_>>().concat()),
            "printf" => {
                need(1)?;
                Value::String(printf(&s(0), &a[1..]))
            }
            "index" => {
                need(2)?;
                let mut cur = a[0].clone();
                for k in &a[1..] {
                    cur = match (&cur, k) {
                        (Value::Object(o), k) => {
                            o.get(&go_string(k)).cloned().unwrap_or(Value::Null)
                        }
                        (Value::Array(v), k) => {
                            v.get(num(k)? as usize).cloned().unwrap_or(Value::Null)
                        }
                        _ => Value::Null,
                    };
                }
                cur
            }
            "len" => {
                need(1)?;
                Value::from(match &a[0] {
                    Value::Array(v) => v.len(),
                    Value::Object(o) => o.len(),
                    Value::String(s) => s.len(),
                    _ => 0,
                })
            }
            "eq" => {
                need(2)?;
                Value::Bool(a[1..].iter().any(|x| go_string(x) == go_string(&a[0])))
            }
            "ne" => {
                need(2)?;
                Value::Bool(go_string(&a[0]) != go_string(&a[1]))
            }
            "not" => {
                need(1)?;
                Value::Bool(!truthy(&a[0]))
            }
            "and" => a
                .iter()
                .find(|v| !truthy(v))
                .or(a.last())
                .cloned()
                .unwrap_or(Value::Null),
            "or" => a
                .iter()
                .find(|v| truthy(v))
                .or(a.last())
                .cloned()
                .unwrap_or(Value::Null),
            _ => bail!("function {f:?} not defined"),
        })
    }
}

/// A `--format` value as Docker interprets it.
#[derive(Debug, Clone)]
pub struct Format {
    pub template: Template,
    /// `table` prefix: print a header and align columns.
    pub table: bool,
}

impl Format {
    /// `flag` is the user's `--format` (or `None`); `default_table` the verb's default table
    /// template (without the `table ` prefix).
    pub fn new(flag: Option<&str>, default_table: &str) -> Result<Format> {
        let flag = flag.unwrap_or("");
        let escaped = flag.replace("\\t", "\t").replace("\\n", "\n");
        let (src, table) = match escaped.as_str() {
            "" | "table" => (default_table.to_string(), true),
            "json" => ("{{json .}}".to_string(), false),
            s => match s.strip_prefix("table ") {
                Some(rest) => (rest.to_string(), true),
                None => (s.to_string(), false),
            },
        };
        Ok(Format {
            template: Template::parse(&src)?.strict(),
            table,
        })
    }

    /// Render rows (and the header from `header` when a table) to a string.
    pub fn render(&self, header: &Value, rows: &[Value]) -> Result<String> {
        let mut lines = String::new();
        if self.table {
            lines.push_str(&self.template.render(header)?);
            lines.push('\n');
        }
        for r in rows {
            lines.push_str(&self.template.render(r)?);
            lines.push('\n');
        }
        Ok(if self.table {
            crate::table::align(&lines)
        } else {
            lines
        })
    }
}

/// One label's value from an object's `Labels`: Docker's `k=v,k2=v2` text (the ps/images/
/// volume/network table contexts) or a JSON map; "" when absent.
fn label_of(obj: &Value, key: &str) -> Value {
    let found = match obj.get("Labels") {
        Some(Value::Object(m)) => m.get(key).map(go_string),
        Some(Value::String(t)) => t.split(',').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then(|| v.to_string())
        }),
        _ => None,
    };
    Value::String(found.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(t: &str, v: Value) -> String {
        Template::parse(t).unwrap().render(&v).unwrap()
    }

    #[test]
    fn fields_functions_and_blocks() {
        let v =
            json!({"ID": "abc", "Names": ["a", "b"], "Labels": {"k": "v"}, "N": 3, "Empty": ""});
        assert_eq!(r("{{.ID}}:{{json .Names}}", v.clone()), r#"abc:["a","b"]"#);
        assert_eq!(r("{{join .Names \",\"}}", v.clone()), "a,b");
        assert_eq!(
            r(
                "{{.ID | upper}} {{lower \"X\"}} {{title \"hi there\"}}",
                v.clone()
            ),
            "ABC x Hi There"
        );
        assert_eq!(
            r("{{truncate .ID 2}}|{{pad .ID 1 2}}|", v.clone()),
            "ab| abc  |"
        );
        assert_eq!(r("{{index .Labels \"k\"}}", v.clone()), "v");
        assert_eq!(r("{{.Labels}}", v.clone()), "map[k:v]");
        assert_eq!(r("{{.Names}}", v.clone()), "[a b]");
        assert_eq!(r("{{if .Empty}}y{{else}}n{{end}}", v.clone()), "n");
        assert_eq!(r("{{range .Names}}<{{.}}>{{end}}", v.clone()), "<a><b>");
        assert_eq!(r("{{with .Labels}}{{.k}}{{end}}", v.clone()), "v");
        assert_eq!(r("{{println .ID}}", v.clone()), "abc\n");
        assert_eq!(r("{{printf \"%s-%d\" .ID .N}}", v.clone()), "abc-3");
        assert_eq!(r("{{- .ID -}}  \n", v.clone()), "abc");
        assert_eq!(r("{{len .Names}} {{eq .ID \"abc\"}}", v.clone()), "2 true");
        assert_eq!(
            r("{{json .}}", json!({"b": 1, "a": "<x>"})),
            r#"{"a":"<x>","b":1}"#
        );
        assert_eq!(r("{{.Missing}}", v), "<no value>");
    }

    #[test]
    fn label_method_of_table_contexts() {
        let text = json!({"Labels": "team=web,empty=,flag"});
        assert_eq!(
            r(
                "{{.Label \"team\"}}|{{.Label \"empty\"}}|{{.Label \"flag\"}}|{{.Label \"no\"}}",
                text
            ),
            "web|||"
        );
        let map = json!({"Labels": {"team": "db"}});
        assert_eq!(r("{{.Label \"team\"}}", map.clone()), "db");
        assert_eq!(r("{{.Label \"team\" | upper}}", map), "DB");
        // Any other field with an argument is still Go's error.
        assert!(Template::parse("{{.ID \"x\"}}")
            .unwrap()
            .render(&json!({"ID": 1}))
            .is_err());
    }

    #[test]
    fn errors() {
        assert!(Template::parse("{{.ID").is_err());
        assert!(Template::parse("{{nosuch .ID}}").is_err());
        assert!(Template::parse("{{if .X}}").is_err());
        let t = Template::parse("{{.Nope}}").unwrap().strict();
        assert!(t.render(&json!({"ID": 1})).is_err());
    }

    #[test]
    fn table_format() {
        let f = Format::new(Some("table {{.A}}\\t{{.B}}"), "").unwrap();
        let out = f
            .render(
                &json!({"A": "A", "B": "BEE"}),
                &[json!({"A": "long value here", "B": "x"})],
            )
            .unwrap();
        assert_eq!(out, "A                 BEE\nlong value here   x\n");
        let f = Format::new(Some("{{.A}}"), "").unwrap();
        assert_eq!(f.render(&json!({}), &[json!({"A": 1})]).unwrap(), "1\n");
    }
}
