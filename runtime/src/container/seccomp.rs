//! Seccomp: Docker's profile format turned into the OCI `linux.seccomp` section, and that
//! section compiled into a BPF program that the init (and every `exec`) loads last, right
//! before `execve`.
//!
//! Vocabulary:
//! - *profile*: Docker's JSON (`defaultAction`, `defaultErrnoRet`, `archMap`, `syscalls[]` with
//!   `names`, `action`, `errnoRet`, `args[]` and `includes`/`excludes` by capability, arch and
//!   minimum kernel). Docker's default profile is data: `runtime/profiles/seccomp-default.json`.
//! - *resolved*: the OCI section ([`LinuxSeccomp`]): the rules that apply to this container on
//!   this host (its capability set, the host's arch and kernel), with the architectures from the
//!   `archMap` entry of the native arch. This is what runc receives in the bundle.
//! - *filter*: the classic-BPF program compiled from a resolved section by libseccomp (one
//!   program covering x86_64 plus its x86 and x32 sub-architectures, as runc builds it).
//!
//! Semantics follow moby's `profiles/seccomp` and runc's `libcontainer/seccomp`: a rule whose
//! action equals the default action is dropped; conditions on distinct arguments are ANDed in
//! one rule; several conditions on the same argument become one rule each (ORed).

use std::os::fd::{FromRawFd, OwnedFd};

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::{Deserialize, Serialize};

/// Docker's default profile (moby `profiles/seccomp/default.json`), kept as data.
pub const DEFAULT_PROFILE: &str = include_str!("../../profiles/seccomp-default.json");

/// EPERM: the errno of `SCMP_ACT_ERRNO` without `errnoRet`.
const EPERM: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("Decoding seccomp profile failed: {0}")]
    Json(serde_json::Error),
    #[error("seccomp profile: unknown syscall \"{0}\"")]
    UnknownSyscall(String),
    #[error("seccomp profile: unknown action \"{0}\"")]
    BadAction(String),
    #[error("seccomp profile: unknown comparison operator \"{0}\"")]
    BadOp(String),
    #[error("seccomp profile: unknown architecture \"{0}\"")]
    BadArch(String),
    #[error("seccomp profile: argument index {0} out of range (0-5)")]
    BadIndex(u32),
    #[error("seccomp: {what}: {err}")]
    Lib {
        what: String,
        err: libseccomp::error::SeccompError,
    },
    #[error("seccomp: {what}: {err}")]
    Io {
        what: &'static str,
        err: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, SeccompError>;

/// A profile in Docker's format.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub arch_map: Option<Vec<ArchMap>>,
    /// The older flat form (used when `archMap` has no entry for the native arch).
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub syscalls: Option<Vec<Syscall>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMap {
    pub architecture: String,
    #[serde(default)]
    pub sub_architectures: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Syscall {
    #[serde(default)]
    pub names: Option<Vec<String>>,
    /// The older single-name form.
    #[serde(default)]
    pub name: Option<String>,
    pub action: String,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default)]
    pub args: Option<Vec<Arg>>,
    #[serde(default)]
    pub includes: Option<Condition>,
    #[serde(default)]
    pub excludes: Option<Condition>,
}

/// `includes`/`excludes` of a profile rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub caps: Option<Vec<String>>,
    #[serde(default)]
    pub arches: Option<Vec<String>>,
    #[serde(default)]
    pub min_kernel: Option<String>,
}

/// One argument condition (Docker's and OCI's shape are the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Arg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// The OCI runtime-spec `linux.seccomp` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxSeccomp {
    pub default_action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub syscalls: Vec<LinuxSyscall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinuxSyscall {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<Arg>,
}

/// The host's arch as Docker's profile names it in `includes.arches` (Go's GOARCH), and as
/// libseccomp names it in `archMap`.
fn native_arches() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", "SCMP_ARCH_X86_64"),
        "aarch64" => ("arm64", "SCMP_ARCH_AARCH64"),
        "x86" => ("386", "SCMP_ARCH_X86"),
        "arm" => ("arm", "SCMP_ARCH_ARM"),
        "riscv64" => ("riscv64", "SCMP_ARCH_RISCV64"),
        "s390x" => ("s390x", "SCMP_ARCH_S390X"),
        "powerpc64" => ("ppc64le", "SCMP_ARCH_PPC64LE"),
        other => (other, "SCMP_ARCH_NATIVE"),
    }
}

/// `(major, minor)` of the running kernel.
fn kernel_version() -> (u32, u32) {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_version(&release)
}

fn parse_version(s: &str) -> (u32, u32) {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
    (major, minor)
}

