//! `strata run`, plus what the container verbs share: the runtime handle, the supervisor
//! launcher, the hidden `__supervise` verb and the terminal raw-mode guard.

use std::path::PathBuf;

use anyhow::Context;
use strata_runtime::container::{
    self, ports, ContainerOptions, Launcher, NetworkMode, Runtime, Security, VolumeMount,
};
use strata_runtime::engine::{ContainerSpec, PullHooks};

use super::{ExitStatus, Global, EXIT_TOOL_ERROR};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run container in background and print container ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Pull a missing image lazily (see `pull --lazy`; the default with `STRATA_LAZY_PULL=1` or
    /// `"lazy-pull": true` in strata.json)
    #[arg(long)]
    pub lazy: bool,
    /// Keep STDIN open even if not attached
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Automatically remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Assign a name to the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>])
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Publish a container's port(s) to the host
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Bind mount a volume (HOST-DIR:CONTAINER-DIR[:ro], VOLUME:CONTAINER-DIR[:ro,nocopy])
    #[arg(short = 'v', long = "volume")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container (type=bind|volume|tmpfs,source=,target=,…)
    #[arg(long = "mount")]
    pub mount: Vec<String>,
    /// Mount volumes from the specified container(s) (CONTAINER[:ro|:rw])
    #[arg(long = "volumes-from")]
    pub volumes_from: Vec<String>,
    /// Restart policy to apply when a container exits (no, on-failure[:max-retries], always, unless-stopped)
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// Run an init inside the container that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Container host name
    #[arg(long)]
    pub hostname: Option<String>,
    /// Container NIS domain name
    #[arg(long)]
    pub domainname: Option<String>,
    /// Tune host's OOM preferences (-1000 to 1000)
    #[arg(long = "oom-score-adj", allow_hyphen_values = true)]
    pub oom_score_adj: Option<i32>,
    /// Connect a container to a network: bridge (default), a user network, host, none,
    /// container:NAME
    #[arg(long = "network", alias = "net", default_value = "bridge")]
    pub network: String,
    #[command(flatten)]
    pub net: super::network::RunNetArgs,
    #[command(flatten)]
    pub health: super::health::HealthArgs,
    #[command(flatten)]
    pub create: super::create::CreateOptArgs,
    #[command(flatten)]
    pub runopts: super::run_opts::RunOptArgs,
    #[command(flatten)]
    pub limits: super::limits::LimitArgs,
    /// Runtime to use for this container: builtin (default) or an OCI runtime such as runc
    #[arg(long, default_value = "builtin")]
    pub runtime: String,
    /// Timeout (in seconds) to stop a container
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u64>,
    /// Give extended privileges to this container
    #[arg(long)]
    pub privileged: bool,
    /// Add Linux capabilities
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Security Options (seccomp=unconfined|PROFILE.json, no-new-privileges)
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Add a host device to the container (/dev/X[:/dev/Y][:rwm])
    #[arg(long = "device")]
    pub device: Vec<String>,
    /// Add a rule to the cgroup allowed devices list ('TYPE MAJOR:MINOR ACCESS', e.g. 'c 42:* rmw')
    #[arg(long = "device-cgroup-rule")]
    pub device_cgroup_rule: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Mount a tmpfs directory (PATH[:OPTIONS])
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// The image to run
    pub image: String,
    /// Command and arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The hidden verb the supervisor runs as (see `strata_runtime::container::supervisor`).
#[derive(clap::Args, Debug)]
pub struct SuperviseArgs {
    /// Stdio is attached to a caller (stay in its process group, mirror output)
    #[arg(long)]
    pub attach: bool,
    pub id: String,
}

pub fn run_supervise(global: &Global, args: SuperviseArgs) -> anyhow::Result<()> {
    let engine = global.engine();
    let code =
        container::supervisor::supervise(engine.root(), engine.runroot(), &args.id, args.attach);
    Err(ExitStatus(code.clamp(0, 255) as u8).into())
}

