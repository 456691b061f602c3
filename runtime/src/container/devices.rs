//! Device access: which device nodes a container may open, enforced by the kernel's device
//! controller whatever the node's origin (an image layer, `mknod` inside, a bind mount).
//!
//! Vocabulary:
//! - *rule*: an OCI `linux.resources.devices` entry (`allow`, type `a|c|b`, major, minor
//!   (`None` = any), access `rwm`). Docker's default list is [`default_rules`]: deny all, then
//!   allow `mknod` of any node and `rwm` of null, zero, full, random, urandom, tty, console,
//!   ptmx and pts/*.
//! - *mapping*: one `--device /dev/X[:/dev/Y][:rwm]`: a node created in the container's `/dev`
//!   (an OCI `linux.devices` entry) plus an allow rule for it.
//! - *v1*: the cgroup v1 `devices` controller (`devices.deny`, `devices.allow`) under
//!   `/sys/fs/cgroup/devices/strata/<id>`, used when it is mounted (hybrid hosts such as this
//!   one). *v2*: a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the container's cgroup on
//!   the unified hierarchy (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`), as runc and crun do
//!   on pure cgroup v2 hosts. `STRATA_DEVICE_CGROUP=v2` forces v2 (tests run both here).

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::ContainerId;

/// Env var forcing the cgroup v2 (eBPF) path even where the v1 controller is mounted.
pub const FORCE_ENV: &str = "STRATA_DEVICE_CGROUP";

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("error gathering device information while adding custom device \"{path}\": {err}")]
    Stat { path: String, err: std::io::Error },
    #[error(
        "error gathering device information while adding custom device \"{0}\": not a device node"
    )]
    NotDevice(String),
    #[error("invalid device mode: {0}")]
    BadMode(String),
    /// A `--device-cgroup-rule` that is not `type major:minor access` (docker/cli's words).
    #[error("invalid argument \"{0}\" for \"--device-cgroup-rule\" flag: invalid device cgroup format '{0}'")]
    BadCgroupRule(String),
    #[error("{0} is not an absolute path")]
    NotAbsolute(String),
    #[error("cannot apply device rules: {what} {path}: {err}")]
    Cgroup {
        what: &'static str,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error("cannot apply device rules: {what}: {err}")]
    Bpf {
        what: &'static str,
        err: std::io::Error,
    },
}

/// An OCI `linux.resources.devices` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    pub allow: bool,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor: Option<i64>,
    pub access: String,
}

/// An OCI `linux.devices` entry: a node the runtime creates in the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxDevice {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub major: i64,
    pub minor: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_mode: Option<u32>,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
}

/// One `--device` flag, resolved against the host at `run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    pub node: LinuxDevice,
    /// `rwm` or a subset.
    pub access: String,
}

impl DeviceMapping {
    pub fn rule(&self) -> DeviceRule {
        rule(
            true,
            &self.node.kind,
            Some(self.node.major),
            Some(self.node.minor),
            &self.access,
        )
    }
}

