//! The escape suite: what a container started without flags must not be able to do (Docker's
//! default confinement: device cgroup, seccomp profile, capabilities, read-only /proc and /sys
//! paths, no leaked fds), and the flags that turn each protection off. Real containers, as
//! root; every loop device, container and cgroup is removed even when a test fails.
//!
//! One shell script per configuration probes everything at once (the suite stays fast); its
//! output is compared line by line with the exact errors expected. The same script runs on the
//! fuse, overlay and vfs drivers, with the builtin runtime and with runc, and with the device
//! rules enforced by the v1 controller and by the cgroup v2 eBPF program.

mod containers_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use containers_common::{default_driver, setup};
use strata_runtime::reference::Reference;
use strata_runtime::store::Store;
use strata_testkit::container::{Run, Strata, CMD_TIMEOUT};
use strata_testkit::fixtures;

/// A loop device backed by a file in the test's temp dir; detached on drop.
struct LoopDev {
    dev: String,
    backing: PathBuf,
    minor: u32,
}

const LOOP_DATA: &[u8] = b"host-secret-data";

impl LoopDev {
    fn new(dir: &Path) -> LoopDev {
        let backing = dir.join("loop.img");
        let mut data = LOOP_DATA.to_vec();
        data.resize(1 << 20, 0);
        std::fs::write(&backing, &data).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&backing)
            .output()
            .expect("losetup");
        assert!(out.status.success(), "losetup: {out:?}");
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let minor = dev
            .trim_start_matches("/dev/loop")
            .parse()
            .expect("loop minor");
        LoopDev {
            dev,
            backing,
            minor,
        }
    }

    fn unchanged(&self) -> bool {
        std::fs::read(&self.backing)
            .map(|d| d.starts_with(LOOP_DATA) && d[LOOP_DATA.len()..].iter().all(|b| *b == 0))
            .unwrap_or(false)
    }
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A static probe for syscalls busybox has no applet for; prints `name: ok|ERRNO` per call.
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
static void report(const char *what, long r) {
    if (r < 0) printf("%s: %s\n", what, strerrorname_np(errno));
    else printf("%s: ok\n", what);
}
/* The i386 ABI from a 64-bit process (int 0x80): the filter must cover Docker's x86
   sub-architecture too, or such calls would bypass it. Returns -errno. */
static long i386_call(long nr, long a) {
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(nr), "b"(a) : "memory");
    return r;
}
static void report_raw(const char *what, long r) {
    if (r < 0) printf("%s: %s\n", what, strerrorname_np(-r));
    else printf("%s: ok\n", what);
}
int main(int argc, char **argv) {
    report("add_key", syscall(SYS_add_key, "user", "k", "v", 1, -2));
    report("keyctl", syscall(SYS_keyctl, 0, -3, 0));
    report("ptrace", ptrace(PTRACE_ATTACH, atoi(argv[1]), 0, 0));
    report("userfaultfd", syscall(SYS_userfaultfd, 0));
    report("bpf", syscall(SYS_bpf, 0, 0, 0));
    report("perf_event_open", syscall(SYS_perf_event_open, 0, 0, -1, -1, 0));
    report_raw("getpid(i386)", i386_call(20, 0));
    report_raw("unshare(i386)", i386_call(310, 0x10000000));
    return 0;
}
"#;

/// Build the probe with gcc -static into `dir/probe/probe`; returns the dir to bind-mount.
fn build_probe(dir: &Path) -> PathBuf {
    let pdir = dir.join("probe");
    std::fs::create_dir_all(&pdir).unwrap();
    let src = pdir.join("probe.c");
    std::fs::write(&src, PROBE_C).unwrap();
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(pdir.join("probe"))
        .arg(&src)
        .output()
        .expect("gcc (scripts/setup installs it)");
    assert!(out.status.success(), "gcc: {out:?}");
    pdir
}

/// An image with device nodes shipped in a layer: `/nodes/kmsg` (c 1:11) and `/nodes/blk`
/// (b 7:minor, the test's loop device).
fn install_node_image(root: &Path, loop_minor: u32) {
    let store = Store::open(root).unwrap();
    let base = fixtures::busybox_layer().unwrap();
    let mut t = fixtures::LayerTar::new();
    t.dir("nodes", 0o755)
        .device("nodes/kmsg", false, 1, 11)
        .device("nodes/blk", true, 7, loop_minor);
    let nodes = t.into_bytes();
    let base_info = store.add_layer(&base[..], None, None).unwrap();
    store
        .add_layer(&nodes[..], Some(&base_info.chain_id), None)
        .unwrap();
    let spec = fixtures::ImageSpec::new(&["nodes:1"], vec![base, nodes]);
    store
        .add_image(
            &spec.config_bytes(),
            &[Reference::parse_with_default_tag("nodes:1").unwrap()],
            None,
        )
        .unwrap();
}

