//! Shared by the container tests: a strata installation with a busybox image in its store.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;
use strata_runtime::reference::Reference;
use strata_runtime::store::Store;
use strata_testkit::container::Strata;
use strata_testkit::fixtures;

/// Add a busybox image tagged `tag` to the store at `root`; `patch` is merged into the image
/// config's `config` object (Env, WorkingDir, User, Entrypoint, Cmd, StopSignal, …).
pub fn install_busybox(root: &Path, tag: &str, patch: Value) -> String {
    let store = Store::open(root).unwrap();
    let layer = fixtures::busybox_layer().unwrap();
    store.add_layer(&layer[..], None, None).unwrap();
    let mut spec = fixtures::ImageSpec::new(&[tag], vec![layer]);
    if let Value::Object(p) = patch {
        for (k, v) in p {
            spec.config["config"][k] = v;
        }
    }
    let id = store
        .add_image(
            &spec.config_bytes(),
            &[Reference::parse_with_default_tag(tag).unwrap()],
            None,
        )
        .unwrap();
    id.to_string()
}

/// A strata installation using `driver`, with `busybox:latest` in its store.
pub fn setup(driver: &str) -> Strata {
    let s = Strata::new(env!("CARGO_BIN_EXE_strata")).with_driver(driver);
    install_busybox(s.root_path(), "busybox:latest", serde_json::json!({}));
    s
}

/// The driver the main container tests use: `STRATA_TEST_DRIVER`, else fuse.
pub fn default_driver() -> String {
    std::env::var("STRATA_TEST_DRIVER").unwrap_or_else(|_| "fuse".to_string())
}

/// `strata-overlay`, built next to the `strata` binary under test (`cargo build` builds every
/// workspace binary; `cargo test -p strata-cli` alone does not: build it first).
pub fn strata_overlay() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_strata"))
        .parent()
        .unwrap()
        .join("strata-overlay");
    assert!(
        bin.is_file(),
        "{} missing: run `cargo build -p strata-fs --bin strata-overlay` first",
        bin.display()
    );
    bin
}

/// The `{{.Status}}` `ps` shows (stopped containers too with `all`) of the container named
/// `name`, trimmed.
pub fn ps_status(s: &Strata, name: &str, all: bool) -> String {
    let filter = format!("name={name}");
    let mut args = vec!["ps"];
    if all {
        args.push("-a");
    }
    args.extend(["--filter", &filter, "--format", "{{.Status}}"]);
    s.ok(&args).trim().to_string()
}

/// The arguments of `run --rm OPTS busybox CMD`.
pub fn busybox_rm<'a>(opts: &[&'a str], cmd: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--rm"];
    args.extend(opts);
    args.push("busybox");
    args.extend(cmd);
    args
}
