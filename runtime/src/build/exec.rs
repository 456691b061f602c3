//! The stage executor: builds the stages the target needs, one step at a time, each step
//! committed as an intermediate image whose parent is the previous step's image (so the cache
//! is the store's own parent/child links).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use super::copy::{self, CopyRequest, Source};
use super::ignore::{clean, Ignore};
use super::instructions::{parse_dockerfile, CopyArgs, Dockerfile, Form, Instruction, Stage, Step};
use super::shell::{process_word, process_words, Vars};
use super::stage::{expand_heredoc_line, expose_ports, go_quoted, quote, StageState, TempFile};
use super::tree::Tree;
use super::{io_at, BuildError};
use crate::container::{Launcher, NetworkMode, Runtime};
use crate::digest::{DiffId, ImageId};
use crate::reference::Reference;
use crate::store::{ImageRecord, Store};

/// Progress, for the caller to render (Docker's classic builder lines).
#[derive(Debug)]
pub enum Event<'a> {
    /// `Step 2/7 : RUN …`
    Step {
        n: usize,
        total: usize,
        text: &'a str,
    },
    /// ` ---> Using cache`
    UsingCache,
    /// ` ---> Running in <id>`
    Running(&'a str),
    /// Output of the running step.
    Output(&'a [u8]),
    /// `Removing intermediate container <id>`
    Removed(&'a str),
    /// ` ---> <id>`
    Image(&'a ImageId),
    /// `# Executing N build triggers`
    Triggers(usize),
    /// `[Warning] …`
    Warning(String),
}

/// What the executor needs from its caller: output, pulling, cancellation.
pub trait BuildHost {
    fn event(&mut self, e: Event<'_>);
    /// Pull `reference` into the store (FROM of an image that is not local, `--pull`).
    fn pull(
        &mut self,
        reference: &Reference,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// True once the user asked to stop (Ctrl-C).
    fn cancelled(&self) -> bool {
        false
    }
}

/// A build as the user asked for it.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub dockerfile: String,
    /// The context directory (a tar context is extracted by the caller first).
    pub context: PathBuf,
    /// `--build-arg` values (names without a value already looked up in the environment).
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub pull: bool,
    /// `--label`: added to the final image.
    pub labels: Vec<(String, String)>,
    pub network: NetworkMode,
    /// `--secret id=…`: what `RUN --mount=type=secret,id=…` mounts (never part of a layer
    /// or of the cache key).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// Storage driver of the RUN containers.
    pub driver: crate::driver::DriverKind,
    pub launcher: Launcher,
}

/// Docker's predefined proxy ARGs: usable without `ARG`, never recorded in the history.
pub(super) const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

pub(super) struct Builder<'a> {
    pub(super) store: &'a Store,
    pub(super) rt: &'a Runtime,
    pub(super) opts: &'a BuildOptions,
    pub(super) host: &'a mut dyn BuildHost,
    pub(super) df: Dockerfile,
    pub(super) context: Tree,
    pub(super) ignore: Ignore,
    pub(super) step: usize,
    pub(super) total: usize,
    /// Final image of each built stage (None: an empty scratch stage).
    pub(super) built: BTreeMap<usize, Option<ImageRecord>>,
    /// Meta ARGs (before the first FROM) with their values.
    pub(super) meta: Vars,
    pub(super) used_args: HashSet<String>,
    /// Images were resolved (and pulled) beforehand: never pull (stages built on threads).
    pub(super) offline: bool,
}

/// Build the Dockerfile in `opts`; returns the final image's ID (untagged: the caller tags).
pub fn build(
    store: &Store,
    rt: &Runtime,
    opts: &BuildOptions,
    host: &mut dyn BuildHost,
) -> Result<ImageId, BuildError> {
    let df = parse_dockerfile(&opts.dockerfile)?;
    let context = Tree::context(&opts.context).map_err(|e| BuildError::Fs {
        path: opts.context.display().to_string(),
        source: e,
    })?;
    let ignore = Ignore::parse(&context.read_small(".dockerignore"));
    let mut b = Builder {
        store,
        rt,
        opts,
        host,
        df,
        context,
        ignore,
        step: 0,
        total: 0,
        built: BTreeMap::new(),
        meta: Vars::new(),
        used_args: HashSet::new(),
        offline: false,
    };
    b.run()
}

impl Builder<'_> {
    pub(super) fn expand(&self, word: &str, vars: &Vars) -> Result<String, BuildError> {
        process_word(word, vars, self.df.escape).map_err(|source| BuildError::Expand {
            word: word.to_string(),
            source,
        })
    }

    pub(super) fn stage_index(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        self.df.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
            .or_else(|| name.parse::<usize>().ok().filter(|i| *i < before))
    }

    /// Stages `i` depends on (FROM another stage, COPY --from).
    pub(super) fn deps(&self, i: usize) -> Vec<usize> {
        let s = &self.df.stages[i];
        let mut out = Vec::new();
        let base = self.expand(&s.base, &self.meta).unwrap_or_default();
        if let Some(j) = self.df.stages[..i]
            .iter()
            .position(|x| x.name.as_deref() == Some(base.to_ascii_lowercase().as_str()))
        {
            out.push(j);
        }
        for step in &s.steps {
            if let Instruction::Copy(CopyArgs { from: Some(f), .. }) = &step.instruction {
                let f = self.expand(f, &self.meta).unwrap_or_else(|_| f.clone());
                if let Some(j) = self.stage_index(&f, i) {
                    out.push(j);
                }
            }
        }
        out
    }

    fn run(&mut self) -> Result<ImageId, BuildError> {
        // Meta ARGs: defaults, overridden by --build-arg.
        for (k, v) in self.df.meta_args.clone() {
            let value = match self.opts.build_args.get(&k) {
                Some(b) => Some(b.clone()),
                None => match v {
                    Some(v) => Some(self.expand(&v, &self.meta.clone())?),
                    None => None,
                },
            };
            self.used_args.insert(k.clone());
            if let Some(v) = value {
                self.meta.insert(k, v);
            }
        }
        let target = match &self.opts.target {
            Some(t) => self
                .df
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .ok_or_else(|| BuildError::NoTarget(t.clone()))?,
            None => self.df.stages.len() - 1,
        };
        // The stages the target needs, built in Dockerfile order.
        let mut needed = HashSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if needed.insert(i) {
                todo.extend(self.deps(i));
            }
        }
        let mut order: Vec<usize> = needed.into_iter().collect();
        order.sort_unstable();
        self.total = order
            .iter()
            .map(|i| 1 + self.df.stages[*i].steps.len())
            .sum::<usize>()
            + usize::from(!self.opts.labels.is_empty());
        // Waves of stages whose dependencies are built; a wave of several builds in parallel.
        // Steps are numbered in the order their output is shown: wave by wave.
        let waves = super::parallel::waves(&order, |i| self.deps(i));
        let mut offset = 0;
        for wave in waves {
            let mut offsets = Vec::with_capacity(wave.len());
            for i in &wave {
                offsets.push(offset);
                offset += 1 + self.df.stages[*i].steps.len();
                if *i == target && !self.opts.labels.is_empty() {
                    offset += 1;
                }
            }
            if wave.len() == 1 {
                self.step = offsets[0];
                let img = self.build_stage(wave[0], target)?;
                self.built.insert(wave[0], img);
            } else {
                super::parallel::build_wave(self, &wave, &offsets, target)?;
            }
        }
        let unused: Vec<&String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            self.host.event(Event::Warning(format!(
                "One or more build-args [{}] were not consumed",
                names.join(" ")
            )));
        }
        match self.built.get(&target) {
            Some(Some(img)) => Ok(img.id.clone()),
            _ => Err(BuildError::NoImage),
        }
    }

    /// Build stage `i` (its FROM, its steps, and the `--label`s when it is the target); returns
    /// its final image.
    pub(super) fn build_stage(
        &mut self,
        i: usize,
        target: usize,
    ) -> Result<Option<ImageRecord>, BuildError> {
        let stage = self.df.stages[i].clone();
        let mut st = self.from(i, &stage)?;
        for step in &stage.steps {
            if self.host.cancelled() {
                return Err(BuildError::Cancelled);
            }
            self.step += 1;
            self.host.event(Event::Step {
                n: self.step,
                total: self.total,
                text: &step.original,
            });
            self.dispatch(&mut st, step, i)?;
        }
        if i == target && !self.opts.labels.is_empty() {
            let text = self
                .opts
                .labels
                .iter()
                .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
                .collect::<Vec<_>>()
                .join(" ");
            let text = format!("LABEL {text}");
            self.step += 1;
            self.host.event(Event::Step {
                n: self.step,
                total: self.total,
                text: &text,
            });
            let labels = self.opts.labels.clone();
            self.set_labels(&mut st, &labels);
            self.meta_commit(&mut st, text)?;
        }
        Ok(st.image)
    }

    /// The files of `--from=NAME` (COPY, RUN --mount): an earlier stage of this build (empty for
    /// a stage from scratch), else an image, pulled when missing.
    pub(super) fn tree_of_from(&mut self, name: &str, stage: usize) -> Result<Tree, BuildError> {
        let img = match self.stage_index(name, stage) {
            Some(j) => self.built.get(&j).cloned().flatten(),
            None => Some(self.image_for(name)?),
        };
        let layers = match &img {
            Some(i) => self.store.layer_dirs(i)?,
            None => Vec::new(),
        };
        Tree::image(&layers).map_err(|e| BuildError::Fs {
            path: name.to_string(),
            source: e,
        })
    }

    /// Resolve a reference in the store, pulling it when missing (or always with `--pull`).
    pub(super) fn image_for(&mut self, name: &str) -> Result<ImageRecord, BuildError> {
        if !self.opts.pull || self.offline {
            if let Ok(img) = self.store.resolve(name) {
                return Ok(img);
            }
        }
        let r = Reference::parse_with_default_tag(name)?;
        self.host
            .pull(&r)
            .map_err(|source| BuildError::Pull { source })?;
        Ok(self.store.resolve(name)?)
    }

    fn from(&mut self, i: usize, stage: &Stage) -> Result<StageState, BuildError> {
        self.step += 1;
        self.host.event(Event::Step {
            n: self.step,
            total: self.total,
            text: &stage.original,
        });
        let base = self.expand(&stage.base, &self.meta.clone())?;
        if let Some(p) = &stage.platform {
            let p = self.expand(p, &self.meta.clone())?;
            if p != "linux/amd64" {
                return Err(BuildError::Instruction {
                    line: stage.line,
                    msg: format!("no match for platform in manifest: {p}: not found"),
                });
            }
        }
        let from_stage = self.df.stages[..i]
            .iter()
            .position(|s| s.name.as_deref() == Some(base.to_ascii_lowercase().as_str()));
        let image = if let Some(j) = from_stage {
            self.built.get(&j).cloned().flatten()
        } else if base == "scratch" {
            None
        } else {
            Some(self.image_for(&base)?)
        };
        let mut st = match image {
            None => StageState::scratch(),
            Some(img) => {
                let bytes = self.store.read_blob(img.id.digest())?;
                let config: Map<String, Value> = serde_json::from_slice(&bytes)
                    .map_err(|e| BuildError::Store(crate::store::StoreError::InvalidConfig(e)))?;
                self.host.event(Event::Image(&img.id));
                StageState {
                    image: Some(img),
                    config,
                    args: Vars::new(),
                    cmd_set: false,
                }
            }
        };
        // ONBUILD triggers of the base image run first, then are not inherited.
        let triggers = st.strings("OnBuild");
        if !triggers.is_empty() {
            self.host.event(Event::Triggers(triggers.len()));
            st.cfg().remove("OnBuild");
            for t in triggers {
                let parsed = super::parser::parse(&t)?;
                for line in parsed.lines {
                    let instruction = super::instructions::instruction(&line, self.df.escape)?;
                    let step = Step {
                        line: stage.line,
                        original: line.original.clone(),
                        instruction,
                    };
                    self.dispatch(&mut st, &step, i)?;
                }
            }
        }
        Ok(st)
    }

    fn dispatch(
        &mut self,
        st: &mut StageState,
        step: &Step,
        stage: usize,
    ) -> Result<(), BuildError> {
        let vars = st.vars();
        let line = step.line;
        let bad = |msg: String| BuildError::Instruction { line, msg };
        match &step.instruction {
            Instruction::Arg(list) => {
                let mut text = Vec::new();
                for (k, dflt) in list {
                    self.used_args.insert(k.clone());
                    let value = match (self.opts.build_args.get(k), dflt) {
                        (Some(b), _) => Some(b.clone()),
                        (None, Some(d)) => Some(self.expand(d, &vars)?),
                        (None, None) => self.meta.get(k).cloned(),
                    };
                    match dflt {
                        Some(d) => text.push(format!("{k}={d}")),
                        None => text.push(k.clone()),
                    }
                    if let Some(v) = value {
                        st.args.insert(k.clone(), v);
                    }
                }
                self.meta_commit(st, format!("ARG {}", text.join(" ")))
            }
            Instruction::Env(pairs) => {
                let mut text = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(k, &vars)?;
                    let v = self.expand(v, &vars)?;
                    if k.is_empty() {
                        return Err(bad("ENV names can not be blank".into()));
                    }
                    st.set_env(&k, &v);
                    text.push(format!("{k}={v}"));
                }
                self.meta_commit(st, format!("ENV {}", text.join(" ")))
            }
            Instruction::Label(pairs) => {
                let mut kv = Vec::new();
                for (k, v) in pairs {
                    kv.push((self.expand(k, &vars)?, self.expand(v, &vars)?));
                }
                self.set_labels(st, &kv);
                let text: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
                self.meta_commit(st, format!("LABEL {}", text.join(" ")))
            }
            Instruction::Maintainer(m) => {
                st.config.insert("author".into(), json!(m));
                self.meta_commit(st, format!("MAINTAINER {m}"))
            }
            Instruction::Cmd(form) => {
                let v = self.argv(st, form);
                st.cfg().insert("Cmd".into(), json!(v));
                st.cmd_set = true;
                self.meta_commit(st, format!("CMD {}", go_quoted(&v)))
            }
            Instruction::Entrypoint(form) => {
                let v = self.argv(st, form);
                st.cfg().insert("Entrypoint".into(), json!(v));
                if !st.cmd_set {
                    st.cfg().insert("Cmd".into(), Value::Null);
                }
                self.meta_commit(st, format!("ENTRYPOINT {}", go_quoted(&v)))
            }
            Instruction::Expose(raw) => {
                let words = process_words(raw, &vars, self.df.escape).map_err(|source| {
                    BuildError::Expand {
                        word: raw.clone(),
                        source,
                    }
                })?;
                let mut ports = match st.cfg_ref().get("ExposedPorts") {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                for w in &words {
                    for p in
                        expose_ports(w).ok_or_else(|| bad(format!("invalid containerPort: {w}")))?
                    {
                        ports.insert(p, json!({}));
                    }
                }
                st.cfg().insert("ExposedPorts".into(), Value::Object(ports));
                self.meta_commit(st, format!("EXPOSE {}", words.join(" ")))
            }
            Instruction::Volume(list, _) => {
                let mut vols = match st.cfg_ref().get("Volumes") {
                    Some(Value::Object(m)) => m.clone(),
                    _ => Map::new(),
                };
                let mut added = Vec::new();
                for v in list {
                    let v = self.expand(v, &vars)?;
                    if v.trim().is_empty() {
                        return Err(bad("VOLUME specified can not be an empty string".into()));
                    }
                    vols.insert(v.clone(), json!({}));
                    added.push(v);
                }
                st.cfg().insert("Volumes".into(), Value::Object(vols));
                self.meta_commit(st, format!("VOLUME [{}]", added.join(" ")))
            }
            Instruction::User(u) => {
                let u = self.expand(u, &vars)?;
                st.cfg().insert("User".into(), json!(u));
                self.meta_commit(st, format!("USER {u}"))
            }
            Instruction::StopSignal(s) => {
                let s = self.expand(s, &vars)?;
                crate::container::parse_signal(&s)
                    .map_err(|_| bad(format!("Invalid signal: {s}")))?;
                st.cfg().insert("StopSignal".into(), json!(s));
                self.meta_commit(st, format!("STOPSIGNAL {s}"))
            }
            Instruction::Healthcheck(h) => {
                let mut m = Map::new();
                m.insert("Test".into(), json!(h.test));
                for (k, v) in [
                    ("Interval", h.interval),
                    ("Timeout", h.timeout),
                    ("StartPeriod", h.start_period),
                    ("StartInterval", h.start_interval),
                    ("Retries", h.retries),
                ] {
                    if v != 0 {
                        m.insert(k.into(), json!(v));
                    }
                }
                st.cfg().insert("Healthcheck".into(), Value::Object(m));
                self.meta_commit(st, format!("HEALTHCHECK {}", go_quoted(&h.test)))
            }
            Instruction::Shell(v) => {
                st.cfg().insert("Shell".into(), json!(v));
                self.meta_commit(st, format!("SHELL [{}]", v.join(" ")))
            }
            Instruction::Onbuild(t) => {
                let mut list = st.strings("OnBuild");
                list.push(t.clone());
                st.cfg().insert("OnBuild".into(), json!(list));
                self.meta_commit(st, format!("ONBUILD {t}"))
            }
            Instruction::Workdir(w) => self.workdir(st, w, &vars),
            Instruction::Run {
                cmd,
                network,
                mounts,
            } => self.run_step(st, cmd, network.as_deref(), mounts, stage),
            Instruction::Copy(args) => self.copy_step(st, args, false, stage, &vars),
            Instruction::Add(args) => self.copy_step(st, args, true, stage, &vars),
        }
    }

    pub(super) fn argv(&self, st: &StageState, form: &Form) -> Vec<String> {
        match form {
            Form::Exec(v) => v.clone(),
            Form::Script { name, .. } => vec![format!("/dev/pipes/{name}")],
            Form::Shell(s) => {
                let mut v = st.shell();
                v.push(s.clone());
                v
            }
        }
    }

    fn set_labels(&self, st: &mut StageState, kv: &[(String, String)]) {
        let mut labels = match st.cfg_ref().get("Labels") {
            Some(Value::Object(m)) => m.clone(),
            _ => Map::new(),
        };
        for (k, v) in kv {
            labels.insert(k.clone(), json!(v));
        }
        st.cfg().insert("Labels".into(), Value::Object(labels));
    }

    /// The container config recorded with a step (`container_config`), the cache's key.
    pub(super) fn container_config(st: &mut StageState, cmd: Vec<String>) -> Value {
        let mut cc = st.cfg_ref();
        cc.insert("Cmd".into(), json!(cmd));
        Value::Object(cc)
    }

    /// A metadata step: no layer, a `#(nop)` history entry.
    fn meta_commit(&mut self, st: &mut StageState, text: String) -> Result<(), BuildError> {
        let shell = st.shell().join(" ");
        let created_by = format!("{shell} #(nop)  {text}");
        let mut cmd = st.shell();
        cmd.push(format!("#(nop) {text}"));
        let cc = Self::container_config(st, cmd.clone());
        if self.try_cache(st, &cc, &created_by)? {
            return Ok(());
        }
        let container = self.nop_container(st, cmd)?;
        self.commit(st, cc, created_by, None, Some(&container))
    }

    /// Reuse a child of the current image made by the same step, unless `--no-cache`.
    pub(super) fn try_cache(
        &mut self,
        st: &mut StageState,
        cc: &Value,
        created_by: &str,
    ) -> Result<bool, BuildError> {
        if self.opts.no_cache {
            return Ok(false);
        }
        let candidates: Vec<ImageId> = match &st.image {
            Some(img) => self.store.children(&img.id)?,
            None => self
                .store
                .images()?
                .into_iter()
                .filter(|i| i.parent.is_none())
                .map(|i| i.id)
                .collect(),
        };
        for id in candidates {
            let Ok(rec) = self.store.image(&id) else {
                continue;
            };
            let same_cmd = rec.config.container_config.as_ref() == Some(cc);
            let same_step = rec
                .config
                .history
                .last()
                .and_then(|h| h.created_by.as_deref())
                == Some(created_by);
            if same_cmd && same_step && self.store.layer_dirs(&rec).is_ok() {
                let bytes = self.store.read_blob(rec.id.digest())?;
                st.config = serde_json::from_slice(&bytes)
                    .map_err(|e| BuildError::Store(crate::store::StoreError::InvalidConfig(e)))?;
                self.host.event(Event::UsingCache);
                self.host.event(Event::Image(&rec.id));
                st.image = Some(rec);
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Register the step's image: the stage's config plus the history entry and the layer.
    pub(super) fn commit(
        &mut self,
        st: &mut StageState,
        cc: Value,
        created_by: String,
        diff: Option<DiffId>,
        container: Option<&str>,
    ) -> Result<(), BuildError> {
        let created = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let mut img = st.config.clone();
        img.insert("created".into(), json!(created));
        img.insert("container_config".into(), cc);
        match container {
            Some(c) => img.insert("container".into(), json!(c)),
            None => img.remove("container"),
        };
        img.insert(
            "docker_version".into(),
            json!(concat!("strata-", env!("CARGO_PKG_VERSION"))),
        );
        let mut entry = Map::new();
        entry.insert("created".into(), json!(created));
        entry.insert("created_by".into(), json!(created_by));
        if diff.is_none() {
            entry.insert("empty_layer".into(), json!(true));
        }
        let rootfs = img
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
        if let (Some(d), Value::Object(r)) = (&diff, rootfs) {
            if let Value::Array(ids) = r.entry("diff_ids").or_insert_with(|| json!([])) {
                ids.push(json!(d.as_str()));
            }
        }
        let history = img.entry("history").or_insert_with(|| json!([]));
        if !history.is_array() {
            *history = json!([]);
        }
        if let Value::Array(h) = history {
            h.push(Value::Object(entry));
        }
        let bytes = serde_json::to_vec(&Value::Object(img.clone()))
            .map_err(|e| BuildError::Store(crate::store::StoreError::InvalidConfig(e)))?;
        let parent = st.image.as_ref().map(|i| i.id.clone());
        let id = self.store.add_image(&bytes, &[], parent.as_ref())?;
        st.image = Some(self.store.image(&id)?);
        st.config = img;
        self.host.event(Event::Image(&id));
        Ok(())
    }

    /// Add an uncompressed layer tar in `tmp` on the stage's top layer.
    fn add_layer(&self, st: &StageState, tmp: &Path) -> Result<DiffId, BuildError> {
        let f = File::open(tmp).map_err(io_at(tmp))?;
        let parent = st.image.as_ref().and_then(|i| i.chain_ids.last());
        let info = self.store.add_layer(f, parent, None)?;
        if !info.created {
            // An existing layer: leased until the step's image names it (a concurrent
            // prune could otherwise take it).
            self.store.hold_layer(&info.chain_id)?;
        }
        Ok(info.diff_id)
    }

    fn workdir(&mut self, st: &mut StageState, w: &str, vars: &Vars) -> Result<(), BuildError> {
        let w = self.expand(w, vars)?;
        let path = if w.starts_with('/') {
            format!("/{}", clean(&w))
        } else {
            format!("/{}", clean(&format!("{}/{w}", st.workdir())))
        };
        st.cfg().insert("WorkingDir".into(), json!(path));
        let shell = st.shell().join(" ");
        let created_by = format!("{shell} #(nop) WORKDIR {path}");
        let mut cmd = st.shell();
        cmd.push(format!("#(nop) WORKDIR {path}"));
        let cc = Self::container_config(st, cmd.clone());
        if self.try_cache(st, &cc, &created_by)? {
            return Ok(());
        }
        // As the classic builder, the step has its (never started) container.
        let container = self.nop_container(st, cmd)?;
        // Docker creates a missing working directory (a layer with just that directory).
        let layers = st.layers(self.store)?;
        let exists = if layers.is_empty() {
            false
        } else {
            let tree = Tree::image(&layers).map_err(|e| BuildError::Fs {
                path: path.clone(),
                source: e,
            })?;
            matches!(tree.resolve(&path, true), Ok(Some((_, Some(n)))) if n.is_dir())
        };
        if exists || path == "/" {
            return self.commit(st, cc, created_by, None, Some(&container));
        }
        let image_tree = if layers.is_empty() {
            None
        } else {
            Tree::image(&layers).ok()
        };
        let empty = tempfile::Builder::new()
            .prefix(&format!("{}-workdir-", std::process::id()))
            .tempdir_in(self.store.root().join("tmp"))
            .map_err(io_at(self.store.root().join("tmp")))?;
        let ctx = Tree::context(empty.path()).map_err(|e| BuildError::Fs {
            path: empty.path().display().to_string(),
            source: e,
        })?;
        let ignore = Ignore::default();
        let req = CopyRequest {
            instr: "WORKDIR",
            srcs: vec![".".into()],
            heredocs: Vec::new(),
            dest: format!("{path}/"),
            source: Source::Context {
                tree: &ctx,
                ignore: &ignore,
            },
            image: image_tree.as_ref(),
            owner: None,
            chmod: Some(0o755),
            add: false,
            checksum: None,
            tmp: self.store.root().join("tmp"),
        };
        let plan = copy::plan(&req)?;
        let tmp = TempFile::new(self.store, "workdir.tar");
        let f = File::create(&tmp.0).map_err(io_at(&tmp.0))?;
        copy::write_tar(&plan, BufWriter::new(f))?;
        let diff = self.add_layer(st, &tmp.0)?;
        self.commit(st, cc, created_by, Some(diff), Some(&container))
    }

    fn copy_step(
        &mut self,
        st: &mut StageState,
        args: &CopyArgs,
        add: bool,
        stage: usize,
        vars: &Vars,
    ) -> Result<(), BuildError> {
        let instr = if add { "ADD" } else { "COPY" };
        let mut srcs = Vec::new();
        for s in &args.srcs {
            srcs.push(self.expand(s, vars)?);
        }
        let mut heredocs = Vec::new();
        for h in &args.heredocs {
            let content = if h.expand {
                // Heredoc bodies are expanded like a double-quoted string would be.
                let mut out = String::new();
                for (i, l) in h.content.split('\n').enumerate() {
                    if i > 0 {
                        out.push('\n');
                    }
                    out.push_str(&expand_heredoc_line(l, vars));
                }
                out
            } else {
                h.content.clone()
            };
            heredocs.push((h.name.clone(), content));
        }
        let dest_raw = self.expand(&args.dest, vars)?;
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            let wd = st.workdir();
            format!("{}/{dest_raw}", wd.trim_end_matches('/'))
        };
        let layers = st.layers(self.store)?;
        let image_tree = if layers.is_empty() {
            None
        } else {
            Some(Tree::image(&layers).map_err(|e| BuildError::Fs {
                path: dest.clone(),
                source: e,
            })?)
        };
        let owner = match &args.chown {
            Some(c) => Some(copy::parse_chown(
                &self.expand(c, vars)?,
                image_tree.as_ref(),
            )?),
            None => None,
        };
        let chmod = args.chmod;
        // --from: another stage, else an image.
        let from_tree;
        let source = match &args.from {
            Some(f) => {
                let f = self.expand(f, vars)?;
                from_tree = self.tree_of_from(&f, stage)?;
                Source::Image(&from_tree)
            }
            None => Source::Context {
                tree: &self.context,
                ignore: &self.ignore,
            },
        };
        let req = CopyRequest {
            instr,
            srcs,
            heredocs,
            dest: dest.clone(),
            source,
            image: image_tree.as_ref(),
            owner,
            chmod,
            add,
            checksum: args.checksum.clone(),
            tmp: self.store.root().join("tmp"),
        };
        let plan = copy::plan(&req)?;
        let shell = st.shell().join(" ");
        let text = format!("{instr} {} in {dest_raw} ", plan.digest);
        let created_by = format!("{shell} #(nop) {text}");
        let mut cmd = st.shell();
        cmd.push(format!("#(nop) {text}"));
        let cc = Self::container_config(st, cmd);
        if self.try_cache(st, &cc, &created_by)? {
            return Ok(());
        }
        if plan.is_empty() {
            return self.commit(st, cc, created_by, None, None);
        }
        let tmp = TempFile::new(self.store, "copy.tar");
        let f = File::create(&tmp.0).map_err(io_at(&tmp.0))?;
        copy::write_tar(&plan, BufWriter::new(f))?;
        drop(plan);
        let diff = self.add_layer(st, &tmp.0)?;
        self.commit(st, cc, created_by, Some(diff), None)
    }
}
