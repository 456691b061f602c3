//! Multi-threaded stress: mixed operations from several threads at once, each checked against its
//! own model; racing copy-ups of one file; racing exclusive creates; readdir under churn.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use crate::harness::Case;
use crate::util::*;

const THREADS: usize = 4;

/// Join every thread before judging (a failure must never unmount under running threads), then
/// re-raise the first panic.
fn join_all<T>(handles: Vec<thread::JoinHandle<T>>) -> Vec<T> {
    let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
    let mut out = Vec::new();
    for r in results {
        match r {
            Ok(v) => out.push(v),
            Err(p) => std::panic::resume_unwind(p),
        }
    }
    out
}

/// What one worker believes its directory holds.
#[derive(Default)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
    dirs: Vec<String>,
}

impl Model {
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .files
            .keys()
            .cloned()
            .chain(self.dirs.iter().cloned())
            .collect();
        v.sort();
        v
    }
}

fn worker(dir: PathBuf, shared: PathBuf, seed: u64, ops: usize, mut model: Model) -> Model {
    let mut rng = Rng::new(seed);
    let mut trace: Vec<String> = Vec::new();
    for step in 0..ops {
        let name = format!("f{}", rng.below(12));
        let p = dir.join(&name);
        let op = rng.below(11);
        let kind = if model.dirs.contains(&name) {
            "dir"
        } else if model.files.contains_key(&name) {
            "file"
        } else {
            "absent"
        };
        trace.push(format!("{step}:op{op}:{name}({kind})"));
        let recent = trace[trace.len().saturating_sub(16)..].join(" ");
        let ctx = |what: &str| {
            format!(
                "seed {seed} step {step}: {what} {}\n  recent ops: {recent}",
                p.display()
            )
        };
        match op {
            0 | 1 => {
                let n = rng.below(20_000) as usize;
                let data = rng.bytes(n);
                if !model.dirs.contains(&name) {
                    std::fs::write(&p, &data).unwrap_or_else(|e| panic!("{}: {e}", ctx("write")));
                    model.files.insert(name, data);
                }
            }
            2 => {
                if let Some(data) = model.files.get_mut(&name) {
                    let n = 1 + rng.below(3000) as usize;
                    let extra = rng.bytes(n);
                    let f = open(&p, libc::O_WRONLY | libc::O_APPEND, 0)
                        .unwrap_or_else(|e| panic!("{}: {e}", ctx("append")));
                    f.write_at(&extra, 0).unwrap();
                    data.extend_from_slice(&extra);
                }
            }
            3 | 4 => {
                if let Some(data) = model.files.get(&name) {
                    let got = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", ctx("read")));
                    assert!(
                        got == *data,
                        "{}: contents differ ({} vs {} bytes)",
                        ctx("read"),
                        got.len(),
                        data.len()
                    );
                } else if !model.dirs.contains(&name) {
                    assert_errno!(lstat(&p), libc::ENOENT);
                }
            }
            5 => {
                if model.files.remove(&name).is_some() {
                    unlink(&p).unwrap_or_else(|e| panic!("{}: {e}", ctx("unlink")));
                }
            }
            6 => {
                let to = format!("f{}", rng.below(12));
                trace.push(format!("->{to}"));
                if model.files.contains_key(&name) && !model.dirs.contains(&to) && to != name {
                    rename(&p, dir.join(&to)).unwrap_or_else(|e| panic!("{}: {e}", ctx("rename")));
                    let data = model.files.remove(&name).unwrap();
                    model.files.insert(to, data);
                }
            }
            7 => {
                if !model.files.contains_key(&name) && !model.dirs.contains(&name) {
                    mkdir_mode(&p, 0o755).unwrap_or_else(|e| panic!("{}: {e}", ctx("mkdir")));
                    model.dirs.push(name);
                } else if model.dirs.contains(&name) {
                    rmdir(&p).unwrap_or_else(|e| panic!("{}: {e}", ctx("rmdir")));
                    model.dirs.retain(|d| *d != name);
                }
            }
            8 => {
                if let Some(data) = model.files.get_mut(&name) {
                    let len = rng.below(30_000) as usize;
                    truncate(&p, len as i64).unwrap_or_else(|e| panic!("{}: {e}", ctx("truncate")));
                    data.resize(len, 0);
                    assert_eq!(lstat(&p).unwrap().size() as usize, len, "{}", ctx("size"));
                }
            }
            9 => {
                assert_eq!(ls(&dir), model.names(), "{}", ctx("readdir"));
            }
            _ => {
                // Shared read-only traffic on lower files all workers touch.
                let k = rng.below(8);
                assert_eq!(read(shared.join(format!("s{k}"))), format!("shared {k}"));
                let _ = lstat(shared.join("nonexistent"));
            }
        }
    }
    model
}

