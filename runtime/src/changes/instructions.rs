//! `commit --change` instructions: the Dockerfile subset Docker accepts on commit (moby
//! `builder/dockerfile` `validCommitCommands`), applied to an image config's `config` object
//! (Docker's capitalised keys: `Cmd`, `Entrypoint`, `Env`, `ExposedPorts`, `Labels`, `User`,
//! `Volumes`, `WorkingDir`, `OnBuild`, `StopSignal`).

use serde_json::{json, Map, Value};

use super::ChangesError;

/// Apply `changes` (each one or more Dockerfile lines) in order to `config`.
pub fn apply_changes(
    config: &mut Map<String, Value>,
    changes: &[String],
) -> Result<(), ChangesError> {
    let mut cmd_set = false;
    for line in changes.iter().flat_map(|c| c.lines()) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (word, rest) = match line.split_once(char::is_whitespace) {
            Some((w, r)) => (w, r.trim()),
            None => (line, ""),
        };
        let instr = word.to_ascii_uppercase();
        match instr.as_str() {
            "CMD" | "ENTRYPOINT" | "ENV" | "EXPOSE" | "LABEL" | "ONBUILD" | "STOPSIGNAL"
            | "USER" | "VOLUME" | "WORKDIR" => {}
            _ => {
                return Err(ChangesError::InvalidChange {
                    instruction: word.to_ascii_lowercase(),
                })
            }
        }
        if rest.is_empty() {
            return Err(ChangesError::MissingArgument { instruction: instr });
        }
        match instr.as_str() {
            "CMD" => {
                config.insert("Cmd".into(), json!(command_form(rest)));
                cmd_set = true;
            }
            "ENTRYPOINT" => {
                config.insert("Entrypoint".into(), json!(command_form(rest)));
                // As in a Dockerfile: a new entrypoint drops an inherited CMD.
                if !cmd_set {
                    config.insert("Cmd".into(), Value::Null);
                }
            }
            "ENV" => {
                let pairs = key_values(rest, &instr)?;
                let env = config
                    .entry("Env")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !env.is_array() {
                    *env = Value::Array(Vec::new());
                }
                if let Value::Array(env) = env {
                    for (k, v) in pairs {
                        let prefix = format!("{k}=");
                        let item = Value::String(format!("{k}={v}"));
                        match env
                            .iter_mut()
                            .find(|e| e.as_str().is_some_and(|s| s.starts_with(&prefix)))
                        {
                            Some(slot) => *slot = item,
                            None => env.push(item),
                        }
                    }
                }
            }
            "LABEL" => {
                let pairs = key_values(rest, &instr)?;
                let labels = object(config, "Labels");
                for (k, v) in pairs {
                    labels.insert(k, Value::String(v));
                }
            }
            "EXPOSE" => {
                let mut ports = Vec::new();
                for p in rest.split_whitespace() {
                    ports.extend(parse_ports(p)?);
                }
                let exposed = object(config, "ExposedPorts");
                for p in ports {
                    exposed.insert(p, json!({}));
                }
            }
            "VOLUME" => {
                let list = json_array(rest)
                    .unwrap_or_else(|| rest.split_whitespace().map(str::to_string).collect());
                let volumes = object(config, "Volumes");
                for v in list {
                    if v.is_empty() {
                        return Err(ChangesError::MissingArgument { instruction: instr });
                    }
                    volumes.insert(v, json!({}));
                }
            }
            "USER" => {
                config.insert("User".into(), Value::String(rest.to_string()));
            }
            "WORKDIR" => {
                let current = config
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .unwrap_or("/")
                    .to_string();
                let dir = if rest.starts_with('/') {
                    clean_path(rest)
                } else {
                    clean_path(&format!("{current}/{rest}"))
                };
                config.insert("WorkingDir".into(), Value::String(dir));
            }
            "STOPSIGNAL" => {
                config.insert("StopSignal".into(), Value::String(rest.to_string()));
            }
            "ONBUILD" => {
                let onbuild = config
                    .entry("OnBuild")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if !onbuild.is_array() {
                    *onbuild = Value::Array(Vec::new());
                }
                if let Value::Array(list) = onbuild {
                    list.push(Value::String(rest.to_string()));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn object<'a>(config: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = config
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        // Just made sure it is an object.
        _ => unreachable!("slot is an object"),
    }
}

/// A JSON array of strings, if `s` is one (Dockerfile "exec form").
fn json_array(s: &str) -> Option<Vec<String>> {
    if !s.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(s).ok()
}

/// CMD / ENTRYPOINT: exec form, or shell form run by `/bin/sh -c`.
fn command_form(s: &str) -> Vec<String> {
    json_array(s).unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), s.to_string()])
}

