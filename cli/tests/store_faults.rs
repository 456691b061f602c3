//! The store at its limits: a full disk during pull, kills during `load`, a container that fills
//! its disk. The store lives on a small tmpfs each test mounts (unmounted by a Drop guard).

mod registry_common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use registry_common::*;
use strata_testkit::fixtures;
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

/// Kills what runs on a store and detaches its mounts (before the tmpfs guard drops).
struct ContainerCleanup(PathBuf);

impl Drop for ContainerCleanup {
    fn drop(&mut self) {
        strata_testkit::container::kill_processes_naming(&self.0);
        strata_testkit::container::lazy_unmount_under(&self.0);
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
    let after = listing(&env.root());
    assert!(
        after == before,
        "store as before the pull: extra {:?}, missing {:?}",
        after.difference(&before).collect::<Vec<_>>(),
        before.difference(&after).collect::<Vec<_>>()
    );

    // Space returns; the same pull now fits.
    std::fs::remove_file(&ballast).unwrap();
    let out = env.ok(&["pull", &format!("{addr}/big:1")]);
    assert!(out.contains("Status: Downloaded newer image"), "{out}");
}

/// A layer tar of `files` files of `size` bytes each (distinct content per `seed`).
fn many_files_layer(seed: u8, files: usize, size: usize) -> Vec<u8> {
    let mut t = fixtures::LayerTar::new();
    t.dir(&format!("d{seed}/"), 0o755);
    for i in 0..files {
        let mut data = vec![seed; size];
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        t.file(&format!("d{seed}/f{i}"), &data, 0o644);
    }
    t.into_bytes()
}

/// Poll `f` every millisecond for up to 20 s.
fn wait_for(mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// The SIZE column of `system df`'s Images row.
fn images_size(env: &Env) -> String {
    let out = env.ok(&["system", "df", "--format", "{{.Type}} {{.Size}}"]);
    out.lines()
        .find_map(|l| l.strip_prefix("Images "))
        .unwrap_or_default()
        .to_string()
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|rd| rd.count()).unwrap_or(0)
}

#[test]
fn load_killed_at_several_points_then_prune_restores_the_store() {
    let env = Env::new();
    let _fs = Tmpfs::mount(&env.root(), 64);
    let work = tempfile::tempdir().unwrap();
    let kept = work.path().join("kept.tar");
    fixtures::busybox_archive(&kept, "kept:1").unwrap();
    env.ok(&["load", "-i", kept.to_str().unwrap()]);
    let want = listing(&env.root());
    let size0 = images_size(&env);

    let big = work.path().join("big.tar");
    let spec = fixtures::ImageSpec::new(
        &["big:1"],
        (1..=4).map(|s| many_files_layer(s, 400, 8 << 10)).collect(),
    );
    fixtures::write_docker_archive(&big, &[spec]).unwrap();
    let layers = env.root().join("layers");
    let tmp = env.root().join("tmp");
    let base_layers = entries(&layers);
    // Kill points: while the first layer is staged, after 1, 2 and 3 layers are visible.
    let points: Vec<Box<dyn Fn() -> bool>> = vec![
        Box::new(|| entries(&tmp) > 0),
        Box::new(|| entries(&layers) > base_layers),
        Box::new(|| entries(&layers) > base_layers + 1),
        Box::new(|| entries(&layers) > base_layers + 2),
    ];
    for (i, point) in points.iter().enumerate() {
        let mut child = env
            .command(&["load", "-i", big.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let reached = wait_for(|| point() || child.try_wait().unwrap().is_some());
        let _ = child.kill();
        let _ = child.wait();
        assert!(reached, "kill point {i} reached");
        let (_, images, _) = env.run(&["images", "-q", "big"]);
        if !images.trim().is_empty() {
            // The load finished before the kill: not an orphan case; undo it.
            env.ok(&["rmi", "big:1"]);
        }
        if i > 0 {
            // The orphans show in `system df` (image storage grew with no new image).
            assert_ne!(
                images_size(&env),
                size0,
                "kill point {i}: df counts orphans"
            );
        }
        let out = env.ok(&["system", "prune", "-f"]);
        assert!(
            i == 0 || !out.contains("Total reclaimed space: 0B"),
            "kill point {i}: {out}"
        );
        assert_eq!(images_size(&env), size0);
        assert!(
            out.ends_with("\n") && out.contains("Total reclaimed space: "),
            "{out}"
        );
        let now = listing(&env.root());
        assert!(
            now == want,
            "kill point {i}: store back to what its image needs: extra {:?}, missing {:?}",
            now.difference(&want).collect::<Vec<_>>(),
            want.difference(&now).collect::<Vec<_>>()
        );
    }
    // Without -f and without a terminal, the answer is read from stdin (none: no).
    let (code, out, _) = env.run(&["system", "prune", "-a"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "WARNING! This will remove:\n  - all stopped containers\n  - all networks not used by at least \
         one container\n  - all images without at least one container associated to them\n  - all build \
         cache\n\nAre you sure you want to continue? [y/N] \n"
    );
    assert_eq!(listing(&env.root()), want, "nothing removed without a yes");
    // With -a and no container, nothing is needed: an empty store.
    let out = env.ok(&["system", "prune", "-a", "-f"]);
    assert!(
        out.starts_with("Deleted Images:\nuntagged: kept:1\n"),
        "{out}"
    );
    assert_eq!(entries(&layers), 0);
    assert_eq!(entries(&env.root().join("blobs/sha256")), 0);
    assert_eq!(env.ok(&["images", "-q"]), "");
}

#[test]
fn a_container_that_fills_its_disk_keeps_its_record_and_exit_code() {
    let env = Env::new();
    let _fs = Tmpfs::mount(&env.root(), 64);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("bb.tar");
    fixtures::busybox_archive(&archive, "bb:1").unwrap();
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    // Supervisors killed and mounts detached even if the test fails (a killed FUSE daemon
    // aborts its connection, so nothing can hang); `wait_output` kills a stuck CLI after 180 s.
    let _cleanup = ContainerCleanup(env.root());
    for (name, code, driver) in [
        ("filler0", 0, "vfs"),
        ("filler3", 3, "vfs"),
        ("fusefill0", 0, "fuse"),
        ("fusefill5", 5, "fuse"),
    ] {
        let script = format!("dd if=/dev/zero of=/big bs=1M count=100 2>/dev/null; exit {code}");
        let (got, _, err) = env.run(&[
            "--storage-driver",
            driver,
            "run",
            "--name",
            name,
            "bb:1",
            "sh",
            "-c",
            &script,
        ]);
        assert_eq!(got, code, "{err}");
        // The disk is still full: the record is there with its real exit code.
        let ps = env.ok(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
        assert!(
            ps.lines()
                .any(|l| l.starts_with(&format!("{name} Exited ({code}) "))),
            "{ps}"
        );
        let inspected = env.ok(&["inspect", "-f", "{{.State.ExitCode}}", name]);
        assert_eq!(inspected.trim(), code.to_string());
        env.ok(&["rm", name]);
    }
}

#[test]
fn prune_during_a_pull_keeps_what_the_pull_has_not_registered_yet() {
    use strata_testkit::registry::proxy::{Mode, Proxy};
    let reg = Registry::start();
    let img = images::image(vec![
        images::layer(&[("etc/first", b"first\n")]),
        images::big_layer("data/big", 3 << 20, 11),
    ]);
    push_image(&reg, "during:1", &img);
    let proxy = Proxy::start(&reg.addr(), Mode::Hold(1 << 20));
    let env = Env::new();
    let name = format!("{}/during:1", proxy.addr());
    let child = env.spawn(&["pull", &name]);
    // The first layer is visible (not yet named by any image); the second is downloading.
    assert!(proxy.wait_held(std::time::Duration::from_secs(60)));
    let layers = env.root().join("layers");
    assert!(wait_for(|| entries(&layers) == 1), "first layer committed");
    let out = env.ok(&["system", "prune", "-a", "-f"]);
    assert_eq!(
        out, "Total reclaimed space: 0B\n",
        "nothing of the pull swept"
    );
    assert_eq!(entries(&layers), 1);
    assert_eq!(env.partials().len(), 1, "the download in progress stays");
    proxy.set_mode(Mode::Pass);
    proxy.release();
    let (code, out, err) = wait_output(child);
    assert_eq!(code, 0, "{out}{err}");
    let store = env.store();
    let rec = store.resolve(&name).unwrap();
    assert_eq!(rec.id.to_string(), img.config_digest);
    let dirs = store.layer_dirs(&rec).unwrap();
    assert!(dirs[1].join("etc/first").is_file() && dirs[0].join("data/big").is_file());
    assert!(env.partials().is_empty());
}

#[test]
fn a_hostile_layer_leaves_nothing_in_partial() {
    let reg = Registry::start();
    let mut t = fixtures::LayerTar::new();
    t.file("etc/ok", b"ok\n", 0o644)
        .symlink("escape", "/tmp")
        .file("escape/strata-hostile-layer", b"x", 0o644);
    let hostile = images::layer_from_tar(t.into_bytes());
    // Big enough that extraction refuses it before the download ends.
    let img = images::image(vec![images::big_layer("data/first", 2 << 20, 3), hostile]);
    push_image(&reg, "hostile:1", &img);
    let env = Env::new();
    let (code, _, err) = env.run(&["pull", &format!("{}/hostile:1", reg.addr())]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("refusing unsafe archive entry"), "{err}");
    assert!(env.partials().is_empty(), "{:?}", env.partials());
    assert!(!std::path::Path::new("/tmp/strata-hostile-layer").exists());
    // Nothing of the failed pull is left but the verified blob of the good layer, which a
    // prune reclaims.
    env.ok(&["system", "prune", "-f"]);
    assert_eq!(entries(&env.root().join("layers")), 0);
    assert_eq!(entries(&env.root().join("blobs/sha256")), 0);
}

#[test]
fn a_download_left_behind_by_a_killed_pull_is_stored_by_the_next_pull() {
    let reg = Registry::start();
    let img = images::image(vec![images::layer(&[("etc/x", b"x\n")])]);
    push_image(&reg, "left:1", &img);
    let env = Env::new();
    let name = format!("{}/left:1", reg.addr());
    env.ok(&["pull", &name]);
    // What a pull killed after making the layer visible but before moving its blob left
    // (older strata did it in that order): the layer, no compressed blob, the download.
    let hex = img.layers[0].digest.trim_start_matches("sha256:");
    let blob = env.root().join("blobs/sha256").join(hex);
    let partial = env.root().join(format!("partial/sha256-{hex}.partial"));
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::rename(&blob, &partial).unwrap();
    env.ok(&["pull", &name]);
    assert!(blob.is_file(), "compressed blob stored");
    assert_eq!(
        fixtures::sha256(&std::fs::read(&blob).unwrap()),
        img.layers[0].digest
    );
    assert!(env.partials().is_empty(), "{:?}", env.partials());
}

#[test]
fn system_prune_removes_stopped_containers_then_unused_images() {
    let env = Env::new();
    let _cleanup = ContainerCleanup(env.root());
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("bb.tar");
    fixtures::busybox_archive(&archive, "bb:1").unwrap();
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    let (code, _, err) = env.run(&[
        "--storage-driver",
        "vfs",
        "run",
        "--name",
        "stopped",
        "bb:1",
        "sh",
        "-c",
        "echo data > /file",
    ]);
    assert_eq!(code, 0, "{err}");
    let id = env.ok(&["ps", "-aq", "--no-trunc"]).trim().to_string();
    assert_eq!(id.len(), 64);
    // The image is used by a container: -a keeps nothing back once the container is gone.
    let out = env.ok(&["system", "prune", "-a", "-f"]);
    assert!(
        out.starts_with(&format!(
            "Deleted Containers:\n{id}\n\nDeleted Images:\nuntagged: bb:1\ndeleted: sha256:"
        )),
        "{out}"
    );
    assert!(
        out.contains("\nTotal reclaimed space: ") && !out.ends_with(" 0B\n"),
        "{out}"
    );
    assert_eq!(env.ok(&["ps", "-aq"]), "");
    assert_eq!(env.ok(&["images", "-q"]), "");
}
