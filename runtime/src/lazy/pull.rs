//! `pull --lazy`: manifest, config and each seekable layer's TOC only; every missing layer
//! becomes a lazy layer (a skeleton from its TOC) and the image is registered at once.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;

use super::{io_at, skeleton, Format, LazyError, Source};
use crate::digest::{chain_ids, ChainId, DiffId, Digest, ImageId};
use crate::fsutil::{fsync_dir, unique_tmp, Staging};
use crate::reference::Reference;
use crate::registry::blob::fetch_range;
use crate::registry::client::Client;
use crate::registry::manifest::Descriptor;
use crate::registry::pull::{map_error, prelude, record_image, short, Prelude, Resolved};
use crate::registry::{LayerStatus, PullError, PullEvent, PullOptions, PullOutcome};
use crate::seekable::{self, estargz, zstd_chunked};
use crate::store::{LayerInfo, Store};

/// Each request for a TOC is bounded like a demand fetch.
const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A seekable layer as its descriptor's annotations say: its format, its TOC digest (eStargz)
/// or manifest checksum (zstd:chunked), and zstd:chunked's manifest position if given.
fn seekable_kind(l: &Descriptor) -> Option<(Format, String, Option<String>)> {
    let a = l.annotations.as_ref()?;
    let get = |new: &str, old: &str| a.get(new).or_else(|| a.get(old)).cloned();
    if let Some(d) = a.get(estargz::TOC_DIGEST_ANNOTATION) {
        return Some((Format::Estargz, d.clone(), None));
    }
    let checksum = get(
        zstd_chunked::MANIFEST_CHECKSUM_ANNOTATION,
        zstd_chunked::LEGACY_MANIFEST_CHECKSUM_ANNOTATION,
    )?;
    let position = get(
        zstd_chunked::MANIFEST_POSITION_ANNOTATION,
        zstd_chunked::LEGACY_MANIFEST_POSITION_ANNOTATION,
    );
    Some((Format::ZstdChunked, checksum, position))
}

/// Fetch the TOC of a seekable blob: `(toc_offset, bytes from it, zstd:chunked position)`.
fn fetch_toc(
    client: &Client,
    repo: &str,
    l: &Descriptor,
    format: Format,
    position: Option<String>,
) -> Result<(u64, Vec<u8>, String), LazyError> {
    let seek_err = |source| LazyError::Seekable {
        digest: l.digest.clone(),
        source,
    };
    let tail_of = |n: usize| -> Result<Vec<u8>, LazyError> {
        let n = n as u64;
        if l.size < n {
            return Err(seek_err(seekable::SeekableError::Footer("blob too small")));
        }
        Ok(fetch_range(
            client,
            repo,
            &l.digest,
            l.size - n,
            l.size,
            ATTEMPT_TIMEOUT,
        )?)
    };
    match format {
        Format::Estargz => {
            let footer = tail_of(seekable::FOOTER_SIZE)?;
            let off = seekable::read_footer(&footer).map_err(seek_err)?;
            if off >= l.size - seekable::FOOTER_SIZE as u64 {
                return Err(seek_err(seekable::SeekableError::Footer(
                    "TOC offset past the end",
                )));
            }
            let tail = fetch_range(client, repo, &l.digest, off, l.size, ATTEMPT_TIMEOUT)?;
            Ok((off, tail, String::new()))
        }
        Format::ZstdChunked => {
            let pos = match &position {
                Some(p) => zstd_chunked::parse_position(p).map_err(seek_err)?,
                None => zstd_chunked::read_footer(&tail_of(zstd_chunked::FOOTER_SIZE)?)
                    .map_err(seek_err)?,
            };
            let end = pos
                .offset
                .checked_add(pos.compressed_len)
                .filter(|&e| e <= l.size);
            let Some(end) = end else {
                return Err(seek_err(seekable::SeekableError::TocFormat(
                    "manifest position out of range",
                )));
            };
            let tail = fetch_range(client, repo, &l.digest, pos.offset, end, ATTEMPT_TIMEOUT)?;
            let p = format!(
                "{}:{}:{}:{}",
                pos.offset, pos.compressed_len, pos.uncompressed_len, pos.kind
            );
            Ok((pos.offset, tail, p))
        }
    }
}

