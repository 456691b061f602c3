//! `RUN --mount=type=bind|cache|tmpfs|secret` as BuildKit documents them, and the script of a
//! `RUN <<EOF` heredoc that starts with `#!`: what each puts at its target for one RUN
//! container. None of it lands in the step's layer: the mounts are binds and tmpfs the
//! container sees, and the empty directories made only to mount on ("stubs", as BuildKit calls
//! them) are left out of the layer too.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::BufWriter;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::Flock;

use super::copy::{self, CopyRequest, Source};
use super::exec::Builder;
use super::instructions::{MountKind, RunMount, Sharing};
use super::stage::{StageState, TempFile};
use super::{extract_context, io_at, BuildError};
use crate::changes::{Change, ChangeKind};
use crate::container::{TmpfsMount, VolumeMount};
use crate::fsutil::{lock_file, LockMode};

/// A directory in the store's `tmp/` (cleaned by `Store::open` if we die), removed on drop.
struct TempTree(PathBuf);

impl TempTree {
    fn new(builder: &Builder<'_>, what: &str) -> Result<TempTree, BuildError> {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t = TempFile::new(builder.store, &format!("{what}-{n}"));
        let path = t.0.clone();
        drop(t);
        fs::create_dir_all(&path).map_err(io_at(&path))?;
        Ok(TempTree(path))
    }
}

impl Drop for TempTree {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A cache mount's directory, the lock held on it, and the temp dir used instead of it.
type CacheDir = (PathBuf, Option<Flock<File>>, Option<TempTree>);

/// What one RUN container mounts, held until the step ends.
#[derive(Default)]
pub(super) struct StepMounts {
    pub(super) volumes: Vec<VolumeMount>,
    pub(super) tmpfs: Vec<TmpfsMount>,
    /// Absolute targets: their stub directories are not part of the layer.
    pub(super) targets: Vec<String>,
    /// Words of the cache key (bind sources by content digest, never a secret's value).
    pub(super) key: Vec<String>,
    temps: Vec<TempTree>,
    locks: Vec<Flock<File>>,
}

fn bind(source: PathBuf, target: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        source,
        target: target.to_string(),
        read_only,
        volume: None,
        anonymous: false,
        nocopy: false,
    }
}

fn set_owner_mode(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<(), BuildError> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_at(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_at(path))
}

