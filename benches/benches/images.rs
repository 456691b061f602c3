//! Image store benches (issue 4): `load` of a ~100 MB docker-archive against GNU `tar -x` of the
//! same layer in the same run (target: strata ≥ 0.8× tar's throughput), and listing 500 images
//! (target: `images` under 100 ms).
//!
//! `cargo bench -p strata-benches --bench images`. Compare the two `load_vs_tar` entries of one
//! run; absolute times on a shared machine mean little.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use serde_json::json;
use strata_runtime::archive::{load, LoadInput};
use strata_runtime::reference::Reference;
use strata_runtime::store::{NewImage, Store};
use strata_testkit::fixtures::{self, ImageSpec, LayerTar};

/// ~100 MB layer: 3000 files of 33 kB in 30 directories (incompressible content).
fn big_layer() -> Vec<u8> {
    let mut l = LayerTar::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for d in 0..30 {
        l.dir(&format!("d{d}/"), 0o755);
        for f in 0..100 {
            let data: Vec<u8> = (0..33_000)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            l.file(&format!("d{d}/f{f}"), &data, 0o644);
        }
    }
    l.into_bytes()
}

fn load_vs_tar(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let layer = big_layer();
    let layer_path = dir.path().join("layer.tar");
    std::fs::write(&layer_path, &layer).unwrap();
    let archive = dir.path().join("archive.tar");
    fixtures::write_docker_archive(&archive, &[ImageSpec::new(&["big:1"], vec![layer])]).unwrap();

    let mut g = c.benchmark_group("load_vs_tar");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("gnu_tar_x", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(dir.path()).unwrap(),
            |out| {
                let ok = Command::new("tar")
                    .arg("-xf")
                    .arg(&layer_path)
                    .arg("-C")
                    .arg(out.path())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
                out
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("strata_load", |b| {
        b.iter_batched(
            || tempfile::tempdir_in(dir.path()).unwrap(),
            |root| {
                let store = Store::open(root.path()).unwrap();
                load(&store, LoadInput::Path(&archive)).unwrap();
                root
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn store_with_images(root: &Path, n: usize) -> Store {
    let store = Store::open(root).unwrap();
    let mut l = LayerTar::new();
    l.file("hi", b"hi\n", 0o644);
    let layer = l.into_bytes();
    store.add_layer(&layer[..], None, None).unwrap();
    let configs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut s = ImageSpec::new(&[], vec![layer.clone()]);
            s.config["config"]["Labels"] = json!({"n": i.to_string()});
            s.config_bytes()
        })
        .collect();
    let refs: Vec<Vec<Reference>> = (0..n)
        .map(|i| vec![Reference::parse_with_default_tag(&format!("img{i}:v1")).unwrap()])
        .collect();
    let new: Vec<NewImage<'_>> = configs
        .iter()
        .zip(&refs)
        .map(|(c, r)| NewImage {
            config: c,
            refs: r,
            parent: None,
        })
        .collect();
    store.add_images(&new).unwrap();
    store
}

fn list_500(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_images(dir.path(), 500);
    c.bench_function("images_500", |b| {
        b.iter(|| {
            let all = store.images().unwrap();
            assert_eq!(all.len(), 500);
            all
        })
    });
}

criterion_group!(benches, load_vs_tar, list_500);
criterion_main!(benches);
