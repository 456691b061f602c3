//! kill -9 of the snapshotter while Prepares are in flight, then a restart: the metadata is
//! whole, every snapshot acknowledged before the kill is still there with its directories,
//! nothing is left that no record names, and containerd goes on using the new process.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Client, World};
use strata_testkit::container::eventually;

/// Directories and temp files a crash may leave: dirs in `snapshots/` no record names,
/// entries in `tmp/`, a temp metadata file.
fn leftovers(w: &World, meta: &serde_json::Value) -> Vec<String> {
    let ids: HashSet<String> = meta["snapshots"]
        .as_object()
        .map(|m| m.values().map(|r| r["id"].to_string()).collect())
        .unwrap_or_default();
    let root = w.snap_root();
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("snapshots")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !ids.contains(&n) {
            out.push(format!("snapshots/{n}"));
        }
    }
    for e in std::fs::read_dir(root.join("tmp")).unwrap().flatten() {
        out.push(format!("tmp/{}", e.file_name().to_string_lossy()));
    }
    if root.join(".metadata.json.tmp").exists() {
        out.push(".metadata.json.tmp".into());
    }
    out
}

fn read_meta(w: &World) -> serde_json::Value {
    match std::fs::read(w.snap_root().join("metadata.json")) {
        Ok(b) => serde_json::from_slice(&b).expect("metadata.json is whole JSON after a kill -9"),
        // Not written yet: no snapshot was ever stored (a kill before the first one).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            serde_json::json!({"snapshots": {}})
        }
        Err(e) => panic!("metadata.json: {e}"),
    }
}

/// Records and directories agree, and every acknowledged key survived.
fn check_consistent(w: &World, round: usize, acked: &[String]) {
    let meta = read_meta(w);
    assert_eq!(
        leftovers(w, &meta),
        Vec::<String>::new(),
        "round {round}: {meta}\n{}",
        common::tail(&w.snapshotter_log(), 20)
    );
    for (key, r) in meta["snapshots"].as_object().unwrap() {
        let dir = w.snap_root().join(format!("snapshots/{}", r["id"]));
        assert!(dir.join("fs").is_dir(), "{key}: {}", dir.display());
        if r["kind"] != "committed" {
            assert!(dir.join("work").is_dir(), "{key}");
        }
    }
    let mut c = w.client();
    for key in acked {
        c.stat(key)
            .unwrap_or_else(|e| panic!("round {round}: acknowledged {key} lost: {e}"));
    }
    let listed = c.list(&[]).unwrap().len();
    assert_eq!(listed, meta["snapshots"].as_object().unwrap().len());
}

fn jitter_sleep() {
    // Somewhere inside the next Prepare (each is a few fsyncs long).
    let jitter = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 8_000;
    std::thread::sleep(Duration::from_micros(u64::from(jitter)));
}

/// Straight over the socket (containerd would garbage-collect snapshots it did not make).
#[test]
fn kill_9_during_prepare_then_restart() {
    let mut w = World::snapshotter_only();
    let mut c = w.client();
    c.prepare("base-a", "").unwrap();
    c.commit("base", "base-a", HashMap::new()).unwrap();
    drop(c);

    const ROUNDS: usize = 8;
    let mut caught = 0;
    for round in 0..ROUNDS {
        let sock = w.snap_sock();
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            let mut c = Client::connect(&sock);
            let mut acked = Vec::new();
            for i in 0.. {
                let key = format!("r{round}-{i}");
                let r = if i % 4 == 3 {
                    c.view(&key, "base")
                } else {
                    c.prepare(&key, "base")
                };
                match r {
                    Ok(_) => acked.push(key),
                    Err(_) => break,
                }
                if acked.len() == 3 {
                    let _ = tx.send(());
                }
            }
            acked
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("prepares are being served");
        jitter_sleep();
        w.kill_snapshotter();
        let acked = worker.join().expect("worker");
        if !leftovers(&w, &read_meta(&w)).is_empty() {
            caught += 1;
        }
        w.start_snapshotter();
        check_consistent(&w, round, &acked);
        // The store goes on: a fresh Prepare gets a new directory.
        w.client()
            .prepare(&format!("after-{round}"), "base")
            .unwrap();
    }
    eprintln!("rounds whose kill left a half-done Prepare on disk: {caught}/{ROUNDS}");
}

/// Through containerd: `ctr snapshots prepare` in a loop, kill -9 of the snapshotter, restart.
/// containerd reconnects, what it acknowledged is in our store, and once its garbage collector
/// has run our records are exactly containerd's snapshots.
#[test]
fn kill_9_under_containerd_then_restart() {
    let mut w = World::start();
    let ctr = |w: &World, args: &[&str]| {
        let mut a = vec!["snapshots", "--snapshotter", "strata"];
        a.extend_from_slice(args);
        w.ctr(&a)
    };
    let mut acked = Vec::new();
    let mut i = 0;
    let killer = {
        let sock_pid = w.snapshotter_pid();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            jitter_sleep();
            // SAFETY: signalling the snapshotter this test started; the World reaps it.
            unsafe { libc::kill(sock_pid as i32, libc::SIGKILL) };
        })
    };
    loop {
        let key = format!("k{i}");
        i += 1;
        if ctr(&w, &["prepare", &key]).status.success() {
            acked.push(key);
        } else {
            break;
        }
        assert!(i < 10_000, "the snapshotter was never killed");
    }
    killer.join().unwrap();
    w.kill_snapshotter();
    w.start_snapshotter();
    check_consistent(&w, 0, &[]);

    // containerd reconnects (gRPC's reconnect backoff: calls fail with `unavailable` until
    // it has).
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(60), || {
        let out = ctr(&w, &["prepare", "via-ctr"]);
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success().then_some(())
    });
    assert!(ok.is_some(), "containerd did not reconnect: {last}");
    acked.push("via-ctr".into());
    for key in &acked {
        assert!(w.backend_key(key).is_some(), "acknowledged {key} missing");
    }

    // A removal triggers containerd's GC, which removes what containerd never acknowledged
    // (a Prepare the kill cut short after we had stored it).
    let gone = acked.remove(0);
    assert!(ctr(&w, &["rm", &gone]).status.success());
    let want: HashSet<String> = acked.iter().cloned().collect();
    let agreed = eventually(Duration::from_secs(30), || {
        let have: HashSet<String> = w.metadata()["snapshots"]
            .as_object()?
            .keys()
            .filter_map(|k| k.rsplit('/').next().map(String::from))
            .collect();
        // (A Remove drops the record first and the directory after it: wait for both.)
        (have == want && leftovers(&w, &read_meta(&w)).is_empty()).then_some(())
    });
    assert!(agreed.is_some(), "ours: {} want {want:?}", w.metadata());
    check_consistent(&w, 1, &[]);
}
