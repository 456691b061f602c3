//! The rootless run: the suite again as an unprivileged user inside a user namespace, the way
//! rootless podman and a rootless strata mount their stacks.
//!
//! `rootless::as_unprivileged_user` (run as root) makes a throw-away user with a subordinate
//! range (`strata_testkit::user`, removed even on failure), and runs this same test binary as that
//! user under `unshare --user --mount` with root mapped to the user and 1…65536 to its range. In the
//! child, [`ENV`] is set: every case mounts with `userxattr` (kernel overlayfs, the reference, and
//! strata-overlay alike), so whiteouts are char 0/0 nodes and opaque dirs carry
//! `user.overlay.opaque`. Cases that cannot mean the same thing without privilege on the host
//! are listed in [`SKIP`] with the reason, printed on every run. Everything the child mounts lives
//! in its private mount namespace and disappears with its last process; its temp dirs are in the
//! user's home, removed with the user.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use strata_testkit::user::{TestUser, RANGE};

/// Set in the child: run the cases rootless (see the module doc).
pub const ENV: &str = "STRATA_CONFORMANCE_USERNS";

/// Whether this process is the rootless child.
pub fn active() -> bool {
    std::env::var_os(ENV).is_some()
}

/// Cases that cannot run rootless, and why: `module::case` (both targets) or
/// `module::target::case` (one target). Each reason was seen on kernel overlayfs with `userxattr`
/// (the reference) or follows from the kernel's rules for a user namespace.
pub const SKIP: &[(&str, &str)] = &[
    ("compat::kernel_absolute_redirect_under_target", EXDEV_BOTH),
    ("compat::kernel_moved_then_parent_renamed_under_target", EXDEV_BOTH),
    ("compat::kernel_nested_redirects_under_target", EXDEV_BOTH),
    ("compat::kernel_rename_onto_removed_lower_dir_under_target", EXDEV_BOTH),
    ("compat::kernel_upper_with_dir_renames_mounts_under_target", EXDEV_BOTH),
    ("compat::kernel::target_remount_same_view", EXDEV),
    ("compat::kernel::target_upper_with_dir_renames_mounts_under_kernel", EXDEV),
    ("misc::kernel::dir_fd_survives_rename", EXDEV),
    ("perms::kernel::moving_a_dir_needs_write_on_it", EXDEV),
    ("rename::kernel::rename_dir_into_other_dir", EXDEV),
    ("rename::kernel::rename_dir_over_empty_dir", EXDEV),
    ("rename::kernel::rename_dir_over_nonempty_dir", EXDEV),
    ("rename::kernel::rename_dir_updates_dotdot", EXDEV),
    ("rename::kernel::rename_exchange_dirs", EXDEV),
    ("rename::kernel::rename_lower_dir_twice", EXDEV),
    ("rename::kernel::rename_lower_only_dir", EXDEV),
    ("rename::kernel::rename_merged_dir", EXDEV),
    ("rename::kernel::rename_then_recreate_old_name", EXDEV),
    ("rename::kernel::rename_whiteout_then_rename_back", EXDEV),
    ("copyup::copy_up_preserves_all_xattrs", TRUSTED),
    ("perms::xattr_permissions", TRUSTED),
    ("xattr::trusted_namespace_as_root", TRUSTED),
    ("xattr::xattr_on_symlink_trusted", TRUSTED),
    ("options::xattr_permissions", "sets security.fuseoverlayfs.override_stat on a lower file: security.* needs CAP_SYS_ADMIN in the initial user namespace"),
    ("copyup::copy_up_special_files", DEV),
    ("merge::special_files_in_lower", DEV),
    ("ops::mknod_fifo_and_devices", DEV),
    ("ops::mknod_whiteout_device_eperm", DEV),
    ("posix::modes_minus_umask", DEV),
    ("inode::ino_stable_after_cache_drop", "writes /proc/sys/vm/drop_caches: root of the initial namespace only"),
    ("perms::suid_kept_on_write_by_root", "kernel overlayfs with userxattr clears S_ISUID/S_ISGID on a write by the namespace's root (strata does the same); the case expects CAP_FSETID of the initial namespace"),
    ("copyup::kernel::link_copies_up", "kernel overlayfs with userxattr (no index) gives a hard link made through the mount a different st_ino than its copied-up source; strata keeps them one inode (its strata:: variant runs)"),
    ("whiteout::kernel::mkdir_over_whiteout_is_empty", "kernel overlayfs with userxattr leaves a dir made over a lower layer's whiteout without an opaque mark (the whiteout below still hides the lower dir); strata marks it opaque (its strata:: variant runs)"),
    ("rename::kernel::rename_same_file_noop", "kernel overlayfs with userxattr answers link() after rename(a, a) of a lower file with ESTALE; strata links (its strata:: variant runs)"),
];

