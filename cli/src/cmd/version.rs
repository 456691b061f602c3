//! `strata version` and `strata info`: what this strata is and what it runs on.

use std::io::Write;

use super::run::driver_name;
use super::Global;

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    /// Format output using a custom template ("json" for JSON)
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Format output using a custom template ("json" for JSON)
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

fn kernel() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// `v1` (hybrid counts as v1: strata's limits use the v1 controllers), or `v2`.
fn cgroup_version() -> &'static str {
    if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

/// The filesystem type holding `path` (`statfs` magic → name).
fn backing_fs(path: &std::path::Path) -> String {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    match nix::sys::statfs::statfs(&p) {
        Ok(s) => {
            let magic = s.filesystem_type().0 as u64;
            match magic {
                0xEF53 => "extfs",
                0x9123683E => "btrfs",
                0x58465342 => "xfs",
                0x01021994 => "tmpfs",
                0x794C7630 => "overlayfs",
                0x65735546 => "fuse",
                0x2FC12FC1 => "zfs",
                _ => "unknown",
            }
            .to_string()
        }
        Err(_) => "unknown".to_string(),
    }
}

/// FUSE passthrough: the kernel has it from 6.9, and strata uses it as root.
fn passthrough() -> bool {
    let k = kernel();
    let mut it = k
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse::<u32>().ok());
    let (maj, min) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    // Rootless: uid 0 of a user namespace lacks CAP_SYS_ADMIN in the initial one.
    (maj, min) >= (6, 9)
        && nix::unistd::geteuid().is_root()
        && !strata_runtime::rootless::in_user_namespace()
}

fn runc_version() -> Option<String> {
    let out = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()
        .map(|l| l.trim_start_matches("runc version ").to_string())
}

pub fn run_version(_global: &Global, args: VersionArgs) -> anyhow::Result<()> {
    let v = serde_json::json!({
        "Client": {
            "Version": env!("CARGO_PKG_VERSION"),
            "GoVersion": "",
            "Os": std::env::consts::OS,
            "Arch": if std::env::consts::ARCH == "x86_64" { "amd64" } else { std::env::consts::ARCH },
            "KernelVersion": kernel(),
        }
    });
    let mut out = std::io::stdout().lock();
    if let Some(f) = &args.format {
        let fmt = crate::template::Format::new(Some(f), "")?;
        write!(out, "{}", fmt.render(&serde_json::Value::Null, &[v])?)?;
        return Ok(());
    }
    let c = &v["Client"];
    writeln!(out, "Client:")?;
    writeln!(out, " Version:           {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(
        out,
        " OS/Arch:           {}/{}",
        c["Os"].as_str().unwrap_or(""),
        c["Arch"].as_str().unwrap_or("")
    )?;
    writeln!(out, " Kernel Version:    {}", kernel())?;
    writeln!(out, " Daemon:            none (daemonless)")?;
    Ok(())
}

