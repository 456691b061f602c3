//! `strata build` end to end: real builds on the busybox fixture (RUN steps are containers on
//! the default `fuse` driver), Docker's classic builder output, the resulting configs and
//! history, the cache, multi-stage builds, `.dockerignore`, heredocs, ADD, and failures that
//! leave nothing behind. Every `strata` call runs under a time limit and the `Strata` guard
//! removes containers, processes and mounts even when a test fails.

mod containers_common;
mod network_common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use containers_common::{default_driver, setup};
use serde_json::Value;
use strata_testkit::container::{mounts_under, wait_output, Run, Strata};
use strata_testkit::podman::{podman, run_args, ULIMITS};

const LIMIT: Duration = Duration::from_secs(120);

fn build(s: &Strata, args: &[&str]) -> Run {
    let mut a = vec!["build"];
    a.extend_from_slice(args);
    s.run_timeout(&a, LIMIT)
}

fn build_ok(s: &Strata, args: &[&str]) -> String {
    let r = build(s, args);
    assert!(r.ok(), "build {args:?} failed: {r:?}");
    r.stdout
}

fn write(dir: &Path, rel: &str, content: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn inspect(s: &Strata, image: &str) -> Value {
    let out = s.ok(&["image", "inspect", image]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

fn image_id(s: &Strata, image: &str) -> String {
    inspect(s, image)["Id"].as_str().unwrap().to_string()
}

/// `Successfully built <id>` of a build's output.
fn built_id(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("Successfully built "))
        .unwrap_or_else(|| panic!("no 'Successfully built' in:\n{out}"))
        .to_string()
}

fn assert_clean(s: &Strata) {
    assert_eq!(s.ok(&["ps", "-aq"]), "", "no build container may be left");
    assert!(
        mounts_under(s.root_path()).is_empty(),
        "no mount may be left"
    );
    let tmp: Vec<_> = std::fs::read_dir(s.root_path().join("tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(tmp.is_empty(), "staging left behind: {tmp:?}");
}

const WEB_DOCKERFILE: &str = r#"# syntax=docker/dockerfile:1
FROM busybox
ARG GREETING=hello
ENV PAGE=/www/index.html \
    MODE=prod
LABEL org.example.title="web page" version=3
WORKDIR /www
COPY index.html ./
RUN echo "$GREETING $MODE" > /greeting && cat /greeting
EXPOSE 80 53/udp
VOLUME ["/data"]
USER nobody
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=30s --retries=2 CMD ["true"]
ENTRYPOINT ["httpd"]
CMD ["-f", "-p", "80", "-h", "/www"]
"#;

#[test]
fn build_instructions_history_and_cache() {
    let s = setup(&default_driver());
    let ctx = tempfile::tempdir().unwrap();
    write(ctx.path(), "Dockerfile", WEB_DOCKERFILE);
    write(ctx.path(), "index.html", "<h1>Hello strata</h1>\n");
    let c = ctx.path().to_str().unwrap();

    let out = build_ok(
        &s,
        &[
            "-t",
            "web:v3",
            "-t",
            "web:latest",
            "--build-arg",
            "GREETING=hi",
            "--label",
            "extra=1",
            c,
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Step 1/15 : FROM busybox", "{out}");
    assert!(lines.contains(&"Step 6/15 : COPY index.html ./"), "{out}");
    assert!(
        lines.contains(&"Step 7/15 : RUN echo \"$GREETING $MODE\" > /greeting && cat /greeting"),
        "{out}"
    );
    assert!(lines.contains(&"Step 15/15 : LABEL extra=1"), "{out}");
    let run_at = lines
        .iter()
        .position(|l| l.starts_with("Step 7/15"))
        .unwrap();
    assert!(lines[run_at + 1].starts_with(" ---> Running in "), "{out}");
    assert_eq!(
        lines[run_at + 2],
        "hi prod",
        "the step's output is streamed: {out}"
    );
    assert!(
        lines[run_at + 3].starts_with("Removing intermediate container "),
        "{out}"
    );
    assert!(lines[run_at + 4].starts_with(" ---> "), "{out}");
    // Metadata steps too get their (never started) container, as in the classic builder.
    let cmd_at = lines
        .iter()
        .position(|l| l.starts_with("Step 14/15 : CMD"))
        .unwrap();
    assert!(lines[cmd_at + 1].starts_with(" ---> Running in "), "{out}");
    assert!(
        lines[cmd_at + 2].starts_with("Removing intermediate container "),
        "{out}"
    );
    let copy_at = lines
        .iter()
        .position(|l| l.starts_with("Step 6/15 : COPY"))
        .unwrap();
    assert!(lines[copy_at + 1].starts_with(" ---> ") && !lines[copy_at + 1].contains("Running"));
    let id = built_id(&out);
    assert_eq!(
        lines[lines.len() - 2],
        "Successfully tagged web:v3",
        "{out}"
    );
    assert_eq!(
        lines[lines.len() - 1],
        "Successfully tagged web:latest",
        "{out}"
    );
    assert!(image_id(&s, "web:v3").starts_with(&format!("sha256:{id}")));

    let cfg = &inspect(&s, "web:v3")["Config"];
    assert!(
        cfg["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "PAGE=/www/index.html"),
        "{cfg}"
    );
    assert!(
        cfg["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "MODE=prod"),
        "{cfg}"
    );
    assert_eq!(cfg["WorkingDir"], "/www");
    assert_eq!(cfg["Labels"]["org.example.title"], "web page");
    assert_eq!(cfg["Labels"]["version"], "3");
    assert_eq!(cfg["Labels"]["extra"], "1");
    assert!(cfg["ExposedPorts"].get("80/tcp").is_some(), "{cfg}");
    assert!(cfg["ExposedPorts"].get("53/udp").is_some(), "{cfg}");
    assert!(cfg["Volumes"].get("/data").is_some(), "{cfg}");
    assert_eq!(cfg["User"], "nobody");
    assert_eq!(cfg["StopSignal"], "SIGQUIT");
    assert_eq!(
        cfg["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "true"])
    );
    assert_eq!(cfg["Healthcheck"]["Interval"], 30_000_000_000i64);
    assert_eq!(cfg["Healthcheck"]["Retries"], 2);
    assert_eq!(cfg["Entrypoint"], serde_json::json!(["httpd"]));
    assert_eq!(
        cfg["Cmd"],
        serde_json::json!(["-f", "-p", "80", "-h", "/www"])
    );

    // History: Docker's created_by forms, empty_layer for metadata.
    let hist = s.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}\t{{.Size}}",
        "web:v3",
    ]);
    let h: Vec<&str> = hist.lines().collect();
    assert!(
        h.contains(&"/bin/sh -c #(nop)  CMD [\"-f\" \"-p\" \"80\" \"-h\" \"/www\"]\t0B"),
        "{hist}"
    );
    assert!(
        h.contains(&"/bin/sh -c #(nop)  ENTRYPOINT [\"httpd\"]\t0B"),
        "{hist}"
    );
    assert!(h.contains(&"/bin/sh -c #(nop)  USER nobody\t0B"), "{hist}");
    assert!(
        h.iter().any(|l| l
            .starts_with("|1 GREETING=hi /bin/sh -c echo \"$GREETING $MODE\" > /greeting")
            && !l.ends_with("\t0B")),
        "{hist}"
    );
    assert!(
        h.iter()
            .any(|l| l.starts_with("/bin/sh -c #(nop) COPY file:") && l.contains(" in ./ \t")),
        "{hist}"
    );
    assert!(
        h.iter()
            .any(|l| l.starts_with("/bin/sh -c #(nop) WORKDIR /www\t")),
        "{hist}"
    );

    // The image runs: the copied page and the RUN's file are there.
    let r = s.run_timeout(
        &[
            "run",
            "--rm",
            "--entrypoint",
            "cat",
            "web:v3",
            "/www/index.html",
            "/greeting",
        ],
        LIMIT,
    );
    assert_eq!(r.stdout, "<h1>Hello strata</h1>\nhi prod\n", "{r:?}");
    // Intermediate images are listed with -a only.
    let all = s.ok(&["image", "ls", "-a", "-q"]).lines().count();
    let shown = s.ok(&["image", "ls", "-q"]).lines().count();
    assert!(all >= shown + 13, "intermediate images: {all} vs {shown}");
    assert_clean(&s);

    // Same build again: every step from the cache, the same image.
    let again = build_ok(&s, &["--build-arg", "GREETING=hi", "--label", "extra=1", c]);
    assert_eq!(again.matches(" ---> Using cache").count(), 14, "{again}");
    assert!(!again.contains("Running in"), "{again}");
    assert_eq!(built_id(&again), id);

    // Touching the copied file (mtime only) keeps the cache; new content busts it from COPY on.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.path().join("index.html"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    drop(f);
    let touched = build_ok(&s, &["--build-arg", "GREETING=hi", "--label", "extra=1", c]);
    assert_eq!(built_id(&touched), id, "{touched}");
    write(ctx.path(), "index.html", "<h1>Changed</h1>\n");
    let changed = build_ok(&s, &["--build-arg", "GREETING=hi", "--label", "extra=1", c]);
    assert_eq!(changed.matches(" ---> Using cache").count(), 4, "{changed}");
    assert!(changed.contains("Running in"), "{changed}");
    assert_ne!(built_id(&changed), id);
    // Another build-arg value busts the RUN step.
    let other = build_ok(&s, &["--build-arg", "GREETING=yo", "--label", "extra=1", c]);
    assert_eq!(other.matches(" ---> Using cache").count(), 5, "{other}");
    // --no-cache: nothing reused.
    let fresh = build_ok(&s, &["--no-cache", "-q", c]);
    assert!(
        fresh.trim().starts_with("sha256:") && fresh.lines().count() == 1,
        "{fresh}"
    );
    assert_clean(&s);
}

#[test]
fn build_failures_leave_nothing_behind() {
    let s = setup(&default_driver());
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path().to_str().unwrap();

    // A syntax error fails before anything runs, naming its line.
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nRUN echo should-not-run\n\nFOO bar\n",
    );
    let r = build(&s, &["-t", "web:v1", c]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(
        r.stderr,
        "Error: dockerfile parse error on line 4: unknown instruction: FOO\n"
    );
    assert_eq!(r.stdout, "");

    // A failing RUN: Docker's message, exit 1, the tag stays where it was.
    s.ok(&["tag", "busybox", "web:v1"]);
    let before = image_id(&s, "web:v1");
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nRUN echo first > /f\nRUN false\n",
    );
    let r = build(&s, &["-t", "web:v1", c]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains("Step 3/3 : RUN false"), "{r:?}");
    assert_eq!(
        r.stderr,
        "Error: The command '/bin/sh -c false' returned a non-zero code: 1\n"
    );
    assert_eq!(image_id(&s, "web:v1"), before);
    assert_clean(&s);
    // The step that succeeded is cached.
    let r = build(&s, &["-t", "web:v1", c]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stdout.contains(" ---> Using cache"), "{r:?}");

    // COPY sources: missing, outside the context, a symlink out of it.
    let cases = [
        (
            "COPY nothing.txt /x\n",
            "Error: COPY failed: file not found in build context or excluded by .dockerignore: stat nothing.txt: file does not exist\n",
        ),
        (
            "COPY ../outside /x\n",
            "Error: COPY failed: forbidden path outside the build context: ../outside ()\n",
        ),
        (
            "COPY link /x\n",
            "Error: COPY failed: forbidden path outside the build context: link ()\n",
        ),
        ("COPY *.none /x/\n", "Error: COPY failed: no source files were specified\n"),
        (
            "COPY --chown=nosuchuser a /x\n",
            "Error: unable to convert uid/gid chown string to host mapping: can't find uid for user nosuchuser: no such user: nosuchuser\n",
        ),
    ];
    std::os::unix::fs::symlink("/etc/passwd", ctx.path().join("link")).unwrap();
    write(ctx.path(), "a", "a");
    for (line, want) in cases {
        write(ctx.path(), "Dockerfile", &format!("FROM busybox\n{line}"));
        let r = build(&s, &[c]);
        assert_eq!(r.code, Some(1), "{line}: {r:?}");
        assert_eq!(r.stderr, want, "{line}");
    }
    let r = build(&s, &["--target", "nope", c]);
    assert_eq!(
        r.stderr,
        "Error: failed to reach build target nope in Dockerfile\n"
    );
    let r = build(&s, &["/nonexistent-context"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("unable to prepare context"), "{r:?}");
    assert_eq!(image_id(&s, "web:v1"), before);
    assert_clean(&s);
}

/// Serve `body` over HTTP on 127.0.0.1 to every request (for ADD of a URL).
fn serve(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn tar_gz(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    strata_testkit::fixtures::gzip(&b.into_inner().unwrap())
}

#[test]
fn build_multistage_ignore_heredocs_and_add() {
    let s = setup(&default_driver());
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path().to_str().unwrap();
    let port = serve("from the web\n");
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            r#"FROM busybox AS unused
RUN exit 3
FROM busybox AS builder
ARG NAME=stage
RUN <<EOF
mkdir -p /out
echo "built by $NAME" > /out/artifact
EOF
FROM busybox
ARG NAME=final
COPY --from=builder /out/artifact /artifact
COPY --chown=1:2 --chmod=640 keep.txt /files/
COPY dir/ /files/dir/
COPY *.conf /conf/
COPY <<EOT /etc/motd
hello $NAME
EOT
ADD archive.tar.gz /unpacked/
ADD http://127.0.0.1:{port}/remote.txt /remote/
RUN ls -ln /files/keep.txt /remote/remote.txt && cat /artifact /etc/motd /unpacked/inner/a.txt /remote/remote.txt && ls /files/dir /conf
"#
        ),
    );
    write(ctx.path(), "keep.txt", "keep\n");
    write(ctx.path(), "dir/a", "a\n");
    write(ctx.path(), "dir/secret", "secret\n");
    write(ctx.path(), "dir/debug.log", "log\n");
    write(ctx.path(), "a.conf", "a\n");
    write(ctx.path(), "b.conf", "b\n");
    write(ctx.path(), "c.txt", "c\n");
    write(
        ctx.path(),
        ".dockerignore",
        "# rules\n**/*.log\ndir/secret\n",
    );
    std::fs::write(
        ctx.path().join("archive.tar.gz"),
        tar_gz(&[("inner/a.txt", "unpacked\n")]),
    )
    .unwrap();

    let out = build_ok(&s, &["-t", "multi", c]);
    assert!(
        !out.contains("exit 3"),
        "the unused stage is not built: {out}"
    );
    assert!(
        out.starts_with("Step 1/13 : FROM busybox AS builder\n"),
        "{out}"
    );
    for want in [
        "-rw-r-----    1 1        2",
        "-rw-------    1 0        0",
        "built by stage\nhello final\nunpacked\nfrom the web\n",
        "a.conf\nb.conf",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let r = s.run_timeout(&["run", "--rm", "multi", "ls", "/files/dir"], LIMIT);
    assert_eq!(r.stdout, "a\n", "ignored files are not copied: {r:?}");

    // --target builds only what the target needs.
    let out = build_ok(&s, &["--target", "builder", "-t", "stage", c]);
    assert!(
        out.starts_with("Step 1/3 : FROM busybox AS builder\n"),
        "{out}"
    );
    assert!(out.contains(" ---> Using cache"), "{out}");
    let r = s.run_timeout(&["run", "--rm", "stage", "cat", "/out/artifact"], LIMIT);
    assert_eq!(r.stdout, "built by stage\n");

    // Independent stages (built at the same time) read as a sequential build.
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox AS a\nRUN echo from-a > /a\nFROM busybox AS b\nRUN echo from-b > /b\nFROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\nRUN cat /a /b\n",
    );
    let out = build_ok(&s, &["-t", "both", c]);
    let steps: Vec<&str> = out.lines().filter(|l| l.starts_with("Step ")).collect();
    let want: Vec<String> = (1..=8).map(|n| format!("Step {n}/8 : ")).collect();
    assert_eq!(steps.len(), 8, "{out}");
    for (got, want) in steps.iter().zip(&want) {
        assert!(got.starts_with(want.as_str()), "{got} vs {want}:\n{out}");
    }
    assert!(
        out.contains("Step 2/8 : RUN echo from-a > /a\n ---> Running in "),
        "{out}"
    );
    assert!(out.contains("\nfrom-a\nfrom-b\n"), "{out}");
    assert_clean(&s);
}

#[test]
fn build_from_stdin_quiet_and_iidfile() {
    let s = setup(&default_driver());
    let dir = tempfile::tempdir().unwrap();
    let iid = dir.path().join("iid");
    let stdin_build = |args: &[&str], input: &[u8]| -> Run {
        let mut a = vec!["build"];
        a.extend_from_slice(args);
        let mut cmd = s.command(&a);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = wait_output(child, LIMIT);
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    // A lone Dockerfile on STDIN, -q, --iidfile.
    let r = stdin_build(
        &["-q", "--iidfile", iid.to_str().unwrap(), "-t", "q:1", "-"],
        b"FROM busybox\nRUN echo quiet > /q\nCMD [\"cat\", \"/q\"]\n",
    );
    assert!(r.ok(), "{r:?}");
    let id = r.stdout.trim();
    assert!(
        id.starts_with("sha256:") && r.stdout.lines().count() == 1,
        "{r:?}"
    );
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    assert_eq!(image_id(&s, "q:1"), id);
    assert_eq!(
        s.run_timeout(&["run", "--rm", "q:1"], LIMIT).stdout,
        "quiet\n"
    );
    // A tar context on STDIN, with -f naming a Dockerfile inside it.
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in [
        (
            "build/Dockerfile.web",
            "FROM busybox\nCOPY page.html /www/\n",
        ),
        ("page.html", "from tar\n"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, path, data.as_bytes()).unwrap();
    }
    let r = stdin_build(
        &["-f", "build/Dockerfile.web", "-t", "t:1", "-"],
        &b.into_inner().unwrap(),
    );
    assert!(r.ok(), "{r:?}");
    let r = s.run_timeout(&["run", "--rm", "t:1", "cat", "/www/page.html"], LIMIT);
    assert_eq!(r.stdout, "from tar\n");
    // `image build` is the same verb; a bad --iidfile path is refused before building.
    let r = s.run_timeout(&["image", "build", "--iidfile", "/dev/null", "-"], LIMIT);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.contains("must be a directory or a regular file"),
        "{r:?}"
    );
    assert_clean(&s);
}

#[test]
fn build_onbuild_shell_args_scratch_and_network() {
    let s = setup(&default_driver());
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path().to_str().unwrap();
    write(
        ctx.path(),
        "Dockerfile.base",
        "FROM busybox\nSHELL [\"/bin/sh\", \"-ec\"]\nONBUILD RUN echo triggered > /triggered\nONBUILD ENV FROM_TRIGGER=yes\n",
    );
    let base_df = ctx.path().join("Dockerfile.base");
    build_ok(
        &s,
        &[
            "-f",
            base_df.to_str().unwrap(),
            "-t",
            "base",
            "--platform",
            "linux/amd64",
            "--progress",
            "plain",
            c,
        ],
    );
    let cfg = &inspect(&s, "base")["Config"];
    assert_eq!(cfg["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(cfg["OnBuild"].as_array().unwrap().len(), 2, "{cfg}");
    let hist = s.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "base",
    ]);
    assert!(
        hist.contains("/bin/sh -ec #(nop)  ONBUILD RUN echo triggered > /triggered\n"),
        "{hist}"
    );

    write(
        ctx.path(),
        "Dockerfile",
        r#"ARG BASE=base
ARG V=meta
FROM $BASE AS one
ARG V
RUN echo "one:$V:$FROM_TRIGGER"
FROM busybox AS two
RUN echo "two:[$V]"
COPY --from=busybox /bin/busybox /busybox
COPY --from=one /triggered /triggered
FROM scratch
COPY --from=two /triggered /busybox /
ENV A=1 B=${A:-unset}
"#,
    );
    let out = build_ok(&s, &["-t", "final", c]);
    assert!(out.contains("# Executing 2 build triggers"), "{out}");
    assert!(
        out.contains("\none:meta:yes\n"),
        "ARG redeclared in a stage takes the meta value: {out}"
    );
    assert!(
        out.contains("\ntwo:[]\n"),
        "ARGs are scoped to their stage: {out}"
    );
    let img = inspect(&s, "final");
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        1,
        "{img}"
    );
    let env = img["Config"]["Env"].as_array().unwrap();
    for want in [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "A=1",
        "B=unset",
    ] {
        assert!(env.iter().any(|e| e == want), "{want} in {env:?}");
    }
    let r = s.run_timeout(
        &["run", "--rm", "final", "/busybox", "cat", "/triggered"],
        LIMIT,
    );
    assert_eq!(r.stdout, "triggered\n", "{r:?}");
    // Triggers run once: the child image has none.
    assert!(inspect(&s, "final")["Config"]["OnBuild"].is_null());

    // --network: RUN reaches a server on the host's loopback only with `host`.
    let port = serve("host only\n");
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM busybox\nRUN wget -q -O- http://127.0.0.1:{port}/\n"),
    );
    let out = build_ok(&s, &["--network", "host", "-t", "net", c]);
    assert!(out.contains("\nhost only\n"), "{out}");
    // A RUN that changes nothing adds no layer, only an empty_layer history entry.
    let layers = |img: &str| {
        inspect(&s, img)["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(layers("net"), layers("busybox"));
    let r = build(&s, &["--network", "none", "--no-cache", c]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("returned a non-zero code: 1"), "{r:?}");
    // ADD --checksum is checked.
    write(
        ctx.path(),
        "Dockerfile",
        &format!(
            "FROM busybox\nADD --checksum=sha256:{} http://127.0.0.1:{port}/f /f\n",
            "0".repeat(64)
        ),
    );
    let r = build(&s, &[c]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stderr.starts_with("Error: digest mismatch sha256:000"),
        "{r:?}"
    );
    assert_clean(&s);
}

#[test]
fn build_pulls_base_and_pushes_result() {
    let reg = strata_testkit::registry::Registry::start();
    let s = setup(&default_driver());
    let bb = format!("{}/bb:1", reg.addr());
    s.ok(&["tag", "busybox", &bb]);
    s.run_timeout(&["push", &bb], LIMIT);
    s.ok(&["rmi", &bb]);
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path().to_str().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM {bb}\nRUN echo pushed > /p\nCMD [\"cat\", \"/p\"]\n"),
    );
    let app = format!("{}/app:1", reg.addr());
    let r = build(&s, &["-t", &app, c]);
    assert!(r.ok(), "{r:?}");
    assert!(
        r.stdout.contains(&format!("Successfully tagged {app}")),
        "{r:?}"
    );
    // --pull asks the registry again; the steps stay cached.
    let r = build(&s, &["--pull", "-t", &app, c]);
    assert!(r.ok(), "{r:?}");
    assert!(r.stderr.contains("Image is up to date"), "{r:?}");
    assert!(r.stdout.contains(" ---> Using cache"), "{r:?}");
    let r = s.run_timeout(&["push", &app], LIMIT);
    assert!(r.ok(), "{r:?}");
    // A fresh store pulls the built image and runs it.
    let other = strata_testkit::container::Strata::new(env!("CARGO_BIN_EXE_strata"))
        .with_driver(&default_driver());
    let r = other.run_timeout(&["run", "--rm", &app], LIMIT);
    assert_eq!(r.stdout, "pushed\n", "{r:?}");
    assert_clean(&s);
}

#[test]
fn build_interrupted_leaves_nothing_behind() {
    let s = setup(&default_driver());
    let ctx = tempfile::tempdir().unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nRUN echo started && sleep 60\n",
    );
    let mut cmd = s.command(&["build", "-t", "never", ctx.path().to_str().unwrap()]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + LIMIT;
    while !String::from_utf8_lossy(&seen).contains("started") {
        assert!(std::time::Instant::now() < deadline, "no output");
        let mut buf = [0u8; 256];
        let n = stdout.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "build ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    // SAFETY: sending SIGINT to the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = wait_output(child, LIMIT);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Error: build cancelled\n"
    );
    let r = s.run(&["image", "inspect", "never"]);
    assert!(!r.ok());
    assert_clean(&s);
}

// ---------------------------------------------------------------------------------------------
// Peer check: the same Dockerfiles built by `podman build` (Debian's podman, runc, vfs storage in
// temp dirs) and by strata; the root filesystems and configs must match.

/// One file of a flattened image: type, mode, owner, content digest or link target.
type Listing = std::collections::BTreeMap<String, String>;

/// Flatten the image in a docker-archive (`save` output of either tool) into a listing.
fn flatten(archive: &Path) -> (Listing, Value) {
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = Default::default();
    let mut ar = tar::Archive::new(std::fs::File::open(archive).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(p, data);
    }
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config: Value =
        serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
    let mut out = Listing::new();
    for layer in manifest[0]["Layers"].as_array().unwrap() {
        let data = &files[layer.as_str().unwrap()];
        let mut ar = tar::Archive::new(&data[..]);
        let mut opaque: Vec<String> = Vec::new();
        let mut added: Vec<(String, String)> = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let path = path
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let (dir, name) = match path.rsplit_once('/') {
                Some((d, n)) => (format!("{d}/"), n.to_string()),
                None => (String::new(), path.clone()),
            };
            if name == ".wh..wh..opq" {
                opaque.push(dir);
                continue;
            }
            if let Some(gone) = name.strip_prefix(".wh.") {
                let gone = format!("{dir}{gone}");
                out.retain(|k, _| *k != gone && !k.starts_with(&format!("{gone}/")));
                continue;
            }
            let h = e.header().clone();
            let kind = h.entry_type();
            let what = if kind.is_dir() {
                "dir".to_string()
            } else if kind.is_symlink() {
                format!("link->{}", e.link_name().unwrap().unwrap().display())
            } else if kind.is_hard_link() {
                format!("hardlink->{}", e.link_name().unwrap().unwrap().display())
            } else {
                let mut d = Vec::new();
                e.read_to_end(&mut d).unwrap();
                format!("file:{}", strata_testkit::fixtures::sha256(&d))
            };
            let mode = if kind.is_symlink() {
                0
            } else {
                h.mode().unwrap() & 0o7777
            };
            let mut xattrs = String::new();
            if let Some(pax) = e.pax_extensions().unwrap() {
                for x in pax {
                    let x = x.unwrap();
                    if let Some(k) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push_str(&format!(
                            " {k}={}",
                            String::from_utf8_lossy(x.value_bytes())
                        ));
                    }
                }
            }
            added.push((
                path,
                format!(
                    "{what} {mode:o} {}:{}{xattrs}",
                    h.uid().unwrap(),
                    h.gid().unwrap()
                ),
            ));
        }
        for d in opaque {
            out.retain(|k, _| !k.starts_with(&d));
        }
        for (p, v) in added {
            out.insert(p, v);
        }
    }
    (out, config)
}

/// A tar with directories, modes, owners, a symlink, a hard link and (with `xattr`) a user
/// xattr, as `ADD` of a local archive must reproduce them.
fn peer_tar(xattr: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let entry = |kind: tar::EntryType, mode: u32, uid: u64, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(uid + 1);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    };
    if xattr {
        // A PAX header for the next entry: "<len> key=value\n", len counting itself.
        let rec = "SCHILY.xattr.user.note=peer\n";
        let rec = format!("{} {rec}", rec.len() + 3);
        let mut h = entry(tar::EntryType::XHeader, 0o644, 0, rec.len() as u64);
        b.append_data(&mut h, "PaxHeaders/pkg", rec.as_bytes())
            .unwrap();
    }
    let mut h = entry(tar::EntryType::Directory, 0o750, 1000, 0);
    b.append_data(&mut h, "pkg/", &[][..]).unwrap();
    let mut h = entry(tar::EntryType::Regular, 0o640, 1000, 5);
    b.append_data(&mut h, "pkg/data", &b"data\n"[..]).unwrap();
    let mut h = entry(tar::EntryType::Regular, 0o4755, 0, 4);
    b.append_data(&mut h, "pkg/tool", &b"bin\n"[..]).unwrap();
    let mut h = entry(tar::EntryType::Symlink, 0o777, 0, 0);
    b.append_link(&mut h, "pkg/link", "data").unwrap();
    let mut h = entry(tar::EntryType::Link, 0o640, 1000, 0);
    b.append_link(&mut h, "pkg/hard", "pkg/data").unwrap();
    b.into_inner().unwrap()
}

/// The corpus: (name, Dockerfile, context files as (path, content, mode)).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str, u32)],
);