impl Profile {
    /// Docker's default profile.
    pub fn docker_default() -> Profile {
        // The file is part of the source tree and checked by a unit test.
        Profile::parse(DEFAULT_PROFILE.as_bytes()).unwrap_or(Profile {
            default_action: "SCMP_ACT_ERRNO".to_string(),
            default_errno_ret: Some(EPERM),
            arch_map: None,
            architectures: None,
            syscalls: None,
        })
    }

    /// Parse a profile in Docker's JSON format.
    pub fn parse(json: &[u8]) -> Result<Profile> {
        serde_json::from_slice(json).map_err(SeccompError::Json)
    }

    /// Check every action, operator, architecture and syscall name of every rule (whichever
    /// capabilities a container will have), as `run` does before it starts anything.
    pub fn validate(&self) -> Result<()> {
        action(&self.default_action, self.default_errno_ret)?;
        for a in self.arch_map.iter().flatten() {
            arch(&a.architecture)?;
            for s in a.sub_architectures.iter().flatten() {
                arch(s)?;
            }
        }
        for a in self.architectures.iter().flatten() {
            arch(a)?;
        }
        for rule in self.syscalls.iter().flatten() {
            action(&rule.action, rule.errno_ret)?;
            for a in rule.args.iter().flatten() {
                condition(a)?;
            }
            for n in rule_names(rule) {
                syscall(n)?;
            }
        }
        Ok(())
    }

    /// The rules that apply to a container with capability set `caps` (`CAP_*` names) on this
    /// host, in OCI form.
    pub fn resolve(&self, caps: &[String]) -> LinuxSeccomp {
        let (goarch, scmp_native) = native_arches();
        let kernel = kernel_version();
        let architectures = match self
            .arch_map
            .iter()
            .flatten()
            .find(|a| a.architecture == scmp_native)
        {
            Some(a) => std::iter::once(a.architecture.clone())
                .chain(a.sub_architectures.iter().flatten().cloned())
                .collect(),
            None => self.architectures.clone().unwrap_or_default(),
        };
        let has = |c: &String| caps.iter().any(|x| x == c);
        let mut syscalls = Vec::new();
        for rule in self.syscalls.iter().flatten() {
            if let Some(inc) = &rule.includes {
                if let Some(a) = &inc.arches {
                    if !a.is_empty() && !a.iter().any(|x| x == goarch) {
                        continue;
                    }
                }
                if let Some(c) = &inc.caps {
                    if !c.iter().all(has) {
                        continue;
                    }
                }
                if let Some(k) = &inc.min_kernel {
                    if kernel < parse_version(k) {
                        continue;
                    }
                }
            }
            if let Some(exc) = &rule.excludes {
                if exc.arches.iter().flatten().any(|x| x == goarch) {
                    continue;
                }
                if exc.caps.iter().flatten().any(has) {
                    continue;
                }
                if let Some(k) = &exc.min_kernel {
                    if kernel >= parse_version(k) {
                        continue;
                    }
                }
            }
            syscalls.push(LinuxSyscall {
                names: rule_names(rule).map(str::to_string).collect(),
                action: rule.action.clone(),
                errno_ret: rule.errno_ret,
                args: rule.args.clone().unwrap_or_default(),
            });
        }
        LinuxSeccomp {
            default_action: self.default_action.clone(),
            default_errno_ret: self.default_errno_ret,
            architectures,
            syscalls,
        }
    }
}

fn rule_names(rule: &Syscall) -> impl Iterator<Item = &str> {
    rule.names
        .iter()
        .flatten()
        .map(String::as_str)
        .chain(rule.name.as_deref())
}

fn action(name: &str, errno: Option<u32>) -> Result<ScmpAction> {
    let val = match name {
        "SCMP_ACT_ERRNO" => Some(errno.unwrap_or(EPERM) as i32),
        "SCMP_ACT_TRACE" => Some(errno.unwrap_or(EPERM) as i32),
        _ => None,
    };
    ScmpAction::from_str(name, val).map_err(|_| SeccompError::BadAction(name.to_string()))
}

fn arch(name: &str) -> Result<ScmpArch> {
    name.parse::<ScmpArch>()
        .map_err(|_| SeccompError::BadArch(name.to_string()))
}

fn syscall(name: &str) -> Result<ScmpSyscall> {
    ScmpSyscall::from_name(name).map_err(|_| SeccompError::UnknownSyscall(name.to_string()))
}

fn condition(a: &Arg) -> Result<ScmpArgCompare> {
    if a.index > 5 {
        return Err(SeccompError::BadIndex(a.index));
    }
    let op = match a.op.as_str() {
        "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
        "SCMP_CMP_LT" => ScmpCompareOp::Less,
        "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
        "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
        "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
        "SCMP_CMP_GT" => ScmpCompareOp::Greater,
        // Docker's form: `value` is the mask, `valueTwo` the value compared after masking.
        "SCMP_CMP_MASKED_EQ" => {
            return Ok(ScmpArgCompare::new(
                a.index,
                ScmpCompareOp::MaskedEqual(a.value),
                a.value_two,
            ))
        }
        other => return Err(SeccompError::BadOp(other.to_string())),
    };
    Ok(ScmpArgCompare::new(a.index, op, a.value))
}

