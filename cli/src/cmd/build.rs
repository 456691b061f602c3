//! `strata build` / `strata image build`: Docker's classic builder output over
//! `strata_runtime::build`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context};
use strata_runtime::build::{self, BuildHost, BuildOptions, Event};
use strata_runtime::container::NetworkMode;
use strata_runtime::reference::Reference;

use super::{ExitStatus, Global};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Name and optionally a tag in the "name:tag" format
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Name of the Dockerfile (default: "PATH/Dockerfile"); "-" reads it from STDIN
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Set build-time variables
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Secret to expose to the build (format: "id=mysecret[,src=/local/secret]" or "id=TOKEN,env=VAR")
    #[arg(long)]
    pub secret: Vec<String>,
    /// Set the target build stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// Do not use cache when building the image
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Always attempt to pull a newer version of the image
    #[arg(long)]
    pub pull: bool,
    /// Set metadata for an image
    #[arg(long)]
    pub label: Vec<String>,
    /// Suppress the build output and print image ID on success
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Write the image ID to the file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Set the networking mode for the RUN instructions during build: default, host, none
    #[arg(long, default_value = "default")]
    pub network: String,
    /// Set type of progress output (auto, plain, tty)
    #[arg(long)]
    pub progress: Option<String>,
    /// Set platform if server is multi-platform capable
    #[arg(long)]
    pub platform: Option<String>,
    /// Remove intermediate containers after a successful build (always done)
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub rm: Option<bool>,
    /// Always remove intermediate containers (always done)
    #[arg(long = "force-rm")]
    pub force_rm: bool,
    /// Build context: a directory, or "-" for a tar (or a lone Dockerfile) on STDIN
    pub context: String,
}

/// Prints Docker's classic builder lines; pulls through `strata pull`'s renderer.
struct Host<'a> {
    global: &'a Global,
    quiet: bool,
    cancelled: Arc<AtomicBool>,
    out: std::io::Stdout,
}

impl BuildHost for Host<'_> {
    fn event(&mut self, e: Event<'_>) {
        if self.quiet {
            if let Event::Warning(w) = e {
                eprintln!("[Warning] {w}");
            }
            return;
        }
        let mut o = self.out.lock();
        let _ = match e {
            Event::Step { n, total, text } => writeln!(o, "Step {n}/{total} : {text}"),
            Event::UsingCache => writeln!(o, " ---> Using cache"),
            Event::Running(id) => writeln!(o, " ---> Running in {id}"),
            Event::Output(bytes) => o.write_all(bytes),
            Event::Removed(id) => writeln!(o, "Removing intermediate container {id}"),
            Event::Image(id) => writeln!(o, " ---> {}", id.short()),
            Event::Triggers(n) => {
                let s = if n == 1 { "" } else { "s" };
                writeln!(o, "# Executing {n} build trigger{s}")
            }
            Event::Warning(w) => writeln!(o, "[Warning] {w}"),
        };
        let _ = o.flush();
    }

    fn pull(
        &mut self,
        reference: &Reference,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        super::pull::pull_for_run(self.global, reference)
            .map(|_| ())
            .map_err(|e| e.to_string().into())
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// Ctrl-C, SIGTERM and SIGHUP set the flag; the build then stops and cleans up.
fn cancel_on_signals() -> Arc<AtomicBool> {
    use nix::sys::signal::{SigSet, Signal};
    let flag = Arc::new(AtomicBool::new(false));
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_ok() {
        let f = flag.clone();
        let _ = std::thread::Builder::new()
            .name("build-cancel".into())
            .spawn(move || loop {
                if set.wait().is_ok() {
                    f.store(true, Ordering::Relaxed);
                }
            });
    }
    flag
}

fn parse_kv(list: &[String], from_env: bool) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for a in list {
        match a.split_once('=') {
            Some((k, v)) => {
                out.insert(k.to_string(), v.to_string());
            }
            None if from_env => {
                if let Ok(v) = std::env::var(a) {
                    out.insert(a.clone(), v);
                }
            }
            None => {
                out.insert(a.clone(), String::new());
            }
        }
    }
    out
}

/// `--secret id=ID[,src=FILE|,env=VAR][,type=file|env]`, as buildx reads it: no source means
/// the environment variable named ID if it is set, else the file ID.
fn parse_secrets(list: &[String]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    for spec in list {
        let (mut id, mut src, mut env, mut kind) = (None, None, None, None);
        for f in spec.split(',') {
            match f.split_once('=') {
                Some(("id", v)) => id = Some(v.to_string()),
                Some(("src" | "source", v)) => src = Some(v.to_string()),
                Some(("env", v)) => env = Some(v.to_string()),
                Some(("type", v)) if v == "file" || v == "env" => kind = Some(v.to_string()),
                _ => bail!("invalid secret spec {spec:?}: unexpected field {f:?}"),
            }
        }
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            bail!("invalid secret spec {spec:?}: id is required");
        };
        let from_env = |var: &str| std::env::var_os(var).map(|v| v.into_encoded_bytes());
        let value = match (src, env, kind.as_deref()) {
            (Some(path), _, _) => read_secret(&path)?,
            (None, Some(var), _) => from_env(&var).ok_or_else(|| {
                anyhow::anyhow!("secret {id}: environment variable {var} is not set")
            })?,
            (None, None, Some("env")) => from_env(&id).ok_or_else(|| {
                anyhow::anyhow!("secret {id}: environment variable {id} is not set")
            })?,
            (None, None, Some(_)) => read_secret(&id)?,
            (None, None, None) => match from_env(&id) {
                Some(v) => v,
                None => read_secret(&id)?,
            },
        };
        out.insert(id, value);
    }
    Ok(out)
}

fn read_secret(path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("failed to read secret {path}: {}", io_text(&e)))
}