pub(crate) fn launcher(global: &Global) -> anyhow::Result<Launcher> {
    let mut exe = std::env::current_exe().context("cannot find the strata executable")?;
    if !exe.is_file() {
        // Strata as a container's first process on the nested rootless path: joining the pause
        // process's mount namespace emptied the one its bind-mounted binary came from, and the
        // kernel names the detached file "/". The running binary is still there.
        exe = std::path::PathBuf::from("/proc/self/exe");
    }
    Ok(Launcher {
        exe,
        args: vec![
            "--root".into(),
            global.engine().root().as_os_str().to_owned(),
            "--runroot".into(),
            global.engine().runroot().as_os_str().to_owned(),
            "__supervise".into(),
        ],
    })
}

/// The storage driver new containers record (see `strata_runtime::engine`).
pub(crate) fn driver_name(global: &Global) -> anyhow::Result<strata_runtime::driver::DriverKind> {
    global
        .engine()
        .driver()
        .map_err(|e| super::with_exit_code(EXIT_TOOL_ERROR, e))
}

/// `e`, exiting with `code` (Docker's 125/126/127) when `main` reports it.
pub(crate) fn fail_with(code: u8, e: impl Into<anyhow::Error>) -> anyhow::Error {
    super::with_exit_code(code, e)
}

fn tool_error(e: impl Into<anyhow::Error>) -> anyhow::Error {
    fail_with(EXIT_TOOL_ERROR, e)
}

/// Turn a container start failure into Docker's exit code (125/126/127).
pub(crate) fn start_error(e: container::ContainerError) -> anyhow::Error {
    let code = match &e {
        container::ContainerError::Start { code, .. } => (*code).clamp(1, 255) as u8,
        _ => EXIT_TOOL_ERROR,
    };
    fail_with(code, e)
}

/// `--volumes-from CONTAINER[:ro|:rw]`: the volumes and bind mounts of each container, at the
/// same paths (read-only as they were, or as the suffix says), except where `own` (`-v`,
/// `--mount`) mounts something already, as Docker does. The copies never own an anonymous
/// volume: `rm -v` of this container leaves it, and the owner's `rm -v` keeps it while this
/// container uses it.
fn volumes_from(
    global: &Global,
    specs: &[String],
    own: &[VolumeMount],
) -> anyhow::Result<Vec<VolumeMount>> {
    let mut out: Vec<VolumeMount> = Vec::new();
    for spec in specs {
        let (name, mode) = match spec.rsplit_once(':') {
            Some((n, m @ ("ro" | "rw"))) => (n, Some(m == "ro")),
            Some((_, m)) if !m.is_empty() && !m.contains('/') => {
                anyhow::bail!("invalid mode for volumes-from: {m}")
            }
            _ => (spec.as_str(), None),
        };
        let c = global.containers().lookup(name)?;
        for m in &c.config.volumes {
            if own.iter().chain(&out).any(|o| o.target == m.target) {
                continue;
            }
            let mut m = m.clone();
            m.anonymous = false;
            if let Some(ro) = mode {
                m.read_only = ro;
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// `-m` and the other memory flags: go-units `RAMInBytes` (`512m`, `1g`, `100k`, `1024`).
pub(crate) fn parse_memory(s: &str) -> anyhow::Result<u64> {
    strata_runtime::units::ram_in_bytes(s).ok_or_else(|| anyhow::anyhow!("invalid size: '{s}'"))
}

fn parse_volume(s: &str) -> anyhow::Result<VolumeMount> {
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, ro) = match parts.as_slice() {
        [src, dst] => (*src, *dst, false),
        [src, dst, "ro"] => (*src, *dst, true),
        [src, dst, "rw"] => (*src, *dst, false),
        _ => anyhow::bail!("invalid volume specification: '{s}'"),
    };
    if !src.starts_with('/') {
        anyhow::bail!("invalid volume specification: '{s}': named volumes are not supported, use an absolute host path");
    }
    if !dst.starts_with('/') {
        anyhow::bail!("invalid volume specification: '{s}': invalid mount config: mount path must be absolute");
    }
    let source = std::fs::canonicalize(src).with_context(|| {
        format!("invalid mount config for type \"bind\": bind source path does not exist: {src}")
    })?;
    Ok(VolumeMount {
        source,
        target: dst.to_string(),
        read_only: ro,
        volume: None,
        anonymous: false,
        nocopy: false,
    })
}

/// Docker's `opts.ValidateEnv`: a variable needs a name.
pub(crate) fn validate_env(env: &[String]) -> anyhow::Result<()> {
    match env.iter().find(|e| e.is_empty() || e.starts_with('=')) {
        Some(bad) => anyhow::bail!("invalid environment variable: {bad}"),
        None => Ok(()),
    }
}

pub(crate) fn read_env_files(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("open {}: no such file or directory", f.display()))?;
        for line in text.lines() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(line.to_string());
        }
    }
    Ok(out)
}