fn stress_mixed_operations(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l1.join("shared"));
    for k in 0..8 {
        write(l1.join(format!("shared/s{k}")), format!("shared {k}"));
    }
    let mut models = Vec::new();
    for t in 0..THREADS {
        let d = l0.join(format!("t{t}"));
        mkdir(&d);
        let mut model = Model::default();
        for j in 0..4 {
            let data = format!("lower file {t}/{j}").into_bytes();
            write(d.join(format!("f{j}")), &data);
            model.files.insert(format!("f{j}"), data);
        }
        models.push(model);
    }
    let m = c.mount();
    let handles: Vec<_> = models
        .into_iter()
        .enumerate()
        .map(|(t, model)| {
            let (dir, shared) = (m.join(format!("t{t}")), m.join("shared"));
            thread::spawn(move || worker(dir, shared, 1000 + t as u64, 600, model))
        })
        .collect();
    let models = join_all(handles);
    for (t, model) in models.iter().enumerate() {
        let dir = m.join(format!("t{t}"));
        assert_eq!(ls(&dir), model.names(), "t{t} final listing");
        for (name, data) in &model.files {
            assert!(
                read_bytes(dir.join(name)) == *data,
                "t{t}/{name} final contents"
            );
        }
    }
    // The same state must be on disk: remount and check again.
    c.unmount();
    let m = c.mount();
    for (t, model) in models.iter().enumerate() {
        let dir = m.join(format!("t{t}"));
        assert_eq!(ls(&dir), model.names(), "t{t} listing after remount");
        for (name, data) in &model.files {
            assert!(
                read_bytes(dir.join(name)) == *data,
                "t{t}/{name} after remount"
            );
        }
    }
}

/// Like `worker`, but all threads share one merged directory, each on its own names.
fn shared_dir_worker(dir: PathBuf, t: usize, seed: u64, ops: usize) -> BTreeMap<String, Vec<u8>> {
    let mut rng = Rng::new(seed);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mine = |n: &String| n.starts_with(&format!("t{t}-"));
    for step in 0..ops {
        let name = format!("t{t}-{}", rng.below(10));
        let p = dir.join(&name);
        let ctx = format!("seed {seed} step {step} {}", p.display());
        match rng.below(6) {
            0 | 1 => {
                let n = rng.below(5000) as usize;
                let data = rng.bytes(n);
                std::fs::write(&p, &data).unwrap_or_else(|e| panic!("{ctx}: write: {e}"));
                files.insert(name, data);
            }
            2 => {
                if files.remove(&name).is_some() {
                    unlink(&p).unwrap_or_else(|e| panic!("{ctx}: unlink: {e}"));
                } else {
                    assert_errno!(lstat(&p), libc::ENOENT);
                }
            }
            3 => {
                let to = format!("t{t}-{}", rng.below(10));
                if to != name {
                    if let Some(data) = files.remove(&name) {
                        rename(&p, dir.join(&to)).unwrap_or_else(|e| panic!("{ctx}: rename: {e}"));
                        files.insert(to, data);
                    }
                }
            }
            4 => {
                if let Some(data) = files.get(&name) {
                    assert!(read_bytes(&p) == *data, "{ctx}: contents");
                }
            }
            _ => {
                let listed: Vec<String> = ls(&dir).into_iter().filter(|n| mine(n)).collect();
                let want: Vec<String> = files.keys().cloned().collect();
                assert_eq!(listed, want, "{ctx}: my names in the shared dir");
            }
        }
    }
    files
}

