//! The engine: what one `strata` invocation works on, opened once from the global options.
//!
//! The CLI parses a verb's flags, makes one call here (or on the store / container runtime the
//! engine hands out), and renders the result; storage logic lives here, not in the verbs.
//!
//! Vocabulary:
//! - *root* / *runroot*: `--root` (images, layers, containers) and `--runroot` (runtime state),
//!   always absolute once the engine has them: paths recorded in container records and handed to
//!   a supervisor (which runs in `/`) must not depend on the caller's working directory.
//! - *settings*: `<root>/strata.json`, the daemon.json-like file (`storage-driver`; the network
//!   keys are read by [`crate::network`]).
//! - *driver*: the storage driver new containers record ([`DriverKind`]): `--storage-driver`,
//!   else `storage-driver` in the settings, else `fuse`; a configured mount program makes it
//!   `fuse-overlayfs` running that program.
//! - *registry settings*: the insecure-registry list (mirrors come from the daemon config, see
//!   [`crate::registry::mirrors`]).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::container::{ContainerError, ImageSource, Runtime};
use crate::driver::{DriverError, DriverKind};
use crate::reference::{Reference, ReferenceError};
use crate::registry::{PullError, PullEvent, PullOptions, PullOutcome, PushOptions};
use crate::store::{Store, StoreError};

mod history;
mod inspect;
mod usage;

pub use history::HistoryItem;
pub use inspect::ImageInspect;
pub use usage::{ContainerPrune, ContainerUsage, DiskUsage, ImageUsage};

/// Errors of the engine's own operations; the layers below keep their own types as sources.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Container(#[from] ContainerError),
    #[error(transparent)]
    Driver(#[from] DriverError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error("storage driver {0:?} does not take a mount_program (use fuse-overlayfs)")]
    NoMountProgram(String),
    #[error("too many non-empty layers in History section")]
    HistoryLayers,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The global options an engine is opened from.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    pub root: PathBuf,
    pub runroot: PathBuf,
    /// `--storage-driver` / `STRATA_STORAGE_DRIVER`.
    pub storage_driver: Option<String>,
    /// `--storage-opt mount_program=PATH` (the last one given).
    pub mount_program: Option<PathBuf>,
    /// `--insecure-registry`.
    pub insecure_registries: Vec<String>,
}

/// One invocation's view of the store and containers (see the module doc).
#[derive(Debug, Clone)]
pub struct Engine {
    opts: EngineOptions,
    containers: Runtime,
    store: OnceLock<Store>,
}

