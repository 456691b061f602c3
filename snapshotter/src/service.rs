//! containerd's snapshots service over the [`Store`]: argument and result conversions, the
//! mounts handed back to containerd, and errors as the gRPC codes containerd's `errdefs`
//! understands (so `ctr` prints `not found`, `already exists`, … as for its own snapshotters).
//!
//! Mounts are descriptions containerd performs itself, without us in its process:
//! - an active snapshot without parent: a read-write bind mount of its layer dir;
//! - a view of one layer (or of nothing): a read-only bind mount;
//! - anything stacked: `fuse3.<program>` with `lowerdir=…[,upperdir=…,workdir=…]`, which
//!   containerd runs as `mount.fuse3 strata TARGET -o … -t <program>` and `mount.fuse3` execs
//!   `<program>` (`strata-overlay`, the fuse-overlayfs drop-in), as fuse-overlayfs-snapshotter
//!   does with `fuse3.fuse-overlayfs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::{tonic, Info, Snapshotter, Usage};

use crate::filter::{self, Filters};
use crate::store::{self, Kind, MountSpec, Snapshot, Store};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] store::Error),
    #[error(transparent)]
    Filter(#[from] filter::Error),
    #[error("snapshotter task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> tonic::Status {
        use store::Error as S;
        let msg = e.to_string();
        match e {
            Error::Store(S::NotFound(_)) | Error::Store(S::ParentNotFound(_)) => {
                tonic::Status::not_found(msg)
            }
            Error::Store(S::AlreadyExists(_)) => tonic::Status::already_exists(msg),
            Error::Store(
                S::ParentNotCommitted(_)
                | S::NotActive(_)
                | S::NotActiveOrView(_)
                | S::HasChildren(_),
            ) => tonic::Status::failed_precondition(msg),
            Error::Store(S::ImmutableField { .. } | S::EmptyKey) | Error::Filter(_) => {
                tonic::Status::invalid_argument(msg)
            }
            Error::Store(S::Locked(_) | S::Io { .. } | S::Corrupt { .. }) | Error::Task(_) => {
                log::error!("{msg}");
                tonic::Status::internal(msg)
            }
        }
    }
}

/// The service: a store plus how to spell its union mounts.
pub struct Service {
    store: Arc<Store>,
    /// The mount type of stacked snapshots, `fuse3.<program>`.
    fuse_type: String,
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn bind(source: &Path, rw: bool) -> Mount {
    Mount {
        r#type: "bind".into(),
        source: path_str(source),
        target: String::new(),
        options: vec![if rw { "rw" } else { "ro" }.into(), "rbind".into()],
    }
}

/// What containerd must mount for `spec`.
pub fn mounts_for(spec: &MountSpec, fuse_type: &str) -> Vec<Mount> {
    let lowerdir = || {
        format!(
            "lowerdir={}",
            spec.lowers
                .iter()
                .map(|p| path_str(p))
                .collect::<Vec<_>>()
                .join(":")
        )
    };
    let union = |options| Mount {
        r#type: fuse_type.to_string(),
        source: "strata".into(),
        target: String::new(),
        options,
    };
    let m = match (spec.kind, spec.lowers.len()) {
        (Kind::Active, 0) => bind(&spec.upper, true),
        (Kind::Active, _) => union(vec![
            format!("workdir={}", path_str(&spec.work)),
            format!("upperdir={}", path_str(&spec.upper)),
            lowerdir(),
        ]),
        (_, 0) => bind(&spec.upper, false),
        (_, 1) => bind(&spec.lowers[0], false),
        (_, _) => union(vec![lowerdir()]),
    };
    vec![m]
}

fn info(s: Snapshot) -> Info {
    Info {
        kind: match s.record.kind {
            Kind::View => containerd_snapshots::Kind::View,
            Kind::Active => containerd_snapshots::Kind::Active,
            Kind::Committed => containerd_snapshots::Kind::Committed,
        },
        name: s.key,
        parent: s.record.parent,
        labels: s.record.labels,
        created_at: s.record.created.to_system_time(),
        updated_at: s.record.updated.to_system_time(),
    }
}

impl Service {
    pub fn new(store: Store, program: &str) -> Service {
        Service {
            store: Arc::new(store),
            fuse_type: format!("fuse3.{program}"),
        }
    }

    /// Run a store operation on the blocking pool (they fsync and walk directories).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, store::Error> + Send + 'static,
    ) -> Result<T, Error> {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await??)
    }

    async fn create(
        &self,
        kind: Kind,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        log::debug!("{} key={key:?} parent={parent:?}", kind.as_str());
        let spec = self
            .blocking(move |s| s.create(kind, &key, &parent, labels))
            .await?;
        Ok(mounts_for(&spec, &self.fuse_type))
    }
}