const PEER_CORPUS: &[Case] = &[
    (
        // Targets whose parents exist: buildah 4.3 leaves the parent dirs it made for a
        // mount target in the image, where BuildKit (and strata) leave no stub at all; its
        // `from=IMAGE` binds, binds of the whole context (no `source`) and tmpfs mounts break
        // its RUN containers (its mount cleanup removes their root's files: "unable to cleanup
        // run mounts copier: remove \"/\""), so those are tested on strata alone.
        "run-mounts",
        "FROM busybox\nRUN --mount=type=bind,source=data,target=/src cp /src/in.txt /copied && ls /src > /listed\nRUN --mount=type=cache,target=/cache echo x >> /cache/f && cp /cache/f /after-cache\nRUN --mount=type=cache,target=/cache,id=other cat /cache/f /after-cache > /two 2>&1 || echo absent > /two\n",
        &[("data/in.txt", "in\n", 0o640), ("data/sub/x", "x\n", 0o600)],
    ),
    (
        "run-and-metadata",
        "FROM busybox\nRUN mkdir -p /app/data && echo hi > /app/data/f && chmod 0600 /app/data/f \\\n && ln -s /app/data/f /app/link && rm /etc/motd\nWORKDIR /app\nENV A=1 B=\"two words\"\nUSER nobody\nEXPOSE 80 53/udp\nVOLUME /data\nLABEL a=b\nSTOPSIGNAL SIGQUIT\nHEALTHCHECK --interval=5s --retries=2 CMD [\"true\"]\nENTRYPOINT [\"sh\", \"-c\"]\nCMD [\"echo hi\"]\n",
        &[],
    ),
    (
        "copy-forms",
        "FROM busybox\nCOPY f.txt /dst/\nCOPY dir /dst/dir/\nCOPY --chown=1:2 f.txt /owned\nCOPY --chown=nobody f.txt /owned-by-name\nCOPY --chmod=700 f.txt /exec\nCOPY *.conf /conf/\nCOPY link /via-link\nCOPY dir/sub/x /dst/dir\n",
        &[
            ("f.txt", "text\n", 0o644),
            ("dir/sub/x", "x\n", 0o755),
            ("dir/y", "y\n", 0o640),
            ("a.conf", "a\n", 0o644),
            ("b.conf", "b\n", 0o600),
        ],
    ),
    (
        "args-env-workdir",
        "ARG V=1\nFROM busybox\nARG V\nARG W=dflt\nENV X=${V:-none}-x Y=${W:+set} Z=$UNSET\nRUN echo \"$X $Y $W\" > /xyz\nWORKDIR rel\nWORKDIR sub\nRUN pwd > /pwd\nSHELL [\"/bin/sh\", \"-ec\"]\nRUN echo $X > /shell\n",
        &[],
    ),
    (
        "multi-stage-scratch",
        "FROM busybox AS b\nRUN mkdir /out && echo x > /out/x && echo y > /out/y\nFROM busybox AS unused\nRUN false\nFROM scratch\nCOPY --from=b /out /\nCOPY --from=b /bin/busybox /bin/busybox\n",
        &[],
    ),
    (
        "dockerignore",
        "FROM busybox\nCOPY . /ctx/\n",
        &[
            (".dockerignore", "*.log\n!keep.log\nsecret\n**/*.tmp\n", 0o644),
            ("keep.log", "k\n", 0o644),
            ("drop.log", "d\n", 0o644),
            ("secret/key", "s\n", 0o600),
            ("src/main.c", "int main;\n", 0o644),
            ("src/x.tmp", "t\n", 0o644),
        ],
    ),
    (
        "add-archive-and-from-image",
        "FROM busybox\nADD a.tar.gz /opt/\nADD f.txt /opt/f\nCOPY --from=busybox /etc/passwd /copied/passwd\nWORKDIR /opt/new\n",
        &[("f.txt", "plain\n", 0o644)],
    ),
    (
        "copy-dir-modes",
        "FROM busybox\nUSER nobody\nCOPY d /new/\nCOPY d /etc/\nCOPY --chmod=750 d/e /x/e\n",
        &[("d/e", "e\n", 0o700), ("d/sub/f", "f\n", 0o444)],
    ),
    (
        "rm-and-overwrite",
        "FROM busybox\nRUN mkdir -p /d/sub && echo x > /d/sub/f && echo y > /d/g\nRUN rm -rf /d && mkdir /d && echo new > /d/only && rm /bin/cat\nRUN echo changed > /bin/extra && chmod 4755 /bin/extra\nCOPY f.txt /d/only\n",
        &[("f.txt", "replaced\n", 0o644)],
    ),
    (
        "env-expansion-corners",
        "FROM busybox\nARG A\nARG B=bee\nENV E1=${A:-wdef} E2=${B:-wdef} E3=${A:+alt} E4=${B:+alt} E5=\"${B}-s\" E6='$B lit' E7=\\$B\nENV F=$E2/x G=${E4:-no}${E1:+yes}\nLABEL l1=${B:-x} l2=\"${A:+y}\" l3=$F\nWORKDIR /w/${B}\nEXPOSE ${PORT:-8080}\nUSER ${U:-65534}\nRUN echo \"$E1 $E2 $E3 $E4 $E5 $E6 $E7 $F $G $B\" > /tmp/env.txt\n",
        &[],
    ),
    (
        "user-uid-gid",
        "FROM busybox\nUSER 1000:1000\nRUN touch /tmp/mine && id > /tmp/id\nUSER nobody:nogroup\nRUN touch /tmp/nob && mkdir /tmp/nobdir\nUSER 0:65534\nRUN touch /tmp/mixed\nUSER 1000:1000\n",
        &[],
    ),
    (
        "metadata-configs",
        "FROM busybox\nEXPOSE 8080/tcp 9000/udp\nEXPOSE 443\nVOLUME [\"/a\", \"/b\"]\nVOLUME /c /d\nSTOPSIGNAL 9\nHEALTHCHECK --interval=10s --timeout=3s --start-period=2s --retries=5 CMD wget -q -O- http://127.0.0.1/ || exit 1\nLABEL \"with space\"=\"v v\" multi=one \\\n      other=\"two\"\nLABEL multi=overridden\n",
        &[],
    ),
    (
        "copy-chown-chmod",
        "FROM busybox\nCOPY --chown=1000:1000 dir /o/\nCOPY --chown=nobody:nogroup --chmod=0640 f.txt /p\nADD --chown=2:3 f.txt /q\nCOPY --chown=65534 f.txt /r\nCOPY --chmod=4755 f.txt /s\n",
        &[
            ("f.txt", "f\n", 0o600),
            ("dir/a", "a\n", 0o644),
            ("dir/n/b", "b\n", 0o755),
        ],
    ),
    (
        "copy-tree-symlinks",
        "FROM busybox\nCOPY tree /tree/\nCOPY tree/nested /n\nCOPY tree/rel-link /copied-link\nCOPY tree/ /flat\n",
        &[
            ("tree/top", "top\n", 0o644),
            ("tree/nested/deeper/leaf", "leaf\n", 0o600),
            ("tree/nested/x", "x\n", 0o755),
        ],
    ),
    (
        "whiteouts-opaque",
        "FROM busybox\nRUN mkdir -p /a/b/c && echo 1 > /a/b/c/f && echo 2 > /a/g && mkdir /keep && echo k > /keep/k && echo z > /keep/z\nRUN rm -rf /a/b && rm /a/g && rm /keep/k && mkdir /keep/k && echo in > /keep/k/in\nRUN rm -rf /var && mkdir -p /var/new && echo n > /var/new/n && rm -rf /home && echo f > /home && rm /bin/ls\nRUN rm -rf /keep && mkdir /keep && echo again > /keep/z && rmdir /usr/sbin\n",
        &[],
    ),
    (
        "multi-stage-named",
        "FROM busybox AS base\nENV STAGE=base\nRUN echo base > /base\nFROM base AS builder\nARG OUT=/out\nRUN mkdir $OUT && echo built > $OUT/bin && chmod 755 $OUT/bin\nFROM busybox AS other\nRUN echo other > /other\nFROM base\nCOPY --from=builder /out/bin /usr/local/bin/tool\nCOPY --from=other /other /other\nCOPY --from=0 /base /from-index\nCOPY --from=builder /out /out-dir\n",
        &[],
    ),
    (
        "entrypoint-shell-form",
        "FROM busybox\nENTRYPOINT exec top -b\n",
        &[],
    ),
    (
        "cmd-shell-entrypoint-json",
        "FROM busybox\nCMD echo \"hi there\" $HOME\nENTRYPOINT [\"/bin/sh\", \"-c\"]\n",
        &[],
    ),
    (
        "shell-then-cmd",
        "FROM busybox\nENTRYPOINT [\"env\"]\nSHELL [\"/bin/ash\", \"-eo\", \"pipefail\", \"-c\"]\nCMD echo x\n",
        &[],
    ),
    (
        "workdir-relative",
        "FROM busybox\nENV DIR=env-dir\nWORKDIR a\nWORKDIR b/c\nWORKDIR ../d\nCOPY f.txt rel\nCOPY f.txt .\nRUN touch here\nWORKDIR $DIR\nRUN pwd > /pwd\nWORKDIR /abs/./x/../y\nRUN touch there\n",
        &[("f.txt", "w\n", 0o644)],
    ),
    (
        "add-local-tar",
        "FROM busybox\nADD plain.tar /opt/plain/\nADD owned.tar.gz /ext\nADD plain.tar /opt/plain-again\nCOPY plain.tar /not-unpacked.tar\n",
        &[],
    ),
];

