//! `strata login [-u USER] [-p PASS | --password-stdin] [SERVER]` and `strata logout [SERVER]`.
//!
//! Credentials are checked against the registry (`/v2/`, answering its challenge) before being
//! stored in the Docker-compatible credentials file (`$REGISTRY_AUTH_FILE`, else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; mode 0600).

use std::io::{BufRead, IsTerminal, Write};

use strata_runtime::registry::auth::{self, Credentials};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    /// Registry (default: Docker Hub)
    pub server: Option<String>,
}

/// `https://host:port/v2/` → `host:port`; `docker.io` and friends stay as given.
fn server_name(s: Option<&str>) -> String {
    let s = s.unwrap_or("docker.io");
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

fn prompt(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn prompt_password() -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let old = tcgetattr(&stdin).ok();
    if let Some(t) = &old {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
    }
    let r = prompt("Password: ");
    if let Some(t) = &old {
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, t);
    }
    eprintln!();
    r
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let server = server_name(args.server.as_deref());
    if args.password.is_some() && args.password_stdin {
        anyhow::bail!("--password and --password-stdin are mutually exclusive");
    }
    let interactive = std::io::stdin().is_terminal();
    let password = if args.password_stdin {
        if args.username.is_none() {
            anyhow::bail!("Must provide --username with --password-stdin");
        }
        let mut s = String::new();
        std::io::stdin().lock().read_line(&mut s)?;
        Some(s.trim_end_matches(['\r', '\n']).to_string())
    } else {
        if args.password.is_some() {
            eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        }
        args.password
    };
    let username = match args.username {
        Some(u) => u,
        None if interactive => prompt("Username: ")?,
        None => anyhow::bail!("Cannot perform an interactive login from a non TTY device"),
    };
    let password = match password {
        Some(p) => p,
        None if interactive => prompt_password()?,
        None => anyhow::bail!("Cannot perform an interactive login from a non TTY device"),
    };
    if username.is_empty() {
        anyhow::bail!("Username is required");
    }
    let creds = Credentials { username, password };
    strata_runtime::registry::login(&server, &creds, global.engine().insecure_registries())?;
    println!("Login Succeeded");
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Registry (default: Docker Hub)
    pub server: Option<String>,
}

pub fn run_logout(_global: &Global, args: LogoutArgs) -> anyhow::Result<()> {
    let server = server_name(args.server.as_deref());
    let shown = auth::config_key(&server);
    if auth::remove(&server)? {
        println!("Removing login credentials for {shown}");
    } else {
        println!("Not logged in to {shown}");
    }
    Ok(())
}
