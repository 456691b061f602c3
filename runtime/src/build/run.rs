//! `RUN`: a container created and started through the runtime's normal path (same
//! confinement, the configured storage driver), its output followed through its log, its upper
//! dir diffed against the image and written as the step's layer (the pieces `commit` uses).

use std::collections::HashSet;
use std::fs::File;
use std::io::BufWriter;
use std::time::Duration;

use serde_json::Value;

use super::exec::{Builder, Event, PROXY_ARGS};
use super::instructions::{Form, RunMount};
use super::mounts::drop_mount_stubs;
use super::stage::{StageState, TempFile};
use super::{io_at, BuildError};
use crate::changes::{container_diff, write_changes_tar};
use crate::container::{
    ContainerOptions, CreateRequest, ImageSource, NetworkMode, Runtime, Status as ContainerStatus,
};

/// A RUN container: removed (with its mount) however the step ends.
struct BuildContainer<'a> {
    rt: &'a Runtime,
    id: String,
}

impl Drop for BuildContainer<'_> {
    fn drop(&mut self) {
        if let Ok(c) = self.rt.lookup(&self.id) {
            let _ = self.rt.remove(&c, true);
        }
    }
}

impl Builder<'_> {
    /// A metadata step's container, as Docker's classic builder makes one: created for the
    /// commit (never started), then removed. Returns its ID (recorded as the image's
    /// `container`).
    pub(super) fn nop_container(
        &mut self,
        st: &StageState,
        cmd: Vec<String>,
    ) -> Result<String, BuildError> {
        let layers = st.layers(self.store)?;
        let image_id = st.image.as_ref().map(|i| i.id.clone());
        let image = image_id.as_ref().map(|i| i.to_string()).unwrap_or_default();
        let cfg = st.cfg_ref();
        let s = |k: &str| match cfg.get(k) {
            Some(Value::String(v)) => v.clone(),
            _ => String::new(),
        };
        let c = self.rt.create(CreateRequest {
            image: ImageSource {
                reference: image,
                id: image_id,
                layers,
                env: st.env(),
                user: s("User"),
                working_dir: s("WorkingDir"),
                ..Default::default()
            },
            driver: self.opts.driver.clone(),
            opts: ContainerOptions {
                cmd,
                entrypoint: Some(String::new()),
                network: self.opts.network,
                runtime: crate::container::RuntimeKind::Builtin,
                ..Default::default()
            },
        })?;
        let guard = BuildContainer {
            rt: self.rt,
            id: c.id().as_str().to_string(),
        };
        let short = c.id().short().to_string();
        self.host.event(Event::Running(&short));
        drop(guard);
        self.host.event(Event::Removed(&short));
        Ok(c.id().as_str().to_string())
    }

    pub(super) fn run_step(
        &mut self,
        st: &mut StageState,
        cmd: &Form,
        network: Option<&str>,
        mounts: &[RunMount],
        stage: usize,
    ) -> Result<(), BuildError> {
        let argv = self.argv(st, cmd);
        let script = match cmd {
            Form::Script { name, body } => Some((name.as_str(), body.as_str())),
            _ => None,
        };
        let prepared = self.step_mounts(st, mounts, script, stage)?;
        // What the history shows and the cache compares: the command, a script's text, and
        // the mounts (bind sources by content).
        let mut shown: Vec<String> = prepared
            .key
            .iter()
            .map(|k| format!("--mount={k}"))
            .collect();
        shown.extend(argv.iter().cloned());
        if let Some((name, body)) = script {
            shown.push(format!("<<{name}\n{body}{name}"));
        }
        // Build args reach the command as environment (not overriding ENV), and mark the
        // history entry (`|1 A=b /bin/sh -c …`) so a changed value is a cache miss.
        let env_keys: HashSet<String> = st
            .env()
            .iter()
            .map(|e| e.split_once('=').map_or(e.clone(), |(k, _)| k.to_string()))
            .collect();
        let mut build_env: Vec<String> = st
            .args
            .iter()
            .filter(|(k, _)| !env_keys.contains(*k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let recorded: Vec<String> = build_env
            .iter()
            .filter(|e| !PROXY_ARGS.contains(&e.split('=').next().unwrap_or("")))
            .cloned()
            .collect();
        for p in PROXY_ARGS {
            if let Some(v) = self.opts.build_args.get(*p) {
                if !st.args.contains_key(*p) {
                    build_env.push(format!("{p}={v}"));
                }
            }
        }
        let (created_by, cache_cmd) = if recorded.is_empty() {
            (shown.join(" "), shown.clone())
        } else {
            let mut c = vec![format!("|{}", recorded.len())];
            c.extend(recorded.iter().cloned());
            c.extend(shown.iter().cloned());
            (c.join(" "), c)
        };
        let cc = Self::container_config(st, cache_cmd);
        if self.try_cache(st, &cc, &created_by)? {
            return Ok(());
        }
        let Some(image) = st.image.clone() else {
            return Err(BuildError::Container(
                crate::container::ContainerError::Start {
                    code: 127,
                    msg: format!(
                        "exec: \"{}\": stat {}: no such file or directory",
                        argv[0], argv[0]
                    ),
                },
            ));
        };
        let layers = self.store.layer_dirs(&image)?;
        let cfg = st.cfg_ref();
        let s = |k: &str| match cfg.get(k) {
            Some(Value::String(v)) => v.clone(),
            _ => String::new(),
        };
        let network = match network {
            Some(n) => NetworkMode::parse(n).unwrap_or(self.opts.network),
            None => self.opts.network,
        };
        let c = self.rt.create(CreateRequest {
            image: ImageSource {
                reference: image.id.to_string(),
                id: Some(image.id.clone()),
                layers: layers.clone(),
                entrypoint: None,
                cmd: None,
                env: st.env(),
                user: s("User"),
                working_dir: s("WorkingDir"),
                stop_signal: None,
                exposed_ports: Vec::new(),
                // RUN steps never run health checks.
                healthcheck: None,
                labels: Default::default(),
            },
            driver: self.opts.driver.clone(),
            opts: ContainerOptions {
                cmd: argv.clone(),
                entrypoint: Some(String::new()),
                env: build_env,
                volumes: prepared.volumes.clone(),
                security: crate::container::Security {
                    tmpfs: prepared.tmpfs.clone(),
                    ..Default::default()
                },
                network,
                runtime: crate::container::RuntimeKind::Builtin,
                ..Default::default()
            },
        })?;
        let guard = BuildContainer {
            rt: self.rt,
            id: c.id().as_str().to_string(),
        };
        let short = c.id().short().to_string();
        self.host.event(Event::Running(&short));
        self.rt.start(&c, &self.opts.launcher, false)?;
        let code = self.follow(&c)?;
        if code != 0 {
            return Err(BuildError::NonZero {
                cmd: argv.join(" "),
                code,
            });
        }
        // The upper dir, against the image and the init layer, is the step's layer.
        // (`container_diff`, as `strata diff` computes it: the same lowers, filter and vfs rule.)
        let c = self.rt.lookup(c.id().as_str())?;
        let upper = c.paths.upper();
        let changes = drop_mount_stubs(container_diff(&c)?, &prepared.targets);
        let diff = if changes.is_empty() {
            None
        } else {
            let tmp = TempFile::new(self.store, "run.tar.gz");
            let f = File::create(&tmp.0).map_err(io_at(&tmp.0))?;
            let (digests, out) = write_changes_tar(&upper, &changes, BufWriter::new(f))?;
            out.into_inner()
                .map_err(|e| io_at(&tmp.0)(e.into_error()))?;
            let f = File::open(&tmp.0).map_err(io_at(&tmp.0))?;
            let parent = image.chain_ids.last();
            let info = self.store.add_layer(f, parent, Some(&digests.diff_id))?;
            if !info.created {
                // An existing layer: leased until the step's image names it.
                self.store.hold_layer(&info.chain_id)?;
            }
            if info.created {
                let f = File::open(&tmp.0).map_err(io_at(&tmp.0))?;
                self.store.put_blob(f, Some(&digests.compressed_digest))?;
            }
            Some(info.diff_id)
        };
        let id = c.id().as_str().to_string();
        drop(guard);
        drop(prepared);
        self.host.event(Event::Removed(&short));
        self.commit(st, cc, created_by, diff, Some(&id))
    }

    /// Stream the container's output until it exits; returns its exit code.
    fn follow(&mut self, c: &crate::container::Container) -> Result<i32, BuildError> {
        let fresh = self.rt.lookup(c.id().as_str())?;
        let rt = self.rt.clone();
        let waiter = {
            let fresh = fresh.clone();
            std::thread::spawn(move || rt.wait(&fresh))
        };
        let log = fresh.paths.log();
        let mut reader = None;
        loop {
            let finished = waiter.is_finished();
            if reader.is_none() {
                reader = crate::container::logs::LogReader::open(&log).ok();
            }
            if let Some(r) = reader.as_mut() {
                for e in r.read_new().unwrap_or_default() {
                    self.host.event(Event::Output(e.log.as_bytes()));
                }
            }
            if finished {
                break;
            }
            if self.host.cancelled() {
                if let Ok(cur) = self.rt.lookup(c.id().as_str()) {
                    if cur.state.status == ContainerStatus::Running {
                        let _ = self.rt.kill(&cur, nix::sys::signal::Signal::SIGKILL);
                    }
                }
                let _ = waiter.join();
                return Err(BuildError::Cancelled);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        match waiter.join() {
            Ok(r) => Ok(r?),
            Err(_) => Err(BuildError::Cancelled),
        }
    }
}
