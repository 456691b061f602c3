//! `rmi` and `image prune` semantics (SPEC §7, §8), after moby's `daemon/images/image_delete.go`.
//!
//! Difference from Docker's classic store: forcing the removal of an image used by a *stopped*
//! container untags it (it becomes dangling, as with Docker's containerd store) instead of
//! deleting its record, so the container keeps its layers.

use std::collections::BTreeSet;

use super::images::{children_in, ref_key, resolve_id};
use super::{ContainerUse, Result, Store, StoreError};
use crate::digest::{ChainId, Digest, ImageId};
use crate::reference::Reference;

/// One line of `rmi` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveEvent {
    /// `Untagged: <familiar ref>`
    Untagged(Reference),
    /// `Deleted: sha256:…` (an image ID, then the chain IDs of released layers)
    Deleted(Digest),
}

fn conflict(id: &ImageId, forced: bool, why: String) -> StoreError {
    let how = if forced {
        "must be forced"
    } else {
        "cannot be forced"
    };
    StoreError::Conflict(format!(
        "conflict: unable to delete {} ({how}) - {why}",
        id.short()
    ))
}

/// All references within one repository and at most one tag (moby `isSingleReference`).
fn is_single_reference(refs: &[Reference]) -> bool {
    if refs.len() <= 1 {
        return refs.len() == 1;
    }
    let mut single: Option<&Reference> = None;
    let mut canonical = BTreeSet::new();
    for r in refs {
        if r.digest().is_some() {
            canonical.insert(r.name());
        } else if single.is_none() {
            single = Some(r);
        } else {
            return false;
        }
    }
    let single = single.unwrap_or(&refs[0]);
    canonical.len() == 1 && canonical.contains(&single.name())
}

#[derive(Clone, Copy)]
struct Mask {
    children: bool,
    running: bool,
    references: bool,
    stopped: bool,
}

const HARD: Mask = Mask {
    children: true,
    running: true,
    references: false,
    stopped: false,
};

struct Conflict {
    err: StoreError,
    used: bool,
}

impl Store {
    /// `rmi QUERY`: untag and/or delete, with Docker's conflict rules. `containers` lists the
    /// containers that use images (any state). With `prune`, untagged parents are removed too.
    pub fn remove_image(
        &self,
        query: &str,
        force: bool,
        prune: bool,
        containers: &[ContainerUse],
    ) -> Result<Vec<RemoveEvent>> {
        let m = self.read_meta()?;
        let id = resolve_id(&m, query)?;
        let refs = m.refs_of(&id);
        let mut events = Vec::new();
        let by_id = is_id_query(&id, query);
        let mut quiet = false;
        if !by_id {
            let parsed = Reference::parse_with_default_tag(query)?.docker_ref();
            if !force && is_single_reference(&refs) {
                if let Some(c) = containers.iter().find(|c| c.image == id) {
                    return Err(StoreError::Conflict(format!(
                        "conflict: unable to remove repository reference \"{query}\" (must force) - container {} is using its referenced image {}",
                        c.container_id.short(),
                        id.short()
                    )));
                }
            }
            self.untag(&parsed)?;
            events.push(RemoveEvent::Untagged(parsed.clone()));
            let mut remaining: Vec<Reference> = refs
                .into_iter()
                .filter(|r| ref_key(r) != ref_key(&parsed))
                .collect();
            if parsed.digest().is_none()
                && !remaining
                    .iter()
                    .any(|r| r.digest().is_none() && r.name() == parsed.name())
            {
                let (same, other): (Vec<_>, Vec<_>) = remaining
                    .into_iter()
                    .partition(|r| r.digest().is_some() && r.name() == parsed.name());
                for r in same {
                    self.remove_ref(&r)?;
                    events.push(RemoveEvent::Untagged(r));
                }
                remaining = other;
            }
            if !remaining.is_empty() {
                return Ok(events);
            }
            quiet = true;
        } else if is_single_reference(&refs) {
            let mask = Mask {
                references: false,
                stopped: !force,
                ..HARD
            };
            if let Some(c) = self.check_conflict(&id, mask, containers)? {
                return Err(c.err);
            }
            self.untag_all(&id, &mut events)?;
        }
        self.delete_helper(&id, &mut events, force, prune, quiet, containers)?;
        Ok(events)
    }

    fn untag_all(&self, id: &ImageId, events: &mut Vec<RemoveEvent>) -> Result<()> {
        let refs = self.update(|m| {
            let refs = m.refs_of(id);
            m.refs.retain(|_, v| v != id);
            Ok(refs)
        })?;
        events.extend(refs.into_iter().map(RemoveEvent::Untagged));
        Ok(())
    }

