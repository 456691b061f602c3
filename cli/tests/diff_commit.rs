//! `strata diff` and `strata commit` through the real binary, on real containers (SPEC §10.1,
//! §10.2): Docker's diff rules on every storage driver, the committed image's config and
//! history, that it runs, saves and passes `skopeo inspect`, and that bad input (unknown
//! container, invalid reference, full disk) changes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use strata_testkit::fixtures;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A private `--root`/`--runroot`; removes its containers and mounts on drop.
struct Env {
    tmp: tempfile::TempDir,
    root: PathBuf,
    runroot: PathBuf,
    containers: std::cell::RefCell<Vec<String>>,
    tmpfs: Option<PathBuf>,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("strata-commit-")
            .tempdir()
            .unwrap();
        let root = tmp.path().join("root");
        let runroot = tmp.path().join("run");
        Env {
            tmp,
            root,
            runroot,
            containers: Default::default(),
            tmpfs: None,
        }
    }

    /// An env whose `--root` is a tmpfs of `size` (to fill the disk on purpose).
    fn on_small_tmpfs(size: &str) -> Env {
        let mut env = Env::new();
        let mnt = env.tmp.path().join("small");
        std::fs::create_dir_all(&mnt).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        env.root = mnt.join("root");
        env.tmpfs = Some(mnt);
        env
    }

    /// Run `strata --root R --runroot RR ARGS…` under a watchdog.
    fn strata(&self, args: &[&str]) -> Output {
        Command::new("timeout")
            .args(["-k", "5", "120", BIN, "--root"])
            .arg(&self.root)
            .arg("--runroot")
            .arg(&self.runroot)
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.strata(args);
        assert!(
            out.status.success(),
            "strata {args:?} failed ({:?}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn load_busybox(&self) -> String {
        let archive = self.tmp.path().join("busybox.tar");
        let id = fixtures::busybox_archive(&archive, "busybox:latest").unwrap();
        self.ok(&["load", "-i", archive.to_str().unwrap()]);
        id
    }

    /// `run -d --name NAME [--storage-driver D] IMAGE sleep 1000`; returns the container ID.
    fn run_sleeper(&self, name: &str, driver: Option<&str>, image: &str) -> String {
        self.containers.borrow_mut().push(name.to_string());
        let mut args = vec!["run", "-d", "--name", name];
        if let Some(d) = driver {
            args.extend(["--storage-driver", d]);
        }
        args.extend([image, "sleep", "1000"]);
        self.ok(&args).trim().to_string()
    }

    /// Files of the image store (not containers, not staging), with sizes.
    fn store_snapshot(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for top in ["blobs", "layers", "images.json", "repositories.json"] {
            walk(&self.root.join(top), &mut out);
        }
        out.sort();
        out
    }
}