/// `p` made absolute against the working directory (unchanged if that fails).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Engine {
    /// Take the global options; nothing is opened until it is needed.
    pub fn new(mut opts: EngineOptions) -> Engine {
        opts.root = absolute(&opts.root);
        opts.runroot = absolute(&opts.runroot);
        let containers = Runtime::new(&opts.root, &opts.runroot);
        Engine {
            opts,
            containers,
            store: OnceLock::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.opts.root
    }

    pub fn runroot(&self) -> &Path {
        &self.opts.runroot
    }

    /// The image store under the root, opened on first use.
    pub fn store(&self) -> Result<&Store, StoreError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let opened = Store::open(&self.opts.root)?;
        Ok(self.store.get_or_init(|| opened))
    }

    /// The containers under the root and runroot.
    pub fn containers(&self) -> &Runtime {
        &self.containers
    }

    /// The named and anonymous volumes under the root.
    pub fn volumes(&self) -> crate::volume::Volumes {
        crate::volume::Volumes::new(&self.opts.root)
    }

    /// `<root>/strata.json`'s `storage-driver`, if set.
    fn configured_driver(&self) -> Option<String> {
        let bytes = std::fs::read(self.opts.root.join("strata.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get("storage-driver")?.as_str().map(str::to_string)
    }

    /// The storage driver new containers record (see the module doc).
    pub fn driver(&self) -> Result<DriverKind> {
        let explicit = self.opts.storage_driver.as_deref();
        if let Some(program) = &self.opts.mount_program {
            return match explicit {
                None | Some("fuse-overlayfs") | Some("overlay") | Some("overlay2") => {
                    Ok(DriverKind::MountProgram(Some(program.clone())))
                }
                Some(other) => Err(EngineError::NoMountProgram(other.to_string())),
            };
        }
        match explicit
            .map(str::to_string)
            .or_else(|| self.configured_driver())
        {
            Some(name) => Ok(DriverKind::parse(&name)?),
            None => Ok(crate::driver::DEFAULT_DRIVER),
        }
    }

    /// Pull options carrying the registry settings (callers set platform and parallelism).
    pub fn pull_options(&self) -> PullOptions {
        PullOptions {
            insecure: self.opts.insecure_registries.clone(),
            ..PullOptions::default()
        }
    }

    /// Push options carrying the registry settings.
    pub fn push_options(&self) -> PushOptions {
        PushOptions {
            insecure: self.opts.insecure_registries.clone(),
            ..PushOptions::default()
        }
    }

    /// The image `name` for a new container, pulled first when the store lacks it (Docker's
    /// `run`/`create`): `missing` is told the familiar reference before the pull starts
    /// (`Unable to find image 'x:latest' locally`), `progress` gets the pull's events. Returns
    /// the image and, when it pulled, the pull's outcome.
    pub fn resolve_or_pull(
        &self,
        name: &str,
        opts: &PullOptions,
        missing: &mut dyn FnMut(&str),
        progress: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<(ImageSource, Option<PullOutcome>)> {
        let store = self.store()?;
        let (rec, pulled) = match store.resolve(name) {
            Ok(r) => (r, None),
            Err(StoreError::NoSuchImage(_)) => {
                let reference = Reference::parse_with_default_tag(name);
                missing(
                    &reference
                        .as_ref()
                        .map_or_else(|_| name.to_string(), |r| r.familiar()),
                );
                let reference = reference?;
                let outcome = if opts.lazy {
                    crate::lazy::pull_lazy(store, &reference, opts, progress)?
                } else {
                    crate::registry::pull(store, &reference, opts, progress)?
                };
                (store.resolve(name)?, Some(outcome))
            }
            Err(e) => return Err(e.into()),
        };
        let layers = store.layer_dirs(&rec)?;
        let cfg = rec.config.config.clone().unwrap_or_default();
        let source = ImageSource {
            reference: name.to_string(),
            id: Some(rec.id.clone()),
            layers,
            entrypoint: cfg.entrypoint,
            cmd: cfg.cmd,
            env: cfg.env,
            user: cfg.user,
            working_dir: cfg.working_dir,
            stop_signal: cfg.stop_signal,
            exposed_ports: cfg.exposed_ports.unwrap_or_default().into_keys().collect(),
        };
        Ok((source, pulled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(root: &Path, driver: Option<&str>, program: Option<&str>) -> Engine {
        Engine::new(EngineOptions {
            root: root.to_path_buf(),
            runroot: root.join("run"),
            storage_driver: driver.map(str::to_string),
            mount_program: program.map(PathBuf::from),
            insecure_registries: vec!["10.0.0.1:5000".into()],
        })
    }

    #[test]
    fn driver_from_flag_settings_default_and_mount_program() {
        let t = tempfile::tempdir().unwrap();
        assert_eq!(
            engine(t.path(), None, None).driver().unwrap(),
            DriverKind::Fuse
        );
        std::fs::write(t.path().join("strata.json"), r#"{"storage-driver": "vfs"}"#).unwrap();
        assert_eq!(
            engine(t.path(), None, None).driver().unwrap(),
            DriverKind::Vfs
        );
        assert_eq!(
            engine(t.path(), Some("overlay2"), None).driver().unwrap(),
            DriverKind::Overlay
        );
        assert_eq!(
            engine(t.path(), None, Some("/bin/x")).driver().unwrap(),
            DriverKind::MountProgram(Some("/bin/x".into()))
        );
        assert!(matches!(
            engine(t.path(), Some("vfs"), Some("/bin/x")).driver(),
            Err(EngineError::NoMountProgram(d)) if d == "vfs"
        ));
        assert!(matches!(
            engine(t.path(), Some("zfs"), None).driver(),
            Err(EngineError::Driver(DriverError::Unknown(_)))
        ));
    }

    #[test]
    fn resolve_or_pull_names_the_missing_image_then_pulls() {
        let t = tempfile::tempdir().unwrap();
        let e = engine(t.path(), None, None);
        let mut told = Vec::new();
        // Nothing listens on 127.0.0.1:1: the pull fails after `missing` was told.
        let r = e.resolve_or_pull(
            "127.0.0.1:1/nothing",
            &e.pull_options(),
            &mut |shown| told.push(shown.to_string()),
            &|_| {},
        );
        assert!(matches!(r, Err(EngineError::Pull(_))), "{r:?}");
        assert_eq!(told, vec!["127.0.0.1:1/nothing:latest".to_string()]);
        // A name that is no reference is the store's error; nothing is pulled.
        let mut called = false;
        let r = e.resolve_or_pull("UPPER", &e.pull_options(), &mut |_| called = true, &|_| {});
        assert!(matches!(r, Err(EngineError::Store(_))), "{r:?}");
        assert!(!called);
    }

    #[test]
    fn paths_are_absolute_and_registry_settings_carried() {
        let e = Engine::new(EngineOptions {
            root: "rel/root".into(),
            runroot: "rel/run".into(),
            insecure_registries: vec!["h:1".into()],
            ..Default::default()
        });
        assert!(e.root().is_absolute() && e.root().ends_with("rel/root"));
        assert!(e.runroot().is_absolute());
        assert_eq!(e.containers().root(), e.root());
        assert_eq!(e.pull_options().insecure, vec!["h:1".to_string()]);
        assert_eq!(e.push_options().insecure, vec!["h:1".to_string()]);
    }
}
