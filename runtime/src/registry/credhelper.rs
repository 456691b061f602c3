//! Docker credential helpers: `docker-credential-<name> get|store|erase`, named by `credsStore`
//! (all registries) or `credHelpers` (per registry) in the credentials file. The protocol: `get`
//! and `erase` read the server on stdin; `store` reads `{"ServerURL","Username","Secret"}`; `get`
//! prints the same JSON, or fails with "credentials not found".

use std::io::Write;
use std::process::{Command, Stdio};

use super::auth::Credentials;
use super::RegistryError;

/// The helper configured for `key` (a credentials-file key) in `doc`, if any.
pub fn helper_for(doc: &serde_json::Value, key: &str, host: &str) -> Option<String> {
    let per_registry = doc
        .get("credHelpers")
        .and_then(|h| h.as_object())
        .and_then(|h| {
            h.get(key)
                .or_else(|| h.get(host))
                .and_then(|v| v.as_str())
                .map(String::from)
        });
    per_registry
        .or_else(|| {
            doc.get("credsStore")
                .and_then(|v| v.as_str())
                .map(String::from)
        })
        .filter(|h| !h.is_empty())
}

fn run(helper: &str, verb: &str, input: &[u8]) -> Result<(bool, Vec<u8>), RegistryError> {
    let program = format!("docker-credential-{helper}");
    let err = |source| RegistryError::CredentialHelper {
        helper: program.clone(),
        source,
    };
    let mut child = Command::new(&program)
        .arg(verb)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).map_err(err)?;
    }
    let out = child.wait_with_output().map_err(err)?;
    Ok((out.status.success(), out.stdout))
}

#[derive(serde::Deserialize, serde::Serialize)]
struct HelperCreds {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// `get`: `Ok(None)` when the helper has nothing for `server`.
pub fn get(helper: &str, server: &str) -> Result<Option<Credentials>, RegistryError> {
    let (ok, out) = run(helper, "get", server.as_bytes())?;
    if !ok {
        return Ok(None);
    }
    let c: HelperCreds =
        serde_json::from_slice(&out).map_err(|source| RegistryError::CredentialHelperJson {
            helper: helper.to_string(),
            source,
        })?;
    Ok((!c.secret.is_empty()).then_some(Credentials {
        username: c.username,
        password: c.secret,
    }))
}

pub fn store(helper: &str, server: &str, creds: &Credentials) -> Result<(), RegistryError> {
    let body = serde_json::to_vec(&HelperCreds {
        server_url: server.to_string(),
        username: creds.username.clone(),
        secret: creds.password.clone(),
    })
    .map_err(|source| RegistryError::CredentialHelperJson {
        helper: helper.to_string(),
        source,
    })?;
    match run(helper, "store", &body)? {
        (true, _) => Ok(()),
        (false, _) => Err(RegistryError::CredentialHelperFailed {
            helper: helper.to_string(),
            verb: "store",
        }),
    }
}

/// `erase`; `Ok(false)` when the helper refused (nothing stored).
pub fn erase(helper: &str, server: &str) -> Result<bool, RegistryError> {
    Ok(run(helper, "erase", server.as_bytes())?.0)
}
