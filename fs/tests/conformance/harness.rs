//! The conformance harness: targets, per-case fixtures, and the `cases!` macro.
//!
//! Vocabulary:
//! - **target**: what mounts the stack. `kernel` (kernel overlayfs, the reference), `strata` (our
//!   `strata-overlay -f`), `custom` (any command in `STRATA_CONFORMANCE_MOUNT`, a template with
//!   `{lower}` (colon-separated, top first), `{upper}`, `{work}` and `{mnt}`; it must return once
//!   mounted; for read-only cases the comma-separated items naming `{upper}`/`{work}` are dropped).
//! - **case**: a `fn(&mut Case)`. It builds lower layers with plain syscalls under its own temp dir
//!   (`lower(0)` is the top layer), calls [`Case::mount`], operates through the mount and asserts.
//!   The harness runs every case under a [`Watchdog`] (stuck FUSE requests are aborted, the case
//!   fails), unmounts everything afterwards, and checks that no lower layer changed at all.
//! - **formats**: whiteouts and opaque markers come in several on-disk forms ([`Wh`], [`Opq`]). The
//!   kernel reads only some of them (char 0/0, `trusted.overlay.*`, and `user.overlay.*` when mounted
//!   with `userxattr`); for the kernel target the fixture writes the nearest form the kernel reads, so
//!   the case's *expectations* are still validated against the kernel.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::time::Duration;

use strata_testkit::mount::{self, MountError, MountGuard, Watchdog};

use crate::util::{self, Entry};

/// Environment variable holding a custom mount-command template.
pub const MOUNT_ENV: &str = "STRATA_CONFORMANCE_MOUNT";
/// Prefix of every temp dir this suite creates (the stale-mount sweep only looks there).
pub const TAG: &str = "strata-conf";
/// Per-case deadline (nextest kills a test after 240 s anyway).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(150);

/// What mounts the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Kernel,
    Strata,
    #[cfg_attr(not(feature = "custom-mount"), allow(dead_code))]
    Custom,
}

/// On-disk whiteout forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wh {
    /// Character device 0/0 (overlayfs native).
    Chr,
    /// Zero-size file with `trusted.overlay.whiteout`; parent gets `trusted.overlay.opaque=x`.
    Xattr,
    /// Same with `user.overlay.*` (rootless overlay, `userxattr`).
    UserXattr,
    /// AUFS/OCI `.wh.<name>` file.
    Aufs,
}

/// On-disk opaque-directory forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opq {
    /// `trusted.overlay.opaque=y`.
    Xattr,
    /// `user.overlay.opaque=y`.
    UserXattr,
    /// A `.wh..wh..opq` entry inside the directory.
    Aufs,
}

/// One case's fixture: temp dir, layers, mounts, watchdog.
pub struct Case {
    pub target: Target,
    mounts: Vec<MountGuard>,
    aux: Vec<MountGuard>,
    dog: Watchdog,
    userxattr: bool,
    trusted_forms: bool,
    lowers: usize,
    snapshots: Vec<(PathBuf, BTreeMap<PathBuf, Entry>)>,
    mount_seq: usize,
    dir: tempfile::TempDir,
}

pub fn strata_bin() -> &'static str {
    env!("CARGO_BIN_EXE_strata-overlay")
}

