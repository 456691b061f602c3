//! Which containers use which images, and disk usage (`system df`).

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;

use super::{Engine, Result};
use crate::container::Container;
use crate::digest::ChainId;
use crate::store::{ContainerUse, ImageRecord, RemoveEvent, StoreError};

/// A container as the image verbs see it: the image it uses and the size of its writable layer.
#[derive(Debug, Clone)]
pub struct ContainerUsage {
    pub usage: ContainerUse,
    /// Bytes of its writable layer.
    pub size_rw: u64,
    pub record: Container,
}

/// One image in [`DiskUsage`].
#[derive(Debug, Clone)]
pub struct ImageUsage {
    pub image: ImageRecord,
    /// Bytes of its layers that other images share.
    pub shared_size: u64,
    /// Containers using it (any state).
    pub containers: usize,
}

impl ImageUsage {
    pub fn unique_size(&self) -> u64 {
        self.image.size.saturating_sub(self.shared_size)
    }
}

/// What `system df` shows.
#[derive(Debug, Clone)]
pub struct DiskUsage {
    pub images: Vec<ImageUsage>,
    pub containers: Vec<ContainerUsage>,
    /// Every byte of image storage: layers, plus what no image needs any more (orphan blobs,
    /// stale downloads and staging) that `image prune` / `system prune` reclaim.
    pub images_size: u64,
    /// Bytes of image storage no container needs.
    pub images_reclaimable: u64,
}

impl DiskUsage {
    pub fn active_images(&self) -> usize {
        self.images.iter().filter(|i| i.containers > 0).count()
    }
    pub fn containers_size(&self) -> u64 {
        self.containers.iter().map(|c| c.size_rw).sum()
    }
    /// Bytes of the writable layers of containers that are not running.
    pub fn containers_reclaimable(&self) -> u64 {
        self.containers
            .iter()
            .filter(|c| !c.usage.running)
            .map(|c| c.size_rw)
            .sum()
    }
}

/// What [`Engine::prune_containers`] did.
#[derive(Debug, Default)]
pub struct ContainerPrune {
    pub deleted: Vec<crate::container::ContainerId>,
    /// Bytes of their writable layers.
    pub reclaimed: u64,
    /// Containers that could not be removed (the others were).
    pub errors: Vec<crate::container::ContainerError>,
}

/// Bytes of regular files and symlinks under `dir` (hard links once), walked fd-relative
/// without following links; 0 when it cannot be opened.
fn tree_size(dir: &Path) -> u64 {
    use strata_fs::at::{walk, Step, Visitor, WalkEntry};
    struct Sizes {
        seen: std::collections::HashSet<(u64, u64)>,
        total: u64,
    }
    impl Visitor for Sizes {
        type Error = nix::errno::Errno;
        fn entry(&mut self, e: &WalkEntry<'_>) -> Result<Step, Self::Error> {
            let fmt = e.stat.st_mode & libc::S_IFMT;
            if (fmt == libc::S_IFREG || fmt == libc::S_IFLNK)
                && self.seen.insert((e.stat.st_dev, e.stat.st_ino))
            {
                self.total += e.stat.st_size as u64;
            }
            Ok(Step::Descend)
        }
    }
    let Ok(fd) = strata_fs::at::open_dir(dir) else {
        return 0;
    };
    let mut v = Sizes {
        seen: Default::default(),
        total: 0,
    };
    // A walk cut short (an entry vanishing under a running container) counts what it saw.
    let _ = walk(fd.as_fd(), &mut v);
    v.total
}

impl Engine {
    /// Containers that use images (any state): `rmi` conflicts, `image prune`, `system df`.
    /// Build-step containers on `scratch` use none and are left out.
    pub fn container_usage(&self) -> Result<Vec<ContainerUsage>> {
        let mut out = Vec::new();
        for c in self.containers().list()? {
            let Some(image) = c.config.image_id.clone() else {
                continue;
            };
            out.push(ContainerUsage {
                usage: ContainerUse {
                    container_id: c.config.id.clone(),
                    image,
                    running: c.is_running(),
                },
                size_rw: tree_size(&c.paths.upper()),
                record: c,
            });
        }
        Ok(out)
    }

    /// `ps -s` / `inspect -s`: bytes of the container's writable layer, and of its whole root
    /// filesystem (the image's layers plus the writable layer).
    pub fn container_size(&self, c: &Container) -> Result<(u64, u64)> {
        let rw = tree_size(&c.paths.upper());
        let image = match &c.config.image_id {
            Some(id) => self.store()?.image(id).map(|i| i.size).unwrap_or(0),
            None => 0,
        };
        Ok((rw, rw + image))
    }