fn stress_shared_directory(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("shared"));
    mkdir(l1.join("shared"));
    for k in 0..20 {
        write(
            (if k % 2 == 0 { &l0 } else { &l1 }).join(format!("shared/lower{k:02}")),
            "",
        );
    }
    let m = c.mount();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let dir = m.join("shared");
            thread::spawn(move || shared_dir_worker(dir, t, 2000 + t as u64, 500))
        })
        .collect();
    let all = join_all(handles);
    let mut want: Vec<String> = (0..20).map(|k| format!("lower{k:02}")).collect();
    for files in &all {
        want.extend(files.keys().cloned());
    }
    want.sort();
    assert_eq!(ls(m.join("shared")), want);
    for files in &all {
        for (n, data) in files {
            assert!(read_bytes(m.join("shared").join(n)) == *data, "{n}");
        }
    }
}

fn many_open_files(c: &mut Case) {
    // SAFETY: raising our own soft RLIMIT_NOFILE to the hard limit.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max.min(65536);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    let l = c.lower(0);
    mkdir(l.join("d"));
    for k in 0..1500 {
        write(l.join(format!("d/l{k}")), format!("{k}"));
    }
    let m = c.mount();
    let mut open_files = Vec::new();
    for k in 0..1500 {
        open_files.push(open(m.join(format!("d/l{k}")), libc::O_RDONLY, 0).unwrap());
        open_files.push(
            open(
                m.join(format!("d/n{k}")),
                libc::O_RDWR | libc::O_CREAT,
                0o644,
            )
            .unwrap(),
        );
    }
    for (k, pair) in open_files.chunks(2).enumerate() {
        let mut buf = [0u8; 8];
        let n = pair[0].read_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..n], format!("{k}").as_bytes());
        pair[1].write_at(format!("new{k}").as_bytes(), 0).unwrap();
    }
    drop(open_files);
    assert_eq!(read(m.join("d/n1499")), "new1499");
    assert_eq!(ls(m.join("d")).len(), 3000);
}

fn racing_copy_up_of_one_file(c: &mut Case) {
    let l = c.lower(0);
    let orig = Rng::new(5).bytes(1 << 20);
    std::fs::write(l.join("big"), &orig).unwrap();
    let m = c.mount();
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (p, b) = (m.join("big"), barrier.clone());
            thread::spawn(move || {
                b.wait();
                let f = open(&p, libc::O_WRONLY, 0).unwrap();
                for round in 0..4u8 {
                    f.write_at(&[i as u8 ^ round; 4096], (i as u64) * 65536)
                        .unwrap();
                }
                f.write_at(&[i as u8; 4096], (i as u64) * 65536).unwrap();
            })
        })
        .collect();
    join_all(handles);
    let mut want = orig;
    for i in 0..n {
        want[i * 65536..i * 65536 + 4096].fill(i as u8);
    }
    let got = read_bytes(m.join("big"));
    assert_eq!(got.len(), want.len());
    assert!(got == want, "racing copy-ups lost or corrupted data");
}

