//! The store at its limits: a full disk during pull, kills during `load`, a container that fills
//! its disk. The store lives on a small tmpfs each test mounts (unmounted by a Drop guard).

mod registry_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use registry_common::*;
use strata_testkit::registry::images;
use strata_testkit::registry::Registry;

/// A tmpfs of `mib` MiB mounted at `path`; lazily unmounted on drop.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0755"),
                "strata-test",
            ])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", path.display());
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Every path under `root` with its size (files) or `/` (dirs), sorted; `store.lock` left out.
fn listing(root: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                out.insert(format!("{rel}/"));
                walk(base, &p, out);
            } else {
                out.insert(format!("{rel} {}", m.len()));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, root, &mut out);
    out.retain(|p| !p.starts_with("store.lock"));
    out
}

#[test]
fn pull_that_does_not_fit_leaves_nothing_and_the_next_pull_succeeds() {
    let reg = Registry::start();
    let small = images::image(vec![images::layer(&[("etc/small", b"small\n")])]);
    push_image(&reg, "small:1", &small);
    // 20 MiB of incompressible data: the download and its extraction need 40 MiB.
    let big = images::image(vec![
        images::layer(&[("etc/base", b"base\n")]),
        images::big_layer("data/blob", 20 << 20, 7),
    ]);
    push_image(&reg, "big:1", &big);
    let env = Env::new();
    let _fs = Tmpfs::mount(&env.root(), 64);
    let addr = reg.addr();
    env.ok(&["pull", &format!("{addr}/small:1")]);
    // Something else on the disk leaves ~28 MiB free.
    let ballast = env.root().join("ballast");
    std::fs::write(&ballast, vec![1u8; 36 << 20]).unwrap();
    let before = listing(&env.root());

    let (code, out, err) = env.run(&["pull", &format!("{addr}/big:1")]);
    assert_ne!(code, 0, "{out}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].starts_with("Error: "), "{err}");
    assert!(
        lines[0].to_lowercase().contains("no space left on device"),
        "{err}"
    );
    let msg = lines[0].trim_start_matches("Error: ");
    let half = &msg[..msg.len() / 2];
    assert_eq!(msg.matches(half).count(), 1, "text not repeated: {err}");
    assert_eq!(listing(&env.root()), before, "store as before the pull");

    // Space returns; the same pull now fits.
    std::fs::remove_file(&ballast).unwrap();
    let out = env.ok(&["pull", &format!("{addr}/big:1")]);
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
}