/// Puts the terminal in raw mode while alive (for `-t` with a terminal on stdin).
pub(crate) struct RawMode {
    saved: Option<nix::sys::termios::Termios>,
}

impl RawMode {
    pub(crate) fn enable(want: bool) -> RawMode {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        if !want || !nix::unistd::isatty(&stdin).unwrap_or(false) {
            return RawMode { saved: None };
        }
        let Ok(saved) = tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(s) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                s,
            );
        }
    }
}

/// Ignore the terminal's SIGINT/SIGQUIT while attached: the supervisor, in the same process
/// group, receives them too and forwards them to the container.
pub(crate) fn ignore_terminal_signals() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_IGN is always sound.
    unsafe {
        let _ = signal(Signal::SIGINT, SigHandler::SigIgn);
        let _ = signal(Signal::SIGQUIT, SigHandler::SigIgn);
    }
}

/// Docker's sig-proxy: signals sent to the attached CLI (SIGTERM, SIGHUP, SIGUSR1/2) go to the
/// supervisor, which forwards them to the container's init.
pub(crate) fn proxy_signals(supervisor: Option<u32>) {
    use nix::sys::signal::{kill, SigSet, Signal};
    let Some(pid) = supervisor else { return };
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("sig-proxy".to_string())
        .spawn(move || loop {
            if let Ok(sig) = set.wait() {
                let _ = kill(nix::unistd::Pid::from_raw(pid as i32), sig);
            }
        });
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    create_or_run(global, args, false)
}