/// Pull `reference` lazily: layers that are eStargz become lazy layers (their data is fetched
/// when a container reads it, and in the background while one runs); an image with any other
/// missing layer is pulled normally.
pub fn pull_lazy(
    store: &Store,
    reference: &Reference,
    opts: &PullOptions,
    progress: &(dyn Fn(PullEvent) + Sync),
) -> Result<PullOutcome, PullError> {
    let reference = reference.clone().docker_ref();
    let _lease = store.lease_scope();
    super::sweep_retired(store);
    let Prelude {
        client,
        repo,
        tag_or_digest,
        mirror,
        resolved:
            Resolved {
                image,
                image_bytes,
                top_bytes,
                top_digest,
            },
        config_id: _,
        config_bytes,
        diff_ids,
    } = prelude(store, &reference, opts, &mut |_| {})?;
    // The mirror that served the manifest also serves the container's reads (recorded in each
    // layer's source, with the image's own registry to fall back to).
    let (registry, plain_http, origin) = match &mirror {
        Some(m) => (m.host.as_str(), m.plain_http, reference.domain()),
        None => (reference.domain(), false, ""),
    };
    let chains = chain_ids(&diff_ids);
    let mut missing = Vec::new();
    for (i, c) in chains.iter().enumerate() {
        if !store.hold_layer(c)? {
            missing.push(i);
        }
    }
    if missing
        .iter()
        .any(|&i| seekable_kind(&image.layers[i]).is_none())
    {
        // Not seekable: nothing to gain, pull it whole.
        return crate::registry::pull(store, &reference, opts, progress);
    }
    progress(PullEvent::PullingFrom {
        reference: tag_or_digest.clone(),
        repository: reference.path().to_string(),
    });
    let previous = store.resolve(&reference.to_string()).ok().map(|r| r.id);
    let mut created: Vec<ChainId> = Vec::new();
    let result = (|| -> Result<ImageId, PullError> {
        for &i in &missing {
            let l = &image.layers[i];
            progress(PullEvent::Layer {
                id: short(&l.digest),
                status: LayerStatus::PullingFsLayer,
            });
            let parent = i.checked_sub(1).map(|p| chains[p].clone());
            let made = create(
                store,
                &client,
                (registry, plain_http, origin),
                &repo,
                &opts.insecure,
                l,
                &diff_ids[i],
                &chains[i],
                parent,
            );
            match made {
                Ok(true) => created.push(chains[i].clone()),
                Ok(false) => {}
                Err(LazyError::Registry(e)) => return Err(map_error(e, &client, &reference)),
                Err(LazyError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(PullError::Lazy(Box::new(e))),
            }
            progress(PullEvent::Layer {
                id: short(&l.digest),
                status: LayerStatus::PullComplete,
            });
        }
        record_image(
            store,
            &reference,
            [&image_bytes, &top_bytes],
            &top_digest,
            &config_bytes,
            &mut Vec::new(),
        )
    })();
    let id = match result {
        Ok(id) => id,
        Err(e) => {
            created.reverse();
            let _ = store.release_layers(&created);
            return Err(e);
        }
    };
    progress(PullEvent::Digest(top_digest.to_string()));
    store.image_event("pull", &reference.familiar(), &reference.familiar_name());
    Ok(PullOutcome {
        up_to_date: missing.is_empty() && previous.as_ref() == Some(&id),
        image_id: id,
        reference,
        manifest_digest: top_digest,
    })
}

/// Make lazy layer `chain` from descriptor `l`: fetch and verify its TOC, build the skeleton in
/// staging, rename it into `layers/` under this process's lease. `Ok(false)`: someone else
/// stored the chain first.
#[allow(clippy::too_many_arguments)]
fn create(
    store: &Store,
    client: &Client,
    (registry, plain_http, origin): (&str, bool, &str),
    repo: &str,
    insecure: &[String],
    l: &Descriptor,
    diff_id: &DiffId,
    chain: &ChainId,
    parent: Option<ChainId>,
) -> Result<bool, LazyError> {
    let Some((format, toc_digest, position)) = seekable_kind(l) else {
        return Err(LazyError::NotLazy {
            chain: chain.clone(),
        });
    };
    let (toc_offset, tail, position) = fetch_toc(client, repo, l, format, position)?;
    let source = Source {
        format,
        position,
        registry: registry.to_string(),
        plain_http,
        origin: origin.to_string(),
        repo: repo.to_string(),
        insecure: insecure.to_vec(),
        digest: l.digest.clone(),
        size: l.size,
        toc_digest,
        toc_offset,
        diff_id: diff_id.clone(),
        chain_id: chain.clone(),
    };
    let toc = source.parse_toc(&tail)?;

    let staging = Staging::new(unique_tmp(&store.tmp_dir(), "lazy"));
    let diff = staging.path().join("diff");
    let state = staging.path().join("lazy");
    for d in [&diff, &state] {
        std::fs::create_dir_all(d).map_err(io_at(d))?;
    }
    let diff_fd = File::open(&diff).map_err(io_at(&diff))?;
    skeleton::build(diff_fd.as_fd(), &toc, crate::rootless::flavour())?;
    if format == Format::Estargz {
        skeleton::write_toc_file(diff_fd.as_fd(), &tail)?;
    }
    let write = |name: &str, bytes: &[u8]| -> Result<(), LazyError> {
        let p = state.join(name);
        let mut f = File::create(&p).map_err(io_at(&p))?;
        f.write_all(bytes)
            .and_then(|_| f.sync_all())
            .map_err(io_at(&p))
    };
    write(
        "source.json",
        &serde_json::to_vec_pretty(&source).unwrap_or_default(),
    )?;
    write("tail", &tail)?;
    let have_end = toc_offset + tail.len() as u64;
    write("have", format!("{toc_offset} {have_end}\n").as_bytes())?;
    write("filled", b"")?;
    write("lock", b"")?;
    let bp = state.join("blob");
    let blob = File::create(&bp).map_err(io_at(&bp))?;
    blob.set_len(l.size).map_err(io_at(&bp))?;
    std::os::unix::fs::FileExt::write_all_at(&blob, &tail, toc_offset).map_err(io_at(&bp))?;

    // Docker's layer size: regular files (hard links once) and symlink targets.
    let size = toc
        .entries
        .iter()
        .map(|e| match e.kind.as_str() {
            "reg" => e.size,
            "symlink" => e.link_name.len() as u64,
            _ => 0,
        })
        .sum();
    let info = LayerInfo {
        chain_id: chain.clone(),
        diff_id: diff_id.clone(),
        parent,
        size,
        tar_size: 0,
        compressed_digest: Digest::parse(&l.digest).ok(),
        compressed_size: Some(l.size),
        created: true,
    };
    write(
        "../layer.json",
        &serde_json::to_vec_pretty(&info).unwrap_or_default(),
    )?;
    fsync_dir(staging.path()).map_err(io_at(staging.path()))?;
    let dest = store
        .layer_diff_dir(chain)
        .parent()
        .map(|p| p.to_path_buf())
        .ok_or_else(|| LazyError::NotLazy {
            chain: chain.clone(),
        })?;
    store.lease(crate::store::Leased::Layer, chain.hex())?;
    match std::fs::rename(staging.path(), &dest) {
        Ok(()) => {
            staging.keep();
            let layers = dest.parent().unwrap_or(&dest).to_path_buf();
            fsync_dir(&layers).map_err(io_at(&layers))?;
            Ok(true)
        }
        Err(_) if dest.exists() => Ok(false),
        Err(e) => Err(io_at(&dest)(e)),
    }
}
