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

/// Read a file of the container's rootfs, refusing a symlink at the leaf (an image could point
/// `/etc/passwd` anywhere on the host). A missing file reads as empty.
fn read_in_rootfs(rootfs: &Path, rel: &str) -> String {
    let p = rootfs.join(rel);
    match fs::symlink_metadata(&p) {
        Ok(md) if md.is_file() => fs::read_to_string(&p).unwrap_or_default(),
        _ => String::new(),
    }
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
    fn unknown_user_is_an_error() {
        let e = resolve_in(PASSWD, GROUP, "nosuch").unwrap_err().to_string();
        assert!(e.contains("unable to find user nosuch"), "{e}");
        assert!(resolve_in(PASSWD, GROUP, "root:nosuch").is_err());
    }
}