/// `strata run --rm [--runtime R] ARGS… nodes:1 sh -c SCRIPT`, with extra env.
fn run_script(
    s: &Strata,
    runtime: &str,
    env: &[(&str, &str)],
    flags: &[&str],
    script: &str,
) -> Run {
    let mut args = vec!["run", "--rm", "--runtime", runtime];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["nodes:1", "sh", "-c", script]);
    let mut cmd = s.command(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = strata_testkit::container::wait_output(cmd.spawn().unwrap(), CMD_TIMEOUT);
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What the default confinement must refuse, and how (stdout and stderr merged in order).
fn default_script(minor: u32) -> String {
    format!(
        "exec 2>&1
mknod /tmp/b b 7 {minor} && echo mknod-ok
dd if=/tmp/b bs=16 count=1
echo x > /tmp/b
mknod /tmp/k c 1 11 && cat /tmp/k
cat /nodes/kmsg
dd if=/nodes/blk bs=16 count=1
ls /dev/kmsg
unshare -U true
mkdir -p /mnt; mount -t tmpfs none /mnt
echo h > /proc/sysrq-trigger
echo x > /proc/sys/kernel/hostname
echo x > /sys/kernel/uevent_helper
/probe/probe {host_pid}
grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status
(ls /proc/1/fd > /tmp/fds); tr '\\n' ' ' < /tmp/fds; echo
stat -c '%a %U %n' /etc/hosts /etc/hostname /etc/resolv.conf
",
        host_pid = std::process::id()
    )
}

fn default_expected() -> String {
    // Read-only where the kernel has it (CONFIG_MAGIC_SYSRQ); absent on some hosts.
    let sysrq = if Path::new("/proc/sysrq-trigger").exists() {
        "sh: can't create /proc/sysrq-trigger: Read-only file system"
    } else {
        "sh: can't create /proc/sysrq-trigger: nonexistent directory"
    };
    "mknod-ok
dd: can't open '/tmp/b': Operation not permitted
sh: can't create /tmp/b: Operation not permitted
cat: can't open '/tmp/k': Operation not permitted
cat: can't open '/nodes/kmsg': Operation not permitted
dd: can't open '/nodes/blk': Operation not permitted
ls: /dev/kmsg: No such file or directory
unshare: unshare(0x10000000): Operation not permitted
mount: permission denied (are you root?)
{sysrq}
sh: can't create /proc/sys/kernel/hostname: Read-only file system
sh: can't create /sys/kernel/uevent_helper: Read-only file system
add_key: EPERM
keyctl: EPERM
ptrace: ESRCH
userfaultfd: EPERM
bpf: EPERM
perf_event_open: EPERM
getpid(i386): ok
unshare(i386): EPERM
CapEff:\t00000000a80425fb
NoNewPrivs:\t1
Seccomp:\t2
0 1 2 \n644 root /etc/hosts
644 root /etc/hostname
644 root /etc/resolv.conf
"
    .replace("{sysrq}", sysrq)
}

/// The default suite on one configuration.
fn default_confinement(driver: &str, runtime: &str, env: &[(&str, &str)]) {
    let s = setup(driver);
    let lo = LoopDev::new(s.root_path());
    install_node_image(s.root_path(), lo.minor);
    let probe = build_probe(s.root_path());
    let vol = format!("{}:/probe:ro", probe.display());
    let r = run_script(&s, runtime, env, &["-v", &vol], &default_script(lo.minor));
    assert_eq!(r.code, Some(0), "{driver}/{runtime}: {r:?}");
    assert_eq!(
        r.stdout,
        default_expected(),
        "{driver}/{runtime} {env:?}: stderr {}",
        r.stderr
    );
    assert!(lo.unchanged(), "host loop device data changed");
    assert_eq!(s.ok(&["ps", "-aq"]), "", "nothing left");
    assert_no_cgroups(&s);
}

/// No `strata/<id>` device cgroup of this installation's containers is left.
fn assert_no_cgroups(s: &Strata) {
    for base in [
        "/sys/fs/cgroup/devices/strata",
        "/sys/fs/cgroup/unified/strata",
    ] {
        let Ok(entries) = std::fs::read_dir(base) else {
            continue;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            assert!(
                !s.root_path().join("containers").join(&id).exists(),
                "cgroup {base}/{id} left behind"
            );
        }
    }
}

#[test]
fn default_confinement_fuse_builtin() {
    default_confinement(&default_driver(), "builtin", &[]);
}

#[test]
fn default_confinement_fuse_builtin_ebpf_devices() {
    default_confinement(
        &default_driver(),
        "builtin",
        &[("STRATA_DEVICE_CGROUP", "v2")],
    );
}

#[test]
fn default_confinement_overlay() {
    default_confinement("overlay", "builtin", &[]);
}

#[test]
fn default_confinement_vfs() {
    default_confinement("vfs", "builtin", &[]);
}

#[test]
fn default_confinement_runc() {
    default_confinement(&default_driver(), "runc", &[]);
}

/// `--privileged` gets every capability the caller has: this process's bounding set.
fn host_cap_bnd() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim()
        .to_string();
    format!("CapEff:\t{bnd}")
}