fn rule(
    allow: bool,
    kind: &str,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> DeviceRule {
    DeviceRule {
        allow,
        kind: kind.to_string(),
        major,
        minor,
        access: access.to_string(),
    }
}

/// Docker's default device rules (runc's `AllowedDevices`), followed by `extra`.
pub fn default_rules(extra: &[DeviceMapping]) -> Vec<DeviceRule> {
    let mut v = vec![
        rule(false, "a", None, None, "rwm"),
        rule(true, "c", None, None, "m"),
        rule(true, "b", None, None, "m"),
        rule(true, "c", Some(1), Some(3), "rwm"),
        rule(true, "c", Some(1), Some(5), "rwm"),
        rule(true, "c", Some(1), Some(7), "rwm"),
        rule(true, "c", Some(1), Some(8), "rwm"),
        rule(true, "c", Some(1), Some(9), "rwm"),
        rule(true, "c", Some(5), Some(0), "rwm"),
        rule(true, "c", Some(5), Some(1), "rwm"),
        rule(true, "c", Some(5), Some(2), "rwm"),
        rule(true, "c", Some(136), None, "rwm"),
    ];
    v.extend(extra.iter().map(DeviceMapping::rule));
    v
}

/// One `--device-cgroup-rule 'TYPE MAJOR:MINOR ACCESS'` (Docker's grammar: type `a`, `b` or
/// `c`, numbers or `*`, one to three of `rwm`) as the allow rule it adds.
pub fn parse_cgroup_rule(spec: &str) -> Result<DeviceRule, DeviceError> {
    let bad = || DeviceError::BadCgroupRule(spec.to_string());
    let mut f = spec.split(' ');
    let (Some(kind), Some(numbers), Some(access), None) = (f.next(), f.next(), f.next(), f.next())
    else {
        return Err(bad());
    };
    if !matches!(kind, "a" | "b" | "c")
        || !(1..=3).contains(&access.len())
        || !access.bytes().all(|b| matches!(b, b'r' | b'w' | b'm'))
    {
        return Err(bad());
    }
    let (major, minor) = numbers.split_once(':').ok_or_else(bad)?;
    let number = |n: &str| -> Result<Option<i64>, DeviceError> {
        if n == "*" {
            return Ok(None);
        }
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // Larger than any device number the kernel has (its dev_t has 12/20 bits).
        n.parse::<u32>().map(|v| Some(v as i64)).map_err(|_| bad())
    };
    Ok(rule(true, kind, number(major)?, number(minor)?, access))
}

/// `--privileged`: every device.
pub fn privileged_rules() -> Vec<DeviceRule> {
    vec![rule(true, "a", None, None, "rwm")]
}

/// Every device node of the host's `/dev` (Docker's `--privileged` gives them all), skipping
/// the directories the container gets its own of (`pts`, `shm`, `mqueue`, `fd`) and the host's
/// `/dev/console` and `/dev/ptmx`.
pub fn host_devices() -> Vec<LinuxDevice> {
    fn walk(dir: &Path, out: &mut Vec<LinuxDevice>, depth: u32) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(md) = fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = md.file_type();
            if ft.is_dir() {
                let name = e.file_name();
                let skip = ["pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev"];
                if depth < 4 && !skip.iter().any(|s| name == *s) {
                    walk(&path, out, depth + 1);
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            let Some(p) = path.to_str() else { continue };
            // The container has its own console and ptmx (a link to its devpts).
            if p == "/dev/console" || p == "/dev/ptmx" {
                continue;
            }
            out.push(LinuxDevice {
                path: p.to_string(),
                kind: kind.to_string(),
                major: libc::major(md.rdev()) as i64,
                minor: libc::minor(md.rdev()) as i64,
                file_mode: Some(md.mode() & 0o7777),
                uid: md.uid(),
                gid: md.gid(),
            });
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/dev"), &mut out, 0);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Parse `--device /dev/X[:/dev/Y][:rwm]`, reading the host node's type and numbers.
pub fn parse_device(spec: &str) -> Result<DeviceMapping, DeviceError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let is_mode = |s: &str| !s.is_empty() && s.chars().all(|c| "rwm".contains(c));
    let (host, target, access) = match parts.as_slice() {
        [h] => (*h, *h, "rwm"),
        [h, x] if is_mode(x) => (*h, *h, *x),
        [h, t] => (*h, *t, "rwm"),
        [h, t, m] => (*h, *t, *m),
        _ => return Err(DeviceError::BadMode(spec.to_string())),
    };
    if !is_mode(access) {
        return Err(DeviceError::BadMode(access.to_string()));
    }
    if !target.starts_with('/') {
        return Err(DeviceError::NotAbsolute(target.to_string()));
    }
    let md = fs::metadata(host).map_err(|err| DeviceError::Stat {
        path: host.to_string(),
        err,
    })?;
    let ft = md.file_type();
    let kind = if ft.is_char_device() {
        "c"
    } else if ft.is_block_device() {
        "b"
    } else {
        return Err(DeviceError::NotDevice(host.to_string()));
    };
    let rdev = md.rdev();
    Ok(DeviceMapping {
        node: LinuxDevice {
            path: target.to_string(),
            kind: kind.to_string(),
            major: libc::major(rdev) as i64,
            minor: libc::minor(rdev) as i64,
            file_mode: Some(md.mode() & 0o7777),
            uid: md.uid(),
            gid: md.gid(),
        },
        access: access.to_string(),
    })
}

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// The unified (v2) hierarchy's mount point, if any.
pub fn unified_root() -> Option<PathBuf> {
    [CGROUP_ROOT, "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| is_cgroup2(p))
}

/// The container's cgroup on the unified hierarchy.
pub fn unified_dir(id: &ContainerId) -> Option<PathBuf> {
    unified_root().map(|r| r.join("strata").join(id.as_str()))
}

/// The container's v1 devices cgroup.
pub fn v1_dir(id: &ContainerId) -> PathBuf {
    Path::new(CGROUP_ROOT)
        .join("devices")
        .join("strata")
        .join(id.as_str())
}

/// The initial cgroup namespace's inode number (the kernel's `PROC_CGROUP_INIT_INO`).
const INIT_CGROUP_NS_INO: u64 = 0xEFFF_FFFB;

/// What cgroup filesystem a strata nested in a container finds for its device rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NestedCgroups {
    /// Rules go on the cgroup filesystem: a writable v1 devices controller or cgroup2 (a host,
    /// or a container given its cgroups), or none on a host (then an error: they are mandatory).
    Apply,
    /// None mounted, and an enclosing container's device cgroup confines us.
    Absent,
    /// Mounted read-only (podman's and Docker's default for a container), and an enclosing
    /// container's device cgroup confines us.
    ReadOnly,
}

fn read_only(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path)
        .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
}

/// Whether device rules can go on a cgroup filesystem here. Not inside a container that has
/// no writable cgroup filesystem (neither the v1 devices controller nor cgroup2, or only
/// read-only ones, as podman and Docker mount them) while a device cgroup already confines this
/// process: strata nested in a container given only `/dev/fuse` and CAP_SYS_ADMIN. Our
/// containers stay in that cgroup, so the enclosing container's rules confine them and nothing
/// is lost by not adding ours. "Already confined" is a v1 devices cgroup other than the root in
/// `/proc/self/cgroup` (strata's own containers, Docker's on v1 hosts) or a cgroup namespace
/// other than the initial one (the container engines of cgroup v2 hosts). On a host (root
/// devices cgroup, initial cgroup namespace) without a writable cgroupfs, rules stay mandatory
/// and their absence an error.
pub fn nested_cgroups() -> NestedCgroups {
    let v1 = Path::new(CGROUP_ROOT).join("devices");
    let mounted: Vec<PathBuf> = unified_root()
        .into_iter()
        .chain(v1.join("devices.allow").exists().then_some(v1))
        .collect();
    if mounted.iter().any(|p| !read_only(p)) {
        return NestedCgroups::Apply;
    }
    if !confined() {
        return NestedCgroups::Apply;
    }
    if mounted.is_empty() {
        NestedCgroups::Absent
    } else {
        NestedCgroups::ReadOnly
    }
}

/// A cgroup namespace other than the initial one, or a v1 devices cgroup other than the root.
fn confined() -> bool {
    let own_ns = fs::metadata("/proc/self/ns/cgroup")
        .map(|m| m.ino() != INIT_CGROUP_NS_INO)
        .unwrap_or(false);
    let in_devices_cgroup = fs::read_to_string("/proc/self/cgroup")
        .map(|t| {
            t.lines().any(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctl, path) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or("/"));
                ctl.split(',').any(|c| c == "devices") && path != "/"
            })
        })
        .unwrap_or(false);
    own_ns || in_devices_cgroup
}

