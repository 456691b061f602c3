//! End-to-end tests of `strata events`: the events log real containers and images write, read
//! back with Docker's line, filters, `--since`/`--until` windows, `--format`, a live follower,
//! and concurrent writers.

mod containers_common;
mod registry_common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use containers_common::{default_driver, setup};
use strata_testkit::container::Strata;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// `events --since T0 --until <now> ARGS…`: the lines, after checking it exits 0.
fn window(s: &Strata, since: &str, args: &[&str]) -> Vec<String> {
    let until = now();
    let mut a = vec!["events", "--since", since, "--until", &until];
    a.extend(args);
    let r = s.run_timeout(&a, Duration::from_secs(20));
    assert!(r.ok(), "{a:?}: {r:?}");
    r.stdout.lines().map(str::to_string).collect()
}

/// The (type, action, id, attributes) of Docker's default line, after checking its timestamp.
fn parse(line: &str) -> (String, String, String, String) {
    let mut it = line.splitn(5, ' ');
    let ts = it.next().unwrap();
    // 2026-12-07T16:47:00.123456789Z (or +01:00 in another zone): nine fraction digits.
    assert_eq!(ts.find('.'), Some(19), "{line}");
    assert!(ts.len() == 30 || ts.len() == 35, "{line}");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{line}");
    let kind = it.next().unwrap().to_string();
    let action = it.next().unwrap().to_string();
    let id = it.next().unwrap().to_string();
    (kind, action, id, it.next().unwrap_or("").to_string())
}

#[test]
fn events_run_stop_rm_sequence_filters_windows_and_formats() {
    let s = setup(&default_driver());
    let t0 = now();
    let id = s.ok(&[
        "run", "-d", "--name", "web", "--label", "tier=db", "busybox", "sleep", "300",
    ]);
    let id = id.trim().to_string();
    // sleep as pid 1 ignores SIGTERM: the stop ends in SIGKILL (exit code 137).
    s.ok(&["stop", "-t", "1", "web"]);
    let t_stopped = now();
    s.ok(&["rm", "web"]);
    let other = s.ok(&["create", "--name", "other", "busybox", "true"]);
    let other = other.trim().to_string();

    let lines = window(&s, &t0, &[]);
    let mine: Vec<_> = lines
        .iter()
        .map(|l| parse(l))
        .filter(|p| p.2 == id)
        .collect();
    let actions: Vec<&str> = mine.iter().map(|p| p.1.as_str()).collect();
    assert_eq!(
        actions,
        ["create", "start", "kill", "kill", "die", "stop", "destroy"],
        "{lines:#?}"
    );
    assert!(mine.iter().all(|p| p.0 == "container"));
    assert_eq!(mine[0].3, "(image=busybox, name=web, tier=db)");
    assert_eq!(mine[2].3, "(image=busybox, name=web, signal=15, tier=db)");
    assert_eq!(mine[3].3, "(image=busybox, name=web, signal=9, tier=db)");
    assert!(
        mine[4].3.starts_with("(execDuration=") && mine[4].3.contains(", exitCode=137, "),
        "{}",
        mine[4].3
    );
    // Timestamps never go backwards for one container's events.
    let ts: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains(&id))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");

    // Filters: one key's values OR, different keys AND.
    let die = window(&s, &t0, &["--filter", "event=die"]);
    assert_eq!(die.len(), 1, "{die:?}");
    assert!(die[0].contains(&format!("container die {id} ")), "{die:?}");
    let two = window(&s, &t0, &["-f", "event=die", "-f", "event=destroy"]);
    assert_eq!(two.len(), 2, "{two:?}");
    let by_name = window(&s, &t0, &["--filter", "container=web"]);
    assert_eq!(by_name.len(), 7, "{by_name:?}");
    assert!(by_name.iter().all(|l| l.contains(&id)));
    let by_prefix = window(
        &s,
        &t0,
        &["--filter", &format!("container={}", &other[..12])],
    );
    assert_eq!(by_prefix.len(), 1, "{by_prefix:?}");
    assert!(by_prefix[0].contains(&format!("container create {other} ")));
    let none = window(
        &s,
        &t0,
        &["--filter", "container=web", "--filter", "type=image"],
    );
    assert!(none.is_empty(), "{none:?}");
    let labelled = window(
        &s,
        &t0,
        &["--filter", "label=tier=db", "--filter", "event=create"],
    );
    assert_eq!(labelled.len(), 1, "{labelled:?}");
    let r = s.run(&["events", "--until", &t0, "--filter", "colour=red"]);
    assert_eq!(r.code, Some(1));
    assert_eq!(r.stderr, "Error: invalid filter 'colour'\n");

    // Windows: nothing of web before t0; after it stopped, only its destroy (and other's create).
    let until_t0 = s.run_timeout(&["events", "--until", &t0], Duration::from_secs(20));
    assert!(until_t0.ok(), "{until_t0:?}");
    assert!(!until_t0.stdout.contains(&id), "{until_t0:?}");
    let late = window(&s, &t_stopped, &[]);
    let late: Vec<_> = late.iter().map(|l| parse(l)).map(|p| (p.1, p.2)).collect();
    assert_eq!(
        late,
        [
            ("destroy".to_string(), id.clone()),
            ("create".to_string(), other.clone())
        ]
    );
    let r = s.run(&["events", "--since", "yesterday", "--until", &t0]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("failed to parse value as time or duration"),
        "{r:?}"
    );

    // --format: Docker's JSON message, and Go templates over it.
    let json = window(
        &s,
        &t0,
        &["--filter", "event=die", "--format", "{{json .}}"],
    );
    assert_eq!(json.len(), 1);
    assert!(
        json[0].starts_with(&format!(
            "{{\"status\":\"die\",\"id\":\"{id}\",\"from\":\"busybox\",\"Type\":\"container\",\"Action\":\"die\",\"Actor\":{{\"ID\":\"{id}\",\"Attributes\":{{"
        )),
        "{}",
        json[0]
    );
    let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(v["Actor"]["Attributes"]["exitCode"], "137");
    assert_eq!(v["scope"], "local");
    assert_eq!(
        v["time"].as_i64().unwrap(),
        v["timeNano"].as_i64().unwrap() / 1_000_000_000
    );
    let t = window(
        &s,
        &t0,
        &[
            "--filter",
            "container=web",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
        ],
    );
    assert_eq!(t[0], format!("container create {id} web"));
    assert_eq!(t.len(), 7);
    // `system events` is the same verb.
    let sys = s.run_timeout(
        &[
            "system",
            "events",
            "--since",
            &t0,
            "--until",
            &now(),
            "-f",
            "event=destroy",
        ],
        Duration::from_secs(20),
    );
    assert!(sys.ok(), "{sys:?}");
    assert_eq!(sys.stdout.lines().count(), 1, "{sys:?}");
    s.ok(&["rm", "-f", "other"]);
}

