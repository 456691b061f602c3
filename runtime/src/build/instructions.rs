//! Typed instructions (BuildKit `frontend/dockerfile/instructions`): every logical line is
//! checked and turned into an [`Instruction`] before anything runs, so a bad Dockerfile fails
//! with its line number and nothing built. Arguments stay as written; variables are expanded
//! when the step runs (their values depend on the ARGs and ENVs before it).

use super::parser::{self, Heredoc, Line};
use super::shell::split_raw;
use super::BuildError;

/// Shell form (run through the stage's `SHELL`) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    Shell(String),
    Exec(Vec<String>),
    /// A lone `RUN <<NAME` heredoc starting with `#!`: BuildKit runs it as a script with that
    /// interpreter (mounted read-only at `/dev/pipes/NAME`), not through the shell.
    Script {
        name: String,
        body: String,
    },
}

/// `RUN --mount=type=…` kinds strata supports (BuildKit's, less `ssh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    #[default]
    Shared,
    Private,
    Locked,
}

/// One `RUN --mount=…`, checked when parsed (values as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunMount {
    pub kind: MountKind,
    /// `target`/`dst`/`destination` (a secret's defaults to `/run/secrets/<id>`); relative
    /// targets are taken from the step's working directory.
    pub target: String,
    /// `source`/`src`: bind (default the root of the context or `from`).
    pub source: Option<String>,
    /// `from`: a stage or image (bind).
    pub from: Option<String>,
    /// `id`: a cache's (default its target) or a secret's (default the target's basename).
    pub id: Option<String>,
    /// bind: read-only unless `rw` (its writes are then thrown away); cache: `ro`.
    pub readonly: bool,
    pub sharing: Sharing,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// tmpfs `size=` (bytes, or with a k/m/g suffix).
    pub size: Option<String>,
    /// secret: fail when the build was given no such secret.
    pub required: bool,
}

fn bool_value(v: Option<&str>) -> Option<bool> {
    match v {
        None | Some("") | Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        _ => None,
    }
}

/// Parse one `--mount` value as BuildKit does (`type=bind` when no type is given).
fn run_mount(line: &Line, spec: &str) -> Result<RunMount, BuildError> {
    let bad = |msg: String| err(line, msg);
    let mut kind = MountKind::Bind;
    let mut fields = Vec::new();
    for f in spec.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match f.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (f.trim().to_ascii_lowercase(), None),
        };
        if k == "type" {
            kind = match v.unwrap_or("") {
                "bind" => MountKind::Bind,
                "cache" => MountKind::Cache,
                "tmpfs" => MountKind::Tmpfs,
                "secret" => MountKind::Secret,
                "ssh" => return Err(bad("RUN --mount=type=ssh is not supported".into())),
                t => return Err(bad(format!("unsupported mount type {t:?}"))),
            };
        } else {
            fields.push((k, v));
        }
    }
    let mut m = RunMount {
        kind,
        target: String::new(),
        source: None,
        from: None,
        id: None,
        readonly: kind == MountKind::Bind || kind == MountKind::Secret,
        sharing: Sharing::Shared,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: false,
    };
    for (k, v) in fields {
        let val = |what: &str| -> Result<String, BuildError> {
            v.map(str::to_string)
                .ok_or_else(|| bad(format!("invalid value for {what}: empty")))
        };
        let num = |what: &str, radix: u32| -> Result<u32, BuildError> {
            let s = val(what)?;
            u32::from_str_radix(&s, radix)
                .map_err(|_| bad(format!("invalid value for {what}: {s}")))
        };
        let flag = |what: &str| {
            bool_value(v)
                .ok_or_else(|| bad(format!("invalid value for {what}: {}", v.unwrap_or(""))))
        };
        match k.as_str() {
            "target" | "dst" | "destination" => m.target = val(&k)?,
            "source" | "src" if kind != MountKind::Tmpfs && kind != MountKind::Secret => {
                m.source = Some(val(&k)?)
            }
            "from" if kind == MountKind::Bind => m.from = Some(val(&k)?),
            "id" if kind == MountKind::Cache || kind == MountKind::Secret => m.id = Some(val(&k)?),
            "ro" | "readonly" if kind != MountKind::Tmpfs => m.readonly = flag(&k)?,
            "rw" | "readwrite" if kind == MountKind::Bind || kind == MountKind::Cache => {
                m.readonly = !flag(&k)?
            }
            "sharing" if kind == MountKind::Cache => {
                m.sharing = match v.unwrap_or("") {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    s => return Err(bad(format!("unsupported sharing value {s:?}"))),
                }
            }
            "mode" if kind == MountKind::Cache || kind == MountKind::Secret => {
                m.mode = Some(num(&k, 8)?)
            }
            "uid" if kind == MountKind::Cache || kind == MountKind::Secret => {
                m.uid = Some(num(&k, 10)?)
            }
            "gid" if kind == MountKind::Cache || kind == MountKind::Secret => {
                m.gid = Some(num(&k, 10)?)
            }
            "size" if kind == MountKind::Tmpfs => {
                let s = val(&k)?;
                let digits = s.trim_end_matches(|c: char| "kKmMgGbB".contains(c));
                if digits.is_empty() || digits.parse::<u64>().is_err() {
                    return Err(bad(format!("invalid value for size: {s}")));
                }
                m.size = Some(s)
            }
            "required" if kind == MountKind::Secret => m.required = flag(&k)?,
            _ => return Err(bad(format!("unexpected key '{k}' in '{spec}'"))),
        }
    }
    if m.kind == MountKind::Secret {
        if m.id.is_none() && !m.target.is_empty() {
            m.id = m.target.rsplit('/').next().map(str::to_string);
        }
        let Some(id) = m.id.clone().filter(|i| !i.is_empty()) else {
            return Err(bad("secret mount requires an id or a target".into()));
        };
        if m.target.is_empty() {
            m.target = format!("/run/secrets/{id}");
        }
    }
    if m.target.is_empty() {
        return Err(bad("mount destination not set".into()));
    }
    Ok(m)
}