const EXDEV: &str = "kernel overlayfs refuses redirect_dir with userxattr, so renaming a lower or merged dir is EXDEV there (mv falls back to copying); strata materializes the dir instead (its strata:: variant runs)";
const EXDEV_BOTH: &str = "the kernel writes the upper dir by renaming lower dirs, which it refuses with userxattr (EXDEV: no redirect_dir)";
const TRUSTED: &str = "sets trusted.* xattrs: needs CAP_SYS_ADMIN in the initial user namespace";
const DEV: &str =
    "makes device nodes: mknod of a char/block device other than 0/0 is EPERM in a user namespace";

/// Modules left out of the rootless run: they exercise no format or permission path the listed
/// modules do not already, and would double its time.
const SLOW_MODULES: &[&str] = &["stress", "fuzz", "selftest", "rootless"];

fn listed(bin: &Path, extra: &[&str]) -> BTreeSet<String> {
    let out = Command::new(bin)
        .args(["--list", "--format", "terse"])
        .args(extra)
        .output()
        .expect("list the suite's tests");
    assert!(out.status.success(), "--list failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

fn user_gid(user: &TestUser) -> String {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(&user.home)
        .expect("stat home")
        .gid()
        .to_string()
}

#[test]
fn as_unprivileged_user() {
    if active() {
        return;
    }
    let bin = std::env::current_exe().expect("own path");
    let ignored = listed(&bin, &["--ignored"]);
    let mut names = Vec::new();
    let mut skipped = 0;
    for name in listed(&bin, &[]) {
        let parts: Vec<&str> = name.split("::").collect();
        let [module, target, case] = parts[..] else {
            continue;
        };
        if !matches!(target, "kernel" | "strata")
            || SLOW_MODULES.contains(&module)
            || ignored.contains(&name)
        {
            continue;
        }
        let (both, one) = (format!("{module}::{case}"), name.clone());
        if let Some((_, why)) = SKIP.iter().find(|(k, _)| *k == both || *k == one) {
            println!("skipped rootless {name}: {why}");
            skipped += 1;
            continue;
        }
        names.push(name);
    }
    assert!(names.len() > 200, "too few cases selected: {}", names.len());

    let user = TestUser::new(true).expect("throw-away user");
    let start = user.range_start.expect("range").to_string();
    let tmp = user.home.join("tmp");
    let made = user
        .command(Path::new("/bin/mkdir"), &[tmp.to_str().expect("utf-8")])
        .status()
        .expect("mkdir");
    assert!(made.success(), "mkdir {}", tmp.display());
    let users = format!("--map-users={start},1,{RANGE}");
    let groups = format!("--map-groups={start},1,{RANGE}");
    let envs = [format!("{ENV}=1"), format!("TMPDIR={}", tmp.display())];
    let mut args: Vec<&str> = envs.iter().map(String::as_str).collect();
    args.extend([
        "unshare",
        "--user",
        "--mount",
        "--map-root-user",
        &users,
        &groups,
        "--",
        "/bin/sh",
        "-c",
        // The maps first, so the run proves it was unprivileged.
        "cat /proc/self/uid_map /proc/self/gid_map && exec \"$0\" \"$@\"",
        bin.to_str().expect("utf-8 path"),
        "--exact",
        "--test-threads=2",
    ]);
    args.extend(names.iter().map(String::as_str));
    // As `TestUser::command`, with a longer limit: ~460 cases take 25 s alone, more beside the
    // rest of the suite (nextest ends the test after 240 s anyway).
    let home = format!("HOME={}", user.home.display());
    let out = Command::new("timeout")
        .args([
            "-k", "5", "220", "runuser", "-u", &user.name, "--", "env", "-i",
        ])
        .args(["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", &home])
        .args(&args)
        .current_dir(&user.home)
        .output()
        .expect("run the suite as the user");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let failed: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... FAILED"))
        .collect();
    let passed = stdout.lines().filter(|l| l.ends_with(" ... ok")).count();
    // Root is the user, 1… its subordinate range: no id of the initial namespace's root is mapped.
    let maps: Vec<Vec<&str>> = stdout
        .lines()
        .take(4)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (uid, gid) = (user.uid.to_string(), user_gid(&user));
    let range = RANGE.to_string();
    assert_eq!(
        maps,
        [
            vec!["0", uid.as_str(), "1"],
            vec!["1", start.as_str(), range.as_str()],
            vec!["0", gid.as_str(), "1"],
            vec!["1", start.as_str(), range.as_str()],
        ],
        "id maps of the rootless run:\n{stdout}"
    );
    println!(
        "rootless: {passed} passed, {} failed, {skipped} skipped",
        failed.len()
    );
    assert!(
        out.status.success() && failed.is_empty() && passed == names.len(),
        "rootless run: {} of {} passed; failed: {failed:?}\n{}\n{}",
        passed,
        names.len(),
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
}
