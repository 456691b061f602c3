//! `image inspect` data: moby's `image.InspectResponse` with its field order (serialize it with
//! an order-keeping serializer; the CLI renders it).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{Engine, Result};
use crate::store::ImageRecord;

/// Docker's `container.Config` key order for an image's `Config`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerConfig {
    hostname: String,
    domainname: String,
    user: String,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<BTreeMap<String, Value>>,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    env: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Value>,
    image: String,
    volumes: Option<BTreeMap<String, Value>>,
    working_dir: String,
    entrypoint: Option<Vec<String>>,
    on_build: Option<Vec<String>>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<Value>,
}

#[derive(Serialize)]
struct GraphDriver {
    #[serde(rename = "Data")]
    data: BTreeMap<String, String>,
    #[serde(rename = "Name")]
    name: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RootFs {
    #[serde(rename = "Type")]
    kind: String,
    layers: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata {
    last_tag_time: String,
}

/// moby `image.InspectResponse`, in its field order.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: String,
    docker_version: String,
    author: String,
    config: DockerConfig,
    architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<String>,
    os: String,
    size: u64,
    graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    root_fs: RootFs,
    metadata: Metadata,
    /// strata's own: how far a lazily pulled image is fetched (absent once it is whole, so a
    /// complete image's output is Docker's).
    #[serde(skip_serializing_if = "Option::is_none")]
    lazy: Option<crate::lazy::ImageFetch>,
}

impl Engine {
    /// `image inspect` data of an image (moby's `image.InspectResponse`, in its field order).
    pub fn image_inspect(&self, img: &ImageRecord) -> Result<ImageInspect> {
        let store = self.store()?;
        let cfg = &img.config;
        let cc = cfg.config.clone().unwrap_or_default();
        let dirs = store.layer_dirs(img)?;
        let mut data = BTreeMap::new();
        if let Some((top, lower)) = dirs.split_first() {
            if !lower.is_empty() {
                let l: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
                data.insert("LowerDir".to_string(), l.join(":"));
            }
            data.insert("UpperDir".to_string(), top.display().to_string());
        }
        Ok(ImageInspect {
            id: img.id.to_string(),
            repo_tags: img.repo_tags.iter().map(|r| r.familiar()).collect(),
            repo_digests: img.repo_digests.iter().map(|r| r.familiar()).collect(),
            parent: img
                .parent
                .as_ref()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            comment: cfg.comment.clone().unwrap_or_default(),
            created: cfg
                .created
                .clone()
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            docker_version: cfg.docker_version.clone().unwrap_or_default(),
            author: cfg.author.clone().unwrap_or_default(),
            config: DockerConfig {
                hostname: String::new(),
                domainname: String::new(),
                user: cc.user,
                attach_stdin: false,
                attach_stdout: false,
                attach_stderr: false,
                exposed_ports: cc.exposed_ports,
                tty: false,
                open_stdin: false,
                stdin_once: false,
                env: (!cc.env.is_empty()).then_some(cc.env),
                cmd: cc.cmd,
                healthcheck: cc.extra.get("Healthcheck").cloned(),
                image: String::new(),
                volumes: cc.volumes,
                working_dir: cc.working_dir,
                entrypoint: cc.entrypoint,
                on_build: cc.on_build,
                labels: cc.labels,
                stop_signal: cc.stop_signal,
                shell: cc.extra.get("Shell").cloned(),
            },
            architecture: cfg.architecture.clone(),
            variant: cfg.variant.clone(),
            os: cfg.os.clone(),
            size: img.size,
            graph_driver: GraphDriver {
                data,
                name: self.driver().map_or("fuse", |d| d.name()).to_string(),
            },
            root_fs: RootFs {
                kind: cfg.rootfs.kind.clone(),
                layers: cfg.rootfs.diff_ids.iter().map(|d| d.to_string()).collect(),
            },
            metadata: Metadata {
                last_tag_time: img
                    .added
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            },
            lazy: crate::lazy::image_fetch(store, img),
        })
    }
}
