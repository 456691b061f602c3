//! `strata-snapshotter`: a containerd remote ("proxy") snapshotter whose stacked snapshots are
//! mounted by strata's union filesystem (`strata-overlay`).
//!
//! ```toml
//! # /etc/containerd/config.toml
//! [proxy_plugins.strata]
//!   type = "snapshot"
//!   address = "/run/strata-snapshotter/strata-snapshotter.sock"
//! ```
//!
//! Modules: `store` (metadata + snapshot dirs, crash-safe), `usage` (disk usage walk),
//! `filter` (containerd's filter syntax for List), `service` (the gRPC service and the mounts
//! containerd performs).

mod filter;
mod service;
mod store;
mod usage;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use containerd_snapshots::tonic::transport::Server;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

/// containerd snapshotter serving layer stacks with strata's union filesystem.
#[derive(Parser, Debug)]
#[command(name = "strata-snapshotter", version)]
struct Args {
    /// Unix socket to serve containerd's snapshots API on.
    #[arg(
        long,
        env = "STRATA_SNAPSHOTTER_ADDRESS",
        default_value = "/run/strata-snapshotter/strata-snapshotter.sock"
    )]
    address: PathBuf,
    /// Where snapshots and their metadata live.
    #[arg(
        long,
        env = "STRATA_SNAPSHOTTER_ROOT",
        default_value = "/var/lib/strata-snapshotter"
    )]
    root: PathBuf,
    /// The FUSE program containerd mounts stacked snapshots with (mount type
    /// `fuse3.<program>`, run by mount.fuse3): a name found in /usr/local/sbin,
    /// /usr/local/bin, /usr/sbin, /usr/bin, /sbin or /bin, or an absolute path.
    #[arg(long, default_value = "strata-overlay")]
    mount_program: String,
    /// error, warn, info or debug.
    #[arg(long, default_value = "info", value_parser = ["error", "warn", "info", "debug"])]
    log_level: String,
}

/// One line per record on stderr (journald adds the time).
struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            eprintln!("strata-snapshotter: {}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Check that `path` can be listened on: absent, or a stale socket file (one nobody answers
/// on, removed here), never a live socket or another kind of file.
fn check_address(path: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                bail!("{}: exists and is not a socket", path.display());
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                bail!("{}: address already in use", path.display());
            }
            std::fs::remove_file(path).with_context(|| format!("remove {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    UnixListener::bind(path).with_context(|| format!("listen on {}", path.display()))
}

fn check_program(p: &str) -> anyhow::Result<()> {
    // libmount and containerd split the type at '.', and mount.fuse3 runs the name through
    // its own PATH: a relative path or a dotted name would name another program.
    let name = Path::new(p).file_name().map(|n| n.to_string_lossy());
    let bad = p.is_empty()
        || (!p.starts_with('/') && p.contains('/'))
        || name.is_none_or(|n| n.contains('.'))
        || p.contains([',', ' ', '\'', '"']);
    if bad {
        bail!("--mount-program {p:?}: give a program name without '.' or an absolute path");
    }
    Ok(())
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let root = service::check_root(&args.root).map_err(anyhow::Error::msg)?;
    check_program(&args.mount_program)?;
    // The address is checked before the root is touched (a bad --address leaves nothing
    // behind), and bound only once the store is open and clean: a client that can connect is
    // served by a consistent store.
    check_address(&args.address)?;
    let store = tokio::task::spawn_blocking(move || store::Store::open(&root)).await??;
    let listener = bind(&args.address)?;
    let svc = service::Service::new(store, &args.mount_program);
    log::info!(
        "serving snapshots on {} (root {}, mounts fuse3.{})",
        args.address.display(),
        args.root.display(),
        args.mount_program
    );
    let shutdown = async {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                std::future::poll_fn(|cx| {
                    if term.poll_recv(cx).is_ready() || int.poll_recv(cx).is_ready() {
                        std::task::Poll::Ready(())
                    } else {
                        std::task::Poll::Pending
                    }
                })
                .await
            }
            _ => std::future::pending::<()>().await,
        }
        log::info!("shutting down");
    };
    let res = Server::builder()
        .add_service(containerd_snapshots::server(Arc::new(svc)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    let _ = std::fs::remove_file(&args.address);
    res.context("serve")
}

fn main() -> ExitCode {
    let args = Args::parse();
    log::set_max_level(match args.log_level.as_str() {
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "debug" => log::LevelFilter::Debug,
        _ => log::LevelFilter::Info,
    });
    let _ = log::set_logger(&LOGGER);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .max_blocking_threads(8)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: tokio runtime: {e}");
            return ExitCode::from(125);
        }
    };
    match rt.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(125)
        }
    }
}
