//! Docker's `--filter key=value` arguments (moby's `filters.Args`): one parser with Docker's
//! errors, and the matchers the listing and prune verbs share. Within one key the values are
//! alternatives (OR); different keys must all match (AND).

use std::collections::BTreeMap;

/// A `--filter` argument that Docker would refuse; the messages are Docker's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("bad format of filter (expected name=value)")]
    BadFormat,
    #[error("invalid filter '{0}'")]
    InvalidKey(String),
    #[error("invalid filter '{0}={1}'")]
    InvalidValue(String, String),
}

/// Parsed `--filter` arguments, in the order given.
#[derive(Debug, Default, Clone)]
pub struct Filters {
    pairs: Vec<(String, String)>,
}

impl Filters {
    /// Parse `key=value` arguments, accepting only the keys in `allowed` (compared without case,
    /// stored lowercase, as Docker does).
    pub fn parse(raw: &[String], allowed: &[&str]) -> Result<Filters, FilterError> {
        let mut pairs = Vec::with_capacity(raw.len());
        for r in raw {
            let (k, v) = r.split_once('=').ok_or(FilterError::BadFormat)?;
            let key = k.trim().to_ascii_lowercase();
            if !allowed.contains(&key.as_str()) {
                return Err(FilterError::InvalidKey(k.to_string()));
            }
            pairs.push((key, v.to_string()));
        }
        Ok(Filters { pairs })
    }

    /// The values given for `key`.
    pub fn get<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).next().is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Every value of `key` must be one of `accepted`, else Docker's `invalid filter 'k=v'`.
    pub fn check_values(&self, key: &str, accepted: &[&str]) -> Result<(), FilterError> {
        match self.get(key).find(|v| !accepted.contains(v)) {
            Some(v) => Err(FilterError::InvalidValue(key.to_string(), v.to_string())),
            None => Ok(()),
        }
    }

    /// A boolean filter (`dangling=true|false`, also `1|0`); the last value wins.
    pub fn bool_value(&self, key: &str) -> Result<Option<bool>, FilterError> {
        let mut out = None;
        for v in self.get(key) {
            out = Some(match v.to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(FilterError::InvalidValue(key.to_string(), v.to_string())),
            });
        }
        Ok(out)
    }

    /// Does `key` allow this object? No value for `key` allows everything; otherwise any value
    /// for which `pred` holds does (values of one key are alternatives).
    pub fn any_of(&self, key: &str, mut pred: impl FnMut(&str) -> bool) -> bool {
        let mut given = false;
        for v in self.get(key) {
            if pred(v) {
                return true;
            }
            given = true;
        }
        !given
    }
}

/// The filters every prune verb takes (`until=`, `label=`, `label!=`), parsed once: an object is
/// pruned when it was created before every `until`, carries every `label` and no `label!`.
#[derive(Debug, Default, Clone)]
pub struct PruneFilter {
    until: Vec<chrono::DateTime<chrono::Utc>>,
    labels: Vec<String>,
    not_labels: Vec<String>,
}

