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
    let b = std::fs::read(w.snap_root().join("metadata.json")).expect("metadata.json");
    serde_json::from_slice(&b).expect("metadata.json is whole JSON after a kill -9")
}

#[test]
fn kill_9_during_prepare_then_restart() {
    let mut w = World::start();
    let mut c = w.client();
    c.prepare("base-a", "").unwrap();
    c.commit("base", "base-a", HashMap::new()).unwrap();
    drop(c);

    const ROUNDS: usize = 6;
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
        // Somewhere inside the next Prepare (each is a few fsyncs long).
        let jitter = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
            % 8_000;
        std::thread::sleep(Duration::from_micros(u64::from(jitter)));
        w.kill_snapshotter();
        let acked = worker.join().expect("worker");

        let meta = read_meta(&w);
        if !leftovers(&w, &meta).is_empty() {
            caught += 1;
        }
        w.start_snapshotter();

        // Consistent after the restart: every record has its directories, nothing else is
        // there, and everything acknowledged before the kill survived.
        let meta = read_meta(&w);
        assert_eq!(leftovers(&w, &meta), Vec::<String>::new(), "round {round}");
        for (key, r) in meta["snapshots"].as_object().unwrap() {
            let dir = w.snap_root().join(format!("snapshots/{}", r["id"]));
            assert!(dir.join("fs").is_dir(), "{key}: {}", dir.display());
            if r["kind"] != "committed" {
                assert!(dir.join("work").is_dir(), "{key}");
            }
        }
        let mut c = w.client();
        for key in &acked {
            c.stat(key)
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {key} lost: {e}"));
        }
        let listed = c.list(&[]).unwrap().len();
        assert_eq!(listed, meta["snapshots"].as_object().unwrap().len());
        // The store goes on: a fresh Prepare gets a new directory.
        c.prepare(&format!("after-{round}"), "base").unwrap();
    }
    eprintln!("rounds whose kill left a half-done Prepare on disk: {caught}/{ROUNDS}");

    // containerd reconnects to the restarted snapshotter (gRPC's reconnect backoff: calls
    // fail with `unavailable` until it has).
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(60), || {
        let out = w.ctr(&["snapshots", "--snapshotter", "strata", "prepare", "via-ctr"]);
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        out.status.success().then_some(())
    });
    assert!(ok.is_some(), "containerd did not reconnect: {last}");
    let ls = w.ctr_ok(&["snapshots", "--snapshotter", "strata", "ls"]);
    assert!(ls.contains("via-ctr"), "{ls}");
    assert!(w.backend_key("via-ctr").is_some());
}