/// A context read from STDIN: a tar (plain/gzip/zstd) extracted into a temp dir, or a lone
/// Dockerfile (an empty context).
fn stdin_context(tmp: &Path) -> anyhow::Result<Option<String>> {
    let mut data = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut data)
        .context("reading the build context from STDIN")?;
    let mut head = Vec::new();
    strata_runtime::store::decompress(&data[..])
        .and_then(|mut r| r.by_ref().take(512).read_to_end(&mut head))
        .ok();
    let is_tar = head.len() == 512 && &head[257..262] == b"ustar";
    if !is_tar {
        return Ok(Some(String::from_utf8_lossy(&data).into_owned()));
    }
    build::extract_context(&data[..], tmp)?;
    Ok(None)
}

/// Go's text for an I/O error, as Docker prints it.
fn io_text(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        _ => e.to_string(),
    }
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    match build_image(global, args) {
        Ok(()) => Ok(()),
        Err(e) if e.downcast_ref::<ExitStatus>().is_some() => Err(e),
        Err(e) => {
            eprintln!("Error: {}", super::one_line(&e));
            Err(ExitStatus(1).into())
        }
    }
}

fn build_image(global: &Global, args: Args) -> anyhow::Result<()> {
    let mut refs = Vec::new();
    for t in &args.tags {
        let r = Reference::parse_with_default_tag(t).map_err(|_| {
            anyhow::anyhow!(
                "invalid argument \"{t}\" for \"-t, --tag\" flag: invalid reference format"
            )
        })?;
        refs.push(r);
    }
    if let Some(p) = &args.platform {
        if p != "linux/amd64" && p != "linux" {
            bail!("no match for platform in manifest: {p}: not found");
        }
    }
    if let Some(p) = &args.progress {
        if !matches!(p.as_str(), "auto" | "plain" | "tty" | "quiet" | "rawjson") {
            bail!("invalid progress mode {p:?}");
        }
    }
    // `default` is whatever `run` uses by default (the runtime decides).
    let network = NetworkMode::parse(&args.network).ok_or_else(|| {
        anyhow::anyhow!(
            "network mode {:?} not supported by strata build (default, host, none)",
            args.network
        )
    })?;
    // Docker removes a stale ID file first, so a failed build never leaves an old ID behind.
    let iid = match &args.iidfile {
        Some(p) => {
            strata_runtime::outfile::validate(p)?;
            if p.is_file() {
                std::fs::remove_file(p)
                    .with_context(|| format!("removing stale iidfile {}", p.display()))?;
            }
            Some(p.clone())
        }
        None => None,
    };

    // The context and the Dockerfile.
    let engine = global.engine();
    let tmp_ctx = engine
        .scratch_dir("context")
        .context("creating the build context directory")?;
    let (context, stdin_dockerfile) = if args.context == "-" {
        if args.file.as_deref() == Some("-") {
            bail!("invalid argument: can't use stdin for both build context and dockerfile");
        }
        (tmp_ctx.path().to_path_buf(), stdin_context(tmp_ctx.path())?)
    } else {
        let p = PathBuf::from(&args.context);
        if !p.is_dir() {
            bail!(
                "unable to prepare context: path {:?} not found",
                args.context
            );
        }
        (p, None)
    };
    let dockerfile = match (stdin_dockerfile, args.file.as_deref()) {
        (Some(text), None) => text,
        (_, Some("-")) => {
            let mut s = String::new();
            std::io::stdin()
                .lock()
                .read_to_string(&mut s)
                .context("reading the Dockerfile from STDIN")?;
            s
        }
        (_, Some(f)) => {
            let path = if args.context == "-" && !Path::new(f).is_absolute() {
                context.join(f)
            } else {
                PathBuf::from(f)
            };
            std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {}: {}",
                    std::path::absolute(&path).unwrap_or(path.clone()).display(),
                    io_text(&e)
                )
            })?
        }
        (None, None) => {
            let main = context.join("Dockerfile");
            let alt = context.join("dockerfile");
            match std::fs::read_to_string(&main).or_else(|_| std::fs::read_to_string(&alt)) {
                Ok(t) => t,
                Err(e) => bail!(
                    "unable to prepare context: unable to evaluate symlinks in Dockerfile path: lstat {}: {}",
                    std::path::absolute(&main).unwrap_or(main.clone()).display(),
                    io_text(&e)
                ),
            }
        }
    };
    // RUN steps get no STDIN (the context or Dockerfile may have come from it).
    if let Ok(null) = std::fs::File::open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(null);
    }

    let cancelled = cancel_on_signals();
    let opts = BuildOptions {
        dockerfile,
        context,
        build_args: parse_kv(&args.build_args, true),
        secrets: parse_secrets(&args.secret)?,
        target: args.target.clone(),
        no_cache: args.no_cache,
        pull: args.pull,
        labels: parse_kv(&args.label, false).into_iter().collect(),
        network,
        driver: super::run::driver_name(global)?,
        launcher: super::run::launcher(global)?,
    };
    let mut host = Host {
        global,
        quiet: args.quiet,
        cancelled,
        out: std::io::stdout(),
    };
    let id = engine.build(&opts, &mut host)?;
    let mut out = std::io::stdout().lock();
    if args.quiet {
        writeln!(out, "{id}")?;
    } else {
        writeln!(out, "Successfully built {}", id.short())?;
    }
    for r in &refs {
        engine.store()?.tag(&id, r)?;
        if !args.quiet {
            writeln!(out, "Successfully tagged {}", r.familiar())?;
        }
    }
    if let Some(p) = iid {
        let mut f = strata_runtime::outfile::OutputFile::create(&p, 0o644)?;
        f.file().write_all(id.to_string().as_bytes())?;
        f.commit()?;
    }
    Ok(())
}
