//! criterion microbenches of the union filesystem core, without a mount (issue 3):
//! lookup in a merged directory vs layer count, readdir merge of a 10k-entry directory across
//! 8 layers, inode-table lookup/forget under contention, copy-up of 1 MiB and 256 MiB.
//!
//! `cargo bench -p strata-benches` (add `-- lookup` to pick one group). Report ratios between
//! groups of one run (for example lookup at 128 layers / at 1 layer), never absolute times.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use strata_fs::{open_fs, Fs, Ino, MountOptions, ROOT_INO};

/// `n` layers whose directory `p` is merged across all of them: the bottom layer holds
/// `files` names, every other layer one name of its own. Returns the lowers, top first.
fn stack(dir: &Path, n: usize, files: usize) -> Vec<PathBuf> {
    let mut lowers = Vec::new();
    for i in 0..n {
        let l = dir.join(format!("l{i}"));
        std::fs::create_dir_all(l.join("p")).unwrap();
        if i == 0 {
            for f in 0..files {
                std::fs::write(l.join("p").join(format!("x{f}")), b"").unwrap();
            }
        } else {
            std::fs::write(l.join("p").join(format!("y{i}")), b"").unwrap();
        }
        lowers.push(l);
    }
    lowers.reverse();
    lowers
}

fn ro(lowers: &[PathBuf]) -> Fs {
    open_fs(&MountOptions {
        lowers: lowers.to_vec(),
        ..Default::default()
    })
    .unwrap()
}

fn dir_ino(fs: &Fs, name: &str) -> Ino {
    fs.lookup(ROOT_INO, name.as_ref()).unwrap().unwrap().ino
}

fn names(n: usize) -> Vec<OsString> {
    (0..n).map(|f| OsString::from(format!("x{f}"))).collect()
}

fn lookup_vs_layers(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("lookup_merged_dir");
    for n in [1usize, 16, 64, 128] {
        let lowers = stack(&tmp.path().join(n.to_string()), n, 2000);
        let fs = ro(&lowers);
        let p = dir_ino(&fs, "p");
        let all = names(2000);
        g.bench_with_input(BenchmarkId::new("warm", n), &n, |b, _| {
            let mut i = 0;
            b.iter(|| {
                let a = fs.lookup(p, &all[i % all.len()]).unwrap().unwrap();
                fs.forget(a.ino, 1);
                i += 1;
            })
        });
        // the first lookup of a directory resolves it across every layer once
        g.bench_with_input(BenchmarkId::new("first_in_dir", n), &n, |b, _| {
            b.iter_batched(
                || ro(&lowers),
                |fs| {
                    let p = dir_ino(&fs, "p");
                    fs.lookup(p, "x1".as_ref()).unwrap().unwrap();
                    fs
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn readdir_merge(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut lowers = Vec::new();
    for i in 0..8 {
        let d = tmp.path().join(format!("l{i}")).join("big");
        std::fs::create_dir_all(&d).unwrap();
        for f in 0..1250 {
            std::fs::write(d.join(format!("f{i}_{f}")), b"").unwrap();
        }
        lowers.push(tmp.path().join(format!("l{i}")));
    }
    lowers.reverse();
    let mut g = c.benchmark_group("readdir_merge_10k_8_layers");
    g.sample_size(20);
    g.bench_function("cold", |b| {
        b.iter_batched(
            || ro(&lowers),
            |fs| {
                let d = dir_ino(&fs, "big");
                assert_eq!(fs.list_dir(d).unwrap().len(), 10_002);
                fs
            },
            BatchSize::PerIteration,
        )
    });
    let fs = ro(&lowers);
    let d = dir_ino(&fs, "big");
    g.bench_function("warm", |b| b.iter(|| fs.list_dir(d).unwrap().len()));
    g.finish();
}

fn inode_table_contention(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let lowers = stack(tmp.path(), 4, 4000);
    let fs = Arc::new(ro(&lowers));
    let p = dir_ino(&fs, "p");
    let all = Arc::new(names(4000));
    let mut g = c.benchmark_group("inode_table_lookup_forget");
    for threads in [1usize, 2, 4] {
        g.bench_with_input(BenchmarkId::new("threads", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for k in 0..t {
                        let (fs, all) = (fs.clone(), all.clone());
                        s.spawn(move || {
                            for i in 0..iters as usize {
                                let name = &all[(i * 7 + k * 1000) % all.len()];
                                let a = fs.lookup(p, name).unwrap().unwrap();
                                fs.forget(a.ino, 1);
                            }
                        });
                    }
                });
                // time per operation across all threads
                start.elapsed() / t as u32
            })
        });
    }
    g.finish();
}

fn copy_up(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    std::fs::create_dir_all(&lower).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    for (name, mib) in [("m1", 1usize), ("m256", 256)] {
        let mut data = Vec::with_capacity(mib << 20);
        for _ in 0..mib {
            data.extend_from_slice(&chunk);
        }
        std::fs::write(lower.join(name), &data).unwrap();
    }
    let mut g = c.benchmark_group("copy_up");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    let mut run = 0;
    for (name, label) in [("m1", "1MiB"), ("m256", "256MiB")] {
        g.bench_function(label, |b| {
            b.iter_batched(
                || {
                    run += 1;
                    let d = tmp.path().join(format!("run{run}"));
                    std::fs::create_dir_all(d.join("upper")).unwrap();
                    std::fs::create_dir_all(d.join("work")).unwrap();
                    let fs = open_fs(&MountOptions {
                        lowers: vec![lower.clone()],
                        upper: Some(d.join("upper")),
                        work: Some(d.join("work")),
                        ..Default::default()
                    })
                    .unwrap();
                    let ino = dir_ino(&fs, name);
                    (fs, ino, d)
                },
                |(fs, ino, d)| {
                    let fh = fs.open(ino, libc::O_WRONLY).unwrap();
                    fs.release(fh);
                    (fs, d)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    lookup_vs_layers,
    readdir_merge,
    inode_table_contention,
    copy_up
);
criterion_main!(benches);
