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
//! - *registry settings*: the insecure-registry list and the Docker Hub mirrors of the daemon
//!   config (read once, on the first pull; see [`crate::registry::mirrors`]), carried by
//!   [`Engine::pull_options`].
//! - *lazy by default*: `STRATA_LAZY_PULL` (`1`/`true`, `0`/`false`), else `lazy-pull` in the
//!   settings, else off ([`Engine::lazy_pull`]): when on, `run`/`create`/`pull` of an image whose
//!   layers are all seekable pull it lazily as `--lazy` does (any other image is pulled normally).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::container::{ContainerError, ImageSource, Runtime};
use crate::driver::{DriverError, DriverKind};
use crate::reference::{Reference, ReferenceError};
use crate::registry::mirrors::Mirror;
use crate::registry::{PullError, PullEvent, PullOptions, PullOutcome, PushOptions};
use crate::store::{Store, StoreError};

mod create;
mod history;
mod inspect;
mod usage;

pub use create::{ContainerSpec, PullHooks};
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
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    #[error("conflicting options: port publishing and the container type network mode")]
    PublishWithContainerNetwork,
    #[error("invalid mount config: mount path must be absolute")]
    VolumePath,
    #[error("too many non-empty layers in History section")]
    HistoryLayers,
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The global options an engine is opened from.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// `--root` / `STRATA_ROOT`; `None`: the default for this user
    /// ([`crate::rootless::Defaults`]: `/var/lib/strata` as root, the XDG data dir rootless).
    pub root: Option<PathBuf>,
    /// `--runroot` / `STRATA_RUNROOT`; `None`: `/run/strata` as root, the XDG runtime dir rootless.
    pub runroot: Option<PathBuf>,
    /// `--storage-driver` / `STRATA_STORAGE_DRIVER`.
    pub storage_driver: Option<String>,
    /// `--storage-opt mount_program=PATH` (the last one given).
    pub mount_program: Option<PathBuf>,
    /// `--insecure-registry`.
    pub insecure_registries: Vec<String>,
    /// The daemon config whose `registry-mirrors` pulls use; `None`: `$STRATA_DAEMON_JSON`,
    /// else `/etc/docker/daemon.json`.
    pub daemon_config: Option<PathBuf>,
}

/// A directory under the store's `tmp/`, removed on drop (see [`Engine::scratch_dir`]).
pub struct ScratchDir(crate::fsutil::Staging);

impl ScratchDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// One invocation's view of the store and containers (see the module doc).
#[derive(Debug, Clone)]
pub struct Engine {
    /// Absolute (see the module doc).
    root: PathBuf,
    runroot: PathBuf,
    opts: EngineOptions,
    containers: Runtime,
    store: OnceLock<Store>,
    /// The daemon config's registry settings, read on first use.
    registry: OnceLock<RegistrySettings>,
}

/// What the daemon config (`daemon.json`) says about registries, read once per process.
#[derive(Debug, Default, Clone)]
struct RegistrySettings {
    /// Docker Hub mirrors (`registry-mirrors`), in order.
    mirrors: Vec<Mirror>,
    /// `--insecure-registry` flags, then the config's `insecure-registries`.
    insecure: Vec<String>,
}

