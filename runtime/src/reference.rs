//! Docker image references (SPEC §1): parsing, normalization, familiar form.
//!
//! A [`Reference`] is always held normalized: `domain` is filled in (`docker.io` by default),
//! Docker Hub official images get `library/`. `Display` prints the canonical form
//! (`docker.io/library/nginx:latest`); [`Reference::familiar`] the short one users see
//! (`nginx:latest`). Error texts are those of `distribution/reference`.

use std::fmt;

use crate::digest::{Digest, DigestError};

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPO_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    Format,
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    Uppercase(String),
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    #[error("repository name must not be more than 255 characters")]
    TooLong,
    #[error("invalid tag format")]
    Tag,
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A normalized image reference: `domain/path[:tag][@digest]`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parse and normalize (Docker's `ParseNormalizedNamed`). No default tag is added.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.len() == 64 && Digest::is_hex_prefix(s) {
            return Err(ReferenceError::HexName(s.to_string()));
        }
        let (domain, remainder) = split_domain(s);
        let remote = remainder.split(':').next().unwrap_or(&remainder);
        if remote.to_lowercase() != remote {
            return Err(ReferenceError::Uppercase(remote.to_string()));
        }
        parse_canonical(&domain, &remainder)
    }

    /// [`Reference::parse`], then add `:latest` when neither tag nor digest is given.
    pub fn parse_with_default_tag(s: &str) -> Result<Reference, ReferenceError> {
        Ok(Reference::parse(s)?.with_default_tag())
    }

    /// Add `:latest` when neither tag nor digest is given (Docker's `TagNameOnly`).
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    /// Same repository with this tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::Tag);
        }
        Ok(Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: Some(tag.to_string()),
            digest: None,
        })
    }

    /// Same repository with this digest (and no tag).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: Some(digest),
        }
    }

    /// The repository alone (no tag, no digest).
    pub fn repository(&self) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        }
    }

    /// Drop the tag when a digest is present (Docker's `ParseDockerRef`).
    pub fn docker_ref(mut self) -> Reference {
        if self.digest.is_some() {
            self.tag = None;
        }
        self
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
    /// Repository path within the registry, e.g. `library/nginx`.
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// Canonical repository name: `docker.io/library/nginx`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// Familiar repository name: `nginx`, `bitnami/redis`, `127.0.0.1:5000/nginx`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            if let Some(rest) = self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                if !rest.contains('/') {
                    return rest.to_string();
                }
            }
            return self.path.clone();
        }
        self.name()
    }

    /// Familiar form with tag and/or digest: `nginx:latest`, `nginx@sha256:…`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        s
    }
}