impl Case {
    fn new(target: Target) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&mount::owned_prefix(TAG))
            .tempdir()
            .expect("temp dir");
        for sub in ["upper", "work", "mnt"] {
            fs::create_dir(dir.path().join(sub)).expect("mkdir");
        }
        Case {
            target,
            mounts: Vec::new(),
            aux: Vec::new(),
            dog: Watchdog::start(CASE_TIMEOUT),
            // The rootless run mounts every stack with `userxattr` (see rootless.rs).
            userxattr: crate::rootless::active(),
            trusted_forms: false,
            lowers: 0,
            snapshots: Vec::new(),
            mount_seq: 0,
            dir,
        }
    }

    /// The case's private temp dir.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Lower layer `i` (0 is the top-most); created on first use. Mounts use every layer up to the
    /// highest index requested.
    pub fn lower(&mut self, i: usize) -> PathBuf {
        let p = self.dir.path().join(format!("lower{i}"));
        if !p.exists() {
            fs::create_dir(&p).expect("mkdir lower");
        }
        self.lowers = self.lowers.max(i + 1);
        p
    }

    /// Make lower layer `i` a fresh tmpfs (a different filesystem than the upper dir).
    pub fn tmpfs_lower(&mut self, i: usize) -> PathBuf {
        let p = self.lower(i);
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs"])
            .arg(&p)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount tmpfs on {}", p.display());
        let guard = MountGuard::existing(&p).expect("tmpfs mounted");
        self.aux.push(guard);
        p
    }

    pub fn upper(&self) -> PathBuf {
        self.dir.path().join("upper")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// All lower layers, top first.
    pub fn lowers(&mut self) -> Vec<PathBuf> {
        if self.lowers == 0 {
            self.lower(0);
        }
        (0..self.lowers)
            .map(|i| self.dir.path().join(format!("lower{i}")))
            .collect()
    }

    /// A fresh directory inside the case's temp dir (for extra uppers, works, mountpoints).
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        fs::create_dir_all(&p).expect("mkdir scratch");
        p
    }

    /// Mount every later stack with `userxattr`: the format in `user.overlay.*` (rootless).
    pub fn use_userxattr(&mut self) {
        self.userxattr = true;
    }

    /// Mount the lowers + upper + work on `mnt()` with this case's target.
    pub fn mount(&mut self) -> PathBuf {
        let lowers = self.lowers();
        let (u, w, m) = (self.upper(), self.work(), self.mnt());
        self.mount_stack(self.target, &lowers, Some((&u, &w)), &m);
        m
    }

    /// Mount the lowers read-only (no upperdir; needs at least two lowers on kernel overlayfs).
    pub fn mount_ro(&mut self) -> PathBuf {
        if self.lowers < 2 {
            self.lower(1);
        }
        let lowers = self.lowers();
        let m = self.mnt();
        self.mount_stack(self.target, &lowers, None, &m);
        m
    }

    /// Mount any stack with any target (used by the format-compatibility cases).
    pub fn mount_stack(
        &mut self,
        target: Target,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
    ) {
        let mut opts = format!(
            "lowerdir={}",
            lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        );
        if let Some((u, w)) = upper {
            opts.push_str(&format!(
                ",upperdir={},workdir={}",
                u.display(),
                w.display()
            ));
        }
        let guard = match target {
            Target::Kernel => {
                // Renaming lower dirs needs redirects; the kernel refuses them with userxattr.
                if self.userxattr {
                    opts.push_str(",userxattr");
                } else if upper.is_some() {
                    opts.push_str(",redirect_dir=on");
                }
                let log = self.begin_mount(lowers);
                let cmd = format!("mount -t overlay overlay -o {opts} {}", mnt.display());
                MountGuard::by_command(&cmd, mnt, &log)
            }
            Target::Strata => {
                if self.userxattr {
                    opts.push_str(",userxattr");
                }
                let log = self.begin_mount(lowers);
                let mut cmd = Command::new(strata_bin());
                cmd.arg("-f").arg("-o").arg(opts).arg(mnt);
                MountGuard::foreground(cmd, mnt, &log)
            }
            Target::Custom => {
                let template = std::env::var(MOUNT_ENV)
                    .unwrap_or_else(|_| panic!("set {MOUNT_ENV} to run the custom target"));
                return self.mount_template(&template, lowers, upper, mnt);
            }
        };
        self.finish_mount(guard);
    }

    /// Mount the lowers + upper + work with `strata-overlay -f`, adding `extra` (comma-separated
    /// options) to its `-o`: for the strata-only option cases.
    pub fn mount_strata_with(&mut self, extra: &str) -> PathBuf {
        let lowers = self.lowers();
        let (u, w, m) = (self.upper(), self.work(), self.mnt());
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},{extra}",
            lowers
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
            u.display(),
            w.display()
        );
        let log = self.begin_mount(&lowers);
        let mut cmd = Command::new(strata_bin());
        cmd.arg("-f").arg("-o").arg(opts).arg(&m);
        self.finish_mount(MountGuard::foreground(cmd, &m, &log));
        m
    }

    /// Mount any stack with a command template (see the module doc), e.g. fuse-overlayfs.
    pub fn mount_template(
        &mut self,
        template: &str,
        lowers: &[PathBuf],
        upper: Option<(&Path, &Path)>,
        mnt: &Path,
    ) {
        let log = self.begin_mount(lowers);
        let cmd = expand_template(template, lowers, upper, mnt);
        self.finish_mount(MountGuard::by_command(&cmd, mnt, &log));
    }

    /// Snapshot lower layers not seen yet (checked after the case) and name the mount's log.
    fn begin_mount(&mut self, lowers: &[PathBuf]) -> PathBuf {
        for l in lowers {
            if !self.snapshots.iter().any(|(p, _)| p == l) {
                self.snapshots.push((l.clone(), util::raw_tree(l)));
            }
        }
        self.mount_seq += 1;
        self.dir.path().join(format!("mount{}.log", self.mount_seq))
    }

    /// Put a new mount under the watchdog and keep its guard until the case ends.
    fn finish_mount(&mut self, guard: Result<MountGuard, MountError>) {
        let guard = guard.unwrap_or_else(|e| panic!("mount failed: {e}"));
        self.dog.watch(guard.abort_handle());
        self.mounts.push(guard);
    }

    /// Unmount the most recent mount (strictly: a busy mount fails the case).
    pub fn unmount(&mut self) {
        let g = self.mounts.pop().expect("nothing mounted");
        g.unmount().unwrap_or_else(|e| panic!("unmount: {e}"));
    }

    /// Whether the stderr of the current mount's command/daemon mentions anything.
    pub fn mount_log(&self) -> String {
        self.mounts
            .iter()
            .map(|m| m.stderr())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Write a whiteout for `path` (inside a lower dir) in the given form.
    pub fn whiteout(&mut self, path: impl AsRef<Path>, form: Wh) {
        let path = path.as_ref();
        let form = self.kernel_form_wh(form);
        let parent = path.parent().expect("parent");
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        match form {
            Wh::Chr => util::mknod(path, libc::S_IFCHR | 0o600, 0, 0).expect("mknod whiteout"),
            Wh::Xattr | Wh::UserXattr => {
                let ns = if form == Wh::Xattr { "trusted" } else { "user" };
                util::write(path, b"");
                util::setxattr(path, &format!("{ns}.overlay.whiteout"), b"", 0)
                    .expect("set whiteout xattr");
                let opq = format!("{ns}.overlay.opaque");
                if util::getxattr(parent, &opq)
                    .map(|v| v != b"y")
                    .unwrap_or(true)
                {
                    util::setxattr(parent, &opq, b"x", 0).expect("set opaque=x");
                }
            }
            Wh::Aufs => util::write(parent.join(format!(".wh.{name}")), b""),
        }
    }

    /// Mark `dir` (inside a lower dir) opaque in the given form.
    pub fn opaque(&mut self, dir: impl AsRef<Path>, form: Opq) {
        let dir = dir.as_ref();
        match self.kernel_form_opq(form) {
            Opq::Xattr => util::setxattr(dir, "trusted.overlay.opaque", b"y", 0).expect("opaque"),
            Opq::UserXattr => util::setxattr(dir, "user.overlay.opaque", b"y", 0).expect("opaque"),
            Opq::Aufs => util::write(dir.join(".wh..wh..opq"), b""),
        }
    }

    fn kernel_form_wh(&mut self, form: Wh) -> Wh {
        let form = match (self.target, form) {
            // Rootless: a user cannot set `trusted.*`; the nearest form is `user.overlay.*`.
            (_, Wh::Xattr) if crate::rootless::active() => Wh::UserXattr,
            (Target::Kernel, Wh::Aufs) => Wh::Chr,
            _ => form,
        };
        self.note_form(form == Wh::UserXattr, form == Wh::Xattr);
        form
    }

    fn kernel_form_opq(&mut self, form: Opq) -> Opq {
        let form = match (self.target, form) {
            (_, Opq::Xattr) if crate::rootless::active() => Opq::UserXattr,
            (Target::Kernel, Opq::Aufs) if self.userxattr => Opq::UserXattr,
            (Target::Kernel, Opq::Aufs) => Opq::Xattr,
            _ => form,
        };
        self.note_form(form == Opq::UserXattr, form == Opq::Xattr);
        form
    }

    fn note_form(&mut self, user: bool, trusted: bool) {
        if self.target == Target::Kernel {
            self.userxattr |= user;
            self.trusted_forms |= trusted;
            assert!(
                !(self.userxattr && self.trusted_forms),
                "case mixes user.* and trusted.* overlay xattrs: the kernel reads one kind per mount"
            );
        }
    }

    fn finish(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        while let Some(g) = self.mounts.pop() {
            if let Err(e) = g.unmount() {
                problems.push(format!("unmount at end of case: {e}"));
            }
        }
        for (path, before) in &self.snapshots {
            let after = util::raw_tree(path);
            for d in util::diff_trees(before, &after) {
                problems.push(format!("lower layer {} changed: {d}", path.display()));
            }
        }
        self.aux.clear();
        problems
    }
}