    fn check_conflict(
        &self,
        id: &ImageId,
        mask: Mask,
        containers: &[ContainerUse],
    ) -> Result<Option<Conflict>> {
        let m = self.read_meta()?;
        if mask.children && !children_in(&m, id).is_empty() {
            return Ok(Some(Conflict {
                err: conflict(id, false, "image has dependent child images".into()),
                used: false,
            }));
        }
        let using = |running: bool| {
            containers
                .iter()
                .find(|c| c.image == *id && c.running == running)
        };
        if mask.running {
            if let Some(c) = using(true) {
                return Ok(Some(Conflict {
                    err: conflict(
                        id,
                        false,
                        format!(
                            "image is being used by running container {}",
                            c.container_id.short()
                        ),
                    ),
                    used: true,
                }));
            }
        }
        if mask.references && !m.refs_of(id).is_empty() {
            return Ok(Some(Conflict {
                err: conflict(
                    id,
                    true,
                    "image is referenced in multiple repositories".into(),
                ),
                used: false,
            }));
        }
        if mask.stopped {
            if let Some(c) = using(false) {
                return Ok(Some(Conflict {
                    err: conflict(
                        id,
                        true,
                        format!(
                            "image is being used by stopped container {}",
                            c.container_id.short()
                        ),
                    ),
                    used: true,
                }));
            }
        }
        Ok(None)
    }

    fn delete_helper(
        &self,
        id: &ImageId,
        events: &mut Vec<RemoveEvent>,
        force: bool,
        prune: bool,
        quiet: bool,
        containers: &[ContainerUse],
    ) -> Result<()> {
        let mask = Mask {
            references: !force,
            stopped: !force,
            ..HARD
        };
        if let Some(c) = self.check_conflict(id, mask, containers)? {
            let m = self.read_meta()?;
            let dangling = m.refs_of(id).is_empty() && children_in(&m, id).is_empty();
            if quiet && (!dangling || c.used) {
                return Ok(());
            }
            return Err(c.err);
        }
        let parent = self
            .read_meta()?
            .images
            .get(id.hex())
            .and_then(|i| i.parent.clone());
        self.untag_all(id, events)?;
        if containers.iter().any(|c| c.image == *id) {
            // Forced past a stopped container: keep the image (now dangling) for it.
            return Ok(());
        }
        let released = self.delete_image_unchecked(id)?;
        events.push(RemoveEvent::Deleted(id.digest().clone()));
        events.extend(
            released
                .into_iter()
                .map(|c: ChainId| RemoveEvent::Deleted(c.into_digest())),
        );
        match parent {
            Some(p) if prune && self.read_meta()?.has(&p) => {
                self.delete_helper(&p, events, false, true, true, containers)
            }
            _ => Ok(()),
        }
    }

    /// `image prune`: delete dangling images (`all`: every image no container uses) matching
    /// `keep`'s filter. Returns the events and the bytes of layers released.
    pub fn prune_images(
        &self,
        all: bool,
        containers: &[ContainerUse],
        filter: &dyn Fn(&super::ImageRecord) -> bool,
    ) -> Result<(Vec<RemoveEvent>, u64)> {
        let m = self.read_meta()?;
        let images = self.images()?;
        let sizes: std::collections::BTreeMap<ChainId, u64> = self
            .layers()?
            .into_iter()
            .map(|l| (l.chain_id.clone(), l.size))
            .collect();
        let mut events = Vec::new();
        for img in images {
            if !all && !children_in(&m, &img.id).is_empty() {
                continue; // only heads
            }
            if !filter(&img) || containers.iter().any(|c| c.image == img.id) {
                continue;
            }
            if !self.read_meta()?.has(&img.id) {
                continue; // went with an earlier one
            }
            let refs: Vec<Reference> = img
                .repo_tags
                .iter()
                .chain(img.repo_digests.iter())
                .cloned()
                .collect();
            if refs.is_empty() {
                if let Ok(ev) = self.remove_image(img.id.hex(), false, true, containers) {
                    events.extend(ev);
                }
            } else if all || img.repo_tags.is_empty() {
                for r in refs {
                    if let Ok(ev) = self.remove_image(&r.to_string(), false, true, containers) {
                        events.extend(ev);
                    }
                }
            }
        }
        let reclaimed = events
            .iter()
            .filter_map(|e| match e {
                RemoveEvent::Deleted(d) => sizes.get(&ChainId::from(d.clone())),
                _ => None,
            })
            .sum();
        Ok((events, reclaimed))
    }
}

/// True when `query` named the image by (a prefix of) its ID rather than by a reference
/// (moby `isImageIDPrefix`).
fn is_id_query(id: &ImageId, query: &str) -> bool {
    let q = query.strip_prefix("sha256:").unwrap_or(query);
    Digest::is_hex_prefix(q) && id.hex().starts_with(q)
}
