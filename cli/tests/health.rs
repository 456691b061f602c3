//! Health checks end to end: an image's HEALTHCHECK and the `--health-*` flags, probes run in
//! the container by the supervisor, `ps` and `inspect` showing Docker's health fields.

mod containers_common;

use std::time::Duration;

use containers_common::{default_driver, install_busybox, ps_status, setup};
use serde_json::Value;
use strata_testkit::container::{eventually, Strata};

fn inspect(s: &Strata, name: &str) -> Value {
    let out = s.ok(&["inspect", name]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn health_status(s: &Strata, name: &str) -> String {
    inspect(s, name)["State"]["Health"]["Status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn wait_for_status(s: &Strata, name: &str, want: &str) -> Value {
    eventually(Duration::from_secs(30), || {
        let v = inspect(s, name);
        (v["State"]["Health"]["Status"] == want).then_some(v)
    })
    .unwrap_or_else(|| panic!("{name} never became {want}: {}", inspect(s, name)))
}

#[test]
fn image_healthcheck_turns_unhealthy_then_healthy() {
    let s = setup(&default_driver());
    install_busybox(
        s.root_path(),
        "hc:1",
        serde_json::json!({"Healthcheck": {
            "Test": ["CMD-SHELL", "cat /tmp/ok"],
            "Interval": 300_000_000i64,
            "Timeout": 5_000_000_000i64,
            "Retries": 2,
        }}),
    );
    s.ok(&["run", "-d", "--name", "web", "hc:1", "sleep", "300"]);
    // Right after start, before two failures in a row: starting.
    let first = inspect(&s, "web");
    assert_eq!(
        first["Config"]["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "cat /tmp/ok"])
    );
    assert!(
        ["starting", "unhealthy"].contains(&first["State"]["Health"]["Status"].as_str().unwrap()),
        "{first}"
    );
    let v = wait_for_status(&s, "web", "unhealthy");
    let h = &v["State"]["Health"];
    assert!(h["FailingStreak"].as_u64().unwrap() >= 2, "{h}");
    let last = h["Log"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["ExitCode"], 1, "{h}");
    assert!(
        last["Output"].as_str().unwrap().contains("No such file"),
        "{h}"
    );
    assert!(ps_status(&s, "web", false).ends_with("(unhealthy)"));
    assert_eq!(s.ok(&["ps", "-q", "-f", "health=healthy"]), "");

    s.ok(&["exec", "web", "sh", "-c", "echo fine > /tmp/ok"]);
    let v = wait_for_status(&s, "web", "healthy");
    let h = &v["State"]["Health"];
    assert_eq!(h["FailingStreak"], 0, "{h}");
    let log = h["Log"].as_array().unwrap();
    assert!(log.len() <= 5, "{h}");
    assert_eq!(log.last().unwrap()["Output"], "fine\n", "{h}");
    assert!(ps_status(&s, "web", false).ends_with("(healthy)"));
    assert_eq!(
        s.ok(&["ps", "-f", "health=healthy", "--format", "{{.Names}}"]),
        "web\n"
    );
    assert_eq!(s.ok(&["ps", "-q", "-f", "health=none"]), "");

    // Stopped: no probe is left behind, and `ps -a` shows Docker's exited status.
    s.ok(&["stop", "-t", "1", "web"]);
    let left = probes_naming(&s);
    assert!(left.is_empty(), "probes left: {left:?}");
    assert!(s
        .ok(&["ps", "-a", "--format", "{{.Status}}"])
        .starts_with("Exited"));
}

/// Pids of `__health-probe` processes of this installation.
fn probes_naming(s: &Strata) -> Vec<u32> {
    let root = s.root_path().to_str().unwrap().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("__health-probe") && cmd.contains(&root)
        })
        .collect()
}

#[test]
fn flags_override_timeout_kills_the_probe_and_no_healthcheck_disables() {
    let s = setup(&default_driver());
    s.ok(&[
        "run",
        "-d",
        "--name",
        "slow",
        "--health-cmd",
        "sleep 30",
        "--health-timeout",
        "500ms",
        "--health-interval",
        "300ms",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "300",
    ]);
    let v = wait_for_status(&s, "slow", "unhealthy");
    let last = v["State"]["Health"]["Log"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["ExitCode"], -1, "{v}");
    assert_eq!(
        last["Output"], "Health check exceeded timeout (500ms)",
        "{v}"
    );
    // Timed-out probes are killed: after several of them, at most the current one runs.
    eventually(Duration::from_secs(30), || {
        let n = inspect(&s, "slow")["State"]["Health"]["Log"]
            .as_array()
            .map_or(0, Vec::len);
        (n >= 4).then_some(())
    })
    .expect("four probes");
    let ps = s.ok(&["exec", "slow", "ps", "-o", "args"]);
    let running = ps.lines().filter(|l| l.trim() == "sleep 30").count();
    assert!(running <= 1, "probes not killed: {ps}");

    // --no-healthcheck drops the image's check; Docker's errors for bad flags.
    install_busybox(
        s.root_path(),
        "hc:2",
        serde_json::json!({"Healthcheck": {"Test": ["CMD", "true"]}}),
    );
    s.ok(&[
        "run",
        "-d",
        "--name",
        "off",
        "--no-healthcheck",
        "hc:2",
        "sleep",
        "300",
    ]);
    let v = inspect(&s, "off");
    assert!(v["State"].get("Health").is_none(), "{v}");
    assert!(v["Config"].get("Healthcheck").is_none(), "{v}");
    assert!(!ps_status(&s, "off", false).contains('('));
    assert_eq!(
        s.ok(&["ps", "-f", "health=none", "--format", "{{.Names}}"]),
        "off\n"
    );
    let r = s.run(&[
        "run",
        "--no-healthcheck",
        "--health-cmd",
        "true",
        "busybox",
        "true",
    ]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(
        r.stderr
            .contains("--no-healthcheck conflicts with --health-* options"),
        "{r:?}"
    );
    let r = s.run(&["run", "--health-interval", "10", "busybox", "true"]);
    assert_eq!(r.code, Some(125), "{r:?}");
    assert!(r.stderr.contains("time: invalid duration \"10\""), "{r:?}");
    assert_eq!(health_status(&s, "off"), "");
}