/// `COPY`/`ADD` arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyArgs {
    /// Sources as written (variables not yet expanded); heredoc sources are named `<<NAME`.
    pub srcs: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    /// `--chmod` (octal, checked when parsed).
    pub chmod: Option<u32>,
    pub checksum: Option<String>,
    pub heredocs: Vec<Heredoc>,
}

/// `HEALTHCHECK` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", "…"]`.
    pub test: Vec<String>,
    /// Nanoseconds, 0 = inherit.
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    Run {
        cmd: Form,
        network: Option<String>,
        mounts: Vec<RunMount>,
    },
    Cmd(Form),
    Entrypoint(Form),
    /// `(key, value)` pairs as written (quotes kept).
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Expose(String),
    Volume(Vec<String>, bool),
    User(String),
    Workdir(String),
    StopSignal(String),
    Healthcheck(Health),
    Shell(Vec<String>),
    Onbuild(String),
    Arg(Vec<(String, Option<String>)>),
    Copy(CopyArgs),
    Add(CopyArgs),
    Maintainer(String),
}

/// One step of a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    /// As written, for `Step N/M : …`.
    pub original: String,
    pub instruction: Instruction,
}

/// One `FROM` and its steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// `AS name`, lower-cased.
    pub name: Option<String>,
    /// The base as written (may hold `$ARG`s).
    pub base: String,
    pub platform: Option<String>,
    pub line: usize,
    pub original: String,
    pub steps: Vec<Step>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    pub escape: char,
    /// `ARG`s before the first `FROM` (usable in `FROM` lines).
    pub meta_args: Vec<(String, Option<String>)>,
    pub stages: Vec<Stage>,
}

fn err(line: &Line, msg: impl Into<String>) -> BuildError {
    BuildError::Parse {
        line: line.start,
        msg: msg.into(),
    }
}