pub fn run_info(global: &Global, args: InfoArgs) -> anyhow::Result<()> {
    let rt = global.containers();
    let containers = rt.list()?;
    let running = containers.iter().filter(|c| c.is_running()).count();
    let paused = containers
        .iter()
        .filter(|c| c.is_running() && strata_runtime::container::manage::is_paused(c.id()))
        .count();
    let images = global
        .store()
        .and_then(|s| Ok(s.images()?.len()))
        .unwrap_or(0);
    let (driver, program) = super::storage::describe(&driver_name(global)?);
    let rootless = strata_runtime::rootless::info();
    let mut runtimes = vec!["builtin".to_string()];
    let runc = runc_version();
    if runc.is_some() {
        runtimes.push("runc".to_string());
    }
    let mut driver_status = vec![
        vec![
            "Backing Filesystem".to_string(),
            backing_fs(global.engine().root()),
        ],
        vec![
            "Passthrough".to_string(),
            if driver == "fuse" && passthrough() {
                "on"
            } else {
                "off"
            }
            .to_string(),
        ],
    ];
    if let Some((path, version)) = &program {
        driver_status.push(vec!["Mount Program".to_string(), path.clone()]);
        driver_status.push(vec!["Mount Program Version".to_string(), version.clone()]);
    }
    let v = serde_json::json!({
        "Containers": containers.len(),
        "ContainersRunning": running - paused,
        "ContainersPaused": paused,
        "ContainersStopped": containers.len() - running,
        "Images": images,
        "Driver": driver,
        "DriverStatus": driver_status,
        "CgroupVersion": cgroup_version(),
        "CgroupDriver": "cgroupfs",
        "Runtimes": runtimes,
        "DefaultRuntime": "builtin",
        "KernelVersion": kernel(),
        "OperatingSystem": std::fs::read_to_string("/etc/os-release").ok().and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))).unwrap_or_default(),
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "StrataRootDir": global.engine().root().display().to_string(),
        "ServerVersion": env!("CARGO_PKG_VERSION"),
        "Rootless": rootless.rootless,
        "StrataRunRoot": global.engine().runroot().display().to_string(),
        "RootlessNetwork": rootless.network,
        "RootlessCgroups": rootless.cgroups,
        "IDMappings": {
            "UIDMap": id_maps(&rootless.uid_map),
            "GIDMap": id_maps(&rootless.gid_map),
        },
    });
    let mut out = std::io::stdout().lock();
    if let Some(f) = &args.format {
        let fmt = crate::template::Format::new(Some(f), "")?;
        write!(out, "{}", fmt.render(&serde_json::Value::Null, &[v])?)?;
        return Ok(());
    }
    writeln!(out, "Client:")?;
    writeln!(out, " Version:    {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, " Context:    daemonless")?;
    writeln!(out)?;
    writeln!(out, "Server:")?;
    writeln!(out, " Containers: {}", containers.len())?;
    writeln!(out, "  Running: {}", running - paused)?;
    writeln!(out, "  Paused: {paused}")?;
    writeln!(out, "  Stopped: {}", containers.len() - running)?;
    writeln!(out, " Images: {images}")?;
    writeln!(out, " Server Version: {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, " Storage Driver: {driver}")?;
    writeln!(
        out,
        "  Backing Filesystem: {}",
        backing_fs(global.engine().root())
    )?;
    if let Some((path, version)) = &program {
        writeln!(out, "  Mount Program: {path}")?;
        writeln!(out, "  Mount Program Version: {version}")?;
    }
    if driver == "fuse" {
        writeln!(
            out,
            "  Passthrough: {}",
            if passthrough() { "on" } else { "off" }
        )?;
    }
    writeln!(out, " Cgroup Driver: cgroupfs")?;
    writeln!(out, " Cgroup Version: {}", cgroup_version())?;
    match &runc {
        Some(v) => writeln!(out, " Runtimes: builtin runc ({v})")?,
        None => writeln!(out, " Runtimes: builtin")?,
    }
    writeln!(out, " Default Runtime: builtin")?;
    writeln!(out, " Kernel Version: {}", kernel())?;
    writeln!(
        out,
        " Operating System: {}",
        v["OperatingSystem"].as_str().unwrap_or("")
    )?;
    writeln!(out, " OSType: linux")?;
    writeln!(out, " Architecture: {}", std::env::consts::ARCH)?;
    writeln!(out, " CPUs: {}", v["NCPU"])?;
    writeln!(
        out,
        " Strata Root Dir: {}",
        global.engine().root().display()
    )?;
    writeln!(
        out,
        " Strata Run Root: {}",
        global.engine().runroot().display()
    )?;
    writeln!(out, " Rootless: {}", rootless.rootless)?;
    if rootless.rootless {
        writeln!(out, "  Network: {}", rootless.network)?;
        writeln!(out, "  Cgroups: {}", rootless.cgroups)?;
        for (name, map) in [
            ("UID Map", &rootless.uid_map),
            ("GID Map", &rootless.gid_map),
        ] {
            let lines: Vec<String> = map.iter().map(|(c, h, n)| format!("{c}:{h}:{n}")).collect();
            writeln!(out, "  {name}: {}", lines.join(" "))?;
        }
    }
    Ok(())
}

/// podman's `idMappings` entries.
fn id_maps(map: &[(u64, u64, u64)]) -> serde_json::Value {
    map.iter()
        .map(|(c, h, n)| serde_json::json!({"container_id": c, "host_id": h, "size": n}))
        .collect()
}