/// The flags that turn each protection off (or tighten it), on the builtin runtime and runc.
fn knobs(runtime: &str) {
    let s = setup(&default_driver());
    let lo = LoopDev::new(s.root_path());
    install_node_image(s.root_path(), lo.minor);
    let m = lo.minor;
    // --privileged: the host's devices are there and usable, seccomp is off, /sys is rw.
    let r = run_script(
        &s,
        runtime,
        &[],
        &["--privileged"],
        &format!(
            "exec 2>&1; mknod /tmp/b b 7 {m}; dd if=/tmp/b bs=16 count=1 2>/dev/null; echo; \
             dd if={dev} bs=16 count=1 2>/dev/null; echo; \
             grep -E '^(Seccomp|CapEff):' /proc/self/status; \
             grep -c ' /sys rw,' /proc/self/mountinfo",
            dev = lo.dev
        ),
    );
    assert_eq!(
        r.stdout,
        format!(
            "host-secret-data\nhost-secret-data\n{}\nSeccomp:\t0\n1\n",
            host_cap_bnd()
        ),
        "{runtime}: {r:?}"
    );
    // seccomp=unconfined: unshare -U works; the capabilities stay Docker's.
    let r = run_script(
        &s,
        runtime,
        &[],
        &["--security-opt", "seccomp=unconfined"],
        "exec 2>&1; unshare -U true && echo userns-ok; grep Seccomp: /proc/self/status",
    );
    assert_eq!(r.stdout, "userns-ok\nSeccomp:\t0\n", "{runtime}: {r:?}");
    // A custom profile denying mkdir.
    let profile = s.root_path().join("nomkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let r = run_script(
        &s,
        runtime,
        &[],
        &[
            "--security-opt",
            &opt,
            "--security-opt",
            "no-new-privileges",
        ],
        "exec 2>&1; mkdir /tmp/x; touch /tmp/y && echo touch-ok",
    );
    assert_eq!(
        r.stdout, "mkdir: can't create directory '/tmp/x': Operation not permitted\ntouch-ok\n",
        "{runtime}: {r:?}"
    );
    // --cap-drop NET_RAW: no raw socket (ping); --cap-add SYS_ADMIN: mount allowed.
    let r = run_script(
        &s,
        runtime,
        &[],
        &["--cap-drop", "net_raw"],
        "exec 2>&1; ping -c1 -W1 127.0.0.1 >/dev/null; grep CapEff: /proc/self/status",
    );
    assert_eq!(
        r.stdout, "ping: permission denied (are you root?)\nCapEff:\t00000000a80405fb\n",
        "{runtime}: {r:?}"
    );
    let r = run_script(
        &s,
        runtime,
        &[],
        &[],
        "ping -c1 -W1 127.0.0.1 >/dev/null && echo ping-ok",
    );
    assert_eq!(r.stdout, "ping-ok\n", "{runtime}: {r:?}");
    let r = run_script(
        &s,
        runtime,
        &[],
        &["--cap-add", "SYS_ADMIN"],
        "exec 2>&1; mkdir -p /mnt; mount -t tmpfs none /mnt && echo mount-ok",
    );
    assert_eq!(r.stdout, "mount-ok\n", "{runtime}: {r:?}");
    // --device: the node appears and may be used, with its access mode.
    let r = run_script(
        &s,
        runtime,
        &[],
        &["--device", &format!("{}:/dev/xloop:r", lo.dev)],
        "exec 2>&1; dd if=/dev/xloop bs=16 count=1 2>/dev/null; echo; echo x > /dev/xloop",
    );
    assert_eq!(
        r.stdout, "host-secret-data\nsh: can't create /dev/xloop: Operation not permitted\n",
        "{runtime}: {r:?}"
    );
    // --read-only with a --tmpfs.
    let r = run_script(
        &s,
        runtime,
        &[],
        &["--read-only", "--tmpfs", "/run:size=1m", "--tmpfs", "/tmp"],
        "exec 2>&1; touch /x; touch /run/x /tmp/x && echo tmpfs-ok; \
         grep -c ' /run rw,nosuid,nodev,noexec,relatime - tmpfs tmpfs rw,size=1024k' /proc/self/mountinfo",
    );
    assert_eq!(
        r.stdout, "touch: /x: Read-only file system\ntmpfs-ok\n1\n",
        "{runtime}: {r:?}"
    );
    assert!(lo.unchanged());
    assert_eq!(s.ok(&["ps", "-aq"]), "");
    assert_no_cgroups(&s);
}