fn push_suffix(s: &mut String, tag: Option<&str>, digest: Option<&Digest>) {
    if let Some(t) = tag {
        s.push(':');
        s.push_str(t);
    }
    if let Some(d) = digest {
        s.push('@');
        s.push_str(d.as_str());
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        push_suffix(&mut s, self.tag.as_deref(), self.digest.as_ref());
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reference::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Docker's `splitDockerDomain`.
fn split_domain(s: &str) -> (String, String) {
    let (mut domain, mut remainder) = match s.split_once('/') {
        Some((first, rest))
            if first == "localhost"
                || first.contains(['.', ':'])
                || first.to_lowercase() != first =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => (DEFAULT_DOMAIN.to_string(), s.to_string()),
    };
    if domain == LEGACY_DEFAULT_DOMAIN {
        domain = DEFAULT_DOMAIN.to_string();
    }
    if domain == DEFAULT_DOMAIN && !remainder.contains('/') {
        remainder = format!("{OFFICIAL_REPO_PREFIX}{remainder}");
    }
    (domain, remainder)
}

fn parse_canonical(domain: &str, remainder: &str) -> Result<Reference, ReferenceError> {
    if !valid_domain(domain) {
        return Err(ReferenceError::Format);
    }
    let (rest, digest) = match remainder.split_once('@') {
        Some((r, d)) => {
            if !digest_shape(d) {
                return Err(ReferenceError::Format);
            }
            (r, Some(Digest::parse(d)?))
        }
        None => (remainder, None),
    };
    let (path, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(t) = tag {
        if !valid_tag(t) {
            return Err(ReferenceError::Format);
        }
    }
    if path.is_empty() || !path.split('/').all(valid_component) {
        return Err(ReferenceError::Format);
    }
    if domain.len() + 1 + path.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ReferenceError::TooLong);
    }
    Ok(Reference {
        domain: domain.to_string(),
        path: path.to_string(),
        tag: tag.map(str::to_string),
        digest,
    })
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}` (the reference grammar's
/// digest); finer checks are `Digest::parse`'s.
fn digest_shape(d: &str) -> bool {
    let Some((alg, hex)) = d.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|p| {
        let mut b = p.bytes();
        matches!(b.next(), Some(c) if c.is_ascii_alphabetic())
            && b.all(|c| c.is_ascii_alphanumeric())
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c))
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    let mut i = 0;
    let mut expect_alnum = true;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            expect_alnum = false;
            continue;
        }
        if expect_alnum {
            return false;
        }
        let start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        debug_assert!(i > start);
        expect_alnum = true;
    }
    !b.is_empty() && !expect_alnum
}

/// `host[:port]`: DNS labels separated by dots, or a bracketed IPv6 address.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        if v6.is_empty() || !v6.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after.strip_prefix(':') {
            Some(p) => ("", Some(p)),
            None if after.is_empty() => ("", None),
            None => return false,
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    if d.starts_with('[') {
        return true;
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        Reference::parse_with_default_tag(s).unwrap().to_string()
    }

    #[test]
    fn normalization() {
        assert_eq!(canon("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(canon("nginx:1.25"), "docker.io/library/nginx:1.25");
        assert_eq!(canon("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(canon("docker.io/ubuntu"), "docker.io/library/ubuntu:latest");
        assert_eq!(
            canon("index.docker.io/ubuntu"),
            "docker.io/library/ubuntu:latest"
        );
        assert_eq!(canon("localhost/foo"), "localhost/foo:latest");
        assert_eq!(canon("127.0.0.1:5000/nginx"), "127.0.0.1:5000/nginx:latest");
        assert_eq!(canon("foo:5000"), "docker.io/library/foo:5000");
        assert_eq!(canon("Foo/bar"), "Foo/bar:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            canon(&format!("nginx@{d}")),
            format!("docker.io/library/nginx@{d}")
        );
        let both = Reference::parse(&format!("nginx:1@{d}")).unwrap();
        assert_eq!(both.tag(), Some("1"));
        assert_eq!(both.docker_ref().tag(), None);
    }

    #[test]
    fn familiar_forms() {
        let f = |s: &str| Reference::parse_with_default_tag(s).unwrap().familiar();
        assert_eq!(f("docker.io/library/nginx"), "nginx:latest");
        assert_eq!(f("docker.io/bitnami/redis:7"), "bitnami/redis:7");
        assert_eq!(f("127.0.0.1:5000/nginx"), "127.0.0.1:5000/nginx:latest");
        assert_eq!(
            f("127.0.0.1:5000/library/busybox"),
            "127.0.0.1:5000/library/busybox:latest"
        );
        assert_eq!(f("docker.io/library/a/b"), "library/a/b:latest");
    }

    #[test]
    fn errors_match_docker() {
        let e = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert_eq!(
            e("Nginx"),
            "invalid reference format: repository name (library/Nginx) must be lowercase"
        );
        assert_eq!(e("nginx:"), "invalid reference format");
        assert_eq!(e("a..b"), "invalid reference format");
        assert_eq!(e(""), "invalid reference format");
        assert_eq!(e("foo/"), "invalid reference format");
        assert_eq!(e(":tag"), "invalid reference format");
        assert_eq!(e("a b"), "invalid reference format");
        let hex = "a".repeat(64);
        assert_eq!(
            e(&hex),
            format!("invalid repository name ({hex}), cannot specify 64-byte hexadecimal strings")
        );
        assert_eq!(
            e(&format!("x/{}", "a".repeat(260))),
            "repository name must not be more than 255 characters"
        );
        assert_eq!(e("nginx@sha256:abcd"), "invalid reference format");
        assert_eq!(
            e(&format!("nginx@sha256:{}", "a".repeat(40))),
            "invalid checksum digest length"
        );
        assert!(Reference::parse("a__b/c-----d/e.f_g:T.a-g_1").is_ok());
        assert!(Reference::parse("a___b").is_err());
        assert!(Reference::parse("[::1]:5000/x").is_ok());
    }
}
