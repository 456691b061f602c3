//! `strata save [-o FILE] IMAGE...`: docker-archive (or `--format oci`).

use std::io::{IsTerminal, Write};

use anyhow::{bail, Result};
use strata_runtime::archive::{self, SaveFormat, SaveItem};
use strata_runtime::reference::Reference;
use strata_runtime::store::{ImageRecord, Store, StoreError};

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Write to a file, instead of STDOUT
    #[arg(short, long)]
    output: Option<std::path::PathBuf>,
    /// Archive format: docker (default) or oci
    #[arg(long, default_value = "docker")]
    format: String,
    /// IMAGE [IMAGE...]
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<String>,
}

fn add(items: &mut Vec<SaveItem>, img: ImageRecord, tag: Option<Reference>) {
    if let Some(it) = items.iter_mut().find(|i| i.image.id == img.id) {
        if let Some(t) = tag {
            if !it.tags.contains(&t) {
                it.tags.push(t);
            }
        }
        return;
    }
    items.push(SaveItem {
        image: img,
        tags: tag.into_iter().collect(),
    });
}

/// What each argument names (moby tarexport `parseNames`): `name:tag` → that tag, a bare
/// repository name → every tag of it, an ID → the image without tags.
fn collect(store: &Store, names: &[String]) -> Result<Vec<SaveItem>> {
    let mut items = Vec::new();
    let all = store.images()?;
    for n in names {
        if let Ok(r) = Reference::parse(n) {
            if r.tag().is_none() && r.digest().is_none() {
                let repo = r.name();
                let mut hit = false;
                for img in &all {
                    for t in img.repo_tags.iter().filter(|t| t.name() == repo) {
                        add(&mut items, img.clone(), Some(t.clone()));
                        hit = true;
                    }
                }
                if hit {
                    continue;
                }
            }
        }
        let img = store.resolve(n)?;
        let tag = match Reference::parse(n) {
            Ok(r)
                if r.digest().is_none()
                    && img.repo_tags.contains(&r.clone().with_default_tag()) =>
            {
                Some(r.with_default_tag())
            }
            _ => None,
        };
        add(&mut items, img, tag);
    }
    Ok(items)
}

pub fn run(global: &Global, args: Args) -> Result<()> {
    if let Some(path) = &args.output {
        strata_runtime::outfile::validate(path)
            .map_err(|e| anyhow::anyhow!("failed to save image: {e}"))?;
    }
    let format = match args.format.as_str() {
        "docker" | "docker-archive" => SaveFormat::Docker,
        "oci" | "oci-archive" => SaveFormat::Oci,
        f => bail!("invalid format {f:?}: must be docker or oci"),
    };
    let store = global.store()?;
    let items = collect(&store, &args.images).map_err(|e| match e.downcast::<StoreError>() {
        Ok(se) => anyhow::Error::from(se),
        Err(e) => e,
    })?;
    match &args.output {
        None => {
            let stdout = std::io::stdout();
            if stdout.is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
            archive::save(&store, &items, format, &mut out)?;
            out.flush()?;
        }
        Some(path) => {
            // Like docker/cli: validate the path (never replace a device, FIFO or socket), write
            // a temp file next to the target, rename it over the target at the end.
            let mut out = strata_runtime::outfile::OutputFile::create(path, 0o644)
                .map_err(|e| anyhow::anyhow!("failed to save image: {e}"))?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, out.file());
            archive::save(&store, &items, format, &mut w)?;
            w.flush()?;
            drop(w);
            out.commit()
                .map_err(|e| anyhow::anyhow!("failed to save image: {e}"))?;
        }
    }
    Ok(())
}
