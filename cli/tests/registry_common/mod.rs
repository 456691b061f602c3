//! Shared helpers of the registry CLI tests: a temp store + a private credentials file per test,
//! and pushing testkit images with skopeo.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_runtime::store::Store;
use strata_testkit::registry::images::{self, Image};
use strata_testkit::registry::{skopeo_copy, Registry};
use tempfile::TempDir;

pub fn short(digest: &str) -> String {
    digest.trim_start_matches("sha256:")[..12].to_string()
}

/// Push `img` to `reg` as `repo_tag` with skopeo (with the registry's credentials if it has any).
pub fn push_image(reg: &Registry, repo_tag: &str, img: &Image) {
    let dir = tempfile::tempdir().unwrap();
    images::write_oci_layout(dir.path(), "t", img);
    push_layout(reg, dir.path(), "t", repo_tag, &[]);
}

/// `skopeo copy oci:DIR:TAG docker://REGISTRY/REPO_TAG` plus `extra` flags.
pub fn push_layout(reg: &Registry, dir: &Path, tag: &str, repo_tag: &str, extra: &[&str]) {
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    if let Some(c) = reg.skopeo_creds() {
        args.push(format!("--dest-creds={c}"));
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    skopeo_copy(
        &format!("oci:{}:{tag}", dir.display()),
        &format!("docker://{}/{repo_tag}", reg.addr()),
        &refs,
    );
}

/// Environment variables that keep Docker Hub itself out of a test's reach: any attempt goes
/// to a closed loopback proxy.
pub const HUB_CLOSED: [(&str, &str); 2] = [
    ("HTTPS_PROXY", "http://127.0.0.1:9"),
    ("https_proxy", "http://127.0.0.1:9"),
];

/// A private world for one test: `--root`/`--runroot` temp dirs and a HOME whose
/// `.docker/config.json` and `REGISTRY_AUTH_FILE` live in a temp dir.
pub struct Env {
    pub dir: TempDir,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("strata-reg-cli-")
            .tempdir()
            .unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Env { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn auth_file(&self) -> PathBuf {
        self.dir.path().join("auth.json")
    }

    pub fn store(&self) -> Store {
        Store::open(&self.root()).unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_strata"));
        c.arg("--root")
            .arg(self.root())
            .arg("--runroot")
            .arg(self.dir.path().join("run"))
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("REGISTRY_AUTH_FILE", self.auth_file())
            .env("STRATA_DAEMON_JSON", self.dir.path().join("daemon.json"))
            .env_remove("DOCKER_CONFIG")
            .env_remove("DOCKER_DEFAULT_PLATFORM")
            .stdin(Stdio::null());
        c
    }

    /// Run to completion: (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        wait_output(self.spawn(args))
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.spawn_with(args, &[])
    }

    /// [`Env::spawn`] with extra environment variables.
    pub fn spawn_with(&self, args: &[&str], vars: &[(&str, &str)]) -> Child {
        self.command(args)
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn strata")
    }

    /// `daemon.json` naming `mirrors` (addresses, `http://ADDR/` each) as registry mirrors, in
    /// that order.
    pub fn set_mirrors(&self, mirrors: &[&str]) {
        let urls: Vec<String> = mirrors.iter().map(|m| format!("http://{m}/")).collect();
        let json = serde_json::json!({ "registry-mirrors": urls });
        std::fs::write(self.dir.path().join("daemon.json"), json.to_string()).unwrap();
    }

    /// [`Env::run`] with extra environment variables.
    pub fn run_with(&self, args: &[&str], vars: &[(&str, &str)]) -> (i32, String, String) {
        wait_output(self.spawn_with(args, vars))
    }

    /// Run and require success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.run(args);
        assert_eq!(code, 0, "strata {args:?} failed: {err}\nstdout: {out}");
        out
    }

    /// Names of partial download files.
    pub fn partials(&self) -> Vec<String> {
        std::fs::read_dir(self.root().join("partial"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn partial_sizes(&self) -> Vec<u64> {
        std::fs::read_dir(self.root().join("partial"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Removes every container of the env (and so their mounts) even when the test fails.
pub struct ContainersGuard<'a>(pub &'a Env);

impl Drop for ContainersGuard<'_> {
    fn drop(&mut self) {
        let (_, ids, _) = self.0.run(&["ps", "-aq"]);
        for id in ids.split_whitespace() {
            let _ = self.0.run(&["rm", "-f", id]);
        }
    }
}

/// Wait for a child with a 180 s watchdog (killed and reported if it hangs).
pub fn wait_output(mut child: Child) -> (i32, String, String) {
    use std::io::Read;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("strata did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        t_out.join().unwrap(),
        t_err.join().unwrap(),
    )
}