#[test]
fn build_matches_podman_build() {
    let s = setup(&default_driver());
    let dir = tempfile::tempdir().unwrap();
    let bb = dir.path().join("busybox.tar");
    s.ok(&["save", "-o", bb.to_str().unwrap(), "busybox"]);
    let o = podman(dir.path(), &["load", "-i", bb.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let mut failures = Vec::new();
    for (name, dockerfile, files) in PEER_CORPUS {
        let ctx = dir.path().join(name);
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
        for (p, content, mode) in *files {
            write(&ctx, p, content);
            std::fs::set_permissions(
                ctx.join(p),
                std::os::unix::fs::PermissionsExt::from_mode(*mode),
            )
            .unwrap();
        }
        if *name == "copy-forms" {
            std::os::unix::fs::symlink("f.txt", ctx.join("link")).unwrap();
        }
        if *name == "copy-dir-modes" {
            for (d, m) in [("d/sub", 0o700), ("d", 0o750)] {
                std::fs::set_permissions(
                    ctx.join(d),
                    std::os::unix::fs::PermissionsExt::from_mode(m),
                )
                .unwrap();
            }
        }
        if *name == "copy-tree-symlinks" {
            let t = ctx.join("tree");
            std::fs::create_dir_all(t.join("empty")).unwrap();
            std::os::unix::fs::symlink("top", t.join("rel-link")).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", t.join("abs-link")).unwrap();
            std::os::unix::fs::symlink("missing", t.join("nested/dangling")).unwrap();
            std::os::unix::fs::symlink("deeper", t.join("nested/dir-link")).unwrap();
            for (d, m) in [("tree/nested/deeper", 0o711), ("tree/empty", 0o700)] {
                std::fs::set_permissions(
                    ctx.join(d),
                    std::os::unix::fs::PermissionsExt::from_mode(m),
                )
                .unwrap();
            }
        }
        if *name == "add-local-tar" {
            std::fs::write(ctx.join("plain.tar"), peer_tar(false)).unwrap();
            let gz = strata_testkit::fixtures::gzip(&peer_tar(true));
            std::fs::write(ctx.join("owned.tar.gz"), gz).unwrap();
        }
        if *name == "add-archive-and-from-image" {
            let gz = tar_gz(&[("inner/a.txt", "unpacked\n"), ("top.txt", "top\n")]);
            std::fs::write(ctx.join("a.tar.gz"), gz).unwrap();
        }
        let c = ctx.to_str().unwrap();
        let tag = format!("peer-{name}");
        let r = build(&s, &["-t", &tag, c]);
        if !r.ok() {
            failures.push(format!("{name}: strata build failed: {r:?}"));
            continue;
        }
        let ours = dir.path().join(format!("{name}.strata.tar"));
        s.ok(&["save", "-o", ours.to_str().unwrap(), &tag]);
        let mut args = vec!["build", "--format", "docker"];
        args.extend(ULIMITS);
        args.extend(["--network", "none", "-t", &tag, c]);
        let o = podman(dir.path(), &args);
        if !o.status.success() {
            failures.push(format!("{name}: podman build failed: {o:?}"));
            continue;
        }
        let theirs = dir.path().join(format!("{name}.podman.tar"));
        let o = podman(
            dir.path(),
            &[
                "save",
                "--format",
                "docker-archive",
                "-o",
                theirs.to_str().unwrap(),
                &tag,
            ],
        );
        assert!(o.status.success(), "podman save {name}: {o:?}");
        let (a, ca) = flatten(&ours);
        let (mut b, cb) = flatten(&theirs);
        // What podman's RUN containers leave that Docker's do not (SPEC §3).
        for p in [
            "etc/hosts",
            "etc/resolv.conf",
            "etc/hostname",
            "run/.containerenv",
            "run",
        ] {
            if !a.contains_key(p) {
                b.remove(p);
            }
        }
        // buildah (podman 4.3) creates a WORKDIR only when a later RUN uses it; Docker's
        // builders always create it (its docs: "even if it's not used"), as strata does.
        if *name == "add-archive-and-from-image" {
            assert_eq!(a.get("opt/new").map(String::as_str), Some("dir 755 0:0"));
            b.insert("opt/new".into(), "dir 755 0:0".into());
        }
        // Same quirk, and buildah's late mkdir runs as the USER of that RUN (65534 here); the
        // WORKDIR instruction came before USER, so Docker creates it as root, as strata does.
        if *name == "env-expansion-corners" {
            for p in ["w", "w/bee"] {
                assert_eq!(a.get(p).map(String::as_str), Some("dir 755 0:0"));
                b.insert(p.into(), "dir 755 0:0".into());
            }
        }
        // Same quirk for every unused WORKDIR; and for `WORKDIR /abs/./x/../y` buildah keeps the
        // path as written (its mkdir makes /abs/x too), where Docker's builder cleans it
        // (filepath.Clean: WorkingDir "/abs/y", no /abs/x), as strata does.
        if *name == "workdir-relative" {
            assert_eq!(a.get("a/b/c").map(String::as_str), Some("dir 755 0:0"));
            b.insert("a/b/c".into(), "dir 755 0:0".into());
            assert!(!a.contains_key("abs/x"));
            b.remove("abs/x");
        }
        if *name == "add-local-tar" {
            // Not only equal to podman's: the archive's xattr and owners are really there.
            assert_eq!(
                a.get("ext/pkg").map(String::as_str),
                Some("dir 750 1000:1001 user.note=peer")
            );
            assert_eq!(a.get("ext").map(String::as_str), Some("dir 755 0:0"));
        }
        let diff: Vec<String> = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .map(|(k, v)| format!("{k}: strata {v} podman {:?}", b.get(k)))
            .chain(
                b.iter()
                    .filter(|(k, _)| !a.contains_key(*k))
                    .map(|(k, v)| format!("{k}: only podman {v}")),
            )
            .collect();
        assert!(
            a.len() >= 4 && a.contains_key("bin/busybox"),
            "{name}: {a:?}"
        );
        if !diff.is_empty() {
            failures.push(format!("{name}: rootfs differs:\n{}", diff.join("\n")));
        }
        for key in [
            "Env",
            "Cmd",
            "Entrypoint",
            "WorkingDir",
            "User",
            "ExposedPorts",
            "Volumes",
            "StopSignal",
            "Healthcheck",
            "Shell",
        ] {
            let norm = |v: &Value| match v {
                Value::Null => Value::Null,
                Value::String(s) if s.is_empty() => Value::Null,
                Value::Array(a) if a.is_empty() => Value::Null,
                Value::Object(o) if o.is_empty() => Value::Null,
                v => v.clone(),
            };
            let (x, mut y) = (norm(&ca["config"][key]), norm(&cb["config"][key]));
            // Docker applies SHELL to shell-form CMD and ENTRYPOINT (its reference: "The SHELL
            // instruction ... affects shell form commands"); buildah 4.3 always uses /bin/sh -c.
            if *name == "shell-then-cmd" && key == "Cmd" {
                assert_eq!(
                    x,
                    serde_json::json!(["/bin/ash", "-eo", "pipefail", "-c", "echo x"])
                );
                y = x.clone();
            }
            if *name == "workdir-relative" && key == "WorkingDir" {
                assert_eq!(x, serde_json::json!("/abs/y"));
                y = x.clone();
            }
            if x != y {
                failures.push(format!("{name}: config {key}: strata {x} podman {y}"));
            }
        }
        let mut la = ca["config"]["Labels"].clone();
        let mut lb = cb["config"]["Labels"].clone();
        if let Some(m) = lb.as_object_mut() {
            m.remove("io.buildah.version");
        }
        if la.is_null() {
            la = serde_json::json!({});
        }
        if lb.is_null() {
            lb = serde_json::json!({});
        }
        if la != lb {
            failures.push(format!("{name}: labels: strata {la} podman {lb}"));
        }
    }
    // Every case is compared before failing, so one run shows every difference.
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // An image strata built runs in podman: `save`, `podman load`, `podman run` its CMD.
    let ctx = dir.path().join("runs-in-podman");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY hello.txt /hello.txt\nRUN echo built >> /hello.txt\n\
         CMD [\"cat\", \"/hello.txt\"]\n",
    )
    .unwrap();
    std::fs::write(ctx.join("hello.txt"), "hello from strata build\n").unwrap();
    let r = build(&s, &["-t", "strata-built:1", ctx.to_str().unwrap()]);
    assert!(r.ok(), "{r:?}");
    let saved = dir.path().join("strata-built.tar");
    s.ok(&["save", "-o", saved.to_str().unwrap(), "strata-built:1"]);
    let o = podman(dir.path(), &["load", "-i", saved.to_str().unwrap()]);
    assert!(o.status.success(), "podman load: {o:?}");
    let o = podman(dir.path(), &run_args("strata-built:1", &[]));
    assert!(o.status.success(), "podman run: {o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello from strata build\nbuilt\n"
    );
    assert_clean(&s);
}

#[test]
fn build_on_debian_made_offline_installs_from_a_test_made_mirror() {
    // FROM the Debian image made offline; RUN apt-get install on the default network (the
    // test's own bridge) from an apt repository the test serves in its fake internet.
    use network_common::{debian_mirror, import_debian, sources_list, FakeInternet, NetStrata};
    let t = NetStrata::with_driver(&default_driver());
    let s = &t.s;
    import_debian(s, "debian:test");
    let (mirror, _) = debian_mirror();
    let inet = FakeInternet::serving(Some(mirror.path()));
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path().to_str().unwrap();
    let run = format!(
        "echo '{}' > /etc/apt/sources.list && apt-get update \\\n          && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*",
        sources_list(&inet)
    );
    write(
        ctx.path(),
        "Dockerfile",
        &format!("FROM debian:test\nRUN {run}\nCMD [\"jq\", \"--version\"]\n"),
    );
    let out = build_ok(s, &["-t", "jq:1", c]);
    assert!(out.contains("\nSetting up jq "), "the step's output: {out}");
    assert!(out.contains("Successfully tagged jq:1"), "{out}");
    let layers = |img: &str| {
        inspect(s, img)["RootFS"]["Layers"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(layers("jq:1"), layers("debian:test") + 1);
    let hist = s.ok(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        "jq:1",
    ]);
    let lines: Vec<&str> = hist.lines().collect();
    assert_eq!(
        lines[0], "/bin/sh -c #(nop)  CMD [\"jq\" \"--version\"]",
        "{hist}"
    );
    assert!(
        lines[1].starts_with("/bin/sh -c echo 'deb [trusted=yes] http://")
            && lines[1].contains("apt-get install -y --no-install-recommends jq"),
        "{hist}"
    );
    let r = s.run_timeout(&["run", "--rm", "--network", "none", "jq:1"], LIMIT);
    assert_eq!(r.stdout, "jq-1.6\n", "{r:?}");
    let r = s.run_timeout(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "jq:1",
            "sh",
            "-c",
            "echo '{\"v\":7}' | jq .v",
        ],
        LIMIT,
    );
    assert_eq!(r.stdout, "7\n", "{r:?}");
    // The packages came from the mirror, through the bridge's masquerading.
    let log = inet.log();
    assert!(log.contains("/jq_1.6"), "{log}");
    assert!(log.contains(&format!("{}:", inet.host_ip)), "{log}");
    // A cached rebuild reaches no mirror.
    let before = inet.log().len();
    let out = build_ok(s, &["-t", "jq:1", c]);
    assert!(out.contains(" ---> Using cache"), "{out}");
    assert_eq!(inet.log().len(), before);
    assert_clean(s);
}

/// Every byte of an image as `save` writes it, gzip'd members unpacked.
fn saved_bytes(s: &Strata, image: &str, dir: &Path) -> Vec<u8> {
    let saved = dir.join("saved.tar");
    s.ok(&["save", "-o", saved.to_str().unwrap(), image]);
    let mut all = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        if b.starts_with(&[0x1f, 0x8b]) {
            let mut gz = std::process::Command::new("gzip")
                .arg("-dc")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = gz.stdin.take().unwrap();
            let feed = std::thread::spawn(move || stdin.write_all(&b));
            let out = gz.wait_with_output().unwrap();
            feed.join().unwrap().unwrap();
            b = out.stdout;
        }
        all.extend_from_slice(&b);
    }
    std::fs::remove_file(&saved).unwrap();
    all
}

#[test]
fn build_shebang_heredocs_and_run_mounts() {
    let s = setup(&default_driver());
    let ctx = tempfile::tempdir().unwrap();
    let c = ctx.path().to_str().unwrap();
    write(ctx.path(), "data/in.txt", "from the context\n");
    write(ctx.path(), "data/skip.log", "ignored\n");
    write(ctx.path(), ".dockerignore", "**/*.log\n");
    let secret = "s3cr3t-value-7f1c";
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("tok.txt");
    std::fs::write(&secret_file, secret).unwrap();
    write(
        ctx.path(),
        "Dockerfile",
        r#"FROM busybox
WORKDIR /work
RUN <<EOF
#!/bin/cat
run by cat, not by a shell
EOF
RUN <<EOF
#!/bin/sh -e
echo "script at $0" > /made
EOF
RUN --mount=type=bind,source=data,target=/src cat /src/in.txt && ls /src && if touch /src/x 2>/dev/null; then echo writable; else echo read-only; fi
RUN --mount=type=bind,source=data,target=rel,rw touch rel/x && cp rel/in.txt /copied
RUN --mount=target=/ctx ls /ctx /ctx/data
RUN --mount=type=bind,from=busybox,source=/etc/motd,target=/bb cat /bb
RUN --mount=type=cache,target=/root/.cache/app,sharing=locked echo run >> /root/.cache/app/log && echo "cache lines: $(wc -l < /root/.cache/app/log)"
RUN --mount=type=tmpfs,target=/scratch,size=1m echo t > /scratch/t && grep -c ' /scratch tmpfs ' /proc/mounts
RUN --mount=type=secret,id=tok echo "secret bytes: $(wc -c < /run/secrets/tok)" && stat -c %a /run/secrets/tok
RUN --mount=type=secret,id=tok,target=/etc/tok,mode=0440,uid=1 stat -c '%a %u' /etc/tok
RUN --mount=type=secret,id=absent test ! -e /run/secrets/absent && echo no-secret
"#,
    );
    let tok = format!("id=tok,src={}", secret_file.display());
    let args = ["--network", "none", "--secret", &tok, "-t", "mounts", c];
    let out = build_ok(&s, &args);
    let secret_line = format!("\nsecret bytes: {}\n400\n", secret.len());
    for want in [
        "\n#!/bin/cat\nrun by cat, not by a shell\n",
        "\nfrom the context\nin.txt\nread-only\n",
        "\n/ctx:\nDockerfile\ndata\n\n/ctx/data:\nin.txt\n",
        "\nwelcome to the strata busybox fixture\n",
        "\ncache lines: 1\n",
        "\n1\n",
        secret_line.as_str(),
        "\n440 1\n",
        "\nno-secret\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("skip.log"), ".dockerignore applies: {out}");
    // What the steps wrote lands; what was mounted (and the stubs made for it) does not.
    let check = "cat /made /copied; for p in /src /work/rel /ctx /bb /root/.cache /scratch /run /etc/tok /dev/pipes; do test -e $p && echo \"left: $p\"; done; ls -a /root /work";
    let r = s.run_timeout(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "mounts",
            "sh",
            "-c",
            check,
        ],
        LIMIT,
    );
    assert_eq!(
        r.stdout, "script at /dev/pipes/EOF\nfrom the context\n/root:\n.\n..\n\n/work:\n.\n..\n",
        "{r:?}"
    );
    // The secret is in no layer and no config.
    let all = saved_bytes(&s, "mounts", secrets.path());
    let hit = all.windows(secret.len()).any(|w| w == secret.as_bytes());
    assert!(!hit, "the secret's value is in the saved image");

    // The cache mount outlives the build; a changed bind source is a cache miss.
    let out = build_ok(&s, &args);
    assert_eq!(out.matches(" ---> Using cache").count(), 12, "{out}");
    write(ctx.path(), "data/in.txt", "changed\n");
    let out = build_ok(&s, &args);
    assert!(out.contains("\nchanged\nin.txt\nread-only\n"), "{out}");
    // (Its steps after the bind run again: the cache mount kept the first run's line.)
    assert!(out.contains("\ncache lines: 2\n"), "{out}");

    // A secret from the environment (`env=`), mounted at a target of the Dockerfile's choice.
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=e,target=/s,required=true cat /s\n",
    );
    let mut cmd = s.command(&[
        "build",
        "--network",
        "none",
        "--secret",
        "id=e,env=NB_SECRET",
        c,
    ]);
    cmd.env("NB_SECRET", "from-the-env")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = wait_output(cmd.spawn().unwrap(), LIMIT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("\nfrom-the-env"), "{text}");
    // A required secret the build was not given; mount flags checked before anything runs.
    write(
        ctx.path(),
        "Dockerfile",
        "FROM busybox\nRUN --mount=type=secret,id=nope,required=true true\n",
    );
    let r = build(&s, &["--network", "none", c]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("secret nope: not found"), "{r:?}");
    for (df, msg) in [
        ("RUN --mount=type=cache echo", "mount destination not set"),
        (
            "RUN --mount=type=ssh echo",
            "RUN --mount=type=ssh is not supported",
        ),
        (
            "RUN --mount=type=tmpfs,target=/t,bogus=1 echo",
            "unexpected key 'bogus'",
        ),
    ] {
        write(ctx.path(), "Dockerfile", &format!("FROM busybox\n{df}\n"));
        let r = build(&s, &["--network", "none", c]);
        assert_eq!(r.code, Some(1), "{r:?}");
        assert!(
            r.stderr
                .contains(&format!("dockerfile parse error on line 2: {msg}")),
            "{r:?}"
        );
        assert!(!r.stdout.contains("Step 1/2"), "nothing runs: {r:?}");
    }
    // The cache mount is build cache: `system df` counts it, `system prune` removes it.
    let df = |s: &Strata| {
        s.ok(&["system", "df", "--format", "{{.Type}}: {{.TotalCount}}"])
            .lines()
            .find(|l| l.starts_with("Build Cache:"))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(df(&s), "Build Cache: 1");
    s.ok(&["system", "prune", "-f"]);
    assert_eq!(df(&s), "Build Cache: 0");
    assert_clean(&s);
}