/// `run`, or with `create_only` `create` (prints the id; the container stays `Created`).
pub(crate) fn create_or_run(global: &Global, args: Args, create_only: bool) -> anyhow::Result<()> {
    // Rootless: no bridge can be made on the host; the default network is pasta's (started by
    // the supervisor), as podman's rootless default is.
    let rootless = strata_runtime::rootless::in_user_namespace();
    let net_name = if rootless && args.network == "bridge" {
        "private"
    } else {
        args.network.as_str()
    };
    let network = NetworkMode::parse(net_name)
        .ok_or_else(|| tool_error(anyhow::anyhow!("network {} not found", args.network)))?;
    if rootless && network == NetworkMode::Bridge {
        return Err(tool_error(anyhow::anyhow!(
            "network {net_name}: user-defined networks are not supported for rootless containers yet"
        )));
    }
    let net = super::network::run_settings(global, net_name, &args.net).map_err(tool_error)?;
    let mut ports_list = Vec::new();
    for p in &args.publish {
        ports_list.push(ports::parse_publish(p).map_err(tool_error)?);
    }
    if network == NetworkMode::None && !ports_list.is_empty() {
        return Err(tool_error(anyhow::anyhow!(
            "conflicting options: port publishing and the container type network mode"
        )));
    }
    if network == NetworkMode::Host && !ports_list.is_empty() {
        eprintln!("WARNING: Published ports are discarded when using host network mode");
        ports_list.clear();
    }
    let mut env = read_env_files(&args.env_file).map_err(tool_error)?;
    env.extend(args.env.iter().cloned());
    validate_env(&env).map_err(tool_error)?;
    let mut resources = args.limits.resources().map_err(tool_error)?;
    // Docker's rules for the values (and its warnings), before anything is created.
    let adjusted = container::check_resources(&mut resources, false)
        .map_err(|e| tool_error(anyhow::anyhow!(e)))?;
    for w in adjusted {
        eprintln!("WARNING: {w}");
    }
    // podman's behaviour as a user without a delegated cgroup: warn, run without limits.
    for w in strata_runtime::container::limit_warnings(&resources) {
        eprintln!("{w}");
    }
    let runtime_kind = container::RuntimeKind::parse(&args.runtime);
    if !runtime_kind.supports_tty() && args.tty {
        return Err(tool_error(anyhow::anyhow!(
            "runtime {:?}: -t is only supported by the builtin runtime",
            args.runtime
        )));
    }
    if args.init && !runtime_kind.is_builtin() {
        return Err(tool_error(anyhow::anyhow!(
            "runtime {:?}: --init is only supported by the builtin runtime",
            args.runtime
        )));
    }
    let restart = container::restart::RestartPolicy::parse(&args.restart).map_err(tool_error)?;
    if args.rm && !restart.is_none() {
        return Err(tool_error(anyhow::anyhow!(
            "Conflicting options: --restart and --rm"
        )));
    }
    let health = args.health.config().map_err(tool_error)?;
    let oom_score_adj = args.oom_score_adj.unwrap_or(0);
    if !(-1000..=1000).contains(&oom_score_adj) {
        return Err(tool_error(anyhow::anyhow!(
            "Invalid value {oom_score_adj}, range for oom score adj is [-1000, 1000]"
        )));
    }
    let opts = args.create.parse().map_err(tool_error)?;
    let mut security = security(&args).map_err(tool_error)?;
    args.runopts
        .apply(
            &mut security,
            network == NetworkMode::Host,
            args.hostname.is_some(),
            &|name| Ok(global.containers().lookup(name)?.id().to_string()),
        )
        .map_err(tool_error)?;
    // Volumes last: every flag above is checked before any volume is made.
    let mut volumes = Vec::new();
    let mut mount_tmpfs = Vec::new();
    let parsed = (|| {
        for v in &args.volume {
            volumes.push(super::volume::parse_v(global, v, parse_volume)?);
        }
        for m in &args.mount {
            super::volume::parse_mount(global, m, parse_volume, &mut volumes, &mut mount_tmpfs)?;
        }
        anyhow::Ok(())
    })();
    if let Err(e) = parsed {
        super::volume::remove_anonymous(global, &volumes);
        return Err(tool_error(e));
    }
    match volumes_from(global, &args.volumes_from, &volumes) {
        Ok(from) => volumes.extend(from),
        Err(e) => {
            super::volume::remove_anonymous(global, &volumes);
            return Err(tool_error(e));
        }
    }
    security.tmpfs.extend(mount_tmpfs);
    let engine = global.engine();
    // The pull `run` makes for a missing image: the registry settings plus the verb's own
    // pull flags (set them on `pull_options` here).
    let pull_options = strata_runtime::registry::PullOptions {
        lazy: args.lazy || engine.lazy_pull(),
        platform: args
            .create
            .platform
            .as_deref()
            .filter(|p| !p.is_empty())
            .map(strata_runtime::registry::manifest::Platform::parse)
            .transpose()
            .map_err(tool_error)?,
        ..engine.pull_options()
    };
    let cidfile =
        super::create::CidFile::claim(args.create.cidfile.as_deref()).map_err(tool_error)?;
    let progress = super::pull::for_run();
    let (c, pulled) = engine
        .create_container(
            ContainerSpec {
                image: args.image.clone(),
                publish_all: args.net.publish_all,
                expose: opts.expose,
                pull: opts.pull,
                opts: ContainerOptions {
                    name: args.name.clone(),
                    cmd: args.command.clone(),
                    entrypoint: args.entrypoint.clone(),
                    env,
                    user: args.user.clone(),
                    workdir: args.workdir.clone(),
                    hostname: args.hostname.clone(),
                    tty: args.tty,
                    open_stdin: args.interactive,
                    ports: ports_list,
                    volumes,
                    network,
                    net,
                    auto_remove: args.rm,
                    runtime: runtime_kind,
                    resources,
                    stop_timeout: args.stop_timeout,
                    security,
                    restart,
                    init: args.init,
                    health,
                    no_healthcheck: args.health.no_healthcheck,
                    labels: opts.labels,
                    stop_signal: opts.stop_signal,
                    log: opts.log,
                    domainname: args.domainname.clone().unwrap_or_default(),
                    oom_score_adj,
                },
            },
            PullHooks {
                options: &pull_options,
                missing: &mut |shown| eprintln!("Unable to find image '{shown}' locally"),
                progress: &|e| progress.pull(e),
            },
        )
        .map_err(tool_error)?;
    if let Some(outcome) = pulled {
        progress.pull_status(&outcome);
    }
    cidfile.write(c.id().as_str()).map_err(tool_error)?;
    let rt = global.containers();
    if create_only {
        println!("{}", c.id());
        return Ok(());
    }
    let launcher = launcher(global)?;
    if args.detach {
        match rt.start(&c, &launcher, false) {
            Ok(_) => {
                println!("{}", c.id());
                Ok(())
            }
            Err(e) => Err(failed_start(rt, &c, e)),
        }
    } else {
        let raw = RawMode::enable(args.tty);
        ignore_terminal_signals();
        let handle = match rt.start(&c, &launcher, true) {
            Ok(h) => h,
            Err(e) => {
                drop(raw);
                return Err(failed_start(rt, &c, e));
            }
        };
        proxy_signals(handle.pid());
        let code = handle.wait().unwrap_or(125);
        drop(raw);
        Err(ExitStatus(code.clamp(0, 255) as u8).into())
    }
}