/// Fill a mount-command template (see the module doc).
pub fn expand_template(
    template: &str,
    lowers: &[PathBuf],
    upper: Option<(&Path, &Path)>,
    mnt: &Path,
) -> String {
    let lower = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let words: Vec<String> = template
        .split(' ')
        .map(|w| {
            if upper.is_none() && (w.contains("{upper}") || w.contains("{work}")) {
                w.split(',')
                    .filter(|item| !item.contains("{upper}") && !item.contains("{work}"))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                w.to_string()
            }
        })
        .collect();
    let mut cmd = words
        .join(" ")
        .replace("{lower}", &lower)
        .replace("{mnt}", &mnt.display().to_string());
    if let Some((u, w)) = upper {
        cmd = cmd
            .replace("{upper}", &u.display().to_string())
            .replace("{work}", &w.display().to_string());
    }
    cmd
}

static SWEEP: Once = Once::new();

/// Run one case against one target.
pub fn run(target: Target, name: &'static str, case: fn(&mut Case)) {
    SWEEP.call_once(|| {
        mount::sweep_stale(&std::env::temp_dir(), TAG);
        mount::remove_stale_dirs(&std::env::temp_dir(), TAG);
    });
    let mut c = Case::new(target);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut c)));
    let fired = c.dog.fired();
    let log = c.mount_log();
    let problems = c.finish();
    if (res.is_err() || fired || !problems.is_empty()) && !log.trim().is_empty() {
        eprintln!("--- mount stderr ---\n{log}\n---");
    }
    if fired {
        panic!("{name}: watchdog fired after {CASE_TIMEOUT:?}; mounts were aborted");
    }
    if let Err(p) = res {
        std::panic::resume_unwind(p);
    }
    assert!(problems.is_empty(), "{name}: {}", problems.join("\n"));
}