fn copy_up_is_atomic_for_readers(c: &mut Case) {
    // Readers of a lower file racing with its copy-up see the old file or the new one, never a
    // partial copy.
    let l = c.lower(0);
    let orig = Rng::new(11).bytes(8 << 20);
    std::fs::write(l.join("f"), &orig).unwrap();
    let m = c.mount();
    let go = Arc::new(Barrier::new(4));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (p, g, orig) = (m.join("f"), go.clone(), orig.clone());
            thread::spawn(move || {
                g.wait();
                for _ in 0..20 {
                    let got = read_bytes(&p);
                    assert!(
                        got.len() == orig.len() || got.len() == orig.len() + 1,
                        "partial file seen: {} bytes",
                        got.len()
                    );
                    assert!(
                        got[..orig.len()] == orig[..],
                        "contents changed under a reader"
                    );
                }
            })
        })
        .collect();
    go.wait();
    let mut f = open(m.join("f"), libc::O_WRONLY | libc::O_APPEND, 0).unwrap();
    std::io::Write::write_all(&mut f, b"!").unwrap();
    drop(f);
    join_all(readers);
    assert_eq!(lstat(m.join("f")).unwrap().size(), (8 << 20) + 1);
}

fn racing_exclusive_creates(c: &mut Case) {
    let l = c.lower(0);
    mkdir(l.join("d"));
    write(l.join("d/n0"), "pre-existing");
    let m = c.mount();
    let wins = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (d, w, b) = (m.join("d"), wins.clone(), barrier.clone());
            thread::spawn(move || {
                b.wait();
                for k in 0..60 {
                    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                    match open(d.join(format!("n{k}")), flags, 0o644) {
                        Ok(_) => {
                            w.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EEXIST)),
                    }
                }
            })
        })
        .collect();
    join_all(handles);
    assert_eq!(
        wins.load(Ordering::SeqCst),
        59,
        "exactly one winner per new name"
    );
    assert_eq!(ls(m.join("d")).len(), 60);
    assert_eq!(read(m.join("d/n0")), "pre-existing");
}

fn readdir_during_churn(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    for k in 0..30 {
        write(
            (if k % 2 == 0 { &l0 } else { &l1 }).join(format!("d/stable{k:02}")),
            "",
        );
    }
    let m = c.mount();
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (d, s) = (m.join("d"), stop.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::SeqCst) {
                let p = d.join(format!("tmp{}", i % 17));
                let _ = std::fs::write(&p, "x");
                let _ = std::fs::rename(&p, d.join(format!("moved{}", i % 5)));
                let _ = std::fs::remove_file(d.join(format!("moved{}", (i + 2) % 5)));
                i += 1;
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let d = m.join("d");
            thread::spawn(move || {
                for _ in 0..150 {
                    // Names that exist throughout must come back exactly once per listing; names
                    // created or removed meanwhile may or may not show (POSIX leaves it open).
                    let names = ls(&d);
                    let stable: Vec<&String> =
                        names.iter().filter(|n| n.starts_with("stable")).collect();
                    let repeated: Vec<&&String> = stable
                        .windows(2)
                        .filter(|w| w[0] == w[1])
                        .map(|w| &w[0])
                        .collect();
                    assert!(
                        repeated.is_empty(),
                        "stable names listed twice in one readdir: {repeated:?}"
                    );
                    assert_eq!(
                        stable.len(),
                        30,
                        "stable entries missing during churn: {names:?}"
                    );
                }
            })
        })
        .collect();
    let results: Vec<_> = readers.into_iter().map(|h| h.join()).collect();
    stop.store(true, Ordering::SeqCst);
    churn.join().unwrap();
    for r in results {
        r.expect("reader panicked");
    }
}

fn parallel_dir_renames_and_lookups(c: &mut Case) {
    let l = c.lower(0);
    for t in 0..THREADS {
        mkdir(l.join(format!("r{t}/inner")));
        write(l.join(format!("r{t}/inner/f")), format!("{t}"));
    }
    let m = c.mount();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let m = m.clone();
            thread::spawn(move || {
                let (a, b) = (m.join(format!("r{t}")), m.join(format!("r{t}-moved")));
                for round in 0..40 {
                    let (from, to): (&Path, &Path) =
                        if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
                    rename(from, to).unwrap();
                    assert_eq!(read(to.join("inner/f")), format!("{t}"));
                    assert_errno!(lstat(from), libc::ENOENT);
                }
            })
        })
        .collect();
    join_all(handles);
    for t in 0..THREADS {
        assert_eq!(read(m.join(format!("r{t}/inner/f"))), format!("{t}"));
    }
}