/// The confinement flags (`--privileged`, `--cap-add/--cap-drop`, `--security-opt`,
/// `--device`, `--read-only`, `--tmpfs`), checked before anything is created.
fn security(args: &Args) -> anyhow::Result<Security> {
    use strata_runtime::container::{caps, devices, seccomp::Profile, SeccompMode, TmpfsMount};
    let mut sec = Security {
        privileged: args.privileged,
        cap_add: caps::normalize_list("CapAdd", &args.cap_add)?,
        cap_drop: caps::normalize_list("CapDrop", &args.cap_drop)?,
        read_only: args.read_only,
        ..Security::default()
    };
    for opt in &args.security_opt {
        let (key, value) = opt
            .split_once('=')
            .or_else(|| opt.split_once(':'))
            .unwrap_or((opt.as_str(), ""));
        match (key, value) {
            ("seccomp", "unconfined") => sec.seccomp = SeccompMode::Unconfined,
            ("seccomp", "builtin" | "default") => sec.seccomp = SeccompMode::Default,
            ("seccomp", path) if !path.is_empty() => {
                let json = std::fs::read_to_string(path).map_err(|e| {
                    anyhow::anyhow!("opening seccomp profile ({path}) failed: open {path}: {e}")
                })?;
                Profile::parse(json.as_bytes())?.validate()?;
                sec.seccomp = SeccompMode::Profile(json);
            }
            // Always on in strata (Docker's opt-in).
            ("no-new-privileges", "" | "true") => {}
            ("no-new-privileges", "false") => anyhow::bail!(
                "invalid --security-opt: {opt:?}: strata always sets no-new-privileges"
            ),
            // No AppArmor or SELinux on the hosts strata confines with: nothing to turn off.
            ("apparmor", "unconfined") | ("label", "disable") => {}
            ("systempaths", "unconfined") => sec.unmask_system_paths = true,
            _ => anyhow::bail!("invalid --security-opt: {opt:?}"),
        }
    }
    for d in &args.device {
        sec.devices.push(devices::parse_device(d)?);
    }
    for r in &args.device_cgroup_rule {
        devices::parse_cgroup_rule(r)?;
        sec.device_cgroup_rules.push(r.clone());
    }
    for t in &args.tmpfs {
        let (target, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        if !target.starts_with('/') {
            anyhow::bail!("invalid mount config for type \"tmpfs\": invalid mount path: '{target}' mount path must be absolute");
        }
        sec.tmpfs.push(TmpfsMount {
            target: target.to_string(),
            options: opts
                .split(',')
                .filter(|o| !o.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    Ok(sec)
}

/// A container that could not start: with a tool error (port taken, mount failure) nothing is
/// left behind; an exec failure keeps the record, as Docker does (unless `--rm`).
fn failed_start(
    rt: &Runtime,
    c: &container::Container,
    e: container::ContainerError,
) -> anyhow::Error {
    let tool = !matches!(&e, container::ContainerError::Start { code, .. } if *code == 126 || *code == 127);
    if tool || c.config.auto_remove {
        if let Ok(fresh) = rt.lookup(c.id().as_str()) {
            let _ = rt.remove(&fresh, true);
        }
    }
    start_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(parse_memory("1g").unwrap(), 1 << 30);
        assert_eq!(parse_memory("100").unwrap(), 100);
        assert!(parse_memory("lots").is_err());
    }
}
