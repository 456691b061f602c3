//! Manifests, indexes and platform selection (OCI image-spec + Docker schema2; SPEC §4.4–4.5).
//!
//! The kind of a manifest is decided by the `Content-Type` the registry sent, falling back to the
//! body's `mediaType` and then to its shape: `mediaType` is optional in OCI manifests.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The `Accept` header of every manifest request: all four kinds we understand.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A content descriptor: what a manifest says about a blob or a child manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
}

/// An image manifest (OCI or Docker schema2; same shape).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageManifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// An OCI index or a Docker manifest list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

/// The platform of an index entry or an image config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

/// What a manifest request returned, decoded.
#[derive(Debug, Clone)]
pub enum Manifest {
    Image(Box<ImageManifest>),
    Index(Index),
}

/// A manifest body could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedType(String),
    #[error("invalid manifest: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid platform {0:?}: expected os/arch[/variant]")]
    BadPlatform(String),
}

impl Manifest {
    /// Decode `body` as the kind named by `content_type` (parameters ignored), else by the
    /// body's own `mediaType`, else by its shape (`manifests` → index, `config` → image).
    pub fn parse(
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(Manifest, String), ManifestError> {
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            // Generic types (some servers send `application/octet-stream`) say nothing: sniff.
            .filter(|c| {
                !c.is_empty()
                    && (c.starts_with("application/vnd.oci.")
                        || c.starts_with("application/vnd.docker."))
            });
        let kind = match header {
            Some(k) => k,
            None => {
                let v: serde_json::Value = serde_json::from_slice(body)?;
                match v.get("mediaType").and_then(|m| m.as_str()) {
                    Some(m) => m.to_string(),
                    None if v.get("manifests").is_some() => OCI_INDEX.to_string(),
                    None if v.get("config").is_some() => OCI_MANIFEST.to_string(),
                    None => return Err(ManifestError::UnsupportedType(String::new())),
                }
            }
        };
        let m = match kind.as_str() {
            OCI_INDEX | DOCKER_LIST => Manifest::Index(serde_json::from_slice(body)?),
            OCI_MANIFEST | DOCKER_MANIFEST => Manifest::Image(serde_json::from_slice(body)?),
            other => return Err(ManifestError::UnsupportedType(other.to_string())),
        };
        Ok((m, kind))
    }
}

impl Platform {
    /// The platform of this machine in Go's names (`linux/amd64`, `linux/arm64/v8`, …).
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "arm" => "arm",
            other => other,
        };
        Platform {
            architecture: arch.to_string(),
            os: "linux".to_string(),
            variant: if arch == "arm" {
                Some("v7".into())
            } else {
                None
            },
            os_version: None,
        }
    }

    /// Parse `os/arch[/variant]` as given to `--platform`.
    pub fn parse(s: &str) -> Result<Platform, ManifestError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || ManifestError::BadPlatform(s.to_string());
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, v] => (*os, *arch, Some(v.to_string())),
            _ => return Err(bad()),
        };
        if os.is_empty() || arch.is_empty() {
            return Err(bad());
        }
        let arch = match arch {
            "x86_64" | "x86-64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        Ok(Platform {
            architecture: arch.to_string(),
            os: os.to_lowercase(),
            variant: variant.filter(|v| !v.is_empty()),
            os_version: None,
        })
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn is_attestation(d: &Descriptor) -> bool {
    let unknown = d
        .platform
        .as_ref()
        .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown");
    let annotated = d.annotations.as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    });
    unknown || annotated
}

/// Numeric rank of an arm variant (`v7` → 7); unknown variants rank 0.
fn variant_rank(v: &str) -> u32 {
    v.trim_start_matches('v').parse().unwrap_or(0)
}

