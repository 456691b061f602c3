//! The tutorial (the README's first command, `scripts/demo`), busybox variant, run as users run
//! it — against the binary under test, a private root and free ports — and its transcript
//! checked: the page before and after `exec`, the `diff` lines, the `image ls` rows, the
//! `history` rows (new ID on top, the parent's ID next, `<missing>` below) and the second
//! container's page. Afterwards nothing may be left running or mounted.

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_strata");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The output of the step whose command line is `cmd`: the lines after `$ cmd` up to the next
/// command or section.
fn step<'a>(transcript: &'a str, cmd: &str) -> Vec<&'a str> {
    let want = format!("$ {cmd}");
    let mut lines = transcript.lines().skip_while(|l| *l != want);
    assert!(lines.next().is_some(), "no step `{cmd}` in:\n{transcript}");
    lines
        .take_while(|l| !l.starts_with("$ ") && !l.starts_with("# ") && !l.is_empty())
        .collect()
}

/// Mount points at or below `p` (read by the product's mountinfo reader, `strata_fs::mountinfo`).
fn mounts_under(p: &Path) -> Vec<String> {
    strata_testkit::mount::mounts()
        .into_iter()
        .filter(|m| m.mount_point.starts_with(p))
        .map(|m| m.mount_point.display().to_string())
        .collect()
}

#[test]
fn tutorial_busybox_end_to_end() {
    let tmp = tempfile::Builder::new()
        .prefix("strata-tutorial-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("root");
    let runroot = tmp.path().join("run");
    let (p1, p2) = (free_port(), free_port());
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo");
    let out = Command::new("timeout")
        .args(["-k", "10", "200", "bash"])
        .arg(&demo)
        .env("SKIP_BUILD", "1")
        .env("STRATA_BIN", BIN)
        .env("STRATA_ROOT", &root)
        .env("STRATA_RUNROOT", &runroot)
        .env("DEMO_PORT", p1.to_string())
        .env("DEMO_PORT2", p2.to_string())
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();

    // Whatever happened, clean up what a failed run may have left, then judge.
    let leftover_mounts = mounts_under(tmp.path());
    for m in leftover_mounts.iter().rev() {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    let strata = |args: &[&str]| {
        Command::new("timeout")
            .args(["60", BIN, "--root"])
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(args)
            .output()
            .unwrap()
    };
    assert!(
        out.status.success(),
        "demo failed ({:?})\n--- stdout\n{transcript}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        leftover_mounts.is_empty(),
        "left mounted: {leftover_mounts:?}"
    );
    let ps = strata(&["ps", "-aq"]);
    assert!(
        ps.status.success() && ps.stdout.is_empty(),
        "containers left: {ps:?}"
    );

    // The page before and after the change, and the second container's page.
    let fetch1 = format!("curl http://localhost:{p1}/");
    let fetch2 = format!("curl http://localhost:{p2}/");
    let pages: Vec<Vec<&str>> = transcript
        .split(&format!("$ {fetch1}\n"))
        .skip(1)
        .map(|s| {
            s.lines()
                .take_while(|l| !l.starts_with("$ ") && !l.is_empty())
                .collect()
        })
        .collect();
    // Three fetches on the first port: before and after the change, then the built image's.
    assert_eq!(pages.len(), 3, "three fetches on port {p1}:\n{transcript}");
    assert_eq!(pages[0], ["<h1>Welcome to busybox httpd on strata!</h1>"]);
    assert_eq!(pages[1], ["<h1>Hello strata</h1>"]);
    assert_eq!(
        pages[2],
        ["<h1>Hello strata</h1>"],
        "the page built from a Dockerfile"
    );
    assert_eq!(step(&transcript, &fetch2), ["<h1>Hello strata</h1>"]);

    // diff: the page and its directory.
    assert_eq!(
        step(&transcript, "strata diff webserver"),
        ["C /www", "C /www/index.html"]
    );

    // commit prints the new ID.
    let commit = step(
        &transcript,
        "strata commit --author 'Strata Tutorial <tutorial@example.com>' --message 'Hello strata page' webserver web:v2",
    );
    assert_eq!(commit.len(), 1);
    let new_id = commit[0].strip_prefix("sha256:").expect("sha256:<id>");
    assert_eq!(new_id.len(), 64);

    // image ls: both images, the new one first (newest).
    let ls = step(&transcript, "strata image ls");
    assert!(ls[0].starts_with("REPOSITORY"), "{ls:?}");
    let rows: Vec<Vec<&str>> = ls[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{ls:?}");
    assert_eq!(&rows[0][..3], ["web", "v2", &new_id[..12]]);
    assert_eq!(&rows[1][..2], ["web", "v1"]);
    let base_id = rows[1][2];

    // history: new ID, the parent's ID, then <missing> for the parent's own history.
    let hist = step(&transcript, "strata history web:v2");
    assert!(hist[0].starts_with("IMAGE"), "{hist:?}");
    let ids: Vec<&str> = hist[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(ids.len(), 5, "commit + 4 entries of web:v1: {hist:?}");
    assert_eq!(ids[0], &new_id[..12]);
    assert_eq!(ids[1], base_id);
    assert!(ids[2..].iter().all(|i| *i == "<missing>"), "{hist:?}");
    assert!(
        hist[1].contains("Hello strata page"),
        "comment on the commit row: {}",
        hist[1]
    );
    assert!(
        hist[1].contains("httpd -f -v -p 80 -h /www"),
        "created by: {}",
        hist[1]
    );

    // The same page built from a Dockerfile: Docker's classic builder lines, then a history
    // that says what the step did (a COPY of the page onto web:v1).
    let build = step(&transcript, "strata build -t web:v3 .");
    assert_eq!(build[0], "Step 1/2 : FROM web:v1", "{build:?}");
    assert_eq!(build[1], format!(" ---> {base_id}"));
    assert_eq!(build[2], "Step 2/2 : COPY index.html /www/index.html");
    let built = build[3]
        .strip_prefix(" ---> ")
        .expect("the step's image id");
    assert_eq!(build[4], format!("Successfully built {built}"));
    assert_eq!(build[5], "Successfully tagged web:v3");
    let side = transcript
        .lines()
        .skip_while(|l| !l.starts_with("$ strata history web:v2 "))
        .nth(1)
        .unwrap_or_default();
    assert!(
        side.contains(&format!("{built}  /bin/sh -c #(nop) COPY file:")),
        "the built image's top history row: {side}"
    );
}
