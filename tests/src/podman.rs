//! A throw-away podman installation for peer checks: its storage, run dir, temp dir and config
//! all live in one directory the test owns (vfs storage, no events, cgroupfs, runc), so nothing
//! touches the host's podman, and every call is bounded by `timeout`.

use std::path::Path;
use std::process::{Command, Output};

/// How long one podman call may take before `timeout` kills it.
pub const PODMAN_TIMEOUT_SECS: u32 = 180;

/// Podman's default rlimits for root (1048576 open files) are above what a test run may raise
/// to: the ones every test's podman `run`/`build` passes instead (`benches/cli-compare` gives
/// podman the same).
pub const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=4096:4096",
];

/// The arguments of `podman run --rm --network none` (with [`ULIMITS`]) of `image` running
/// `cmd`.
pub fn run_args<'a>(image: &'a str, cmd: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--rm", "--network", "none"];
    args.extend(ULIMITS);
    args.push(image);
    args.extend(cmd);
    args
}

/// `podman <args>` against the installation in `dir`, as a `Command` to adjust before running.
pub fn command(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("timeout");
    c.args([
        "-k",
        "5",
        &PODMAN_TIMEOUT_SECS.to_string(),
        "podman",
        "--root",
    ])
    .arg(dir.join("proot"))
    .arg("--runroot")
    .arg(dir.join("prun"))
    .arg("--tmpdir")
    .arg(dir.join("ptmp"))
    .args([
        "--storage-driver",
        "vfs",
        "--events-backend",
        "none",
        "--cgroup-manager",
        "cgroupfs",
        "--runtime",
        "runc",
    ])
    .args(args)
    .env("XDG_CONFIG_HOME", dir.join("pconfig"))
    .env("XDG_DATA_HOME", dir.join("pdata"))
    // Where buildah keeps RUN --mount=type=cache dirs (else the host's /var/tmp).
    .env("TMPDIR", dir.join("ptmp"));
    c
}

/// Run `podman <args>` against the installation in `dir`.
pub fn podman(dir: &Path, args: &[&str]) -> Output {
    command(dir, args)
        .output()
        .expect("podman is installed by scripts/setup")
}

/// Run `podman <args>`, assert it succeeded, return its stdout.
pub fn podman_ok(dir: &Path, args: &[&str]) -> String {
    let o = podman(dir, args);
    assert!(
        o.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