#[test]
fn events_follower_sees_a_run_live_and_exits_0_on_sigterm() {
    let s = setup(&default_driver());
    // An event first, so the log exists for the follower to open.
    s.ok(&["volume", "create", "warm"]);
    let mut child = s
        .command(&["events", "--filter", "container=live"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let kill_child = |child: &mut std::process::Child| {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // It shows only what happens after it started: wait until it has the log open (it took
    // its start time before opening it).
    let log = strata_runtime::events::log_path(s.runroot.path());
    let fds = format!("/proc/{}/fd", child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_dir(&fds)
        .map(|d| {
            d.flatten()
                .any(|e| std::fs::read_link(e.path()).ok() == Some(log.clone()))
        })
        .unwrap_or(false)
    {
        assert!(
            Instant::now() < deadline,
            "the follower never opened {log:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let other = s.ok(&["run", "--name", "unrelated", "busybox", "true"]);
    let run = s.run(&["run", "--name", "live", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !got.iter().any(|l: &String| l.contains(" container die ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => got.push(l),
            Err(_) => {
                let st = kill_child(&mut child);
                panic!("no die event within 15 s: {got:?} (follower {st:?})");
            }
        }
    }
    let status = kill_child(&mut child);
    assert_eq!(status.code(), Some(0), "SIGTERM ends the follower with 0");
    let actions: Vec<String> = got.iter().map(|l| parse(l).1).collect();
    assert_eq!(actions, ["create", "start", "die"], "{got:?}");
    assert!(got[2].contains("exitCode=3"), "{got:?}");
    assert!(got.iter().all(|l| l.contains("name=live")), "{got:?}");
    assert!(other.is_empty());
    s.ok(&["rm", "-f", "live", "unrelated"]);
}

#[test]
fn events_for_image_tag_untag_delete() {
    let s = setup(&default_driver());
    let t0 = now();
    let id = s.ok(&["images", "-q", "--no-trunc", "busybox"]);
    let id = id.trim().to_string();
    assert!(id.starts_with("sha256:"), "{id}");
    s.ok(&["tag", "busybox", "mine:1"]);
    s.ok(&["rmi", "mine:1"]);
    s.ok(&["rmi", "busybox"]);
    let lines = window(&s, &t0, &["--filter", "type=image"]);
    assert_eq!(
        lines
            .iter()
            .map(|l| parse(l))
            .map(|p| (p.1, p.2, p.3))
            .collect::<Vec<_>>(),
        [
            ("tag".into(), id.clone(), "(name=mine:1)".to_string()),
            ("untag".into(), id.clone(), format!("(name={id})")),
            ("untag".into(), id.clone(), format!("(name={id})")),
            ("delete".into(), id.clone(), format!("(name={id})")),
        ],
        "{lines:#?}"
    );
    let by_image = window(&s, &t0, &["--filter", "image=mine"]);
    assert_eq!(by_image.len(), 1, "{by_image:?}");
    assert!(by_image[0].contains(" image tag "), "{by_image:?}");
}

#[test]
fn events_concurrent_writers_never_break_a_line() {
    use strata_runtime::events::{log_path, record, Event};
    let t = tempfile::tempdir().unwrap();
    let runroot = t.path().to_path_buf();
    // ~2.5 kB lines: 400 of them pass the 1 MiB cap, so rotations race the appends too.
    let pad = "x".repeat(2500);
    std::thread::scope(|sc| {
        for th in 0..8 {
            let (runroot, pad) = (&runroot, &pad);
            sc.spawn(move || {
                for n in 0..50 {
                    let ev = Event::new("container", "create", &format!("{th}"))
                        .attr("n", n.to_string())
                        .attr("pad", pad.clone());
                    record(runroot, &ev);
                }
            });
        }
    });
    let text = std::fs::read_to_string(log_path(&runroot)).unwrap();
    assert!(text.ends_with('\n'));
    assert!(text.len() as u64 <= strata_runtime::events::MAX_SIZE);
    let mut last = [-1i64; 8];
    let mut count = 0;
    for line in text.lines() {
        let ev = Event::from_line(line).unwrap_or_else(|| panic!("broken line: {line:.80}"));
        let th: usize = ev.id.parse().unwrap();
        let n: i64 = ev.attributes["n"].parse().unwrap();
        assert!(n > last[th], "thread {th}: {n} after {}", last[th]);
        last[th] = n;
        count += 1;
    }
    assert!(count >= 150, "the newest half is kept: {count} lines");
    assert!(last.contains(&49), "the newest events are kept: {last:?}");
}

#[test]
fn events_pause_rename_restart_and_rm_by_the_supervisor() {
    let s = setup(&default_driver());
    let t0 = now();
    let id = s.ok(&["run", "-d", "--name", "p1", "busybox", "sleep", "300"]);
    let id = id.trim().to_string();
    s.ok(&["pause", "p1"]);
    s.ok(&["unpause", "p1"]);
    s.ok(&["rename", "p1", "p2"]);
    s.ok(&["restart", "-t", "0", "p2"]);
    s.ok(&["rm", "-f", "p2"]);
    // --rm: the supervisor records die and destroy after the init exits.
    let gone = s.ok(&["run", "--rm", "--name", "gone", "busybox", "true"]);
    assert!(gone.is_empty());
    let lines = window(
        &s,
        &t0,
        &[
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.ID}}",
        ],
    );
    let mine: Vec<String> = lines
        .iter()
        .filter(|l| l.ends_with(&id))
        .map(|l| l.rsplit_once(' ').unwrap().0.to_string())
        .collect();
    assert_eq!(
        mine,
        [
            "create p1",
            "start p1",
            "pause p1",
            "unpause p1",
            "rename p2",
            "kill p2",
            "kill p2",
            "die p2",
            "stop p2",
            "start p2",
            "restart p2",
            "kill p2",
            "die p2",
            "destroy p2",
        ],
        "{lines:#?}"
    );
    let rename = window(&s, &t0, &["-f", "event=rename"]);
    assert!(
        rename[0].ends_with("(image=busybox, name=p2, oldName=/p1)"),
        "{rename:?}"
    );
    let gone: Vec<String> = lines
        .iter()
        .filter(|l| l.contains(" gone "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(gone, ["create", "start", "die", "destroy"], "{lines:#?}");
}

#[test]
fn events_for_volume_create_and_destroy() {
    let s = setup(&default_driver());
    let t0 = now();
    s.ok(&["volume", "create", "data1"]);
    // An anonymous volume of a --rm container goes with it (removed by the supervisor).
    s.ok(&["run", "--rm", "-v", "/scratch", "busybox", "true"]);
    s.ok(&["volume", "rm", "data1"]);
    let lines = window(&s, &t0, &["--filter", "type=volume"]);
    let got: Vec<_> = lines.iter().map(|l| parse(l)).collect();
    assert_eq!(got.len(), 4, "{lines:#?}");
    assert_eq!((got[0].1.as_str(), got[0].2.as_str()), ("create", "data1"));
    assert_eq!(got[0].3, "(driver=local)");
    let anon = &got[1].2;
    assert!(anon.len() == 64 && got[1].1 == "create", "{lines:#?}");
    assert_eq!((got[2].1.as_str(), &got[2].2), ("destroy", anon));
    assert_eq!((got[3].1.as_str(), got[3].2.as_str()), ("destroy", "data1"));
    let json = window(&s, &t0, &["-f", "volume=data1", "--format", "{{json .}}"]);
    assert_eq!(json.len(), 2, "{json:?}");
    assert!(
        json[0].starts_with(r#"{"Type":"volume","Action":"create","Actor":{"ID":"data1","Attributes":{"driver":"local"}},"scope":"local","time":"#),
        "{}",
        json[0]
    );
}

#[test]
fn events_die_when_a_dead_supervisor_is_reconciled() {
    let s = setup(&default_driver());
    let t0 = now();
    let id = s.ok(&["run", "-d", "--name", "victim", "busybox", "sleep", "1000"]);
    let id = id.trim().to_string();
    let state: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            s.root_path()
                .join("containers")
                .join(&id)
                .join("state.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let sup = state["supervisor_pid"].as_i64().unwrap() as i32;
    // SAFETY: signalling the supervisor this test started.
    unsafe { libc::kill(sup, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{sup}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The next command that reads the record records the exit, once.
    s.ok(&["ps", "-a"]);
    s.ok(&["ps", "-a"]);
    let die = window(&s, &t0, &["-f", "event=die", "-f", "container=victim"]);
    assert_eq!(die.len(), 1, "{die:?}");
    assert!(
        die[0].contains(&id) && die[0].contains("exitCode=137"),
        "{die:?}"
    );
    s.ok(&["rm", "-f", "victim"]);
}

#[test]
fn events_for_pull_push_save_load() {
    use strata_testkit::registry::{images, Registry};
    let reg = Registry::start();
    let img = images::image(vec![images::busybox()]);
    registry_common::push_image(&reg, "bb:1", &img);
    let env = registry_common::Env::new();
    let t0 = now();
    let src = format!("{}/bb:1", reg.addr());
    env.ok(&["pull", &src]);
    let dst = format!("{}/copy:2", reg.addr());
    env.ok(&["tag", &src, &dst]);
    env.ok(&["push", &dst]);
    let archive = env.dir.path().join("bb.tar");
    env.ok(&["save", "-o", archive.to_str().unwrap(), &src]);
    env.ok(&["rmi", "-f", &src, &dst]);
    env.ok(&["load", "-i", archive.to_str().unwrap()]);
    let until = now();
    let out = env.ok(&["events", "--since", &t0, "--until", &until]);
    let got: Vec<(String, String, String)> =
        out.lines().map(parse).map(|p| (p.1, p.2, p.3)).collect();
    let id = env.store().resolve(&src).unwrap().id.to_string();
    let (a, n) = (reg.addr(), |s: &str| format!("(name={s})"));
    let want: Vec<(String, String, String)> = vec![
        ("pull".into(), src.clone(), n(&format!("{a}/bb"))),
        ("tag".into(), id.clone(), n(&dst)),
        ("push".into(), dst.clone(), n(&format!("{a}/copy"))),
        ("save".into(), id.clone(), n(&id)),
        // One per tag: the repositories' digest references go silently, as Docker's do.
        ("untag".into(), id.clone(), n(&id)),
        ("untag".into(), id.clone(), n(&id)),
        ("delete".into(), id.clone(), n(&id)),
        ("load".into(), id.clone(), n(&id)),
    ];
    assert_eq!(got, want, "{out}");
}

#[test]
fn events_for_commit_and_build_tag() {
    let s = setup(&default_driver());
    let t0 = now();
    let id = s.ok(&["create", "--name", "src", "busybox", "true"]);
    let id = id.trim().to_string();
    let img = s.ok(&["commit", "-m", "snap", "src", "snap:1"]);
    let img = img.trim().to_string();
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM busybox\nLABEL tier=web\n",
    )
    .unwrap();
    s.ok(&["build", "-q", "-t", "built:1", ctx.path().to_str().unwrap()]);
    let commit = window(&s, &t0, &["-f", "event=commit"]);
    assert_eq!(commit.len(), 1, "{commit:?}");
    let p = parse(&commit[0]);
    assert_eq!((p.0.as_str(), p.2.as_str()), ("container", id.as_str()));
    assert_eq!(
        p.3,
        format!("(comment=snap, image=busybox, imageID={img}, imageRef=snap:1, name=src)")
    );
    // The built image's tag, with its labels (Docker's image event attributes).
    let tags = window(&s, &t0, &["-f", "type=image", "-f", "event=tag"]);
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert!(tags[0].ends_with(" (name=built:1, tier=web)"), "{tags:?}");
    let by_label = window(&s, &t0, &["-f", "label=tier=web"]);
    assert_eq!(by_label, tags);
    s.ok(&["rm", "src"]);
}

/// `exec` records Docker's `exec_create: CMD`, `exec_start: CMD` and, when it ends, `exec_die`
/// (exitCode), one execID for the three; a health check's status changes record
/// `health_status: healthy|unhealthy` (and its probes, being execs, their exec events), all
/// selectable by the prefix filters (`event=exec_die`, `event=health_status`).
#[test]
fn events_for_exec_and_health_status() {
    let s = setup(&default_driver());
    let t0 = now();
    s.ok(&[
        "run",
        "-d",
        "--name",
        "hx",
        "--health-cmd",
        "test ! -e /sick",
        "--health-interval",
        "1s",
        "--health-retries",
        "1",
        "busybox",
        "sleep",
        "300",
    ]);
    let r = s.run(&["exec", "hx", "sh", "-c", "exit 3"]);
    assert_eq!(r.code, Some(3), "{r:?}");
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut a = vec!["--filter", "container=hx", "--format", "{{json .}}"];
        a.extend(args);
        window(&s, &t0, &a)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let execs: Vec<_> = json(&[])
        .into_iter()
        .filter(|m| m["Action"].as_str().unwrap().contains("exit 3") || m["Action"] == "exec_die")
        .collect();
    let actions: Vec<&str> = execs
        .iter()
        .map(|m| m["Action"].as_str().unwrap())
        .collect();
    assert!(
        actions.starts_with(&["exec_create: sh -c exit 3", "exec_start: sh -c exit 3"]),
        "{actions:?}"
    );
    let id = execs[0]["Actor"]["Attributes"]["execID"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 64);
    let die = json(&["--filter", "event=exec_die"])
        .into_iter()
        .find(|m| m["Actor"]["Attributes"]["execID"] == id.as_str())
        .expect("exec_die of the exec");
    assert_eq!(die["Actor"]["Attributes"]["exitCode"], "3");
    assert_eq!(die["Actor"]["Attributes"]["name"], "hx");

    // healthy, then unhealthy once the check fails (retries 1).
    let health = |want: &str| {
        strata_testkit::container::eventually(Duration::from_secs(30), || {
            json(&["--filter", "event=health_status"])
                .iter()
                .any(|m| m["Action"] == want)
                .then_some(())
        })
    };
    assert!(health("health_status: healthy").is_some());
    s.ok(&["exec", "hx", "touch", "/sick"]);
    assert!(health("health_status: unhealthy").is_some());
    let statuses: Vec<String> = json(&["--filter", "event=health_status"])
        .iter()
        .map(|m| m["Action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        statuses,
        ["health_status: healthy", "health_status: unhealthy"],
        "one event per change, not per probe"
    );
    s.ok(&["rm", "-f", "hx"]);
}
