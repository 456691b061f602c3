//! Volumes: directories strata manages under `<root>/volumes/<name>/` — `_data/` (what the
//! container sees) and `volume.json` (name, driver `local`, creation time, labels, anonymous or
//! not). A container names its volumes in its config ([`VolumeMount::volume`]); a volume is *in
//! use* while a container (any state) names it. Volumes outlive containers: only `volume rm`,
//! `volume prune`, `rm -v` (anonymous ones) and `system prune --volumes` remove them.
//!
//! An empty volume mounted where the image has content is first filled with that content
//! (Docker's copy-up on first mount), by the supervisor from the mounted rootfs, unless the
//! mount says `nocopy`.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::container::{Container, VolumeMount};

/// Errors of volume operations (Docker's texts).
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt volume metadata {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("get {0}: no such volume")]
    NoSuchVolume(String),
    #[error("create {0}: \"{0}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path")]
    InvalidName(String),
    #[error("remove {name}: volume is in use - [{containers}]")]
    InUse { name: String, containers: String },
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError + '_ {
    move |source| VolumeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `volume.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeInfo {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "CreatedAt")]
    pub created_at: DateTime<Utc>,
    #[serde(rename = "Labels", default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(rename = "Anonymous", default)]
    pub anonymous: bool,
}

/// The volumes under one `--root`.
#[derive(Debug, Clone)]
pub struct Volumes {
    dir: PathBuf,
    /// The runroot whose events log gets `create`/`destroy` ([`Volumes::with_events`]).
    events: Option<PathBuf>,
}

/// Docker's rule for local volume names.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

impl Volumes {
    pub fn new(root: &Path) -> Volumes {
        Volumes {
            dir: root.join("volumes"),
            events: None,
        }
    }

    /// Record volume events in the events log under `runroot`.
    pub fn with_events(mut self, runroot: &Path) -> Volumes {
        self.events = Some(runroot.to_path_buf());
        self
    }

    /// Docker's volume event: the name, `driver=local`.
    fn event(&self, action: &str, name: &str) {
        if let Some(runroot) = &self.events {
            let ev = crate::events::Event::new("volume", action, name).attr("driver", "local");
            crate::events::record(runroot, &ev);
        }
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("_data")
    }

    fn meta(&self, name: &str) -> PathBuf {
        self.dir.join(name).join("volume.json")
    }

    /// Create a volume (an existing one is kept, as Docker does); `None`: an anonymous volume
    /// with a 64-hex name. Returns its name.
    pub fn create(
        &self,
        name: Option<&str>,
        labels: std::collections::BTreeMap<String, String>,
    ) -> Result<String, VolumeError> {
        let (name, anonymous) = match name {
            Some(n) if !valid_name(n) => return Err(VolumeError::InvalidName(n.to_string())),
            Some(n) => (n.to_string(), false),
            None => (crate::container::ContainerId::generate().to_string(), true),
        };
        if self.meta(&name).exists() {
            return Ok(name);
        }
        let data = self.data_dir(&name);
        fs::create_dir_all(&data).map_err(io_at(&data))?;
        let info = VolumeInfo {
            name: name.clone(),
            created_at: Utc::now(),
            labels,
            anonymous,
        };
        let json = serde_json::to_vec_pretty(&info).map_err(|source| VolumeError::Json {
            path: self.meta(&name),
            source,
        })?;
        let meta = self.meta(&name);
        crate::fsutil::write_atomic(&meta, &json).map_err(io_at(&meta))?;
        self.event("create", &name);
        Ok(name)
    }

    pub fn inspect(&self, name: &str) -> Result<VolumeInfo, VolumeError> {
        let meta = self.meta(name);
        if !valid_name(name) {
            return Err(VolumeError::NoSuchVolume(name.to_string()));
        }
        let data = fs::read(&meta).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => VolumeError::NoSuchVolume(name.to_string()),
            _ => VolumeError::Io {
                path: meta.clone(),
                source: e,
            },
        })?;
        serde_json::from_slice(&data).map_err(|source| VolumeError::Json { path: meta, source })
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<VolumeInfo>, VolumeError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_at(&self.dir)(e)),
        };
        let mut out: Vec<VolumeInfo> = entries
            .flatten()
            .filter_map(|e| self.inspect(e.file_name().to_str()?).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Short ids of the containers naming `name`.
    pub fn users(name: &str, containers: &[Container]) -> Vec<String> {
        containers
            .iter()
            .filter(|c| {
                c.config
                    .volumes
                    .iter()
                    .any(|v| v.volume.as_deref() == Some(name))
            })
            .map(|c| c.id().to_string())
            .collect()
    }

    /// Remove a volume no container uses (`force`: missing is fine). Returns its size.
    pub fn remove(
        &self,
        name: &str,
        containers: &[Container],
        force: bool,
    ) -> Result<u64, VolumeError> {
        if let Err(e) = self.inspect(name) {
            return if force { Ok(0) } else { Err(e) };
        }
        let users = Self::users(name, containers);
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: name.to_string(),
                containers: users.join(" "),
            });
        }
        let dir = self.dir.join(name);
        let size = tree_size(&dir);
        // Renamed away first: a half-removed volume is never seen as a volume.
        let tomb = self
            .dir
            .join(format!(".removing-{name}-{}", std::process::id()));
        fs::rename(&dir, &tomb).map_err(io_at(&dir))?;
        fs::remove_dir_all(&tomb).map_err(io_at(&tomb))?;
        self.event("destroy", name);
        Ok(size)
    }

    /// Remove the anonymous volumes among `mounts` (`rm -v`, and `--rm` containers as they
    /// exit). One that a container of `others` still uses (`--volumes-from`) stays, as with
    /// Docker, until `volume prune` finds it unused. `others` is listed only when there is an
    /// anonymous volume to remove. Errors are returned per volume.
    pub fn remove_anonymous(
        &self,
        mounts: &[VolumeMount],
        others: impl FnOnce() -> Vec<Container>,
    ) -> Vec<VolumeError> {
        let mut errors = Vec::new();
        let mut others = Some(others);
        let mut listed = Vec::new();
        for m in mounts.iter().filter(|m| m.anonymous) {
            if let Some(n) = &m.volume {
                if let Some(list) = others.take() {
                    listed = list();
                }
                match self.remove(n, &listed, true) {
                    Ok(_) | Err(VolumeError::InUse { .. }) => {}
                    Err(e) => errors.push(e),
                }
            }
        }
        errors
    }

    /// Remove unused volumes (`all`: named ones too; else anonymous only, as Docker ≥ 23).
    /// Returns the removed names and the bytes reclaimed.
    pub fn prune(
        &self,
        containers: &[Container],
        all: bool,
    ) -> Result<(Vec<String>, u64), VolumeError> {
        let mut names = Vec::new();
        let mut bytes = 0;
        for v in self.list()? {
            if (!all && !v.anonymous) || !Self::users(&v.name, containers).is_empty() {
                continue;
            }
            bytes += self.remove(&v.name, containers, true)?;
            names.push(v.name);
        }
        Ok((names, bytes))
    }

    /// Fill the empty volume data dirs of `mounts` from the container's merged root at
    /// `rootfs` (Docker copies the image's content at the mount path into a new volume).
    pub fn populate(rootfs: &Path, mounts: &[VolumeMount]) {
        for m in mounts {
            if m.volume.is_none() || m.nocopy {
                continue;
            }
            let empty = fs::read_dir(&m.source).is_ok_and(|mut d| d.next().is_none());
            if !empty
                || crate::container::copy::kind_in_root(rootfs, &m.target).ok()
                    != Some(crate::container::copy::PathKind::Dir)
            {
                continue;
            }
            let Ok((r, w)) = nix::unistd::pipe() else {
                continue;
            };
            let src = m.target.clone();
            let root = rootfs.to_path_buf();
            let writer = std::thread::spawn(move || {
                let _ = crate::container::copy::tar_path(
                    &root,
                    "",
                    &format!("{}/.", src.trim_end_matches('/')),
                    true,
                    None,
                    fs::File::from(w),
                );
            });
            let _ = crate::container::copy::extract(&m.source, "/", fs::File::from(r), true);
            let _ = writer.join();
        }
    }
}

fn tree_size(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.blocks() * 512;
    }
    fs::read_dir(p)
        .map(|d| d.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_list_remove() {
        let t = tempfile::tempdir().unwrap();
        let v = Volumes::new(t.path());
        assert_eq!(v.create(Some("data"), Default::default()).unwrap(), "data");
        let anon = v.create(None, Default::default()).unwrap();
        assert_eq!(anon.len(), 64);
        assert!(v.data_dir("data").is_dir());
        assert!(matches!(
            v.create(Some("bad name"), Default::default()),
            Err(VolumeError::InvalidName(_))
        ));
        let names: Vec<_> = v.list().unwrap().into_iter().map(|i| i.name).collect();
        assert_eq!(names.len(), 2);
        let (pruned, _) = v.prune(&[], false).unwrap();
        assert_eq!(pruned, [anon]);
        v.remove("data", &[], false).unwrap();
        assert!(matches!(
            v.inspect("data"),
            Err(VolumeError::NoSuchVolume(_))
        ));
        assert_eq!(
            v.remove("data", &[], false).unwrap_err().to_string(),
            "get data: no such volume"
        );
    }
}