/// True when the rules go through the v1 controller (mounted, and v2 not forced).
pub fn use_v1() -> bool {
    if std::env::var(FORCE_ENV).as_deref() == Ok("v2") {
        return false;
    }
    Path::new(CGROUP_ROOT)
        .join("devices")
        .join("devices.allow")
        .exists()
}

fn cg_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DeviceError {
    let path = path.to_path_buf();
    move |err| DeviceError::Cgroup { what, path, err }
}

fn v1_line(r: &DeviceRule) -> String {
    let num = |n: Option<i64>| n.map(|x| x.to_string()).unwrap_or_else(|| "*".to_string());
    if r.kind == "a" && r.major.is_none() && r.minor.is_none() {
        return "a".to_string();
    }
    format!("{} {}:{} {}", r.kind, num(r.major), num(r.minor), r.access)
}

/// Put `pid` (the container's init, not yet exec'd) under `rules`.
pub fn apply(id: &ContainerId, rules: &[DeviceRule], pid: i32) -> Result<(), DeviceError> {
    if crate::rootless::in_user_namespace() {
        // Rootless: the device cgroup is root's, and the kernel already lets nobody in a user
        // namespace make device nodes; the container can open only what the user could.
        return Ok(());
    }
    match nested_cgroups() {
        NestedCgroups::Apply => {}
        // Strata inside a container that mounted no (writable) cgroup filesystem for it: the
        // enclosing container's device cgroup confines every process below it, ours included.
        NestedCgroups::Absent => {
            eprintln!("WARNING: no cgroup filesystem in this container: device access is limited by the enclosing container's rules");
            return Ok(());
        }
        NestedCgroups::ReadOnly => {
            eprintln!("WARNING: the cgroup filesystem in this container is read-only: device access is limited by the enclosing container's rules");
            return Ok(());
        }
    }
    if use_v1() {
        let dir = v1_dir(id);
        fs::create_dir_all(&dir).map_err(cg_err("mkdir", &dir))?;
        for r in rules {
            let file = dir.join(if r.allow {
                "devices.allow"
            } else {
                "devices.deny"
            });
            fs::write(&file, v1_line(r)).map_err(cg_err("write", &file))?;
        }
        let procs = dir.join("cgroup.procs");
        return fs::write(&procs, pid.to_string()).map_err(cg_err("write", &procs));
    }
    let Some(dir) = unified_dir(id) else {
        return Err(DeviceError::Cgroup {
            what: "find",
            path: PathBuf::from("cgroup2 mount"),
            err: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
    };
    fs::create_dir_all(&dir).map_err(cg_err("mkdir", &dir))?;
    let procs = dir.join("cgroup.procs");
    fs::write(&procs, pid.to_string()).map_err(cg_err("write", &procs))?;
    let prog = load_program(&program(rules))?;
    let cg = fs::File::open(&dir).map_err(cg_err("open", &dir))?;
    attach(&cg, &prog)
}

/// Leave the container's device cgroups (empty by now); a failure is left for the next try.
pub fn remove(id: &ContainerId) {
    let _ = fs::remove_dir(v1_dir(id));
    if let Some(d) = unified_dir(id) {
        let _ = fs::remove_dir(d);
    }
}

/// Join the container's device cgroup (for `exec`), whichever kind it has.
pub fn join(id: &ContainerId, pid: i32) {
    for d in [Some(v1_dir(id)), unified_dir(id)].into_iter().flatten() {
        let p = d.join("cgroup.procs");
        if p.exists() {
            let _ = fs::write(p, pid.to_string());
        }
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const EXIT: u8 = 0x95;

/// The device program for `rules` (evaluated like the v1 controller: the last matching rule
/// wins, nothing matching means deny). Context: `struct bpf_cgroup_dev_ctx { u32
/// access_type /* access << 16 | type */; u32 major; u32 minor; }`; returns 1 to allow.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),        // r2 = access_type
        insn(ALU64_AND_K, 2, 0, 0, 0xffff), // r2 = type
        insn(LDX_MEM_W, 3, 1, 0, 0),        // r3 = access_type
        insn(ALU64_RSH_K, 3, 0, 0, 16),     // r3 = access
        insn(LDX_MEM_W, 4, 1, 4, 0),        // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),        // r5 = minor
    ];
    // Evaluate the last rule first: the first match decides.
    for r in rules.iter().rev() {
        let mut checks: Vec<Insn> = Vec::new();
        match r.kind.as_str() {
            "c" => checks.push(insn(JMP_JNE_K, 2, 0, 0, 2)), // BPF_DEVCG_DEV_CHAR
            "b" => checks.push(insn(JMP_JNE_K, 2, 0, 0, 1)), // BPF_DEVCG_DEV_BLOCK
            _ => {}
        }
        let mut allowed = 0i32;
        for (c, bit) in [('m', 1), ('r', 2), ('w', 4)] {
            if r.access.contains(c) {
                allowed |= bit;
            }
        }
        if allowed != 7 {
            // Every requested access bit must be in the rule's set.
            checks.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
            checks.push(insn(ALU64_AND_K, 1, 0, 0, !allowed & 7));
            checks.push(insn(JMP_JNE_K, 1, 0, 0, 0));
        }
        if let Some(m) = r.major {
            checks.push(insn(JMP_JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            checks.push(insn(JMP_JNE_K, 5, 0, 0, m as i32));
        }
        // Each jump skips the rest of this block (the checks after it and the 2-insn verdict).
        let n = checks.len();
        for (i, c) in checks.iter_mut().enumerate() {
            if c.code == JMP_JNE_K {
                c.off = (n - i - 1 + 2) as i16;
            }
        }
        let unconditional = checks.is_empty();
        p.extend(checks);
        p.push(insn(ALU64_MOV_K, 0, 0, 0, r.allow as i32));
        p.push(insn(EXIT, 0, 0, 0, 0));
        if unconditional {
            // The verifier refuses unreachable instructions: nothing may follow.
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` member of `union bpf_attr` (the fields up to `expected_attach_type`),
/// padded to the size the kernel accepts with zeroed tails.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _pad: [u8; 64],
}

#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _pad: [u8; 44],
}

fn bpf(cmd: libc::c_long, attr: *const libc::c_void, size: usize) -> std::io::Result<i64> {
    // SAFETY: attr points at a properly laid out, zero-padded bpf_attr member of `size` bytes.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr, size) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

fn load_program(prog: &[Insn]) -> Result<OwnedFd, DeviceError> {
    let load = |log: &mut [u8]| {
        let mut name = [0u8; 16];
        name[..6].copy_from_slice(b"strata");
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: prog.len() as u32,
            insns: prog.as_ptr() as u64,
            license: c"Apache".as_ptr() as u64,
            log_level: (!log.is_empty()) as u32,
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: 0,
            _pad: [0; 64],
        };
        bpf(
            BPF_PROG_LOAD,
            (&attr as *const ProgLoadAttr).cast(),
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    let fd = load(&mut []).map_err(|err| {
        // Load again with the verifier's log, for the debug log only.
        let mut log = vec![0u8; 1 << 16];
        let _ = load(&mut log);
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        log::debug!(
            "device program rejected: {}",
            String::from_utf8_lossy(&log[..end])
        );
        DeviceError::Bpf {
            what: "load the device program",
            err,
        }
    })?;
    // SAFETY: the kernel returned a fresh program fd that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn attach(cgroup: &fs::File, prog: &OwnedFd) -> Result<(), DeviceError> {
    let attr = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
        _pad: [0; 44],
    };
    bpf(
        BPF_PROG_ATTACH,
        (&attr as *const ProgAttachAttr).cast(),
        std::mem::size_of::<ProgAttachAttr>(),
    )
    .map(|_| ())
    .map_err(|err| DeviceError::Bpf {
        what: "attach the device program",
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run the program on a context, in a tiny interpreter of the opcodes it uses.
    fn eval(p: &[Insn], kind: u32, access: u32, major: u32, minor: u32) -> i64 {
        let ctx = [(access << 16) | kind, major, minor];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[i.off as usize / 4] as i64,
                ALU64_AND_K => r[dst] &= i.imm as i64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                ALU64_MOV_X => r[dst] = r[src],
                ALU64_MOV_K => r[dst] = i.imm as i64,
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 {
                        pc += i.off as usize;
                    }
                }
                EXIT => return r[0],
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn default_program_matches_dockers_list() {
        let p = program(&default_rules(&[]));
        let (c, b) = (2, 1);
        let (m, rd, wr) = (1, 2, 4);
        assert_eq!(eval(&p, c, rd, 1, 3), 1, "null");
        assert_eq!(eval(&p, c, wr, 136, 7), 1, "pts");
        assert_eq!(eval(&p, c, rd, 1, 11), 0, "kmsg");
        assert_eq!(eval(&p, b, rd, 7, 0), 0, "loop");
        assert_eq!(eval(&p, b, m, 7, 0), 1, "mknod any");
        assert_eq!(eval(&p, c, rd, 10, 229), 0, "fuse");
        assert_eq!(eval(&p, c, rd | wr, 5, 2), 1, "ptmx");
        let fuse = DeviceMapping {
            node: LinuxDevice {
                path: "/dev/fuse".into(),
                kind: "c".into(),
                major: 10,
                minor: 229,
                file_mode: None,
                uid: 0,
                gid: 0,
            },
            access: "r".into(),
        };
        let p = program(&default_rules(&[fuse]));
        assert_eq!(eval(&p, c, rd, 10, 229), 1);
        assert_eq!(eval(&p, c, wr, 10, 229), 0, "read-only mapping");
        let p = program(&privileged_rules());
        assert_eq!(eval(&p, b, rd | wr, 8, 0), 1);
    }

    #[test]
    fn host_devices_for_privileged() {
        let d = host_devices();
        let null = d.iter().find(|x| x.path == "/dev/null").unwrap();
        assert_eq!((null.kind.as_str(), null.major, null.minor), ("c", 1, 3));
        assert!(!d
            .iter()
            .any(|x| x.path.starts_with("/dev/pts/") || x.path == "/dev/ptmx"));
    }

    #[test]
    fn v1_lines() {
        let r = default_rules(&[]);
        assert_eq!(v1_line(&r[0]), "a");
        assert_eq!(v1_line(&r[1]), "c *:* m");
        assert_eq!(v1_line(&r[3]), "c 1:3 rwm");
        assert_eq!(v1_line(&r[11]), "c 136:* rwm");
    }

    #[test]
    fn device_cgroup_rules() {
        let r = parse_cgroup_rule("c 42:* rmw").unwrap();
        assert_eq!(
            (
                r.kind.as_str(),
                r.major,
                r.minor,
                r.access.as_str(),
                r.allow
            ),
            ("c", Some(42), None, "rmw", true)
        );
        assert_eq!(v1_line(&r), "c 42:* rmw");
        let r = parse_cgroup_rule("b *:7 r").unwrap();
        assert_eq!((r.major, r.minor), (None, Some(7)));
        for bad in [
            "c 42:* rwx",
            "x 1:2 r",
            "c 1 r",
            "c 1:2",
            "c 1:2 rwmr",
            "c  1:2 r",
            "c -1:2 r",
            "c 1:2 r ",
            "c 99999999999:1 r",
            "",
        ] {
            let e = parse_cgroup_rule(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid argument \"{bad}\" for \"--device-cgroup-rule\" flag: invalid device cgroup format '{bad}'")
            );
        }
        let p = program(
            &[
                default_rules(&[]),
                vec![parse_cgroup_rule("c 42:* rwm").unwrap()],
            ]
            .concat(),
        );
        assert_eq!(eval(&p, 2, 2, 42, 0), 1);
        assert_eq!(eval(&p, 1, 2, 42, 0), 0, "block 42 stays denied");
    }

    #[test]
    fn device_flags() {
        let d = parse_device("/dev/null:/dev/mynull:r").unwrap();
        assert_eq!(
            (d.node.kind.as_str(), d.node.major, d.node.minor),
            ("c", 1, 3)
        );
        assert_eq!(
            (d.node.path.as_str(), d.access.as_str()),
            ("/dev/mynull", "r")
        );
        let d = parse_device("/dev/zero:rw").unwrap();
        assert_eq!(
            (d.node.path.as_str(), d.access.as_str()),
            ("/dev/zero", "rw")
        );
        assert!(matches!(
            parse_device("/dev/nope"),
            Err(DeviceError::Stat { .. })
        ));
        assert!(matches!(
            parse_device("/etc/passwd"),
            Err(DeviceError::NotDevice(_))
        ));
        assert!(matches!(
            parse_device("/dev/null:/x:rwx"),
            Err(DeviceError::BadMode(_))
        ));
    }
}