/// `["a", "b"]` → the strings; anything else → None.
fn json_array(rest: &str) -> Option<Vec<String>> {
    let t = rest.trim();
    if !t.starts_with('[') || !t.ends_with(']') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

fn form(line: &Line) -> Form {
    match json_array(&line.rest) {
        Some(v) => Form::Exec(v),
        None => Form::Shell(line.rest.clone()),
    }
}

/// Flags of `line`, checked against `allowed`; returns `(name, value)` pairs.
fn flags(line: &Line, allowed: &[&str]) -> Result<Vec<(String, String)>, BuildError> {
    let mut out = Vec::new();
    for f in &line.flags {
        let (k, v) = match f.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (f.clone(), String::new()),
        };
        if !allowed.contains(&k.as_str()) {
            return Err(err(line, format!("unknown flag: {k}")));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn flag(fl: &[(String, String)], name: &str) -> Option<String> {
    fl.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

fn at_least_one(line: &Line) -> Result<(), BuildError> {
    if line.rest.trim().is_empty() {
        return Err(err(
            line,
            format!(
                "{} requires at least one argument",
                line.keyword.to_uppercase()
            ),
        ));
    }
    Ok(())
}

/// `ENV`/`LABEL` pairs: `k=v k2="v 2"` or the legacy `k value with spaces`.
fn name_values(line: &Line, escape: char) -> Result<Vec<(String, String)>, BuildError> {
    let kw = line.keyword.to_uppercase();
    let words = split_raw(&line.rest, escape);
    if words.is_empty() {
        return Err(err(line, format!("{kw} requires at least one argument")));
    }
    if !words[0].contains('=') {
        let rest = line.rest.trim();
        let (k, v) = match rest.find(char::is_whitespace) {
            Some(p) => (&rest[..p], rest[p..].trim_start()),
            None => return Err(err(line, format!("{kw} must have two arguments"))),
        };
        return Ok(vec![(k.to_string(), v.to_string())]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(err(
                line,
                format!("Syntax error - can't find = in \"{w}\". Must be of the form: name=value"),
            ));
        };
        if k.is_empty() {
            return Err(err(line, format!("{kw} names can not be blank")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Go's `time.ParseDuration` for the forms Dockerfiles use (`30s`, `1m30s`, `500ms`, `1h`).
fn duration(line: &Line, name: &str, v: &str) -> Result<i64, BuildError> {
    crate::container::health::go_duration(v)
        .ok_or_else(|| err(line, format!("time: invalid duration \"{v}\" for --{name}")))
}

fn copy_args(line: &Line, add: bool, escape: char) -> Result<CopyArgs, BuildError> {
    let allowed: &[&str] = if add {
        &["chown", "chmod", "checksum", "link", "keep-git-dir"]
    } else {
        &["from", "chown", "chmod", "link", "parents", "exclude"]
    };
    let fl = flags(line, allowed)?;
    if let Some((k, _)) = fl.iter().find(|(k, _)| k == "parents" || k == "exclude") {
        return Err(err(
            line,
            format!("{} --{k} is not supported", line.keyword.to_uppercase()),
        ));
    }
    let words = match json_array(&line.rest) {
        Some(v) => v,
        None => split_raw(&line.rest, escape),
    };
    let kw = line.keyword.to_uppercase();
    let min = if line.heredocs.is_empty() { 2 } else { 1 };
    if words.len() < min {
        return Err(err(line, format!("{kw} requires at least two arguments")));
    }
    let (srcs, dest) = words.split_at(words.len() - 1);
    let chmod = match flag(&fl, "chmod") {
        Some(c) => match u32::from_str_radix(&c, 8) {
            Ok(m) if m <= 0o7777 => Some(m),
            _ => return Err(err(line, format!("invalid chmod parameter: {c}"))),
        },
        None => None,
    };
    Ok(CopyArgs {
        srcs: srcs.to_vec(),
        dest: dest[0].clone(),
        from: flag(&fl, "from"),
        chown: flag(&fl, "chown"),
        chmod,
        checksum: flag(&fl, "checksum"),
        heredocs: line.heredocs.clone(),
    })
}

/// The command of a `RUN` with heredocs, as BuildKit runs it: a lone `<<EOF` is the script
/// itself; otherwise the heredoc bodies follow the command line, as a shell reads them.
fn run_form(line: &Line) -> Form {
    if line.heredocs.is_empty() {
        return form(line);
    }
    let markers = parser::heredoc_markers(&line.rest);
    let rest = line.rest.trim();
    let lone = markers.len() == 1 && {
        let (name, strip, expand) = &markers[0];
        let quote = if *expand { "" } else { "\"" };
        let dash = if *strip { "-" } else { "" };
        let written = [
            format!("<<{dash}{name}"),
            format!("<<{dash}{quote}{name}{quote}"),
            format!("<<{dash}'{name}'"),
        ];
        written.iter().any(|w| w == rest)
    };
    if lone {
        let h = &line.heredocs[0];
        if h.content.starts_with("#!") {
            return Form::Script {
                name: h.name.clone(),
                body: h.content.clone(),
            };
        }
        return Form::Shell(h.content.clone());
    }
    let mut s = line.rest.clone();
    for h in &line.heredocs {
        s.push('\n');
        s.push_str(&h.content);
        s.push_str(&h.name);
    }
    Form::Shell(s)
}

/// Keyword-level checks and typing of one line (not `FROM`).
pub fn instruction(line: &Line, escape: char) -> Result<Instruction, BuildError> {
    let no_flags = |l: &Line| flags(l, &[]);
    Ok(match line.keyword.as_str() {
        "run" => {
            let fl = flags(line, &["network", "mount", "security"])?;
            if line.heredocs.is_empty() {
                at_least_one(line)?;
            }
            if let Some((k, _)) = fl.iter().find(|(k, _)| k != "network" && k != "mount") {
                return Err(err(line, format!("RUN --{k} is not supported")));
            }
            let mut mounts = Vec::new();
            for (_, spec) in fl.iter().filter(|(k, _)| k == "mount") {
                mounts.push(run_mount(line, spec)?);
            }
            let network = flag(&fl, "network");
            if let Some(n) = &network {
                if !matches!(n.as_str(), "default" | "none" | "host") {
                    return Err(err(line, format!("unsupported network mode {n:?}")));
                }
            }
            Instruction::Run {
                cmd: run_form(line),
                network,
                mounts,
            }
        }
        "cmd" => {
            no_flags(line)?;
            at_least_one(line)?;
            Instruction::Cmd(form(line))
        }
        "entrypoint" => {
            no_flags(line)?;
            at_least_one(line)?;
            Instruction::Entrypoint(form(line))
        }
        "env" => {
            no_flags(line)?;
            Instruction::Env(name_values(line, escape)?)
        }
        "label" => {
            no_flags(line)?;
            Instruction::Label(name_values(line, escape)?)
        }
        "maintainer" => {
            no_flags(line)?;
            at_least_one(line)?;
            Instruction::Maintainer(line.rest.clone())
        }
        "expose" => {
            no_flags(line)?;
            at_least_one(line)?;
            Instruction::Expose(line.rest.clone())
        }
        "volume" => {
            no_flags(line)?;
            at_least_one(line)?;
            match json_array(&line.rest) {
                Some(v) => Instruction::Volume(v, true),
                None => Instruction::Volume(split_raw(&line.rest, escape), false),
            }
        }
        "user" | "workdir" | "stopsignal" => {
            no_flags(line)?;
            let kw = line.keyword.to_uppercase();
            if line.rest.trim().is_empty() || split_raw(&line.rest, escape).len() != 1 {
                return Err(err(line, format!("{kw} requires exactly one argument")));
            }
            match line.keyword.as_str() {
                "user" => Instruction::User(line.rest.clone()),
                "workdir" => Instruction::Workdir(line.rest.clone()),
                _ => Instruction::StopSignal(line.rest.clone()),
            }
        }
        "shell" => {
            no_flags(line)?;
            match json_array(&line.rest) {
                Some(v) if !v.is_empty() => Instruction::Shell(v),
                _ => return Err(err(line, "SHELL requires the arguments to be in JSON form")),
            }
        }
        "arg" => {
            no_flags(line)?;
            let words = split_raw(&line.rest, escape);
            if words.is_empty() {
                return Err(err(line, "ARG requires exactly one argument"));
            }
            let mut out = Vec::new();
            for w in words {
                let (k, v) = match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w.clone(), None),
                };
                if k.is_empty() {
                    return Err(err(line, "ARG names can not be blank"));
                }
                out.push((k, v));
            }
            Instruction::Arg(out)
        }
        "copy" => Instruction::Copy(copy_args(line, false, escape)?),
        "add" => Instruction::Add(copy_args(line, true, escape)?),
        "healthcheck" => {
            let fl = flags(
                line,
                &[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ],
            )?;
            let rest = line.rest.trim();
            let (kind, cmd) = match rest.find(char::is_whitespace) {
                Some(p) => (&rest[..p], rest[p..].trim_start()),
                None => (rest, ""),
            };
            let test = match kind.to_ascii_uppercase().as_str() {
                "NONE" => {
                    if !cmd.is_empty() || !fl.is_empty() {
                        return Err(err(line, "HEALTHCHECK NONE takes no arguments"));
                    }
                    vec!["NONE".to_string()]
                }
                "CMD" => {
                    if cmd.is_empty() {
                        return Err(err(line, "Missing command after HEALTHCHECK CMD"));
                    }
                    match json_array(cmd) {
                        Some(v) => std::iter::once("CMD".to_string()).chain(v).collect(),
                        None => vec!["CMD-SHELL".to_string(), cmd.to_string()],
                    }
                }
                "" => return Err(err(line, "HEALTHCHECK requires at least one argument")),
                other => {
                    return Err(err(
                        line,
                        format!("Unknown type \"{other}\" in HEALTHCHECK (try CMD)"),
                    ))
                }
            };
            let d = |n: &str| -> Result<i64, BuildError> {
                flag(&fl, n).map_or(Ok(0), |v| duration(line, n, &v))
            };
            let retries = match flag(&fl, "retries") {
                Some(r) => r
                    .parse::<i64>()
                    .ok()
                    .filter(|r| *r >= 0)
                    .ok_or_else(|| err(line, format!("invalid --retries value: {r}")))?,
                None => 0,
            };
            Instruction::Healthcheck(Health {
                test,
                interval: d("interval")?,
                timeout: d("timeout")?,
                start_period: d("start-period")?,
                start_interval: d("start-interval")?,
                retries,
            })
        }
        "onbuild" => {
            no_flags(line)?;
            at_least_one(line)?;
            let inner = parser::parse(&line.rest)?;
            let Some(first) = inner.lines.first() else {
                return Err(err(line, "ONBUILD requires at least one argument"));
            };
            match first.keyword.as_str() {
                "onbuild" => {
                    return Err(err(
                        line,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    ))
                }
                "from" | "maintainer" => {
                    return Err(err(
                        line,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            first.keyword.to_uppercase()
                        ),
                    ))
                }
                _ => {}
            }
            let mut probe = first.clone();
            probe.start = line.start;
            instruction(&probe, escape)?;
            Instruction::Onbuild(line.rest.trim().to_string())
        }
        "from" => return Err(err(line, "FROM is handled by the stage parser")),
        other => {
            return Err(err(
                line,
                format!("unknown instruction: {}", other.to_uppercase()),
            ))
        }
    })
}

/// A stage name: lower-case letter first, then letters, digits, `-`, `_`, `.`.
fn valid_stage_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.all(|x| x.is_ascii_lowercase() || x.is_ascii_digit() || "-_.".contains(x))
}

/// Parse and type a whole Dockerfile.
pub fn parse_dockerfile(text: &str) -> Result<Dockerfile, BuildError> {
    let parsed = parser::parse(text)?;
    let escape = parsed.escape;
    let mut meta_args = Vec::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in &parsed.lines {
        if line.keyword == "from" {
            let fl = flags(line, &["platform"])?;
            let words = split_raw(&line.rest, escape);
            let (base, name) = match words.as_slice() {
                [b] => (b.clone(), None),
                [b, as_kw, n] if as_kw.eq_ignore_ascii_case("as") => {
                    let n = n.to_ascii_lowercase();
                    if !valid_stage_name(&n) {
                        return Err(err(
                            line,
                            format!("invalid name for build stage: {n:?}, name can't start with a number or contain symbols"),
                        ));
                    }
                    if stages.iter().any(|s| s.name.as_deref() == Some(&n)) {
                        return Err(err(line, format!("duplicate stage name {n:?}")));
                    }
                    (b.clone(), Some(n))
                }
                _ => return Err(err(line, "FROM requires either one or three arguments")),
            };
            stages.push(Stage {
                name,
                base,
                platform: flag(&fl, "platform"),
                line: line.start,
                original: line.original.clone(),
                steps: Vec::new(),
            });
            continue;
        }
        let instruction = instruction(line, escape)?;
        match stages.last_mut() {
            Some(stage) => stage.steps.push(Step {
                line: line.start,
                original: line.original.clone(),
                instruction,
            }),
            None => match instruction {
                Instruction::Arg(a) => meta_args.extend(a),
                _ => return Err(err(line, "no build stage in current context")),
            },
        }
    }
    if stages.is_empty() {
        return Err(BuildError::NoInstructions);
    }
    Ok(Dockerfile {
        escape,
        meta_args,
        stages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_err(text: &str) -> String {
        parse_dockerfile(text).unwrap_err().to_string()
    }

    #[test]
    fn stages_and_meta_args() {
        let d = parse_dockerfile(
            "ARG BASE=busybox\nFROM $BASE AS Build\nRUN true\nFROM --platform=linux/amd64 scratch\nCOPY --from=build /a /b\n",
        )
        .unwrap();
        assert_eq!(
            d.meta_args,
            [("BASE".to_string(), Some("busybox".to_string()))]
        );
        assert_eq!(d.stages.len(), 2);
        assert_eq!(d.stages[0].name.as_deref(), Some("build"));
        assert_eq!(d.stages[0].base, "$BASE");
        assert_eq!(d.stages[1].platform.as_deref(), Some("linux/amd64"));
        let Instruction::Copy(c) = &d.stages[1].steps[0].instruction else {
            panic!()
        };
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(
            (c.srcs.as_slice(), c.dest.as_str()),
            (&["/a".to_string()][..], "/b")
        );
    }

    #[test]
    fn forms() {
        let d = parse_dockerfile(
            "FROM x\nRUN [\"echo\", \"hi\"]\nRUN echo hi\nCMD [not json\nENTRYPOINT [\"a\"]\nSHELL [\"/bin/bash\", \"-c\"]\nVOLUME [\"/a\", \"/b\"]\nVOLUME /c /d\n",
        )
        .unwrap();
        let s = &d.stages[0].steps;
        assert_eq!(
            s[0].instruction,
            Instruction::Run {
                cmd: Form::Exec(vec!["echo".into(), "hi".into()]),
                network: None,
                mounts: Vec::new()
            }
        );
        assert_eq!(
            s[1].instruction,
            Instruction::Run {
                cmd: Form::Shell("echo hi".into()),
                network: None,
                mounts: Vec::new()
            }
        );
        assert_eq!(
            s[2].instruction,
            Instruction::Cmd(Form::Shell("[not json".into()))
        );
        assert_eq!(
            s[4].instruction,
            Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
        );
        assert_eq!(
            s[5].instruction,
            Instruction::Volume(vec!["/a".into(), "/b".into()], true)
        );
        assert_eq!(
            s[6].instruction,
            Instruction::Volume(vec!["/c".into(), "/d".into()], false)
        );
    }

    #[test]
    fn env_and_label_forms() {
        let d = parse_dockerfile(
            "FROM x\nENV A=1 B=\"two words\"\nENV OLD some value\nLABEL \"k\"=v\n",
        )
        .unwrap();
        let s = &d.stages[0].steps;
        assert_eq!(
            s[0].instruction,
            Instruction::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into())
            ])
        );
        assert_eq!(
            s[1].instruction,
            Instruction::Env(vec![("OLD".into(), "some value".into())])
        );
        assert_eq!(
            s[2].instruction,
            Instruction::Label(vec![("\"k\"".into(), "v".into())])
        );
    }

    #[test]
    fn heredoc_run_and_copy() {
        let d = parse_dockerfile(
            "FROM x\nRUN <<EOF\necho a\necho b\nEOF\nRUN cat <<A > /f\nbody\nA\nCOPY <<EOF /etc/x\nhello\nEOF\n",
        )
        .unwrap();
        let s = &d.stages[0].steps;
        assert_eq!(
            s[0].instruction,
            Instruction::Run {
                cmd: Form::Shell("echo a\necho b\n".into()),
                network: None,
                mounts: Vec::new()
            }
        );
        assert_eq!(
            s[1].instruction,
            Instruction::Run {
                cmd: Form::Shell("cat <<A > /f\nbody\nA".into()),
                network: None,
                mounts: Vec::new()
            }
        );
        let Instruction::Copy(c) = &s[2].instruction else {
            panic!()
        };
        assert_eq!(c.srcs, ["<<EOF"]);
        assert_eq!(c.heredocs[0].content, "hello\n");
    }

    #[test]
    fn healthcheck() {
        let d = parse_dockerfile(
            "FROM x\nHEALTHCHECK --interval=1m30s --retries=3 CMD curl -f http://x/\nHEALTHCHECK NONE\n",
        )
        .unwrap();
        let Instruction::Healthcheck(h) = &d.stages[0].steps[0].instruction else {
            panic!()
        };
        assert_eq!(h.test, ["CMD-SHELL", "curl -f http://x/"]);
        assert_eq!(h.interval, 90_000_000_000);
        assert_eq!(h.retries, 3);
    }

    #[test]
    fn run_mounts_and_shebang_scripts() {
        let df = parse_dockerfile(
            "FROM x\nRUN --mount=type=cache,target=/c,id=go,sharing=locked,mode=0700,uid=5 \\\n    --mount=target=/s,source=d,rw --mount=type=secret,id=t make\nRUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n",
        )
        .unwrap();
        let Instruction::Run { cmd, mounts, .. } = &df.stages[0].steps[0].instruction else {
            panic!("{:?}", df.stages[0].steps[0]);
        };
        assert_eq!(cmd, &Form::Shell("make".into()));
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            (mounts[0].kind, mounts[0].id.as_deref(), mounts[0].sharing),
            (MountKind::Cache, Some("go"), Sharing::Locked)
        );
        assert_eq!((mounts[0].mode, mounts[0].uid), (Some(0o700), Some(5)));
        assert_eq!(
            (
                mounts[1].kind,
                mounts[1].source.as_deref(),
                mounts[1].readonly
            ),
            (MountKind::Bind, Some("d"), false)
        );
        assert_eq!(mounts[2].target, "/run/secrets/t");
        assert!(mounts[2].readonly);
        assert_eq!(
            df.stages[0].steps[1].instruction,
            Instruction::Run {
                cmd: Form::Script {
                    name: "EOF".into(),
                    body: "#!/usr/bin/env python3\nprint(1)\n".into()
                },
                network: None,
                mounts: Vec::new()
            }
        );
        for (bad, msg) in [
            ("type=cache", "mount destination not set"),
            ("type=nfs,target=/x", "unsupported mount type \"nfs\""),
            (
                "type=cache,target=/x,sharing=all",
                "unsupported sharing value \"all\"",
            ),
            (
                "type=tmpfs,target=/x,size=big",
                "invalid value for size: big",
            ),
            (
                "type=bind,target=/x,size=1",
                "unexpected key 'size' in 'type=bind,target=/x,size=1'",
            ),
        ] {
            assert_eq!(
                parse_err(&format!("FROM x\nRUN --mount={bad} true\n")),
                format!("dockerfile parse error on line 2: {msg}")
            );
        }
    }

    #[test]
    fn errors_carry_the_line() {
        assert_eq!(
            parse_err("FROM x\n\nFOO bar\n"),
            "dockerfile parse error on line 3: unknown instruction: FOO"
        );
        assert_eq!(
            parse_err("FROM a b\n"),
            "dockerfile parse error on line 1: FROM requires either one or three arguments"
        );
        assert_eq!(
            parse_err("RUN x\nFROM a\n"),
            "dockerfile parse error on line 1: no build stage in current context"
        );
        assert_eq!(
            parse_err("FROM a\nENV\n"),
            "dockerfile parse error on line 2: ENV requires at least one argument"
        );
        assert_eq!(
            parse_err("FROM a\nENV A\n"),
            "dockerfile parse error on line 2: ENV must have two arguments"
        );
        assert_eq!(
            parse_err("FROM a\nCOPY a\n"),
            "dockerfile parse error on line 2: COPY requires at least two arguments"
        );
        assert_eq!(
            parse_err("FROM a\nCOPY --nope=1 a b\n"),
            "dockerfile parse error on line 2: unknown flag: nope"
        );
        assert_eq!(
            parse_err("FROM a\nCOPY --exclude=*.md . /\n"),
            "dockerfile parse error on line 2: COPY --exclude is not supported"
        );
        assert_eq!(
            parse_err("FROM a\nSHELL /bin/sh\n"),
            "dockerfile parse error on line 2: SHELL requires the arguments to be in JSON form"
        );
        assert_eq!(
            parse_err("FROM a\nONBUILD ONBUILD RUN x\n"),
            "dockerfile parse error on line 2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
        );
        assert_eq!(
            parse_err("FROM a\nHEALTHCHECK FOO x\n"),
            "dockerfile parse error on line 2: Unknown type \"FOO\" in HEALTHCHECK (try CMD)"
        );
        assert_eq!(
            parse_err("FROM a\nRUN \\\n\n"),
            "dockerfile parse error on line 2: RUN requires at least one argument"
        );
        assert_eq!(
            parse_err("# only a comment\n"),
            "the Dockerfile cannot be empty"
        );
    }
}