impl Builder<'_> {
    /// Prepare the mounts of a RUN step (and its `#!` script, if any).
    pub(super) fn step_mounts(
        &mut self,
        st: &StageState,
        mounts: &[RunMount],
        script: Option<(&str, &str)>,
        stage: usize,
    ) -> Result<StepMounts, BuildError> {
        let mut out = StepMounts::default();
        if let Some((name, body)) = script {
            let dir = TempTree::new(self, "pipes")?;
            let file = dir.0.join("script");
            fs::write(&file, body).map_err(io_at(&file))?;
            fs::set_permissions(&file, fs::Permissions::from_mode(0o755)).map_err(io_at(&file))?;
            out.volumes
                .push(bind(file, &format!("/dev/pipes/{name}"), true));
            out.temps.push(dir);
        }
        for m in mounts {
            let target = if m.target.starts_with('/') {
                m.target.clone()
            } else {
                format!("{}/{}", st.workdir().trim_end_matches('/'), m.target)
            };
            match m.kind {
                MountKind::Bind => {
                    let (path, digest, dir) = self.bind_source(m, stage)?;
                    out.key.push(format!(
                        "type=bind,target={target},source={digest},rw={}",
                        !m.readonly
                    ));
                    out.volumes.push(bind(path, &target, m.readonly));
                    out.temps.push(dir);
                }
                MountKind::Cache => {
                    let id = m.id.clone().unwrap_or_else(|| target.clone());
                    let (path, lock, temp) = self.cache_dir(m, &id)?;
                    out.key.push(format!(
                        "type=cache,target={target},id={id},ro={}",
                        m.readonly
                    ));
                    out.volumes.push(bind(path, &target, m.readonly));
                    out.locks.extend(lock);
                    out.temps.extend(temp);
                }
                MountKind::Tmpfs => {
                    // Docker's tmpfs defaults (noexec, nosuid, nodev) less noexec: build
                    // steps run what they put there.
                    let mut options = vec!["exec".to_string()];
                    if let Some(s) = &m.size {
                        options.push(format!("size={s}"));
                    }
                    out.key
                        .push(format!("type=tmpfs,target={target},{}", options.join(",")));
                    out.tmpfs.push(TmpfsMount {
                        target: target.clone(),
                        options,
                    });
                }
                MountKind::Secret => {
                    let id = m.id.clone().unwrap_or_default();
                    let Some(value) = self.opts.secrets.get(&id) else {
                        if m.required {
                            return Err(BuildError::SecretNotFound(id));
                        }
                        continue;
                    };
                    let dir = TempTree::new(self, "secret")?;
                    let file = dir.0.join("secret");
                    fs::write(&file, value).map_err(io_at(&file))?;
                    set_owner_mode(
                        &file,
                        m.mode.unwrap_or(0o400),
                        m.uid.unwrap_or(0),
                        m.gid.unwrap_or(0),
                    )?;
                    out.key.push(format!("type=secret,target={target},id={id}"));
                    out.volumes.push(bind(file, &target, true));
                    out.temps.push(dir);
                }
            }
            out.targets.push(target);
        }
        Ok(out)
    }

    /// A bind mount's source: the context's (or `from`'s) path, copied with COPY's rules
    /// (`.dockerignore`, nothing outside the context, symlinks kept) into a temp dir, so a
    /// `rw` mount's writes are thrown away with it. Returns the path to mount, the content
    /// digest (the cache key) and the temp dir.
    fn bind_source(
        &mut self,
        m: &RunMount,
        stage: usize,
    ) -> Result<(PathBuf, String, TempTree), BuildError> {
        let src = m.source.clone().unwrap_or_else(|| ".".to_string());
        let from_tree;
        let source = match &m.from {
            Some(f) => {
                from_tree = self.tree_of_from(f, stage)?;
                Source::Image(&from_tree)
            }
            None => Source::Context {
                tree: &self.context,
                ignore: &self.ignore,
            },
        };
        let req = CopyRequest {
            instr: "RUN --mount",
            srcs: vec![src.clone()],
            heredocs: Vec::new(),
            dest: "/m/".to_string(),
            source,
            image: None,
            owner: None,
            chmod: None,
            add: false,
            checksum: None,
            tmp: self.store.root().join("tmp"),
        };
        let plan = copy::plan(&req)?;
        let dir = TempTree::new(self, "bind")?;
        if !plan.is_empty() {
            let tmp = TempFile::new(self.store, "bind.tar");
            let f = File::create(&tmp.0).map_err(io_at(&tmp.0))?;
            copy::write_tar(&plan, BufWriter::new(f))?;
            let f = File::open(&tmp.0).map_err(io_at(&tmp.0))?;
            extract_context(f, &dir.0)?;
        }
        let root = dir.0.join("m");
        fs::create_dir_all(&root).map_err(io_at(&root))?;
        let path = if plan.digest.starts_with("file:") {
            let base = src.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            root.join(base)
        } else {
            root
        };
        Ok((path, plan.digest.clone(), dir))
    }

    /// A cache mount's directory: kept in the store across builds, one per `id`. `locked`
    /// waits for other users, `private` gets a fresh (thrown away) directory while another
    /// build uses it, `shared` mounts it as it is.
    fn cache_dir(&self, m: &RunMount, id: &str) -> Result<CacheDir, BuildError> {
        let hex = crate::digest::Digest::of_bytes(id.as_bytes()).hex()[..32].to_string();
        let base = self.store.root().join("build-mounts");
        fs::create_dir_all(&base).map_err(io_at(&base))?;
        let lock_path = base.join(format!("{hex}.lock"));
        let lock = match m.sharing {
            Sharing::Locked => {
                Some(lock_file(&lock_path, LockMode::Exclusive).map_err(io_at(&lock_path))?)
            }
            Sharing::Shared => {
                Some(lock_file(&lock_path, LockMode::Shared).map_err(io_at(&lock_path))?)
            }
            Sharing::Private => match lock_file(&lock_path, LockMode::TryExclusive) {
                Ok(l) => Some(l),
                Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                    let t = TempTree::new(self, "cache")?;
                    set_owner_mode(
                        &t.0,
                        m.mode.unwrap_or(0o755),
                        m.uid.unwrap_or(0),
                        m.gid.unwrap_or(0),
                    )?;
                    return Ok((t.0.clone(), None, Some(t)));
                }
                Err(e) => return Err(io_at(&lock_path)(e)),
            },
        };
        let dir = base.join(&hex);
        if !dir.is_dir() {
            // Made whole under a temp name, then renamed: a concurrent build sees it or not.
            let t = TempTree::new(self, "cache")?;
            set_owner_mode(
                &t.0,
                m.mode.unwrap_or(0o755),
                m.uid.unwrap_or(0),
                m.gid.unwrap_or(0),
            )?;
            if fs::rename(&t.0, &dir).is_err() && !dir.is_dir() {
                return Err(io_at(&dir)(std::io::Error::last_os_error()));
            }
        }
        Ok((dir, lock, None))
    }
}

