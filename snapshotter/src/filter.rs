//! The part of containerd's filter syntax (`github.com/containerd/containerd/filters`) that
//! applies to snapshots: a filter is a comma-separated list of conditions that must all hold;
//! a list of filters matches when any filter does. A condition is `FIELD`, `FIELD==VALUE` or
//! `FIELD!=VALUE`, with FIELD one of `name`, `parent`, `kind`, `labels.<key>` (the key may be
//! double-quoted: `labels."a.b"`), and VALUE optionally double-quoted. Regular expressions
//! (`~=`) are refused.

use crate::store::Snapshot;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("filter {0:?}: unsupported syntax: invalid argument")]
    Syntax(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Field {
    Name,
    Parent,
    Kind,
    Label(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Present,
    Eq(String),
    Ne(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Cond {
    field: Field,
    op: Op,
}

/// Parsed filters; an empty list matches everything.
#[derive(Clone, Debug, Default)]
pub struct Filters(Vec<Vec<Cond>>);

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1].replace("\\\"", "\"")
    } else {
        s.to_string()
    }
}

/// Split on `sep` outside double quotes.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut prev = '\0';
    for (i, c) in s.char_indices() {
        if c == '"' && prev != '\\' {
            quoted = !quoted;
        } else if c == sep && !quoted {
            out.push(&s[start..i]);
            start = i + c.len_utf8();
        }
        prev = c;
    }
    out.push(&s[start..]);
    out
}

fn parse_field(s: &str, whole: &str) -> Result<Field, Error> {
    let s = s.trim();
    match s {
        "name" => Ok(Field::Name),
        "parent" => Ok(Field::Parent),
        "kind" => Ok(Field::Kind),
        _ => match s.strip_prefix("labels.") {
            Some(k) if !k.is_empty() => Ok(Field::Label(unquote(k))),
            _ => Err(Error::Syntax(whole.to_string())),
        },
    }
}

fn parse_cond(s: &str, whole: &str) -> Result<Cond, Error> {
    if s.contains("~=") {
        return Err(Error::Syntax(whole.to_string()));
    }
    let (field, op) = if let Some((f, v)) = s.split_once("!=") {
        (f, Op::Ne(unquote(v)))
    } else if let Some((f, v)) = s.split_once("==") {
        (f, Op::Eq(unquote(v)))
    } else {
        (s, Op::Present)
    };
    Ok(Cond {
        field: parse_field(field, whole)?,
        op,
    })
}

impl Filters {
    pub fn parse(filters: &[String]) -> Result<Filters, Error> {
        let mut out = Vec::new();
        for f in filters {
            if f.trim().is_empty() {
                continue;
            }
            let conds = split_outside_quotes(f, ',')
                .into_iter()
                .map(|c| parse_cond(c, f))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(conds);
        }
        Ok(Filters(out))
    }

    pub fn matches(&self, s: &Snapshot) -> bool {
        self.0.is_empty() || self.0.iter().any(|all| all.iter().all(|c| c.holds(s)))
    }
}

impl Cond {
    fn holds(&self, s: &Snapshot) -> bool {
        let value: Option<&str> = match &self.field {
            Field::Name => Some(&s.key),
            Field::Parent => Some(&s.record.parent)
                .filter(|p| !p.is_empty())
                .map(|p| p.as_str()),
            Field::Kind => Some(s.record.kind.as_str()),
            Field::Label(k) => s.record.labels.get(k).map(String::as_str),
        };
        match &self.op {
            Op::Present => value.is_some(),
            Op::Eq(v) => value == Some(v.as_str()),
            Op::Ne(v) => value != Some(v.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kind, Record, SnapshotId, Stamp};

    fn snap(key: &str, parent: &str, kind: Kind, labels: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            key: key.into(),
            record: Record {
                id: SnapshotId(1),
                kind,
                parent: parent.into(),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                created: Stamp::now(),
                updated: Stamp::now(),
                usage: None,
            },
        }
    }

    fn f(s: &[&str]) -> Filters {
        Filters::parse(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn conditions_and_or() {
        let a = snap("a", "", Kind::Committed, &[("containerd.io/x", "1")]);
        let b = snap("b", "a", Kind::Active, &[]);
        assert!(f(&[]).matches(&a));
        assert!(f(&["name==a"]).matches(&a) && !f(&["name==a"]).matches(&b));
        assert!(f(&["parent==a"]).matches(&b));
        assert!(f(&["parent"]).matches(&b) && !f(&["parent"]).matches(&a));
        assert!(f(&["kind==active"]).matches(&b));
        assert!(f(&[r#"labels."containerd.io/x"==1"#]).matches(&a));
        assert!(f(&["labels.containerd.io/x"]).matches(&a));
        assert!(!f(&["labels.containerd.io/x,name==b"]).matches(&a));
        assert!(f(&["name==zz", "kind!=committed"]).matches(&b));
        assert!(f(&[r#"name=="a""#]).matches(&a));
        assert!(Filters::parse(&["name~=a".to_string()]).is_err());
        assert!(Filters::parse(&["size==1".to_string()]).is_err());
    }
}
