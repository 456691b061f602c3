//! End-to-end tests of Docker's resource flags beyond `-m/--cpus/--pids-limit`: `-c/--cpu-shares`,
//! `--cpuset-cpus`, `--cpuset-mems`, `--memory-swap`, `--memory-reservation` at `run` and live
//! through `update` (read back from the container's real cgroup v1 files), Docker's refusals
//! (exit 125 for `run`, 1 for `update`, nothing left behind or changed), and
//! `--device-cgroup-rule` (a device node the container makes with mknod opens only with it).

mod containers_common;

use std::path::Path;
use std::time::Duration;

use containers_common::{default_driver, setup};
use strata_testkit::container::{eventually, Strata};

/// `/sys/fs/cgroup/<ctrl>/strata/<id>/<file>`, trimmed ("" when absent).
fn cg(id: &str, ctrl: &str, file: &str) -> String {
    std::fs::read_to_string(format!("/sys/fs/cgroup/{ctrl}/strata/{id}/{file}"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// `n` MiB in bytes, as the cgroup files show it.
fn mib(n: u64) -> String {
    (n << 20).to_string()
}

/// Each `(controller, file, value)` of the container's cgroups reads `value`.
fn assert_cgroup(id: &str, want: &[(&str, &str, String)]) {
    for (ctrl, file, value) in want {
        assert_eq!(&cg(id, ctrl, file), value, "{ctrl}/{file}");
    }
}

fn cgroup_dirs(id: &str) -> Vec<String> {
    ["memory", "cpu", "cpuset", "pids", "devices", "freezer"]
        .iter()
        .map(|c| format!("/sys/fs/cgroup/{c}/strata/{id}"))
        .filter(|p| Path::new(p).exists())
        .collect()
}

fn inspect(s: &Strata, name: &str, fmt: &str) -> String {
    s.ok(&["inspect", "-f", fmt, name]).trim().to_string()
}

const HOST_FIELDS: &str = "{{.HostConfig.CpuShares}} {{.HostConfig.CpusetCpus}}|{{.HostConfig.CpusetMems}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.HostConfig.MemoryReservation}}";

/// Wait until the container's shell printed "ready" `n` times in all (its child is running by
/// then).
fn wait_ready(s: &Strata, name: &str, n: usize) {
    eventually(Duration::from_secs(30), || {
        (s.run(&["logs", name]).stdout == "ready\n".repeat(n)).then_some(())
    })
    .expect("the container never started its child");
}

#[test]
fn resource_flags_at_run_reach_the_cgroups() {
    let s = setup(&default_driver());
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "res",
        "-c",
        "512",
        "--cpuset-cpus",
        "1",
        "--cpuset-mems",
        "0",
        "-m",
        "64m",
        "--memory-swap",
        "96m",
        "--memory-reservation",
        "32m",
        "busybox",
        "sh",
        "-c",
        "grep Cpus_allowed_list /proc/self/status; echo ready; sleep 1000",
    ]);
    let id = id.trim().to_string();
    eventually(Duration::from_secs(30), || {
        s.run(&["logs", "res"])
            .stdout
            .contains("ready")
            .then_some(())
    })
    .expect("the container never ran");
    assert_cgroup(
        &id,
        &[
            ("cpu", "cpu.shares", "512".into()),
            ("cpuset", "cpuset.cpus", "1".into()),
            ("cpuset", "cpuset.mems", "0".into()),
            ("memory", "memory.limit_in_bytes", mib(64)),
            ("memory", "memory.memsw.limit_in_bytes", mib(96)),
            ("memory", "memory.soft_limit_in_bytes", mib(32)),
        ],
    );
    // The kernel confines the container's processes to the CPU it was given.
    assert_eq!(
        s.ok(&["logs", "res"]),
        "Cpus_allowed_list:\t1\nready\n",
        "the container saw other CPUs"
    );
    let init = inspect(&s, "res", "{{.State.Pid}}");
    for ctrl in ["cpu", "cpuset", "memory"] {
        assert!(
            cg(&id, ctrl, "cgroup.procs").lines().any(|p| p == init),
            "init {init} not in the {ctrl} cgroup"
        );
    }
    assert_eq!(
        inspect(&s, "res", HOST_FIELDS),
        format!("512 1|0 {} {} {}", 64u64 << 20, 96u64 << 20, 32u64 << 20)
    );

    // -m alone: Docker's default memory plus swap is twice the memory; unset fields are
    // Docker's zero values.
    let id2 = s.ok(&[
        "run", "-d", "--name", "mem", "-m", "32m", "busybox", "sleep", "1000",
    ]);
    let id2 = id2.trim().to_string();
    assert_eq!(
        cg(&id2, "memory", "memory.memsw.limit_in_bytes"),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        inspect(&s, "mem", HOST_FIELDS),
        format!("0 | {} {} 0", 32u64 << 20, 64u64 << 20)
    );
    assert_eq!(
        cg(&id2, "cpuset", "cpuset.cpus"),
        "",
        "no cpuset cgroup made"
    );
    // --memory-swap -1: unlimited swap.
    let id3 = s.ok(&[
        "create",
        "--name",
        "unl",
        "-m",
        "32m",
        "--memory-swap",
        "-1",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id3 = id3.trim().to_string();
    assert_eq!(inspect(&s, "unl", "{{.HostConfig.MemorySwap}}"), "-1");
    s.ok(&["start", "unl"]);
    let unlimited: u64 = cg(&id3, "memory", "memory.memsw.limit_in_bytes")
        .parse()
        .unwrap();
    assert!(unlimited > 1 << 50, "{unlimited}");

    // The same through runc.
    let mut ids = vec![id.clone(), id2.clone(), id3.clone()];
    {
        let id4 = s.ok(&[
            "run",
            "-d",
            "--name",
            "oci",
            "--runtime",
            "runc",
            "-c",
            "300",
            "--cpuset-cpus",
            "1",
            "-m",
            "48m",
            "--memory-reservation",
            "24m",
            "busybox",
            "sleep",
            "1000",
        ]);
        let id4 = id4.trim().to_string();
        assert_eq!(cg(&id4, "cpu", "cpu.shares"), "300");
        assert_eq!(cg(&id4, "cpuset", "cpuset.cpus"), "1");
        assert_eq!(
            cg(&id4, "memory", "memory.memsw.limit_in_bytes"),
            (96u64 << 20).to_string()
        );
        assert_eq!(
            cg(&id4, "memory", "memory.soft_limit_in_bytes"),
            (24u64 << 20).to_string()
        );
        let init = inspect(&s, "oci", "{{.State.Pid}}");
        assert!(cg(&id4, "cpuset", "cgroup.procs")
            .lines()
            .any(|p| p == init));
        s.ok(&["rm", "-f", "oci"]);
        ids.push(id4);
    }
    s.ok(&["rm", "-f", "res", "mem", "unl"]);
    for i in &ids {
        assert_eq!(cgroup_dirs(i), Vec::<String>::new(), "cgroups left behind");
    }
}

#[test]
fn update_changes_the_new_limits_live() {
    let s = setup(&default_driver());
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "up",
        "busybox",
        "sh",
        "-c",
        "sleep 1000 & echo ready; wait",
    ]);
    let id = id.trim().to_string();
    wait_ready(&s, "up", 1);
    assert_eq!(inspect(&s, "up", HOST_FIELDS), "0 | 0 0 0");
    // Docker's rule: memory above the memory plus swap already set (0: none) needs a new
    // --memory-swap with it; nothing changes.
    let r = s.run(&["update", "-m", "64m", "up"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        format!("Error: Cannot update container {id}: Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time\n")
    );
    assert_eq!(cg(&id, "memory", "memory.limit_in_bytes"), "");

    let out = s.ok(&[
        "update",
        "-c",
        "256",
        "--cpuset-cpus",
        "1",
        "--cpuset-mems",
        "0",
        "-m",
        "64m",
        "--memory-swap",
        "128m",
        "--memory-reservation",
        "16m",
        "up",
    ]);
    assert_eq!(out, "up\n");
    assert_cgroup(
        &id,
        &[
            ("cpu", "cpu.shares", "256".into()),
            ("cpuset", "cpuset.cpus", "1".into()),
            ("cpuset", "cpuset.mems", "0".into()),
            ("memory", "memory.limit_in_bytes", mib(64)),
            ("memory", "memory.memsw.limit_in_bytes", mib(128)),
            ("memory", "memory.soft_limit_in_bytes", mib(16)),
        ],
    );
    // Both the shell and its sleep moved into the new cpuset cgroup, and run on CPU 1 only.
    let procs = cg(&id, "cpuset", "cgroup.procs");
    assert_eq!(procs.lines().count(), 2, "{procs:?}");
    for p in procs.lines() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
        assert!(status.contains("Cpus_allowed_list:\t1\n"), "{p}: {status}");
    }
    assert_eq!(
        inspect(&s, "up", HOST_FIELDS),
        format!("256 1|0 {} {} {}", 64u64 << 20, 128u64 << 20, 16u64 << 20)
    );

    // Partial update: unset flags keep their values. Memory up past the old memory plus swap
    // with a new swap (the swap file goes first), then down (the memory file goes first).
    s.ok(&["update", "--cpuset-cpus", "0-1", "up"]);
    assert_eq!(cg(&id, "cpuset", "cpuset.cpus"), "0-1");
    assert_eq!(cg(&id, "cpu", "cpu.shares"), "256");
    let r = s.run(&["update", "-m", "256m", "up"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("update the memoryswap at the same time"),
        "{r:?}"
    );
    s.ok(&["update", "-m", "256m", "--memory-swap", "512m", "up"]);
    assert_eq!(
        cg(&id, "memory", "memory.limit_in_bytes"),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        cg(&id, "memory", "memory.memsw.limit_in_bytes"),
        (512u64 << 20).to_string()
    );
    s.ok(&["update", "-m", "32m", "--memory-swap", "48m", "up"]);
    assert_eq!(
        cg(&id, "memory", "memory.limit_in_bytes"),
        (32u64 << 20).to_string()
    );
    assert_eq!(
        cg(&id, "memory", "memory.memsw.limit_in_bytes"),
        (48u64 << 20).to_string()
    );
    // Memory at most the memory plus swap set: no new swap needed.
    s.ok(&["update", "--memory", "40m", "up"]);
    assert_eq!(
        cg(&id, "memory", "memory.limit_in_bytes"),
        (40u64 << 20).to_string()
    );
    assert_eq!(
        inspect(&s, "up", HOST_FIELDS),
        format!("256 0-1|0 {} {} {}", 40u64 << 20, 48u64 << 20, 16u64 << 20)
    );

    // Docker's checks of the values: exit 1, the record and the cgroups unchanged.
    for (args, msg) in [
        (
            &["-m", "64m", "--memory-swap", "32m"][..],
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            &["--cpuset-cpus", "1-0"][..],
            "Invalid value 1-0 for cpuset cpus: invalid format: 1-0",
        ),
        (
            &["--memory-reservation", "1m"][..],
            "Minimum memory reservation allowed is 6MB",
        ),
    ] {
        let mut a = vec!["update"];
        a.extend(args);
        a.push("up");
        let r = s.run(&a);
        assert_eq!(r.code, Some(1), "{args:?}: {r:?}");
        assert_eq!(r.stderr, format!("Error: {msg}\n"), "{args:?}");
        assert_eq!(r.stdout, "");
    }
    assert_eq!(
        inspect(&s, "up", HOST_FIELDS),
        format!("256 0-1|0 {} {} {}", 40u64 << 20, 48u64 << 20, 16u64 << 20)
    );
    assert_eq!(cg(&id, "cpuset", "cpuset.cpus"), "0-1");

    // A stopped container keeps the new values for its next start.
    s.ok(&["stop", "-t", "1", "up"]);
    s.ok(&["update", "-c", "100", "up"]);
    s.ok(&["start", "up"]);
    wait_ready(&s, "up", 2);
    assert_eq!(cg(&id, "cpu", "cpu.shares"), "100");
    assert_eq!(cg(&id, "cpuset", "cpuset.cpus"), "0-1");
    s.ok(&["rm", "-f", "up"]);
    assert_eq!(
        cgroup_dirs(&id),
        Vec::<String>::new(),
        "cgroups left behind"
    );
}

#[test]
fn bad_resource_values_are_refused_before_anything_is_made() {
    let s = setup(&default_driver());
    let cpus = std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.cpus").unwrap();
    let mems = std::fs::read_to_string("/sys/fs/cgroup/cpuset/cpuset.mems").unwrap();
    let not_available_cpus = format!(
        "Requested CPUs are not available - requested 4000, available: {}",
        cpus.trim()
    );
    let not_available_mems = format!(
        "Requested memory nodes are not available - requested 63, available: {}",
        mems.trim()
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["-m", "64m", "--memory-swap", "32m"],
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        ),
        (
            vec!["--memory-swap", "64m"],
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        ),
        (vec!["-m", "1m"], "Minimum memory limit allowed is 6MB"),
        (
            vec!["--memory-reservation", "5m"],
            "Minimum memory reservation allowed is 6MB",
        ),
        (
            vec!["-m", "16m", "--memory-reservation", "32m"],
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        ),
        (
            vec!["--cpuset-cpus", "0-x"],
            "Invalid value 0-x for cpuset cpus: invalid format: 0-x",
        ),
        (vec!["--cpuset-cpus", "4000"], &not_available_cpus),
        (
            vec!["--cpuset-mems", "a"],
            "Invalid value a for cpuset mems: invalid format: a",
        ),
        (vec!["--cpuset-mems", "63"], &not_available_mems),
        (
            vec!["--device-cgroup-rule", "c 42 rwm"],
            "invalid argument \"c 42 rwm\" for \"--device-cgroup-rule\" flag: invalid device cgroup format 'c 42 rwm'",
        ),
        (
            vec!["--device-cgroup-rule", "c 42:* rwx"],
            "invalid argument \"c 42:* rwx\" for \"--device-cgroup-rule\" flag: invalid device cgroup format 'c 42:* rwx'",
        ),
    ];
    for verb in ["run", "create"] {
        for (flags, msg) in &cases {
            let mut a = vec![verb, "--name", "bad"];
            a.extend(flags);
            a.extend(["busybox", "true"]);
            let r = s.run(&a);
            assert_eq!(r.code, Some(125), "{a:?}: {r:?}");
            assert_eq!(r.stderr, format!("Error: {msg}\n"), "{a:?}");
            assert_eq!(r.stdout, "", "{a:?}");
            assert_eq!(s.ok(&["ps", "-aq"]), "", "{a:?} left a container");
        }
    }
}

/// Run `sh -c CMD` in a new busybox container (`--rm`) with `opts`, the device program forced
/// onto cgroup v2 with `v2`; returns (exit code, stdout, stderr).
fn run_sh(s: &Strata, opts: &[&str], cmd: &str, v2: bool) -> (Option<i32>, String, String) {
    let mut a = vec!["run", "--rm"];
    a.extend(opts);
    a.extend(["busybox", "sh", "-c", cmd]);
    let mut c = s.command(&a);
    if v2 {
        c.env("STRATA_DEVICE_CGROUP", "v2");
    } else {
        c.env_remove("STRATA_DEVICE_CGROUP");
    }
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn device_cgroup_rule_allows_a_node_beyond_the_defaults() {
    let s = setup(&default_driver());
    // A char device of a major no driver has: the device cgroup is asked on open before the
    // driver lookup, so EPERM means the cgroup refused and ENXIO that it let the open through.
    let cmd = "mknod /dev/x42 c 42 7 && cat /dev/x42";
    let has_v2 = Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists()
        || std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").is_ok();
    for v2 in [false, true] {
        if v2 && !has_v2 {
            continue;
        }
        let (code, _, err) = run_sh(&s, &[], cmd, v2);
        assert_eq!(code, Some(1), "v2={v2}: {err}");
        assert!(err.contains("Operation not permitted"), "v2={v2}: {err}");
        let (code, _, err) = run_sh(&s, &["--device-cgroup-rule", "c 42:* rmw"], cmd, v2);
        assert_eq!(code, Some(1), "v2={v2}: {err}");
        assert!(err.contains("No such device or address"), "v2={v2}: {err}");
        // Another major stays refused; a rule for block devices does not open a char one.
        let (_, _, err) = run_sh(
            &s,
            &[
                "--device-cgroup-rule",
                "c 43:* rmw",
                "--device-cgroup-rule",
                "b 42:* rwm",
            ],
            cmd,
            v2,
        );
        assert!(err.contains("Operation not permitted"), "v2={v2}: {err}");
        // Minor numbers count: 42:7 is allowed, 42:8 is not.
        let (_, _, err) = run_sh(
            &s,
            &["--device-cgroup-rule", "c 42:7 r"],
            "mknod /dev/x42 c 42 7 && mknod /dev/y42 c 42 8 && cat /dev/x42; cat /dev/y42",
            v2,
        );
        assert!(
            err.contains("x42': No such device or address"),
            "v2={v2}: {err}"
        );
        assert!(
            err.contains("y42': Operation not permitted"),
            "v2={v2}: {err}"
        );
    }
    // runc gets the rule in the bundle's device list.
    {
        let (_, _, err) = run_sh(&s, &["--runtime", "runc"], cmd, false);
        assert!(err.contains("Operation not permitted"), "runc: {err}");
        let (_, _, err) = run_sh(
            &s,
            &["--runtime", "runc", "--device-cgroup-rule", "c 42:* rmw"],
            cmd,
            false,
        );
        assert!(err.contains("No such device or address"), "runc: {err}");
    }
    // The v1 controller holds the rule; inspect shows the rules as given.
    let id = s.ok(&[
        "run",
        "-d",
        "--name",
        "dev",
        "--device-cgroup-rule",
        "c 42:* rmw",
        "--device-cgroup-rule",
        "b 7:0 r",
        "busybox",
        "sleep",
        "1000",
    ]);
    let id = id.trim();
    if Path::new("/sys/fs/cgroup/devices/devices.list").exists()
        && std::env::var("STRATA_DEVICE_CGROUP").as_deref() != Ok("v2")
    {
        let list = cg(id, "devices", "devices.list");
        assert!(list.lines().any(|l| l == "c 42:* rwm"), "{list}");
        assert!(list.lines().any(|l| l == "b 7:0 r"), "{list}");
    }
    assert_eq!(
        inspect(&s, "dev", "{{json .HostConfig.DeviceCgroupRules}}"),
        r#"["c 42:* rmw","b 7:0 r"]"#
    );
    s.ok(&["run", "-d", "--name", "plain", "busybox", "sleep", "1000"]);
    assert_eq!(
        inspect(&s, "plain", "{{json .HostConfig.DeviceCgroupRules}}"),
        "null"
    );
    s.ok(&["rm", "-f", "dev", "plain"]);
}