/// Generate `kernel::<case>`, `strata::<case>` and (with the `custom-mount` feature)
/// `custom::<case>` tests for each listed case fn.
macro_rules! cases {
    ($module:ident: $($name:ident),* $(,)?) => {
        mod kernel {
            $(
                #[test]
                fn $name() {
                    $crate::harness::run(
                        $crate::harness::Target::Kernel,
                        concat!(stringify!($module), "::", stringify!($name)),
                        super::$name,
                    )
                }
            )*
        }
        mod strata {
            $( known_strata_gaps! { $module $name } )*
        }
        // Compiled only with `--features custom-mount` (and then run for real), so a default run
        // carries no ignored placeholders.
        #[cfg(feature = "custom-mount")]
        mod custom {
            $(
                #[test]
                fn $name() {
                    $crate::harness::run(
                        $crate::harness::Target::Custom,
                        concat!(stringify!($module), "::", stringify!($name)),
                        super::$name,
                    )
                }
            )*
        }
    };
}

/// One `strata::<case>` test fn, optionally ignored with a reason (see `gaps.rs`).
macro_rules! strata_case {
    ($module:ident $name:ident $(, $reason:literal)?) => {
        #[test]
        $( #[ignore = $reason] )?
        fn $name() {
            $crate::harness::run(
                $crate::harness::Target::Strata,
                concat!(stringify!($module), "::", stringify!($name)),
                super::$name,
            )
        }
    };
}