impl PruneFilter {
    /// From parsed filters (their other keys are the caller's); `now` anchors relative times.
    pub fn from_filters(
        f: &Filters,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<PruneFilter, FilterError> {
        let until = f
            .get("until")
            .map(|v| {
                crate::timeargs::parse_time_arg(v, now)
                    .ok_or_else(|| FilterError::InvalidValue("until".into(), v.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(PruneFilter {
            until,
            labels: f.get("label").map(str::to_string).collect(),
            not_labels: f.get("label!").map(str::to_string).collect(),
        })
    }

    pub fn matches(
        &self,
        created: chrono::DateTime<chrono::Utc>,
        labels: Option<&BTreeMap<String, String>>,
    ) -> bool {
        self.until.iter().all(|u| created < *u)
            && self.labels.iter().all(|l| label_matches(labels, l))
            && !self.not_labels.iter().any(|l| label_matches(labels, l))
    }
}

/// `label=key` or `label=key=value` against a label map (label filters are all required, as
/// moby's `MatchKVList`; callers use `get("label").all(..)`).
pub fn label_matches(labels: Option<&BTreeMap<String, String>>, filter: &str) -> bool {
    let Some(labels) = labels else {
        return false;
    };
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

/// Go's `path.Match`: `*` (not across `/`), `?`, `[...]` classes with ranges and `^`/`!`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn m(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('*') => (0..=n.len())
                .take_while(|&i| i == 0 || n[i - 1] != '/')
                .any(|i| m(&p[1..], &n[i..])),
            Some('?') => !n.is_empty() && n[0] != '/' && m(&p[1..], &n[1..]),
            Some('[') => {
                let Some(c) = n.first() else { return false };
                let mut i = 1;
                let negate = matches!(p.get(1), Some('^') | Some('!'));
                if negate {
                    i += 1;
                }
                let mut hit = false;
                while i < p.len() && p[i] != ']' {
                    if i + 2 < p.len() && p[i + 1] == '-' && p[i + 2] != ']' {
                        hit |= p[i] <= *c && *c <= p[i + 2];
                        i += 3;
                    } else {
                        hit |= p[i] == *c;
                        i += 1;
                    }
                }
                i < p.len() && hit != negate && m(&p[i + 1..], &n[1..])
            }
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && m(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && m(&p[1..], &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    m(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parse_refuses_what_docker_refuses() {
        let e = Filters::parse(&args(&["dangling"]), &["dangling"]).unwrap_err();
        assert_eq!(e.to_string(), "bad format of filter (expected name=value)");
        let e = Filters::parse(&args(&["color=red"]), &["dangling"]).unwrap_err();
        assert_eq!(e.to_string(), "invalid filter 'color'");
        let f = Filters::parse(&args(&["Dangling=maybe"]), &["dangling"]).unwrap();
        assert_eq!(
            f.bool_value("dangling").unwrap_err().to_string(),
            "invalid filter 'dangling=maybe'"
        );
        let f = Filters::parse(&args(&["status=sleeping"]), &["status"]).unwrap();
        assert_eq!(
            f.check_values("status", &["running", "exited"])
                .unwrap_err()
                .to_string(),
            "invalid filter 'status=sleeping'"
        );
    }

    #[test]
    fn same_key_is_or_different_keys_are_and() {
        let f = Filters::parse(&args(&["name=a", "name=b", "id=1"]), &["name", "id"]).unwrap();
        assert!(f.any_of("name", |v| v == "b"));
        assert!(!f.any_of("name", |v| v == "c"));
        assert!(
            f.any_of("driver", |_| false),
            "no value for a key allows all"
        );
        assert_eq!(f.get("id").collect::<Vec<_>>(), ["1"]);
        assert_eq!(
            Filters::parse(&args(&["dangling=false", "dangling=1"]), &["dangling"])
                .unwrap()
                .bool_value("dangling"),
            Ok(Some(true))
        );
    }

    #[test]
    fn labels() {
        let mut l = BTreeMap::new();
        l.insert("tier".to_string(), "web".to_string());
        assert!(label_matches(Some(&l), "tier"));
        assert!(label_matches(Some(&l), "tier=web"));
        assert!(!label_matches(Some(&l), "tier=db"));
        assert!(!label_matches(None, "tier"));
    }

    #[test]
    fn go_path_match() {
        assert!(glob_match("busy*:*libc", "busybox:1.36-uclibc"));
        assert!(glob_match("*/nginx*", "library/nginx"));
        assert!(!glob_match("*", "a/b"));
        assert!(glob_match("busybox", "busybox"));
        assert!(!glob_match("jav", "java"));
        assert!(glob_match("b[a-z]sy?ox", "busybox"));
        assert!(!glob_match("b[^u]sybox", "busybox"));
    }
}