/// One process's part of `listing_right_after_change_in_shared_dir`.
fn rename_list_worker(dir: &Path, t: usize, steps: usize) {
    let mut rng = Rng::new(7000 + t as u64);
    let mut mine: BTreeMap<String, ()> = BTreeMap::new();
    let prefix = format!("t{t}-");
    for step in 0..steps {
        // Some CPU work between operations (as an interpreter would do): with more runnable
        // processes than cores, a woken reader then waits for a CPU between the daemon's reply
        // and its use of it, which is the window of the race.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < std::time::Duration::from_micros(30) {
            std::hint::spin_loop();
        }
        let name = format!("{prefix}{}", rng.below(10));
        match rng.below(6) {
            0 | 1 => {
                let n = rng.below(100) as usize;
                write(dir.join(&name), vec![b'x'; n]);
                mine.insert(name, ());
            }
            2 => {
                if mine.remove(&name).is_some() {
                    unlink(dir.join(&name)).unwrap();
                }
            }
            3 => {
                let to = format!("{prefix}{}", rng.below(10));
                if to != name && mine.remove(&name).is_some() {
                    rename(dir.join(&name), dir.join(&to)).unwrap();
                    mine.insert(to, ());
                }
            }
            _ => {
                let listed: Vec<String> = ls(dir)
                    .into_iter()
                    .filter(|n| n.starts_with(&prefix))
                    .collect();
                let want: Vec<String> = mine.keys().cloned().collect();
                assert_eq!(listed, want, "process {t} step {step}");
            }
        }
    }
}

/// Every listing a process takes right after its own create, unlink or rename must show that
/// change while other processes change other names of the same directory. The kernel's FUSE
/// listing cache can be filled by a READDIR answered before a concurrent rename and then be
/// served as current (strata must not let it: see `Fs::listing_cacheable`). Processes, not
/// threads: the window is a woken reader waiting for a CPU, which needs more runnable tasks
/// than cores (threads of this test seldom hit it).
fn listing_right_after_change_in_shared_dir(c: &mut Case) {
    let (l0, l1) = (c.lower(0), c.lower(1));
    mkdir(l0.join("d"));
    mkdir(l1.join("d"));
    for k in 0..20 {
        write(
            (if k % 2 == 0 { &l0 } else { &l1 }).join(format!("d/lower{k:02}")),
            "",
        );
    }
    let dir = c.mount().join("d");
    let mut pids = Vec::new();
    for t in 0..4 {
        // SAFETY: the child only runs the worker (std and malloc are usable after fork with
        // glibc) and leaves with _exit, never returning into the test harness.
        match unsafe { libc::fork() } {
            0 => {
                let ok = std::panic::catch_unwind(|| rename_list_worker(&dir, t, 25000)).is_ok();
                unsafe { libc::_exit(if ok { 0 } else { 1 }) }
            }
            -1 => panic!("fork: {}", std::io::Error::last_os_error()),
            pid => pids.push(pid),
        }
    }
    let mut failed = Vec::new();
    for (t, pid) in pids.into_iter().enumerate() {
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed.push(t);
        }
    }
    assert!(
        failed.is_empty(),
        "processes {failed:?} saw a stale listing (see their stderr)"
    );
}