fn walk(p: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(md) = std::fs::symlink_metadata(p) else {
        return;
    };
    out.push((
        p.display().to_string(),
        if md.is_file() { md.len() } else { 0 },
    ));
    if md.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for c in self.containers.borrow().iter() {
            let _ = self.strata(&["rm", "-f", c]);
        }
        // Anything still mounted below our temp dir: detach it (deepest first).
        let prefix = self.tmp.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in points {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn lines(s: &str) -> Vec<&str> {
    s.lines().collect()
}

const CHANGES: &str = "echo hi > /www/index.html && rm /etc/motd && rm -rf /home && mkdir /home \
    && echo n > /home/new && mkdir -p /srv/data && echo x > /srv/data/f";

fn diff_on(driver: &str) {
    let env = Env::new();
    env.load_busybox();
    let name = format!("diff-{driver}");
    env.run_sleeper(&name, Some(driver), "busybox");
    assert_eq!(
        env.ok(&["diff", &name]),
        "",
        "a fresh container has no changes"
    );
    env.ok(&["exec", &name, "sh", "-c", CHANGES]);
    // An overlay upper shows `rm -rf /home; mkdir /home` as an opaque dir (D, then its contents
    // as A); a full-tree driver sees the same dir with a new child (C).
    let home = if driver == "vfs" {
        "C /home"
    } else {
        "D /home"
    };
    let expected = vec![
        "C /etc",
        "D /etc/motd",
        home,
        "A /home/new",
        "A /srv",
        "A /srv/data",
        "A /srv/data/f",
        "C /www",
        "C /www/index.html",
    ];
    assert_eq!(
        lines(&env.ok(&["diff", &name])),
        expected,
        "running, {driver}"
    );
    env.ok(&["stop", "-t", "1", &name]);
    assert_eq!(
        lines(&env.ok(&["diff", &name])),
        expected,
        "stopped, {driver}"
    );
}

#[test]
fn diff_rules_fuse() {
    diff_on("fuse");
}

#[test]
fn diff_rules_overlay() {
    diff_on("overlay");
}

#[test]
fn diff_rules_vfs() {
    diff_on("vfs");
}

#[test]
fn diff_rules_fuse_overlayfs() {
    diff_on("fuse-overlayfs");
}

fn blob_json(env: &Env, id: &str) -> Value {
    let hex = id.trim().trim_start_matches("sha256:");
    let bytes = std::fs::read(env.root.join("blobs/sha256").join(hex)).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn commit_writes_config_history_and_runs() {
    let env = Env::new();
    let base = env.load_busybox();
    let cid = env.run_sleeper("web", None, "busybox");
    env.ok(&[
        "exec",
        "web",
        "sh",
        "-c",
        "echo '<h1>Hello strata</h1>' > /www/index.html",
    ]);
    let out = env.ok(&[
        "commit",
        "--author",
        "Jane Doe <jane@example.com>",
        "-m",
        "new page",
        "-c",
        "ENV MODE=prod",
        "--change",
        r#"CMD ["httpd", "-f", "-p", "80", "-h", "/www"]"#,
        "web",
        "web:v2",
    ]);
    let id = out.trim();
    assert!(
        id.len() == 71 && id.starts_with("sha256:") && out.ends_with('\n'),
        "prints sha256:<id>: {out:?}"
    );
    let cfg = blob_json(&env, id);
    assert_eq!(cfg["author"], "Jane Doe <jane@example.com>");
    assert_eq!(cfg["comment"], "new page");
    assert_eq!(cfg["container"], cid.as_str());
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    let hist = cfg["history"].as_array().unwrap();
    let last = hist.last().unwrap();
    assert_eq!(last["created_by"], "sleep 1000");
    assert_eq!(last["author"], "Jane Doe <jane@example.com>");
    assert_eq!(last["comment"], "new page");
    assert!(last.get("empty_layer").is_none());
    assert!(cfg["config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("MODE=prod")));
    assert_eq!(
        cfg["config"]["Cmd"],
        serde_json::json!(["httpd", "-f", "-p", "80", "-h", "/www"])
    );

    // history: the new image on top, its parent below.
    let hist_out = env.ok(&["history", "-q", "web:v2"]);
    let ids: Vec<&str> = hist_out.lines().collect();
    assert_eq!(ids.len(), hist.len(), "{hist_out}");
    assert_eq!(ids[0], &id[7..19]);
    assert_eq!(ids[1], &base[7..19]);

    // The committed image runs and has the change.
    env.containers.borrow_mut().push("check".into());
    let page = env.ok(&[
        "run",
        "--rm",
        "--name",
        "check",
        "web:v2",
        "cat",
        "/www/index.html",
    ]);
    assert_eq!(page, "<h1>Hello strata</h1>\n");

    // It saves as a docker-archive that skopeo reads.
    let tar = env.tmp.path().join("v2.tar");
    env.ok(&["save", "-o", tar.to_str().unwrap(), "web:v2"]);
    let sk = Command::new("timeout")
        .args(["60", "skopeo", "inspect"])
        .arg(format!("docker-archive:{}", tar.display()))
        .output()
        .unwrap();
    assert!(
        sk.status.success(),
        "{}",
        String::from_utf8_lossy(&sk.stderr)
    );
    let inspect: Value = serde_json::from_slice(&sk.stdout).unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    assert!(inspect["Env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("MODE=prod")));

    // Nothing changed since: an empty layer; the tag moves and the old image is dangling.
    env.ok(&["rm", "-f", "web"]);
    env.run_sleeper("web3", None, "web:v2");
    let id3 = env.ok(&["commit", "--pause=false", "web3", "web:v2"]);
    let cfg3 = blob_json(&env, &id3);
    // A stopped container commits too (nothing to pause).
    env.ok(&["exec", "web3", "sh", "-c", "echo stopped > /stopped"]);
    env.ok(&["stop", "-t", "1", "web3"]);
    let id4 = env.ok(&["commit", "web3", "web:stopped"]);
    let page = env.ok(&["run", "--rm", "web:stopped", "cat", "/stopped"]);
    assert_eq!(page, "stopped\n", "{id4}");
    assert_eq!(cfg3["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(
        cfg3["history"].as_array().unwrap().last().unwrap()["empty_layer"],
        true
    );
    assert_eq!(
        env.ok(&["image", "inspect", "--format", "{{json .RepoTags}}", id])
            .trim(),
        "[]",
        "the old web:v2 lost its tag"
    );
    let ls = env.ok(&[
        "images",
        "-a",
        "--no-trunc",
        "--format",
        "{{.ID}} {{.Repository}}:{{.Tag}}",
    ]);
    assert!(ls.contains(&format!("{} web:v2", id3.trim())), "{ls}");
    assert!(ls.contains(&format!("{id} <none>:<none>")), "{ls}");
}

fn assert_fails(out: &Output, msg: &str) {
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(msg),
        "stderr {stderr:?} should start with {msg:?}"
    );
}

#[test]
fn bad_input_leaves_store_and_container_as_they_were() {
    let env = Env::new();
    env.load_busybox();
    env.run_sleeper("keep", None, "busybox");
    env.ok(&["exec", "keep", "sh", "-c", "echo changed > /www/index.html"]);
    let before = env.store_snapshot();
    let diff_before = env.ok(&["diff", "keep"]);

    assert_fails(
        &env.strata(&["commit", "nosuch"]),
        "Error: No such container: nosuch",
    );
    assert_fails(
        &env.strata(&["diff", "nosuch"]),
        "Error: No such container: nosuch",
    );
    assert_fails(
        &env.strata(&["commit", "keep", "Bad:Ref"]),
        "Error: invalid reference format",
    );
    assert_fails(
        &env.strata(&["commit", "keep", "web:v2:x"]),
        "Error: invalid",
    );
    assert_fails(
        &env.strata(&["commit", "-c", "FROM busybox", "keep", "web:v2"]),
        "Error: from is not a valid change command",
    );
    assert_eq!(env.store_snapshot(), before);
    assert_eq!(env.ok(&["diff", "keep"]), diff_before);
    let ps = env.ok(&["ps", "--filter", "name=keep", "--format", "{{.Status}}"]);
    assert!(ps.starts_with("Up"), "still running: {ps}");
}

#[test]
fn commit_on_a_full_disk_changes_nothing() {
    let env = Env::on_small_tmpfs("24m");
    env.load_busybox();
    let cid = env.run_sleeper("big", None, "busybox");
    // 9 MB of noise in the container: the commit needs it twice more (layer tar, extracted).
    env.ok(&[
        "exec",
        "big",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/big bs=1M count=9 2>/dev/null && sync",
    ]);
    let before = env.store_snapshot();
    let out = env.strata(&["commit", "big", "big:v2"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("Error: ") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_eq!(env.store_snapshot(), before);
    let ps = env.ok(&["ps", "--filter", "name=big", "--format", "{{.Status}}"]);
    assert!(ps.starts_with("Up"), "still running: {ps}");
    let state_json = std::fs::read(env.root.join("containers").join(&cid).join("state.json"));
    let pid = serde_json::from_slice::<Value>(&state_json.unwrap()).unwrap()["pid"].clone();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let state = stat[stat.rfind(')').unwrap() + 1..]
        .trim_start()
        .chars()
        .next();
    assert_ne!(state, Some('T'), "the pause was undone after the failure");
    assert_eq!(
        env.ok(&["exec", "big", "sh", "-c", "wc -c < /big"]).trim(),
        "9437184"
    );
    let ls = env.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(!ls.contains("big:v2"), "{ls}");
}