/// Pick the entry of `index` for `want`: same os and architecture; for a wanted variant, the exact
/// variant first, else the highest lower one (v7 runs v6), else an entry without a variant.
/// Attestation entries are never chosen.
pub fn select_platform<'a>(index: &'a Index, want: &Platform) -> Option<&'a Descriptor> {
    let candidates = index
        .manifests
        .iter()
        .filter(|d| !is_attestation(d))
        .filter(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.os == want.os && p.architecture == want.architecture)
        });
    let mut best: Option<(&Descriptor, u32)> = None;
    for d in candidates {
        let have = d.platform.as_ref().and_then(|p| p.variant.as_deref());
        let score = match (want.variant.as_deref(), have) {
            (Some(w), Some(h)) if w == h => 1000,
            (Some(w), Some(h)) if variant_rank(h) < variant_rank(w) => 100 + variant_rank(h),
            (Some(_), Some(_)) => continue,
            (Some(_), None) => 50,
            (None, None) => 1000,
            // arm64 images are commonly marked v8; accept any variant when none was asked for.
            (None, Some(h)) => 500 + variant_rank(h),
        };
        if best.is_none_or(|(_, s)| score > s) {
            best = Some((d, score));
        }
    }
    best.map(|(d, _)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(os: &str, arch: &str, variant: Option<&str>, digest: &str) -> Descriptor {
        Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest: digest.into(),
            size: 1,
            platform: Some(Platform {
                architecture: arch.into(),
                os: os.into(),
                variant: variant.map(String::from),
                os_version: None,
            }),
            annotations: None,
            urls: None,
        }
    }

    #[test]
    fn selects_exact_platform_and_skips_attestations() {
        let mut att = entry("unknown", "unknown", None, "att");
        att.annotations = Some(
            [(
                "vnd.docker.reference.type".into(),
                "attestation-manifest".into(),
            )]
            .into_iter()
            .collect(),
        );
        let idx = Index {
            schema_version: 2,
            media_type: None,
            manifests: vec![
                att,
                entry("linux", "arm", Some("v6"), "v6"),
                entry("linux", "arm", Some("v7"), "v7"),
                entry("linux", "amd64", None, "amd"),
                entry("linux", "arm64", Some("v8"), "a64"),
            ],
        };
        let p = |s| Platform::parse(s).unwrap();
        assert_eq!(
            select_platform(&idx, &p("linux/amd64")).unwrap().digest,
            "amd"
        );
        assert_eq!(
            select_platform(&idx, &p("linux/arm/v7")).unwrap().digest,
            "v7"
        );
        assert_eq!(
            select_platform(&idx, &p("linux/arm/v8")).unwrap().digest,
            "v7"
        );
        assert_eq!(
            select_platform(&idx, &p("linux/arm64")).unwrap().digest,
            "a64"
        );
        assert!(select_platform(&idx, &p("linux/arm/v5")).is_none());
        assert!(select_platform(&idx, &p("linux/s390x")).is_none());
        assert!(select_platform(&idx, &p("unknown/unknown")).is_none());
    }

    #[test]
    fn parse_decides_by_content_type_then_shape() {
        let oci = br#"{"schemaVersion":2,"config":{"mediaType":"a","digest":"sha256:00","size":1},"layers":[]}"#;
        let (m, kind) = Manifest::parse(None, oci).unwrap();
        assert!(matches!(m, Manifest::Image(_)));
        assert_eq!(kind, OCI_MANIFEST);
        let (_, kind) =
            Manifest::parse(Some(&format!("{DOCKER_MANIFEST}; charset=utf-8")), oci).unwrap();
        assert_eq!(kind, DOCKER_MANIFEST);
        let (_, kind) = Manifest::parse(Some("application/octet-stream"), oci).unwrap();
        assert_eq!(kind, OCI_MANIFEST);
        let idx = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Manifest::parse(None, idx).unwrap().0,
            Manifest::Index(_)
        ));
        assert!(Manifest::parse(
            Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
            oci
        )
        .is_err());
        assert!(Platform::parse("linux").is_err());
    }
}