/// `p` made absolute against the working directory (unchanged if that fails).
fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Engine {
    /// Take the global options; nothing is opened until it is needed.
    /// Defaults are resolved here, so open the engine before entering a rootless user namespace
    /// (inside it the process looks like root). An empty root stays empty (no home directory
    /// was found: [`crate::rootless::check_root`] says which variable to set).
    pub fn new(opts: EngineOptions) -> Engine {
        let (root, runroot) = match (&opts.root, &opts.runroot) {
            (Some(root), Some(runroot)) => (absolute(root), absolute(runroot)),
            (root, runroot) => {
                let d = crate::rootless::Defaults::detect();
                (
                    absolute(root.as_deref().unwrap_or(&d.root)),
                    absolute(runroot.as_deref().unwrap_or(&d.runroot)),
                )
            }
        };
        let containers = Runtime::new(&root, &runroot);
        Engine {
            root,
            runroot,
            opts,
            containers,
            store: OnceLock::new(),
            registry: OnceLock::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn runroot(&self) -> &Path {
        &self.runroot
    }

    /// The image store under the root, opened on first use.
    pub fn store(&self) -> Result<&Store, StoreError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let opened = Store::open(&self.root)?.with_events(&self.runroot);
        Ok(self.store.get_or_init(|| opened))
    }

    /// The containers under the root and runroot.
    pub fn containers(&self) -> &Runtime {
        &self.containers
    }

    /// The named and anonymous volumes under the root.
    pub fn volumes(&self) -> crate::volume::Volumes {
        crate::volume::Volumes::new(&self.root).with_events(&self.runroot)
    }

    /// Where the store keeps its layers (`<root>/layers`), for watchers such as
    /// `image convert --record`.
    pub fn layers_dir(&self) -> Result<PathBuf, StoreError> {
        Ok(self.store()?.layers_dir())
    }

    /// The networks under the root (Docker's `network` verbs and `run --network`).
    pub fn networks(&self) -> crate::network::Networks {
        crate::network::Networks::open(&self.root).with_events(&self.runroot)
    }

    /// Build an image from `opts` with this engine's store and containers (`strata build`).
    pub fn build(
        &self,
        opts: &crate::build::BuildOptions,
        host: &mut dyn crate::build::BuildHost,
    ) -> Result<crate::digest::ImageId, crate::build::BuildError> {
        crate::build::build(self.store()?, &self.containers, opts, host)
    }

    /// A fresh empty directory under the store's `tmp/`, removed when the guard drops (and by
    /// the next `Store::open` if this process dies first): scratch space for a verb, such as a
    /// build context read from STDIN.
    pub fn scratch_dir(&self, what: &str) -> Result<ScratchDir, StoreError> {
        let store = self.store()?;
        let path = crate::fsutil::unique_tmp(&store.tmp_dir(), what);
        std::fs::create_dir(&path).map_err(|e| StoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        Ok(ScratchDir(crate::fsutil::Staging::new(path)))
    }

    /// `<root>/strata.json`'s `storage-driver`, if set.
    fn configured_driver(&self) -> Option<String> {
        let bytes = std::fs::read(self.root.join("strata.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        v.get("storage-driver")?.as_str().map(str::to_string)
    }

    /// Whether `run`/`create`/`pull` pull lazily without `--lazy` (see the module doc).
    pub fn lazy_pull(&self) -> bool {
        let settings = std::fs::read(self.root.join("strata.json")).ok();
        lazy_pull_setting(
            std::env::var("STRATA_LAZY_PULL").ok().as_deref(),
            settings.as_deref(),
        )
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

    /// The daemon config's registry settings, read once: every registry client of this process
    /// gets them from here (`pull_options`, `push_options`, `insecure_registries`).
    fn registry_settings(&self) -> &RegistrySettings {
        self.registry.get_or_init(|| {
            let path = self
                .opts
                .daemon_config
                .clone()
                .unwrap_or_else(crate::registry::client::daemon_json_path);
            let mut insecure = self.opts.insecure_registries.clone();
            for i in crate::registry::client::configured_insecure(&path) {
                if !insecure.contains(&i) {
                    insecure.push(i);
                }
            }
            RegistrySettings {
                mirrors: crate::registry::mirrors::configured(&path),
                insecure,
            }
        })
    }

    /// The Docker Hub mirrors of the daemon config.
    pub fn mirrors(&self) -> &[Mirror] {
        &self.registry_settings().mirrors
    }

    /// Insecure registries: the `--insecure-registry` flags and the daemon config's list.
    pub fn insecure_registries(&self) -> &[String] {
        &self.registry_settings().insecure
    }

    /// Pull options carrying the registry settings (callers set platform and parallelism).
    pub fn pull_options(&self) -> PullOptions {
        PullOptions {
            insecure: self.insecure_registries().to_vec(),
            mirrors: self.mirrors().to_vec(),
            ..PullOptions::default()
        }
    }

    /// Push options carrying the registry settings.
    pub fn push_options(&self) -> PushOptions {
        PushOptions {
            insecure: self.insecure_registries().to_vec(),
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
        self.image_for_container(name, PullPolicy::Missing, opts, missing, progress)
    }

    /// [`Engine::resolve_or_pull`] under a `--pull` policy: `Never` only looks in the store,
    /// `Always` pulls first (a failed pull fails the create, as Docker's).
    pub fn image_for_container(
        &self,
        name: &str,
        policy: PullPolicy,
        opts: &PullOptions,
        missing: &mut dyn FnMut(&str),
        progress: &(dyn Fn(PullEvent) + Sync),
    ) -> Result<(ImageSource, Option<PullOutcome>)> {
        let store = self.store()?;
        let pull = |shown: Option<&mut dyn FnMut(&str)>| -> Result<PullOutcome> {
            let reference = Reference::parse_with_default_tag(name);
            if let Some(tell) = shown {
                tell(
                    &reference
                        .as_ref()
                        .map_or_else(|_| name.to_string(), |r| r.familiar()),
                );
            }
            let reference = reference?;
            Ok(if opts.lazy {
                crate::lazy::pull_lazy(store, &reference, opts, progress)?
            } else {
                crate::registry::pull(store, &reference, opts, progress)?
            })
        };
        let (rec, pulled) = match policy {
            PullPolicy::Always => {
                let outcome = pull(None)?;
                (store.resolve(name)?, Some(outcome))
            }
            PullPolicy::Never => (store.resolve(name)?, None),
            PullPolicy::Missing => match store.resolve(name) {
                Ok(r) => (r, None),
                Err(StoreError::NoSuchImage(_)) => {
                    let outcome = pull(Some(missing))?;
                    (store.resolve(name)?, Some(outcome))
                }
                Err(e) => return Err(e.into()),
            },
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
            healthcheck: cfg
                .extra
                .get("Healthcheck")
                .and_then(|v| serde_json::from_value(v.clone()).ok()),
            labels: cfg.labels.unwrap_or_default(),
        };
        Ok((source, pulled))
    }
}

/// `run --pull`: when a container's image is pulled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the store lacks it (the default).
    #[default]
    Missing,
    /// Every time, before the container is created.
    Always,
    /// Never: a missing image is an error.
    Never,
}

impl PullPolicy {
    /// Docker's values, with its message for others.
    pub fn parse(s: &str) -> Result<PullPolicy, String> {
        match s {
            "missing" | "" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(format!(
                "invalid pull option: '{other}': must be one of \"always\", \"missing\" or \"never\""
            )),
        }
    }
}

/// The lazy-pull default from the env var's value (it wins when it reads as a boolean) and
/// the settings file's bytes (`"lazy-pull": true`); unreadable or absent: off.
fn lazy_pull_setting(env: Option<&str>, settings: Option<&[u8]>) -> bool {
    match env.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        Some("1" | "true" | "yes" | "on") => return true,
        Some("0" | "false" | "no" | "off") => return false,
        _ => {}
    }
    settings
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v.get("lazy-pull")?.as_bool())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(root: &Path, driver: Option<&str>, program: Option<&str>) -> Engine {
        Engine::new(EngineOptions {
            root: Some(root.to_path_buf()),
            runroot: Some(root.join("run")),
            storage_driver: driver.map(str::to_string),
            mount_program: program.map(PathBuf::from),
            insecure_registries: vec!["10.0.0.1:5000".into()],
            daemon_config: Some(root.join("daemon.json")),
        })
    }

    #[test]
    fn lazy_pull_from_env_then_settings_then_off() {
        let on = Some(br#"{"storage-driver": "vfs", "lazy-pull": true}"#.as_slice());
        let off = Some(br#"{"lazy-pull": false}"#.as_slice());
        assert!(!lazy_pull_setting(None, None));
        assert!(lazy_pull_setting(None, on));
        assert!(!lazy_pull_setting(None, off));
        assert!(!lazy_pull_setting(None, Some(b"{not json")));
        assert!(!lazy_pull_setting(None, Some(br#"{"lazy-pull": "yes"}"#)));
        assert!(lazy_pull_setting(Some("1"), off));
        assert!(lazy_pull_setting(Some("TRUE"), None));
        assert!(!lazy_pull_setting(Some("0"), on));
        assert!(!lazy_pull_setting(Some("false"), on));
        assert!(lazy_pull_setting(Some(""), on));
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
    fn mirrors_come_from_the_engine_daemon_config() {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("daemon.json");
        std::fs::write(
            &cfg,
            r#"{"registry-mirrors": ["http://127.0.0.1:1", "bad"]}"#,
        )
        .unwrap();
        let e = Engine::new(EngineOptions {
            root: Some(t.path().join("root")),
            runroot: Some(t.path().join("run")),
            daemon_config: Some(cfg.clone()),
            ..Default::default()
        });
        let hosts = |o: PullOptions| o.mirrors.into_iter().map(|m| m.host).collect::<Vec<_>>();
        assert_eq!(hosts(e.pull_options()), ["127.0.0.1:1"]);
        // Read once: a later change of the file is not seen by this engine.
        std::fs::write(&cfg, r#"{"registry-mirrors": []}"#).unwrap();
        assert_eq!(hosts(e.pull_options()), ["127.0.0.1:1"]);
    }

    #[test]
    fn scratch_dir_is_in_the_store_tmp_and_removed_on_drop() {
        let t = tempfile::tempdir().unwrap();
        let e = engine(t.path(), None, None);
        let d = e.scratch_dir("context").unwrap();
        let p = d.path().to_path_buf();
        assert!(p.is_dir());
        assert_eq!(p.parent().unwrap(), t.path().join("tmp"));
        assert!(p
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{}-", std::process::id())));
        std::fs::write(p.join("f"), b"x").unwrap();
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn paths_are_absolute_and_registry_settings_carried() {
        let t = tempfile::tempdir().unwrap();
        let e = Engine::new(EngineOptions {
            root: Some("rel/root".into()),
            runroot: Some("rel/run".into()),
            insecure_registries: vec!["h:1".into()],
            daemon_config: Some(t.path().join("missing.json")),
            ..Default::default()
        });
        assert!(e.root().is_absolute() && e.root().ends_with("rel/root"));
        assert!(e.runroot().is_absolute());
        assert_eq!(e.containers().root(), e.root());
        assert_eq!(e.pull_options().insecure, vec!["h:1".to_string()]);
        assert!(e.pull_options().mirrors.is_empty());
        assert_eq!(e.push_options().insecure, vec!["h:1".to_string()]);

        // The engine's daemon config is the one every client reads (not the process-wide default).
        let conf = t.path().join("daemon.json");
        std::fs::write(
            &conf,
            r#"{"insecure-registries": ["reg.lan:5000", "h:1"], "registry-mirrors": ["http://m.lan:5001"]}"#,
        )
        .unwrap();
        let e = Engine::new(EngineOptions {
            root: Some(t.path().join("root")),
            runroot: Some(t.path().join("run")),
            insecure_registries: vec!["h:1".into()],
            daemon_config: Some(conf),
            ..Default::default()
        });
        assert_eq!(e.insecure_registries(), ["h:1", "reg.lan:5000"]);
        assert_eq!(e.pull_options().insecure, e.insecure_registries());
        assert_eq!(e.push_options().insecure, e.insecure_registries());
        assert_eq!(e.mirrors().len(), 1);
    }
}