#[tonic::async_trait]
impl Snapshotter for Service {
    type Error = Error;

    async fn stat(&self, key: String) -> Result<Info, Error> {
        Ok(info(self.blocking(move |s| s.stat(&key)).await?))
    }

    async fn update(&self, i: Info, fieldpaths: Option<Vec<String>>) -> Result<Info, Error> {
        let paths = fieldpaths.unwrap_or_default();
        log::debug!("update key={:?} paths={paths:?}", i.name);
        let snap = self
            .blocking(move |s| s.update(&i.name, i.labels, &paths))
            .await?;
        Ok(info(snap))
    }

    async fn usage(&self, key: String) -> Result<Usage, Error> {
        let u = self.blocking(move |s| s.usage(&key)).await?;
        Ok(Usage {
            inodes: u.inodes,
            size: u.size,
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>, Error> {
        let spec = self.blocking(move |s| s.mounts(&key)).await?;
        Ok(mounts_for(&spec, &self.fuse_type))
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        self.create(Kind::Active, key, parent, labels).await
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>, Error> {
        self.create(Kind::View, key, parent, labels).await
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<(), Error> {
        log::debug!("commit key={key:?} name={name:?}");
        self.blocking(move |s| s.commit(&name, &key, labels)).await
    }

    async fn remove(&self, key: String) -> Result<(), Error> {
        log::debug!("remove key={key:?}");
        self.blocking(move |s| s.remove(&key)).await
    }

    async fn clear(&self) -> Result<(), Error> {
        let n = self.blocking(|s| s.cleanup()).await?;
        log::debug!("cleanup removed {n} entries");
        Ok(())
    }

    type InfoStream = tokio_stream::Iter<std::vec::IntoIter<Result<Info, Error>>>;

    async fn list(
        &self,
        _snapshotter: String,
        filters: Vec<String>,
    ) -> Result<Self::InfoStream, Error> {
        let filters = Filters::parse(&filters)?;
        let all = self.blocking(|s| Ok(s.list())).await?;
        let items: Vec<Result<Info, Error>> = all
            .into_iter()
            .filter(|s| filters.matches(s))
            .map(|s| Ok(info(s)))
            .collect();
        Ok(tokio_stream::iter(items))
    }
}

/// Where a root is refused: `:` and `,` would split the `lowerdir=` option.
pub fn check_root(root: &Path) -> Result<PathBuf, String> {
    let s = root.to_string_lossy();
    if s.contains(':') || s.contains(',') {
        return Err(format!(
            "--root {s}: a path holding ':' or ',' cannot be passed in mount options"
        ));
    }
    Ok(root.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: Kind, lowers: &[&str]) -> MountSpec {
        MountSpec {
            kind,
            upper: "/r/snapshots/9/fs".into(),
            work: "/r/snapshots/9/work".into(),
            lowers: lowers.iter().map(PathBuf::from).collect(),
        }
    }

    #[test]
    fn mounts_mirror_containerd_overlay() {
        let t = "fuse3.strata-overlay";
        let m = &mounts_for(&spec(Kind::Active, &[]), t)[0];
        assert_eq!(
            (m.r#type.as_str(), m.source.as_str()),
            ("bind", "/r/snapshots/9/fs")
        );
        assert_eq!(m.options, ["rw", "rbind"]);
        let m = &mounts_for(&spec(Kind::Active, &["/a", "/b"]), t)[0];
        assert_eq!(m.r#type, t);
        assert_eq!(
            m.options,
            [
                "workdir=/r/snapshots/9/work",
                "upperdir=/r/snapshots/9/fs",
                "lowerdir=/a:/b"
            ]
        );
        let m = &mounts_for(&spec(Kind::View, &["/a"]), t)[0];
        assert_eq!((m.r#type.as_str(), m.source.as_str()), ("bind", "/a"));
        assert_eq!(m.options, ["ro", "rbind"]);
        let m = &mounts_for(&spec(Kind::View, &["/a", "/b"]), t)[0];
        assert_eq!(m.options, ["lowerdir=/a:/b"]);
        assert!(check_root(Path::new("/var/lib/x:y")).is_err());
    }

    #[test]
    fn errors_map_to_containerd_codes() {
        let s: tonic::Status = Error::Store(store::Error::NotFound("k".into())).into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "snapshot k: not found");
        let s: tonic::Status = Error::Store(store::Error::HasChildren("k".into())).into();
        assert_eq!(s.code(), tonic::Code::FailedPrecondition);
        let s: tonic::Status = Error::Store(store::Error::AlreadyExists("k".into())).into();
        assert_eq!(s.code(), tonic::Code::AlreadyExists);
    }
}