/// Where the cache mounts of the store at `root` live.
fn cache_mounts_dir(root: &Path) -> PathBuf {
    root.join("build-mounts")
}

fn tree_size(p: &Path) -> u64 {
    let Ok(m) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !m.is_dir() {
        return m.len();
    }
    fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// The cache mounts (`RUN --mount=type=cache`) kept in the store at `root`: how many, and
/// their size in bytes (`system df`'s build cache).
pub fn cache_mounts_usage(root: &Path) -> (usize, u64) {
    let Ok(rd) = fs::read_dir(cache_mounts_dir(root)) else {
        return (0, 0);
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .fold((0, 0), |(n, b), e| (n + 1, b + tree_size(&e.path())))
}

/// Remove the cache mounts no build is using (a build holds its mount's lock while its step
/// runs); returns the bytes freed.
pub fn prune_cache_mounts(root: &Path) -> u64 {
    let base = cache_mounts_dir(root);
    let Ok(rd) = fs::read_dir(&base) else {
        return 0;
    };
    let mut freed = 0;
    for e in rd.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let lock_path = base.join(format!("{name}.lock"));
        let Ok(_held) = lock_file(&lock_path, LockMode::TryExclusive) else {
            continue;
        };
        let size = tree_size(&e.path());
        if fs::remove_dir_all(e.path()).is_ok() {
            freed += size;
            let _ = fs::remove_file(&lock_path);
        }
    }
    freed
}

/// Leave out of a layer the directories made only to mount on: a mount target (or a parent of
/// one) that the image did not have, with nothing else changed beneath it. (An existing parent
/// stays in the layer as changed, as with BuildKit: its mtime moved.)
pub(super) fn drop_mount_stubs(changes: Vec<Change>, targets: &[String]) -> Vec<Change> {
    let mut candidates: BTreeSet<PathBuf> = BTreeSet::new();
    for t in targets {
        let mut p = PathBuf::from(t);
        while p.parent().is_some() {
            candidates.insert(p.clone());
            p.pop();
        }
    }
    let mut order: Vec<PathBuf> = candidates.into_iter().collect();
    order.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    let mut dropped: BTreeSet<PathBuf> = BTreeSet::new();
    for p in order {
        let Some(c) = changes.iter().find(|c| c.path == p) else {
            continue;
        };
        let beneath = |o: &Change| o.path != p && o.path.starts_with(&p);
        if changes
            .iter()
            .any(|o| beneath(o) && !dropped.contains(&o.path))
        {
            continue;
        }
        if c.kind == ChangeKind::Add {
            dropped.insert(p);
        }
    }
    changes
        .into_iter()
        .filter(|c| !dropped.contains(&c.path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(kind: ChangeKind, p: &str) -> Change {
        Change::new(kind, PathBuf::from(p))
    }

    #[test]
    fn cache_mounts_are_counted_and_pruned_unless_in_use() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(cache_mounts_usage(root.path()), (0, 0));
        let base = cache_mounts_dir(root.path());
        for (d, data) in [("aa", "12345"), ("bb", "123")] {
            fs::create_dir_all(base.join(d).join("sub")).unwrap();
            fs::write(base.join(d).join("sub/f"), data).unwrap();
        }
        assert_eq!(cache_mounts_usage(root.path()), (2, 8));
        let busy = lock_file(&base.join("bb.lock"), LockMode::Shared).unwrap();
        assert_eq!(prune_cache_mounts(root.path()), 5);
        assert_eq!(cache_mounts_usage(root.path()), (1, 3));
        drop(busy);
        assert_eq!(prune_cache_mounts(root.path()), 3);
        assert_eq!(cache_mounts_usage(root.path()), (0, 0));
    }

    #[test]
    fn stubs_are_dropped_and_real_changes_kept() {
        let changes = vec![
            ch(ChangeKind::Modify, "/root"),
            ch(ChangeKind::Add, "/root/.cache"),
            ch(ChangeKind::Add, "/root/.cache/go"),
            ch(ChangeKind::Add, "/out"),
            ch(ChangeKind::Add, "/out/bin"),
            ch(ChangeKind::Add, "/scratch"),
        ];
        let kept = drop_mount_stubs(
            changes,
            &[
                "/root/.cache/go".into(),
                "/out/cache".into(),
                "/scratch".into(),
            ],
        );
        let kept: Vec<String> = kept.iter().map(|c| c.to_string()).collect();
        // /out has a real file beneath it: kept, with that file; /root existed and changed.
        assert_eq!(kept, ["C /root", "A /out", "A /out/bin"]);
    }
}
