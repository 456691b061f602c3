//! OCI distribution client: pull and push images over the registry HTTP API v2 (SPEC §4).
//!
//! Vocabulary:
//! - *registry*: the domain of a reference (`docker.io`, `127.0.0.1:5000`); its [`client::Endpoint`]
//!   is where requests go (Docker Hub is `registry-1.docker.io`).
//! - *repository* (`repo`): the path of a reference (`library/busybox`).
//! - *scope*: what a Bearer token grants, `repository:<repo>:pull[,push]`.
//! - *partial*: a blob download in progress, kept in the store's tmp dir so the next pull resumes it.
//!
//! Modules: [`client`] (HTTP/HTTPS, auth challenges, redirects, retries), [`auth`] (challenges,
//! tokens, the credentials file), [`manifest`] (manifest/index types and platform selection),
//! [`blob`] (verified, resumable blob download), [`mirrors`] (Docker Hub mirrors of the daemon config), [`mod@pull`] (into the store, parallel downloads,
//! ordered extraction), [`mod@push`] (blob upload, mount, manifest put); [`login`] checks and stores
//! credentials.
//!
//! Entry points: [`pull()`], [`push()`], [`login`], [`pull::list_tags`], [`auth::remove`].
//!
//! The module prints nothing; progress is reported through callbacks.

pub mod auth;
pub mod blob;
pub mod client;
pub mod credhelper;
pub mod manifest;
pub mod mirrors;
pub mod pull;
pub mod push;

pub use pull::{pull, LayerStatus, PullEvent, PullOptions, PullOutcome};
pub use push::{push, PushEvent, PushOptions, PushOutcome, PushStatus};

use std::path::PathBuf;

/// One entry of a registry's `{"errors": [...]}` body.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

impl std::fmt::Display for ApiError {
    /// Docker's rendering of an errcode: `manifest unknown: manifest unknown`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.code.replace('_', " ").to_lowercase();
        match (code.is_empty(), self.message.is_empty()) {
            (false, false) => write!(f, "{code}: {}", self.message),
            (false, true) => write!(f, "{code}"),
            (true, _) => write!(f, "{}", self.message),
        }
    }
}

fn first(errors: &[ApiError]) -> String {
    errors.first().map(ToString::to_string).unwrap_or_default()
}

/// Errors of the registry client, worded as Docker words them where Docker has words.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{} \"{url}\": {source}", title(method))]
    Transport {
        method: String,
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("{}", api_message(method, url, *status, errors))]
    Api {
        method: String,
        url: String,
        status: u16,
        errors: Vec<ApiError>,
    },
    #[error("{}", unauthorized_message(url, errors, *with_credentials))]
    Unauthorized {
        url: String,
        errors: Vec<ApiError>,
        with_credentials: bool,
    },
    #[error("manifest for {reference} not found: {}", first(errors))]
    ManifestUnknown {
        reference: String,
        errors: Vec<ApiError>,
    },
    #[error("repository {name} not found: {}", first(errors))]
    NameUnknown { name: String, errors: Vec<ApiError> },
    #[error("pull access denied for {name}, repository does not exist or may require 'docker login': {}", denied(errors))]
    AccessDenied { name: String, errors: Vec<ApiError> },
    #[error("no matching manifest for {platform} in the manifest list entries")]
    NoMatchingPlatform { platform: String },
    #[error("filesystem layer verification failed for digest {digest}")]
    DigestMismatch { digest: String },
    #[error("blob {digest} is larger than the {expected} bytes its descriptor says")]
    SizeMismatch { digest: String, expected: u64 },
    #[error("manifest verification failed for digest {digest}")]
    ManifestDigestMismatch { digest: String },
    #[error("invalid digest {0:?}")]
    BadDigest(String),
    #[error("Get \"{url}\": {source}")]
    BodyIo { url: String, source: std::io::Error },
    #[error("registry answered a range request for {url} with the wrong range")]
    BadRange { url: String },
    #[error("denied: requested access to the resource is denied")]
    PushDenied,
    #[error("login attempt to {url} failed with status: {status}")]
    LoginFailed { url: String, status: String },
    #[error("registry did not say where to upload blobs for {repo}")]
    NoUploadLocation { repo: String },
    #[error("too many redirects fetching {url}")]
    TooManyRedirects { url: String },
    #[error("token from {url} is not valid JSON: {source}")]
    TokenJson {
        url: String,
        source: serde_json::Error,
    },
    #[error("token endpoint {url} returned no token")]
    TokenMissing { url: String },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    AuthFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid credentials file: {source}")]
    AuthFileJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{0}")]
    AuthFileOutput(Box<crate::outfile::OutputError>),
    #[error("error getting credentials - {helper}: {source}")]
    CredentialHelper {
        helper: String,
        source: std::io::Error,
    },
    #[error("credential helper docker-credential-{helper} printed invalid JSON: {source}")]
    CredentialHelperJson {
        helper: String,
        source: serde_json::Error,
    },
    #[error("credential helper docker-credential-{helper} failed to {verb} the credentials")]
    CredentialHelperFailed { helper: String, verb: &'static str },
    #[error("no credentials file location: set HOME, DOCKER_CONFIG or REGISTRY_AUTH_FILE")]
    NoAuthFile,
}