#[test]
fn knobs_builtin() {
    knobs("builtin");
}

#[test]
fn knobs_runc() {
    knobs("runc");
}

/// Bad flags: one line, exit 125, nothing created.
#[test]
fn bad_flags_are_refused_before_anything_starts() {
    let s = setup(&default_driver());
    let bad = s.root_path().join("bad.json");
    std::fs::write(&bad, "{nope").unwrap();
    let unknown = s.root_path().join("unknown.json");
    std::fs::write(
        &unknown,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdri"],"action":"SCMP_ACT_ERRNO"}]}"#,
    )
    .unwrap();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--security-opt".into(), format!("seccomp={}", bad.display())],
            "Error: Decoding seccomp profile failed: key must be a string at line 1 column 2\n".into(),
        ),
        (
            vec!["--security-opt".into(), format!("seccomp={}", unknown.display())],
            "Error: seccomp profile: unknown syscall \"mkdri\"\n".into(),
        ),
        (
            vec!["--security-opt".into(), "seccomp=/nonexistent.json".into()],
            "Error: opening seccomp profile (/nonexistent.json) failed: open /nonexistent.json: No such file or directory (os error 2)\n".into(),
        ),
        (
            vec!["--cap-add".into(), "foo".into()],
            "Error: invalid CapAdd: unknown capability: \"CAP_FOO\"\n".into(),
        ),
        (
            vec!["--cap-drop".into(), "cap_bar".into()],
            "Error: invalid CapDrop: unknown capability: \"CAP_BAR\"\n".into(),
        ),
        (
            vec!["--device".into(), "/dev/nonexistent".into()],
            "Error: error gathering device information while adding custom device \"/dev/nonexistent\": No such file or directory (os error 2)\n".into(),
        ),
        (
            vec!["--security-opt".into(), "bogus".into()],
            "Error: invalid --security-opt: \"bogus\"\n".into(),
        ),
    ];
    for (flags, want) in cases {
        let mut args: Vec<&str> = vec!["run", "--rm"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(["busybox", "true"]);
        let r = s.run(&args);
        assert_eq!(r.code, Some(125), "{flags:?}: {r:?}");
        assert_eq!(r.stderr, want, "{flags:?}");
        assert_eq!(r.stdout, "");
    }
    assert_eq!(s.ok(&["ps", "-aq"]), "");
}

/// Only fds 0, 1, 2 in the init and in an exec; the exec'd process starts in the container's
/// root, confined like the init (device rules included: it joins the container's device
/// cgroup, v1 or v2); the device cgroup goes with the container.
fn exec_confined(env: &[(&str, &str)]) {
    let s = setup(&default_driver());
    let mut cmd = s.command(&["run", "-d", "--name", "c1", "busybox", "sleep", "300"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let r = s.run(&[
        "exec",
        "c1",
        "sh",
        "-c",
        "(ls /proc/$$/fd > /tmp/a); (ls /proc/1/fd > /tmp/b); tr '\\n' ' ' < /tmp/a; \
         tr '\\n' ' ' < /tmp/b; pwd; grep -E '^(Seccomp|CapEff):' /proc/self/status; \
         mknod /tmp/k c 1 11; cat /tmp/k",
    ]);
    assert_eq!(
        r.stdout, "0 1 2 0 1 2 /\nCapEff:\t00000000a80425fb\nSeccomp:\t2\n",
        "{env:?} {r:?}"
    );
    assert_eq!(
        r.stderr, "cat: can't open '/tmp/k': Operation not permitted\n",
        "{env:?}"
    );
    let r = s.run(&["exec", "-w", "/proc/self/fd/3", "c1", "pwd"]);
    assert_ne!(r.code, Some(0), "a workdir through a leaked fd: {r:?}");
    let cg = if env.is_empty() {
        Path::new("/sys/fs/cgroup/devices/strata").join(&id)
    } else {
        Path::new("/sys/fs/cgroup/unified/strata").join(&id)
    };
    assert!(cg.exists(), "device cgroup of a running container");
    s.ok(&["rm", "-f", "c1"]);
    assert!(!cg.exists(), "device cgroup removed with the container");
}

#[test]
fn exec_is_confined_and_leaks_nothing() {
    exec_confined(&[]);
}

#[test]
fn exec_is_confined_and_leaks_nothing_ebpf_devices() {
    exec_confined(&[("STRATA_DEVICE_CGROUP", "v2")]);
}
