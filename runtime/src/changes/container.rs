//! Diff and commit of a container record: which dirs are compared, what is left out, and the
//! container's effective config.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::{commit, diff_filtered, diff_full_tree, Change, ChangesError, CommitRequest, Filter};
use crate::container::Container;
use crate::digest::ImageId;
use crate::reference::Reference;
use crate::store::Store;

/// The container's lowers, top first: its init layer (mount targets), then its image's layers.
/// (Records made before init layers existed have none.)
fn lowers(c: &Container) -> Vec<PathBuf> {
    let mut out = c.layers().lowers;
    if !out[0].is_dir() {
        out.remove(0);
    }
    out
}

fn filter(c: &Container) -> Filter {
    c.config
        .volumes
        .iter()
        .fold(Filter::docker(), |f, v| f.exclude(PathBuf::from(&v.target)))
}

/// `vfs` keeps the whole tree in the upper dir.
fn full_tree(c: &Container) -> bool {
    c.config.driver.upper_is_full_copy()
}

/// `docker diff` of a container (running or not, any driver).
pub fn container_diff(c: &Container) -> Result<Vec<Change>, ChangesError> {
    let upper = c.paths.upper();
    if c.is_running() {
        super::commit::sync_fs(&c.paths.rootfs());
    }
    if full_tree(c) {
        diff_full_tree(&upper, &lowers(c), &filter(c))
    } else {
        diff_filtered(&upper, &lowers(c), &filter(c))
    }
}

/// What the user asked of `commit`.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub author: Option<String>,
    pub comment: Option<String>,
    pub changes: Vec<String>,
    /// Pause a running container while its changes are read.
    pub pause: bool,
    pub reference: Option<Reference>,
}

fn strings(v: &[String]) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        Value::Array(v.iter().cloned().map(Value::String).collect())
    }
}

/// The container's effective config: its image's `config` with what `run` set.
fn effective_config(store: &Store, image: &ImageId, c: &Container) -> Map<String, Value> {
    let mut config = store
        .read_blob(image.digest())
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| match v.get("config") {
            Some(Value::Object(m)) => Some(m.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let rc = &c.config;
    config.insert("Cmd".into(), strings(&rc.cmd));
    config.insert("Entrypoint".into(), strings(&rc.entrypoint));
    config.insert("Env".into(), strings(&rc.env));
    config.insert("User".into(), Value::String(rc.user.clone()));
    config.insert("WorkingDir".into(), Value::String(rc.working_dir.clone()));
    config
}

/// Commit a container as a new image; returns its ID.
pub fn commit_container(
    store: &Store,
    c: &Container,
    opts: &CommitOptions,
) -> Result<ImageId, ChangesError> {
    let image =
        c.config
            .image_id
            .clone()
            .ok_or(ChangesError::Store(crate::store::StoreError::Digest(
                crate::digest::DigestError::Format,
            )))?;
    let pause = (opts.pause && c.is_running() && c.state.pid > 0)
        .then(|| nix::unistd::Pid::from_raw(c.state.pid));
    let req = CommitRequest {
        upper: c.paths.upper(),
        full_tree: full_tree(c),
        extra_lowers: lowers(c)
            .into_iter()
            .take_while(|l| *l == c.paths.init_layer())
            .collect(),
        container_config: Some(effective_config(store, &image, c)),
        image,
        container_id: c.config.id.clone(),
        volumes: c
            .config
            .volumes
            .iter()
            .map(|v| PathBuf::from(&v.target))
            .collect(),
        pause,
        rootfs: c.is_running().then(|| c.paths.rootfs()),
        author: opts.author.clone(),
        comment: opts.comment.clone(),
        changes: opts.changes.clone(),
        reference: opts.reference.clone(),
    };
    let id = commit(store, &req)?;
    store.event(
        crate::events::Event::container(&c.config, "commit")
            .attr("comment", opts.comment.clone().unwrap_or_default())
            .attr("imageID", id.to_string())
            .attr(
                "imageRef",
                opts.reference
                    .as_ref()
                    .map(|r| r.familiar())
                    .unwrap_or_default(),
            ),
    );
    Ok(id)
}
