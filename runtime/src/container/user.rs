//! `-u USER[:GROUP]` resolved against the container's own `/etc/passwd` and `/etc/group`
//! (never the host's), as Docker does.

use std::fs;
use std::path::Path;

use super::spec::User;
use super::ContainerError;

/// A resolved user: ids, supplementary groups and home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

impl Resolved {
    pub fn to_spec(&self) -> User {
        let mut gids = vec![self.gid];
        for g in &self.groups {
            if !gids.contains(g) {
                gids.push(*g);
            }
        }
        User {
            uid: self.uid,
            gid: self.gid,
            additional_gids: gids,
        }
    }
}

/// Read a file of the container's rootfs, resolved with the rootfs as `/` (openat2
/// `RESOLVE_IN_ROOT`: an image's symlinks, `/etc` itself among them, cannot lead to the host's
/// files) and refusing a symlink at the leaf. A missing file reads as empty.
fn read_in_rootfs(rootfs: &Path, rel: &str) -> String {
    let Ok(root) = fs::File::open(rootfs) else {
        return String::new();
    };
    let Ok(fd) = strata_fs::at::open_in_root(
        std::os::fd::AsFd::as_fd(&root),
        rel.as_bytes(),
        libc::O_RDONLY | libc::O_CLOEXEC,
        false,
    ) else {
        return String::new();
    };
    let mut f = fs::File::from(fd);
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return String::new();
    }
    let mut text = String::new();
    match std::io::Read::read_to_string(&mut f, &mut text) {
        Ok(_) => text,
        Err(_) => String::new(),
    }
}

/// `--group-add`: each group (a name in the container's `/etc/group`, or a number) joins
/// `user`'s supplementary groups.
pub fn add_groups(rootfs: &Path, groups: &[String], user: &mut User) -> Result<(), ContainerError> {
    if groups.is_empty() {
        return Ok(());
    }
    let table = read_in_rootfs(rootfs, "etc/group");
    for g in group_ids(&table, groups)? {
        if !user.additional_gids.contains(&g) {
            user.additional_gids.push(g);
        }
    }
    Ok(())
}

/// [`add_groups`] on the file's contents (runc's `GetAdditionalGroups`: a name first, then a
/// number).
pub fn group_ids(group: &str, wanted: &[String]) -> Result<Vec<u32>, ContainerError> {
    let mut out = Vec::new();
    for w in wanted {
        let found = group
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 3 && f[0] == w)
            .and_then(|f| f[2].parse().ok());
        match found.or_else(|| w.parse().ok()) {
            Some(g) => out.push(g),
            None => {
                return Err(ContainerError::User {
                    msg: format!("Unable to find group {w}: no matching entries in group file"),
                })
            }
        }
    }
    Ok(out)
}

/// Resolve `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) inside `rootfs`.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<Resolved, ContainerError> {
    let passwd = read_in_rootfs(rootfs, "etc/passwd");
    let group = read_in_rootfs(rootfs, "etc/group");
    resolve_in(&passwd, &group, spec)
}

/// [`resolve`] on the file contents.
pub fn resolve_in(passwd: &str, group: &str, spec: &str) -> Result<Resolved, ContainerError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == user_part || (user_part.parse::<u32>().is_ok() && f[2] == user_part));
    let (uid, mut gid, home, name) = match found {
        Some(f) => (
            f[2].parse().unwrap_or(0),
            f[3].parse().unwrap_or(0),
            f[5].to_string(),
            f[0].to_string(),
        ),
        None => match user_part.parse::<u32>() {
            Ok(uid) => (uid, 0, "/".to_string(), String::new()),
            Err(_) => {
                return Err(ContainerError::User {
                    msg: format!(
                        "unable to find user {user_part}: no matching entries in passwd file"
                    ),
                })
            }
        },
    };
    let groups_table: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    if let Some(g) = group_part {
        gid = match groups_table.iter().find(|f| f[0] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| ContainerError::User {
                msg: format!("unable to find group {g}: no matching entries in group file"),
            })?,
        };
    }
    let mut groups = Vec::new();
    if group_part.is_none() && !name.is_empty() {
        for f in &groups_table {
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse() {
                    groups.push(g);
                }
            }
        }
    }
    Ok(Resolved {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\nwww:x:33:33::/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\nwheel:x:10:www,root\n";

    #[test]
    fn by_name_and_id() {
        let r = resolve_in(PASSWD, GROUP, "nobody").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (65534, 65534, "/home"));
        let r = resolve_in(PASSWD, GROUP, "").unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        assert_eq!(r.groups, vec![10]);
        let r = resolve_in(PASSWD, GROUP, "1234:33").unwrap();
        assert_eq!((r.uid, r.gid), (1234, 33));
        let r = resolve_in(PASSWD, GROUP, "www:nogroup").unwrap();
        assert_eq!((r.uid, r.gid), (33, 65534));
    }

    #[test]
    fn added_groups() {
        let want = vec!["wheel".to_string(), "1234".to_string()];
        assert_eq!(group_ids(GROUP, &want).unwrap(), vec![10, 1234]);
        let e = group_ids(GROUP, &["nosuch".to_string()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("Unable to find group nosuch"), "{e}");
    }

    /// An image whose `/etc` is a symlink to a host directory: the group file read is the one
    /// inside the root (none here), never the host's.
    #[test]
    fn group_files_are_resolved_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("group"), "evil:x:999:\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(host.path(), root.path().join("etc")).unwrap();
        let mut u = resolve(root.path(), "").unwrap().to_spec();
        let e = add_groups(root.path(), &["evil".to_string()], &mut u).unwrap_err();
        assert!(e.to_string().contains("Unable to find group evil"), "{e}");
        // The same file inside the root is found.
        let inside = root.path().join(host.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("group"), "evil:x:998:\n").unwrap();
        add_groups(root.path(), &["evil".to_string()], &mut u).unwrap();
        assert!(u.additional_gids.contains(&998), "{u:?}");
    }

    #[test]
    fn unknown_user_is_an_error() {
        let e = resolve_in(PASSWD, GROUP, "nosuch").unwrap_err().to_string();
        assert!(e.contains("unable to find user nosuch"), "{e}");
        assert!(resolve_in(PASSWD, GROUP, "root:nosuch").is_err());
    }
}