    /// Remove every container that is not running and that `keep` selects (`container prune`,
    /// `system prune`, their `--filter`). A container that a concurrent `rm` took first is
    /// skipped silently.
    pub fn prune_containers(&self, keep: &dyn Fn(&Container) -> bool) -> Result<ContainerPrune> {
        let mut out = ContainerPrune::default();
        for c in self.container_usage()? {
            if c.usage.running || !keep(&c.record) {
                continue;
            }
            match self.containers().remove(&c.record, false) {
                Ok(()) => {
                    out.reclaimed += c.size_rw;
                    out.deleted.push(c.usage.container_id);
                }
                Err(crate::container::ContainerError::NoSuchContainer(_)) => {}
                Err(e) => out.errors.push(e),
            }
        }
        Ok(out)
    }

    /// `rmi`: remove each image in turn, with the containers' uses taken once (a used image is
    /// refused unless `force`; `prune` removes untagged parents). One outcome per query, in order.
    pub fn remove_images(
        &self,
        queries: &[String],
        force: bool,
        prune: bool,
    ) -> Result<Vec<Result<Vec<RemoveEvent>, StoreError>>> {
        let store = self.store()?;
        let uses = self.image_users()?;
        Ok(queries
            .iter()
            .map(|q| store.remove_image(q, force, prune, &uses))
            .collect())
    }

    /// `volume prune` / `system prune --volumes`: volumes no container uses (`all`: named ones
    /// too, else anonymous only). Returns their names and the bytes freed.
    pub fn prune_volumes(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let containers = self.containers().list()?;
        Ok(self.volumes().prune(&containers, all)?)
    }

    /// The image uses of every container (without sizes).
    pub fn image_users(&self) -> Result<Vec<ContainerUse>> {
        Ok(self
            .containers()
            .list()?
            .into_iter()
            .filter_map(|c| {
                Some(ContainerUse {
                    image: c.config.image_id.clone()?,
                    running: c.is_running(),
                    container_id: c.config.id.clone(),
                })
            })
            .collect())
    }

    /// Prune images (`all`: every image no container uses, else dangling ones) matching
    /// `filter`, then sweep what no image needs any more (orphan layers and blobs, stale partial
    /// downloads and staging). Returns the events and the bytes reclaimed.
    pub fn prune_images(
        &self,
        all: bool,
        filter: &dyn Fn(&ImageRecord) -> bool,
    ) -> Result<(Vec<crate::store::RemoveEvent>, u64)> {
        let store = self.store()?;
        let uses = self.image_users()?;
        let (events, reclaimed) = store.prune_images(all, &uses, filter)?;
        let swept = store.gc(false)?;
        Ok((events, reclaimed + swept.bytes()))
    }

    /// Disk usage of images and containers.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let store = self.store()?;
        let images = store.images()?;
        let containers = self.container_usage()?;
        let layer_size: BTreeMap<ChainId, u64> = store
            .layers()?
            .into_iter()
            .map(|l| (l.chain_id, l.size))
            .collect();
        // Orphan layers are in `layer_size` already; the rest of what gc would sweep is not.
        let swept = store.gc(true).unwrap_or_default();
        let orphan_layers: u64 = swept.layers.iter().map(|l| l.1).sum();
        let garbage = swept.bytes() - orphan_layers;
        let images_size = layer_size.values().sum::<u64>() + garbage;
        let mut users: BTreeMap<&ChainId, usize> = BTreeMap::new();
        for img in &images {
            for c in &img.chain_ids {
                *users.entry(c).or_default() += 1;
            }
        }
        let images: Vec<ImageUsage> = images
            .iter()
            .map(|img| ImageUsage {
                shared_size: img
                    .chain_ids
                    .iter()
                    .filter(|c| users.get(c).copied().unwrap_or(0) > 1)
                    .map(|c| layer_size.get(c).copied().unwrap_or(0))
                    .sum(),
                containers: containers
                    .iter()
                    .filter(|c| c.usage.image == img.id)
                    .count(),
                image: img.clone(),
            })
            .collect();
        let used: u64 = images
            .iter()
            .filter(|i| i.containers > 0)
            .map(ImageUsage::unique_size)
            .sum();
        Ok(DiskUsage {
            images,
            containers,
            images_size,
            images_reclaimable: images_size.saturating_sub(used),
        })
    }
}
