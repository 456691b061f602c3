//! `run` / `create`: a container request from the command line's parsed flags → the image
//! resolved (pulled if missing), its volumes and exposed ports merged in → a container record.
//!
//! Order matters for "nothing left behind": the storage driver is checked first (a bad
//! `--storage-driver` fails before any pull), the image next, and only a request that got this
//! far makes volumes; a failure after that removes the anonymous volumes of the request.

use crate::container::{
    ports, Container, ContainerOptions, CreateRequest, NetworkMode, Security, VolumeMount,
};
use crate::registry::{PullEvent, PullOptions, PullOutcome};
use crate::store::StoreError;

use super::{Engine, EngineError, Result};

/// A new container as the command line asked for it (every flag parsed, nothing made yet).
/// Its volumes (`-v` / `--mount`: binds and named or anonymous volumes) are already made by
/// the caller after its own checks; anonymous ones are removed again if the container is not.
#[derive(Debug, Default)]
pub struct ContainerSpec {
    /// The image reference as typed (`busybox`, `repo/x:tag`, an ID prefix).
    pub image: String,
    /// The container's own flags, moved into the [`CreateRequest`] once the image is resolved.
    pub opts: ContainerOptions,
    /// `-P`: every port the image exposes, on a random host port.
    pub publish_all: bool,
    /// `--expose`: ports (`80/tcp`) `-P` publishes besides the image's.
    pub expose: Vec<String>,
    /// `--pull`.
    pub pull: super::PullPolicy,
}

/// What the caller sees of a pull `create` had to make (Docker prints both on stderr).
pub struct PullHooks<'a> {
    /// The pull's settings (`engine.pull_options()` plus the verb's own flags).
    pub options: &'a PullOptions,
    /// Told the familiar reference before a pull starts (`Unable to find image … locally`).
    pub missing: &'a mut dyn FnMut(&str),
    /// The pull's events.
    pub progress: &'a (dyn Fn(PullEvent) + Sync),
}

impl Engine {
    /// Create the container `spec` describes (see the module doc for the order). Returns it
    /// and, when the image had to be pulled, the pull's outcome.
    pub fn create_container(
        &self,
        spec: ContainerSpec,
        pull: PullHooks<'_>,
    ) -> Result<(Container, Option<PullOutcome>)> {
        let volumes = spec.opts.volumes.clone();
        let made = self.create_inner(spec, pull);
        if made.is_err() {
            // Anonymous volumes made for a container that could not be created go with it;
            // their removal errors are secondary to the one reported.
            let _ = self.volumes().remove_anonymous(&volumes, Vec::new);
        }
        made
    }

    fn create_inner(
        &self,
        mut spec: ContainerSpec,
        pull: PullHooks<'_>,
    ) -> Result<(Container, Option<PullOutcome>)> {
        let driver = self.driver()?;
        let (image, pulled) = self.image_for_container(
            &spec.image,
            spec.pull,
            pull.options,
            pull.missing,
            pull.progress,
        )?;
        self.image_volumes(&spec.image, &mut spec.opts.volumes, &spec.opts.security)?;
        if spec.publish_all {
            let mut exposed = image.exposed_ports.clone();
            exposed.extend(spec.expose.iter().cloned());
            exposed.sort();
            exposed.dedup();
            spec.opts.ports.extend(ports::publish_all(&exposed));
        }
        if spec.opts.network == NetworkMode::Container && !spec.opts.ports.is_empty() {
            return Err(EngineError::PublishWithContainerNetwork);
        }
        let c = self.containers.create(CreateRequest {
            image,
            driver,
            opts: spec.opts,
        })?;
        Ok((c, pulled))
    }

    /// Anonymous volumes for the image's `VOLUME`s that no `-v`, `--mount` or `--tmpfs` covers.
    fn image_volumes(
        &self,
        image: &str,
        volumes: &mut Vec<VolumeMount>,
        security: &Security,
    ) -> Result<()> {
        let rec = match self.store()?.resolve(image) {
            Ok(rec) => rec,
            Err(StoreError::NoSuchImage(_)) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let Some(declared) = rec.config.config.as_ref().and_then(|c| c.volumes.clone()) else {
            return Ok(());
        };
        let vols = self.volumes();
        for target in declared.keys() {
            let t = target.trim_end_matches('/');
            if volumes.iter().any(|v| v.target.trim_end_matches('/') == t)
                || security
                    .tmpfs
                    .iter()
                    .any(|m| m.target.trim_end_matches('/') == t)
            {
                continue;
            }
            if !target.starts_with('/') {
                return Err(EngineError::VolumePath);
            }
            let name = vols.create(None, Default::default())?;
            volumes.push(VolumeMount {
                source: vols.data_dir(&name),
                target: target.to_string(),
                read_only: false,
                volume: Some(name),
                anonymous: true,
                nocopy: false,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::EngineOptions;
    use super::*;
    use crate::driver::DriverError;

    fn engine(root: &std::path::Path, driver: Option<&str>) -> Engine {
        Engine::new(EngineOptions {
            root: Some(root.to_path_buf()),
            runroot: Some(root.join("run")),
            storage_driver: driver.map(str::to_string),
            ..Default::default()
        })
    }

    /// `--storage-driver zfs run IMAGE`: the driver is refused before any pull is tried.
    #[test]
    fn a_bad_driver_fails_before_the_pull() {
        let t = tempfile::tempdir().unwrap();
        let e = engine(t.path(), Some("zfs"));
        let mut told = Vec::new();
        let r = e.create_container(
            ContainerSpec {
                image: "127.0.0.1:1/nothing".into(),
                ..Default::default()
            },
            PullHooks {
                options: &e.pull_options(),
                missing: &mut |shown| told.push(shown.to_string()),
                progress: &|_| {},
            },
        );
        assert!(
            matches!(r, Err(EngineError::Driver(DriverError::Unknown(_)))),
            "{:?}",
            r.err()
        );
        assert!(told.is_empty(), "{told:?}");
    }

    /// A request that fails (here: its image cannot be pulled) removes the anonymous volumes
    /// made for it and keeps named ones.
    #[test]
    fn a_failed_create_removes_its_anonymous_volumes() {
        let t = tempfile::tempdir().unwrap();
        let e = engine(t.path(), None);
        let vols = e.volumes();
        let mount = |name: String, anonymous| VolumeMount {
            source: vols.data_dir(&name),
            target: "/data".into(),
            read_only: false,
            volume: Some(name),
            anonymous,
            nocopy: false,
        };
        let anon = vols.create(None, Default::default()).unwrap();
        let named = vols.create(Some("keep"), Default::default()).unwrap();
        let mut told = Vec::new();
        let r = e.create_container(
            ContainerSpec {
                image: "127.0.0.1:1/nothing".into(),
                opts: ContainerOptions {
                    volumes: vec![mount(anon.clone(), true), mount(named.clone(), false)],
                    ..Default::default()
                },
                ..Default::default()
            },
            PullHooks {
                options: &e.pull_options(),
                missing: &mut |shown| told.push(shown.to_string()),
                progress: &|_| {},
            },
        );
        assert!(matches!(r, Err(EngineError::Pull(_))), "{:?}", r.err());
        assert_eq!(told, vec!["127.0.0.1:1/nothing:latest".to_string()]);
        assert!(vols.inspect(&anon).is_err());
        assert!(!vols.data_dir(&anon).exists());
        assert!(vols.inspect(&named).is_ok());
    }
}
