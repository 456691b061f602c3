//! `run`/`create` flags that reach the container's init: `--ulimit`, `--shm-size`, `--sysctl`,
//! `--group-add`, `--pid`, `--ipc`, `--uts` (see `strata_runtime::container::runopts`).

use strata_runtime::container::{runopts, Security};

#[derive(clap::Args, Debug, Default)]
pub struct RunOptArgs {
    /// Ulimit options (NAME=SOFT[:HARD], e.g. nofile=1024:2048)
    #[arg(long = "ulimit", allow_hyphen_values = true)]
    pub ulimit: Vec<String>,
    /// Size of /dev/shm (default 64m)
    #[arg(long = "shm-size")]
    pub shm_size: Option<String>,
    /// Sysctl options (namespaced ones only: net.*, kernel.shm*, kernel.msg*, kernel.sem,
    /// fs.mqueue.*, kernel.domainname)
    #[arg(long = "sysctl")]
    pub sysctl: Vec<String>,
    /// Add additional groups to join (a name from the image's /etc/group, or a number)
    #[arg(long = "group-add")]
    pub group_add: Vec<String>,
    /// PID namespace to use (host, container:NAME)
    #[arg(long = "pid")]
    pub pid: Option<String>,
    /// IPC mode to use (private, shareable, none, host, container:NAME)
    #[arg(long = "ipc")]
    pub ipc: Option<String>,
    /// UTS namespace to use (host)
    #[arg(long = "uts")]
    pub uts: Option<String>,
}

impl RunOptArgs {
    /// Check the flags (Docker's rules and words) and record them in `sec`; nothing is made.
    /// `lookup` finds the container a `container:NAME` mode names (its full id).
    pub fn apply(
        &self,
        sec: &mut Security,
        host_network: bool,
        hostname: bool,
        lookup: &dyn Fn(&str) -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        for u in &self.ulimit {
            let parsed = runopts::parse_ulimit(u)?;
            // A later --ulimit of the same name replaces the earlier one (Docker's map).
            sec.ulimits.retain(|x| x.name != parsed.name);
            sec.ulimits.push(parsed);
        }
        sec.shm_size = match self.shm_size.as_deref() {
            None => None,
            Some(s) => Some(runopts::parse_shm_size(s)?).filter(|n| *n > 0),
        };
        for s in &self.sysctl {
            let (k, v) = runopts::parse_sysctl(s)?;
            sec.sysctls.insert(k, v);
        }
        for g in &self.group_add {
            sec.group_add.push(runopts::parse_group(g)?);
        }
        let mode =
            |flag, v: &Option<String>| runopts::parse_ns_mode(flag, v.as_deref().unwrap_or(""));
        sec.pid_host = mode("pid", &self.pid)?;
        sec.ipc_host = mode("ipc", &self.ipc)?;
        sec.ipc_none = self.ipc.as_deref() == Some("none");
        sec.ipc_shareable = self.ipc.as_deref() == Some("shareable");
        sec.uts_host = mode("uts", &self.uts)?;
        let target = |v: &Option<String>| -> anyhow::Result<String> {
            match v.as_deref().and_then(|v| v.strip_prefix("container:")) {
                Some(name) => lookup(name),
                None => Ok(String::new()),
            }
        };
        if let Some(v) = self.pid.as_deref().filter(|v| v.starts_with("container:")) {
            // The supervisor could not return to its own pid namespace after joining another
            // container's (it belongs to an outer user namespace).
            if strata_runtime::rootless::in_user_namespace() {
                return Err(runopts::RunOptError::RootlessPidJoin { value: v.into() }.into());
            }
        }
        sec.pid_container = target(&self.pid)?;
        sec.ipc_container = target(&self.ipc)?;
        Ok(runopts::check(sec, host_network, hostname)?)
    }
}