fn lib(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |err| SeccompError::Lib { what, err }
}

/// A compiled classic-BPF seccomp program, ready to load.
#[derive(Debug, Clone)]
pub struct Filter {
    prog: Vec<libc::sock_filter>,
}

impl Filter {
    /// The program as raw `struct sock_filter` bytes (what libseccomp exports).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prog.len() * 8);
        for i in &self.prog {
            out.extend_from_slice(&i.code.to_ne_bytes());
            out.push(i.jt);
            out.push(i.jf);
            out.extend_from_slice(&i.k.to_ne_bytes());
        }
        out
    }

    /// A program from raw `struct sock_filter` bytes; `None` if the length is not a whole
    /// number of instructions or the program is empty or too long for the kernel.
    pub fn from_bytes(bytes: &[u8]) -> Option<Filter> {
        let size = std::mem::size_of::<libc::sock_filter>();
        if bytes.is_empty() || !bytes.len().is_multiple_of(size) || bytes.len() / size > 4096 {
            return None;
        }
        let prog = bytes
            .chunks_exact(size)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        Some(Filter { prog })
    }

    /// Number of BPF instructions.
    pub fn len(&self) -> usize {
        self.prog.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prog.is_empty()
    }

    /// Install the filter on the calling thread (seccomp(2) `SECCOMP_SET_MODE_FILTER`). The
    /// caller has set `no_new_privs` (or holds CAP_SYS_ADMIN). Async-signal-safe: no
    /// allocation, so it may run between fork and exec.
    pub fn load(&self) -> std::io::Result<()> {
        let fprog = libc::sock_fprog {
            len: self.prog.len() as libc::c_ushort,
            filter: self.prog.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: fprog points at our instruction vector, alive for the duration of the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &fprog as *const libc::sock_fprog,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Compile a resolved section into a BPF program for this host (native arch plus the listed
/// sub-architectures).
pub fn compile(s: &LinuxSeccomp) -> Result<Filter> {
    let default = action(&s.default_action, s.default_errno_ret)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("new filter"))?;
    // We set no_new_privs ourselves and load the exported program.
    ctx.set_ctl_nnp(false).map_err(lib("nnp attribute"))?;
    for a in &s.architectures {
        let a = arch(a)?;
        if !ctx.is_arch_present(a).map_err(lib("arch"))? {
            ctx.add_arch(a).map_err(lib(format!("add arch {a:?}")))?;
        }
    }
    for rule in &s.syscalls {
        let act = action(&rule.action, rule.errno_ret)?;
        if act == default {
            continue;
        }
        let conds: Vec<ScmpArgCompare> = rule.args.iter().map(condition).collect::<Result<_>>()?;
        let mut seen = [0u8; 6];
        for a in &rule.args {
            seen[a.index as usize] += 1;
        }
        let split = seen.iter().any(|&n| n > 1);
        for name in &rule.names {
            let sc = syscall(name)?;
            let what = || format!("add rule for {name}");
            if split {
                for c in &conds {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(lib(what()))?;
                }
            } else if conds.is_empty() {
                ctx.add_rule(act, sc).map_err(lib(what()))?;
            } else {
                ctx.add_rule_conditional(act, sc, &conds)
                    .map_err(lib(what()))?;
            }
        }
    }
    export(&ctx)
}

/// libseccomp 2.5 exports to an fd only: go through a memfd.
fn export(ctx: &ScmpFilterContext) -> Result<Filter> {
    let io = |what| move |err| SeccompError::Io { what, err };
    // SAFETY: memfd_create with a static NUL-terminated name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"seccomp-bpf".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io("memfd_create")(std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    ctx.export_bpf(&fd).map_err(lib("export"))?;
    let mut f = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).map_err(io("seek"))?;
    std::io::Read::read_to_end(&mut f, &mut bytes).map_err(io("read"))?;
    Filter::from_bytes(&bytes).ok_or(SeccompError::Io {
        what: "export",
        err: std::io::Error::from_raw_os_error(libc::EINVAL),
    })
}

/// [`compile`], through a cache of compiled programs in `dir` keyed by the SHA-256 of the
/// section (and of libseccomp's version). libseccomp 2.5 takes 10-30 ms for Docker's profile
/// on three ABIs, more than the rest of a container start; the same profile and capability
/// set give the same program, so only the first start pays. `dir` lives under the runroot,
/// writable by root only (whoever can write it can run anything anyway). A cache that cannot
/// be read or written is skipped.
pub fn compile_cached(s: &LinuxSeccomp, dir: &std::path::Path) -> Result<Filter> {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(s).unwrap_or_default());
    if let Ok(v) = libseccomp::ScmpVersion::current() {
        h.update(format!("libseccomp {}.{}.{}", v.major, v.minor, v.micro));
    }
    let path = dir.join(format!("{}.bpf", hex::encode(h.finalize())));
    if let Some(f) = std::fs::read(&path)
        .ok()
        .and_then(|b| Filter::from_bytes(&b))
    {
        return Ok(f);
    }
    let f = compile(s)?;
    if std::fs::create_dir_all(dir).is_ok() {
        if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
            if std::io::Write::write_all(&mut tmp, &f.to_bytes()).is_ok() {
                let _ = tmp.persist(&path);
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_caps() -> Vec<String> {
        super::super::caps::DEFAULT
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn default_profile_parses_and_validates() {
        let p = Profile::parse(DEFAULT_PROFILE.as_bytes()).unwrap();
        p.validate().unwrap();
        assert_eq!(p.default_action, "SCMP_ACT_ERRNO");
        let names = p.syscalls.as_ref().unwrap()[0]
            .names
            .as_ref()
            .unwrap()
            .len();
        assert!(names > 300, "{names}");
    }

    #[test]
    fn resolve_follows_caps_and_arch() {
        let p = Profile::docker_default();
        let r = p.resolve(&default_caps());
        assert_eq!(
            r.architectures,
            ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
        );
        let allowed = |r: &LinuxSeccomp, n: &str| {
            r.syscalls.iter().any(|s| {
                s.action == "SCMP_ACT_ALLOW" && s.args.is_empty() && s.names.iter().any(|x| x == n)
            })
        };
        assert!(allowed(&r, "read") && allowed(&r, "arch_prctl") && allowed(&r, "chroot"));
        assert!(!allowed(&r, "mount") && !allowed(&r, "unshare") && !allowed(&r, "keyctl"));
        assert!(!allowed(&r, "cacheflush"), "arm only");
        // clone with a mask on the namespace flags, clone3 answers ENOSYS.
        assert!(r.syscalls.iter().any(|s| s.names == ["clone"]
            && s.args
                == [Arg {
                    index: 0,
                    value: 2114060288,
                    value_two: 0,
                    op: "SCMP_CMP_MASKED_EQ".into()
                }]));
        assert!(r
            .syscalls
            .iter()
            .any(|s| s.names == ["clone3"] && s.errno_ret == Some(38)));
        let mut admin = default_caps();
        admin.push("CAP_SYS_ADMIN".to_string());
        let r = p.resolve(&admin);
        assert!(allowed(&r, "mount") && allowed(&r, "unshare") && allowed(&r, "clone"));
        assert!(!r.syscalls.iter().any(|s| s.names == ["clone3"]));
    }

    #[test]
    fn compile_default_and_reject_bad_input() {
        let p = Profile::docker_default();
        let f = compile(&p.resolve(&default_caps())).unwrap();
        assert!(f.len() > 300, "{}", f.len());
        let bad = Profile::parse(br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdri"],"action":"SCMP_ACT_ERRNO"}]}"#).unwrap();
        assert!(matches!(bad.validate(), Err(SeccompError::UnknownSyscall(n)) if n == "mkdri"));
        let bad = Profile::parse(br#"{"defaultAction":"SCMP_ACT_NOPE"}"#).unwrap();
        assert!(matches!(bad.validate(), Err(SeccompError::BadAction(_))));
        assert!(matches!(
            Profile::parse(b"{nope"),
            Err(SeccompError::Json(_))
        ));
        let bad = Profile::parse(br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_ERRNO","args":[{"index":0,"value":1,"op":"SCMP_CMP_WAT"}]}]}"#).unwrap();
        assert!(matches!(bad.validate(), Err(SeccompError::BadOp(_))));
    }

    #[test]
    fn cache_gives_the_same_program() {
        let dir = tempfile::tempdir().unwrap();
        let r = Profile::docker_default().resolve(&default_caps());
        let a = compile_cached(&r, dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let b = compile_cached(&r, dir.path()).unwrap();
        assert_eq!(a.to_bytes(), b.to_bytes());
        assert_eq!(a.to_bytes(), compile(&r).unwrap().to_bytes());
        assert!(Filter::from_bytes(&[1, 2, 3]).is_none());
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("6.18.0-1-amd64"), (6, 18));
        assert_eq!(parse_version("4.8"), (4, 8));
        assert!(parse_version("4.10") > parse_version("4.8"));
    }
}