fn title(method: &str) -> String {
    let m = method.to_lowercase();
    let mut c = m.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => m,
    }
}

fn api_message(method: &str, url: &str, status: u16, errors: &[ApiError]) -> String {
    if errors.is_empty() {
        // distribution's client: `received unexpected HTTP status: 503 Service Unavailable`.
        let reason = ureq::http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        format!(
            "{} \"{url}\": received unexpected HTTP status: {}",
            title(method),
            format!("{status} {reason}").trim_end()
        )
    } else {
        first(errors)
    }
}

fn unauthorized_message(url: &str, errors: &[ApiError], with_credentials: bool) -> String {
    match (errors.first(), with_credentials) {
        (Some(e), _) => format!("Get \"{url}\": {e}"),
        (None, true) => format!("Get \"{url}\": unauthorized: incorrect username or password"),
        (None, false) => format!("Get \"{url}\": no basic auth credentials"),
    }
}

fn denied(errors: &[ApiError]) -> String {
    match errors.first() {
        Some(e) if e.code == "DENIED" => e.to_string(),
        _ => "denied: requested access to the resource is denied".to_string(),
    }
}

/// Check `creds` against `registry` (its `/v2/` with the challenge answered) and store them.
/// Returns the credentials file written.
pub fn login(
    registry: &str,
    creds: &auth::Credentials,
    insecure: &[String],
) -> Result<PathBuf, RegistryError> {
    let c = client::Client::new(
        client::Endpoint::new(registry, insecure),
        Some(creds.clone()),
    );
    let req = client::Req::new(ureq::http::Method::GET, "/v2/", "");
    let failed = |code: u16| {
        let reason = ureq::http::StatusCode::from_u16(code)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        RegistryError::LoginFailed {
            url: format!("{}/v2/", c.base()),
            status: format!("{code} {reason}").trim_end().to_string(),
        }
    };
    match c.send(&req) {
        Ok(resp) if resp.status().is_success() => {}
        Ok(resp) => return Err(failed(resp.status().as_u16())),
        Err(RegistryError::Api { status, .. }) => return Err(failed(status)),
        Err(e) => return Err(e),
    }
    auth::store(registry, creds)
}

/// Errors of a pull: the registry's, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    #[error("An image does not exist locally with the tag: {0}")]
    NotLocal(String),
    #[error("manifest lists {layers} layers but the image config has {diff_ids} diff IDs")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error(transparent)]
    Lazy(Box<crate::lazy::LazyError>),
    /// `push --compression estargz`: converting the layers failed.
    #[error(transparent)]
    Convert(#[from] crate::seekable::convert::ConvertError),
}

/// Errors of a push: the registry's, or the store's.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    #[error("An image does not exist locally with the tag: {0}")]
    NotLocal(String),
    #[error(transparent)]
    Convert(#[from] crate::seekable::convert::ConvertError),
    /// A lazily pulled layer could not be completed before it was pushed.
    #[error(transparent)]
    Lazy(#[from] crate::lazy::LazyError),
}

impl RegistryError {
    /// The registry's first error code (`MANIFEST_UNKNOWN`, …), if it sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            RegistryError::Api { errors, .. } | RegistryError::Unauthorized { errors, .. } => {
                errors.first().map(|e| e.code.as_str())
            }
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Api { status, .. } => Some(*status),
            RegistryError::Unauthorized { .. } => Some(401),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