/// fuse-overlayfs's containers/storage simulation: package "binaries" installed with versioned
/// hard links in a lower layer; threads each chown one name, remove the other and link it
/// anew (while another thread lists the dirs, so some names are known to the server and some
/// are not when the copy-up happens). Every pair ends as one file with two links.
fn parallel_relink_of_lower_hardlinks(c: &mut Case) {
    const PAIRS: usize = 40;
    let l = c.lower(0);
    for t in 0..THREADS {
        mkdir(l.join(format!("bin{t}")));
        for i in 0..PAIRS {
            let v1 = l.join(format!("bin{t}/prog{i}_v1"));
            write(&v1, format!("binary {t} {i}"));
            link(&v1, l.join(format!("bin{t}/prog{i}"))).unwrap();
        }
    }
    let m = c.mount();
    let stop = Arc::new(AtomicBool::new(false));
    let lister = {
        let (m, stop) = (m.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for t in 0..THREADS {
                    let _ = std::fs::read_dir(m.join(format!("bin{t}"))).map(|d| d.count());
                }
            }
        })
    };
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let d = m.join(format!("bin{t}"));
            thread::spawn(move || {
                for i in 0..PAIRS {
                    let (p, v1) = (d.join(format!("prog{i}")), d.join(format!("prog{i}_v1")));
                    lchown(&v1, 1000 + t as u32, 1000).unwrap();
                    unlink(&p).unwrap();
                    link(&v1, &p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                }
            })
        })
        .collect();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| join_all(workers)));
    stop.store(true, Ordering::Relaxed);
    join_all(vec![lister]);
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
    for t in 0..THREADS {
        for i in 0..PAIRS {
            let d = m.join(format!("bin{t}"));
            let (p, v1) = (d.join(format!("prog{i}")), d.join(format!("prog{i}_v1")));
            let (sp, sv) = (lstat(&p).unwrap(), lstat(&v1).unwrap());
            assert_eq!(sp.ino(), sv.ino(), "{}", p.display());
            assert_eq!(
                (sp.nlink(), sp.uid()),
                (2, 1000 + t as u32),
                "{}",
                p.display()
            );
            assert_eq!(read(&p), format!("binary {t} {i}"));
        }
    }
}

/// fuse-overlayfs's copy-up + stat race: one thread appends to lower files (copy-up) while
/// others stat and read them; a file never changes its inode number, and reads show the old
/// or the new contents, nothing else.
fn copy_up_under_concurrent_stat(c: &mut Case) {
    const FILES: usize = 100;
    let l = c.lower(0);
    for i in 0..FILES {
        write(l.join(format!("cs{i}")), format!("data {i}\n"));
    }
    let m = c.mount();
    let inos: Vec<u64> = (0..FILES)
        .map(|i| lstat(m.join(format!("cs{i}"))).unwrap().ino())
        .collect();
    let inos = Arc::new(inos);
    let done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for _ in 0..THREADS - 1 {
        let (m, inos, done) = (m.clone(), inos.clone(), done.clone());
        handles.push(thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                for i in 0..FILES {
                    let p = m.join(format!("cs{i}"));
                    assert_eq!(lstat(&p).unwrap().ino(), inos[i], "{}", p.display());
                    let got = read(&p);
                    let old = format!("data {i}\n");
                    assert!(got == old || got == old.clone() + "extra\n", "{got:?}");
                }
            }
        }));
    }
    let writer = {
        let (m, done) = (m.clone(), done.clone());
        thread::spawn(move || {
            for i in 0..FILES {
                let f = open(m.join(format!("cs{i}")), libc::O_WRONLY | libc::O_APPEND, 0);
                std::io::Write::write_all(&mut f.unwrap(), b"extra\n").unwrap();
            }
            done.store(true, Ordering::Relaxed);
        })
    };
    join_all(vec![writer]);
    done.store(true, Ordering::Relaxed);
    join_all(handles);
    for i in 0..FILES {
        assert_eq!(read(m.join(format!("cs{i}"))), format!("data {i}\nextra\n"));
        assert_eq!(lstat(m.join(format!("cs{i}"))).unwrap().ino(), inos[i]);
    }
}

cases!(stress:
    stress_mixed_operations,
    stress_shared_directory,
    listing_right_after_change_in_shared_dir,
    many_open_files,
    racing_copy_up_of_one_file,
    copy_up_is_atomic_for_readers,
    racing_exclusive_creates,
    readdir_during_churn,
    parallel_dir_renames_and_lookups,
    parallel_relink_of_lower_hardlinks,
    copy_up_under_concurrent_stat,
);