/// `ENV`/`LABEL` arguments: `k=v k2="v 2"`, or the legacy `KEY rest of line`.
fn key_values(s: &str, instr: &str) -> Result<Vec<(String, String)>, ChangesError> {
    let words = split_words(s);
    let first_has_eq = words.first().is_some_and(|(_, raw)| raw.contains('='));
    if !first_has_eq {
        // Legacy form: the first word is the key, the rest of the line the value.
        let (key, value) = match s.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => {
                return Err(ChangesError::TwoArguments {
                    instruction: instr.to_string(),
                })
            }
        };
        return Ok(vec![(key.to_string(), unquote(value))]);
    }
    let mut out = Vec::new();
    for (word, raw) in words {
        if !raw.contains('=') {
            return Err(ChangesError::TwoArguments {
                instruction: instr.to_string(),
            });
        }
        let Some((k, v)) = word.split_once('=') else {
            return Err(ChangesError::TwoArguments {
                instruction: instr.to_string(),
            });
        };
        if k.is_empty() {
            return Err(ChangesError::BlankName {
                instruction: instr.to_string(),
            });
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn unquote(s: &str) -> String {
    match split_words(s).as_slice() {
        [(w, _)] => w.clone(),
        _ => s.to_string(),
    }
}

/// Split on unquoted whitespace, removing quotes and backslash escapes. Each word comes with
/// its raw text (to tell `k=v` from a quoted `"k=v"`... which Docker treats alike).
fn split_words(s: &str) -> Vec<(String, String)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut raw = String::new();
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push((std::mem::take(&mut cur), std::mem::take(&mut raw)));
                    in_word = false;
                }
                continue;
            }
            (None, '"') | (None, '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    raw.push(n);
                }
            }
            (_, c) => cur.push(c),
        }
        raw.push(c);
        in_word = true;
    }
    if in_word {
        words.push((cur, raw));
    }
    words
}

/// `80`, `80/tcp`, `53/udp`, `8000-8002/tcp` → `["80/tcp"]`, ….
fn parse_ports(p: &str) -> Result<Vec<String>, ChangesError> {
    let bad = || ChangesError::InvalidPort {
        port: p.to_string(),
    };
    let (range, proto) = match p.split_once('/') {
        Some((r, proto)) => (r, proto.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad());
    }
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (a, b),
        None => (range, range),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

/// Lexically clean an absolute path (`/a/./b/../c` → `/a/c`).
fn clean_path(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(base: Value, changes: &[&str]) -> Result<Value, ChangesError> {
        let Value::Object(mut m) = base else {
            panic!("object")
        };
        let changes: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
        apply_changes(&mut m, &changes)?;
        Ok(Value::Object(m))
    }

    #[test]
    fn cmd_and_entrypoint_forms() {
        let c = apply(
            json!({"Cmd": ["sh"]}),
            &[r#"CMD ["nginx", "-g", "daemon off;"]"#],
        )
        .unwrap();
        assert_eq!(c["Cmd"], json!(["nginx", "-g", "daemon off;"]));
        let c = apply(json!({}), &["cmd echo hi there"]).unwrap();
        assert_eq!(c["Cmd"], json!(["/bin/sh", "-c", "echo hi there"]));
        let c = apply(json!({"Cmd": ["sh"]}), &[r#"ENTRYPOINT ["/init"]"#]).unwrap();
        assert_eq!(c["Entrypoint"], json!(["/init"]));
        assert_eq!(c["Cmd"], Value::Null, "inherited CMD is dropped");
        let c = apply(json!({}), &["CMD [\"a\"]", "ENTRYPOINT [\"/e\"]"]).unwrap();
        assert_eq!(c["Cmd"], json!(["a"]), "CMD from the same change set stays");
    }

    #[test]
    fn env_label_forms() {
        let c = apply(
            json!({"Env": ["PATH=/bin", "A=1"]}),
            &[r#"ENV A=2 B="two words" C=x\ y"#, "ENV LEGACY some value"],
        )
        .unwrap();
        assert_eq!(
            c["Env"],
            json!([
                "PATH=/bin",
                "A=2",
                "B=two words",
                "C=x y",
                "LEGACY=some value"
            ])
        );
        let c = apply(json!({}), &[r#"LABEL version="1.0" "com.example.k"=v"#]).unwrap();
        assert_eq!(c["Labels"], json!({"version": "1.0", "com.example.k": "v"}));
        assert!(matches!(
            apply(json!({}), &["ENV ONLYKEY"]),
            Err(ChangesError::TwoArguments { .. })
        ));
    }

    #[test]
    fn expose_volume_user_workdir() {
        let c = apply(
            json!({"WorkingDir": "/srv"}),
            &[
                "EXPOSE 80 53/udp 8000-8001",
                r#"VOLUME ["/data", "/logs"]"#,
                "VOLUME /cache",
                "USER www:www",
                "WORKDIR app/../site",
            ],
        )
        .unwrap();
        assert_eq!(
            c["ExposedPorts"],
            json!({"80/tcp": {}, "53/udp": {}, "8000/tcp": {}, "8001/tcp": {}})
        );
        assert_eq!(
            c["Volumes"],
            json!({"/data": {}, "/logs": {}, "/cache": {}})
        );
        assert_eq!(c["User"], json!("www:www"));
        assert_eq!(c["WorkingDir"], json!("/srv/site"));
        assert!(matches!(
            apply(json!({}), &["EXPOSE eighty"]),
            Err(ChangesError::InvalidPort { .. })
        ));
    }

    #[test]
    fn invalid_instructions() {
        let e = apply(json!({}), &["FROM busybox"]).unwrap_err();
        assert_eq!(e.to_string(), "from is not a valid change command");
        let e = apply(json!({}), &["CMD"]).unwrap_err();
        assert_eq!(e.to_string(), "CMD requires at least one argument");
    }
}
