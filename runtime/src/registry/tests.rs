//! Protocol tests against a real `docker-registry` (started by the testkit).

use std::time::Duration;

use strata_testkit::registry::images::{self, Image};
use strata_testkit::registry::proxy::{Mode, Proxy};
use strata_testkit::registry::{skopeo_copy, Registry};
use ureq::http;

use super::auth::Credentials;
use super::client::{Client, Endpoint, Req};
use super::manifest::{self, Manifest};
use super::{blob, RegistryError};

fn push(reg: &Registry, repo_tag: &str, img: &Image) {
    let dir = tempfile::tempdir().unwrap();
    images::write_oci_layout(dir.path(), "t", img);
    let mut extra = Vec::new();
    let creds;
    if let Some(c) = reg.skopeo_creds() {
        creds = format!("--dest-creds={c}");
        extra.push(creds.as_str());
    }
    skopeo_copy(
        &format!("oci:{}:t", dir.path().display()),
        &format!("docker://{}/{repo_tag}", reg.addr()),
        &extra,
    );
}

fn client(addr: &str, creds: Option<(&str, &str)>) -> Client {
    Client::new(
        Endpoint::new(addr, &[]),
        creds.map(|(u, p)| Credentials {
            username: u.into(),
            password: p.into(),
        }),
    )
}

fn get_manifest(
    c: &Client,
    repo: &str,
    reference: &str,
) -> Result<(Manifest, Vec<u8>), RegistryError> {
    let req = Req::new(
        http::Method::GET,
        format!("/v2/{repo}/manifests/{reference}"),
        &format!("repository:{repo}:pull"),
    )
    .header("Accept", manifest::ACCEPT_MANIFESTS);
    let mut resp = c.send_ok(&req)?;
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = resp.body_mut().read_to_vec().unwrap();
    Ok((Manifest::parse(ct.as_deref(), &body)?.0, body))
}

fn small_image(tag: &str) -> Image {
    images::image(vec![
        images::layer(&[("etc/hello", tag.as_bytes())]),
        images::layer(&[("usr/bin/tool", b"#!/bin/sh\necho tool\n")]),
    ])
}

#[test]
fn fetches_manifest_and_blobs_anonymously() {
    let reg = Registry::start();
    let img = small_image("anon");
    push(&reg, "lib/small:1", &img);
    let c = client(&reg.addr(), None);
    let (m, body) = get_manifest(&c, "lib/small", "1").unwrap();
    assert_eq!(blob::sha256_digest(&body), img.manifest_digest);
    let Manifest::Image(m) = m else {
        panic!("not an image manifest")
    };
    assert_eq!(m.layers.len(), 2);
    let dir = tempfile::tempdir().unwrap();
    for (l, want) in m.layers.iter().zip(&img.layers) {
        let p = blob::fetch(&c, "lib/small", &l.digest, l.size, dir.path(), &|_, _| {}).unwrap();
        assert_eq!(std::fs::read(p).unwrap(), want.gz);
    }
    let err = get_manifest(&c, "lib/small", "nope").unwrap_err();
    assert_eq!(err.code(), Some("MANIFEST_UNKNOWN"));
    assert_eq!(err.to_string(), "manifest unknown: manifest unknown");
}

#[test]
fn basic_auth_with_and_without_credentials() {
    let reg = Registry::start_basic("alice", "s3cret");
    let img = small_image("basic");
    push(&reg, "priv/img:1", &img);
    let good = client(&reg.addr(), Some(("alice", "s3cret")));
    assert!(get_manifest(&good, "priv/img", "1").is_ok());
    let none = client(&reg.addr(), None);
    assert_eq!(
        get_manifest(&none, "priv/img", "1").unwrap_err().status(),
        Some(401)
    );
    let bad = client(&reg.addr(), Some(("alice", "wrong")));
    assert_eq!(
        get_manifest(&bad, "priv/img", "1").unwrap_err().status(),
        Some(401)
    );
}

#[test]
fn bearer_token_flow() {
    let reg = Registry::start_token(&[("bob", "hunter2")], true);
    let img = small_image("token");
    push(&reg, "team/app:v1", &img);
    let anon = client(&reg.addr(), None);
    let (m, _) = get_manifest(&anon, "team/app", "v1").unwrap();
    assert!(matches!(m, Manifest::Image(_)));
    let strata_testkit::registry::Auth::Token(issuer) = &reg.auth else {
        unreachable!()
    };
    let reqs = issuer.requests();
    let last = reqs.last().expect("a token request");
    assert!(last.user.is_none(), "anonymous request expected: {reqs:?}");
    assert!(
        last.scopes.iter().any(|s| s == "repository:team/app:pull"),
        "{reqs:?}"
    );
    let bob = client(&reg.addr(), Some(("bob", "hunter2")));
    assert!(get_manifest(&bob, "team/app", "v1").is_ok());
    assert_eq!(
        issuer.requests().last().unwrap().user.as_deref(),
        Some("bob")
    );
    let wrong = client(&reg.addr(), Some(("bob", "nope")));
    let err = get_manifest(&wrong, "team/app", "v1").unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert!(
        err.to_string().contains("incorrect username or password"),
        "{err}"
    );
}

#[test]
fn tampered_blob_is_rejected_and_not_kept() {
    let reg = Registry::start();
    let img = small_image("tamper");
    push(&reg, "t/img:1", &img);
    let l = &img.layers[0];
    let mut data = std::fs::read(reg.blob_file(&l.digest)).unwrap();
    let last = data.len() - 1;
    data[last] ^= 0xff;
    std::fs::write(reg.blob_file(&l.digest), &data).unwrap();
    let c = client(&reg.addr(), None);
    let dir = tempfile::tempdir().unwrap();
    let err = blob::fetch(
        &c,
        "t/img",
        &l.digest,
        l.gz.len() as u64,
        dir.path(),
        &|_, _| {},
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "filesystem layer verification failed for digest {}",
            l.digest
        )
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "partial file left behind"
    );
}

#[test]
fn cut_download_resumes_with_range() {
    let reg = Registry::start();
    let big = images::big_layer("data/blob", 3 << 20, 7);
    let img = images::image(vec![big.clone()]);
    push(&reg, "big/img:1", &img);
    // Every blob response is cut after 1 MiB; four attempts reach the end only by resuming.
    let proxy = Proxy::start(&reg.addr(), Mode::Cut(1 << 20));
    let c = client(&proxy.addr(), None);
    let dir = tempfile::tempdir().unwrap();
    let p = blob::fetch(
        &c,
        "big/img",
        &big.digest,
        big.gz.len() as u64,
        dir.path(),
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(blob::sha256_digest(&std::fs::read(&p).unwrap()), big.digest);
    let ranges = proxy
        .heads()
        .iter()
        .filter(|h| h.to_ascii_lowercase().contains("\r\nrange: bytes="))
        .count();
    assert!(
        ranges >= 2,
        "expected resumed requests: {:?}",
        proxy.heads()
    );
}

#[test]
fn held_download_fails_then_resumes_after_restart() {
    let mut reg = Registry::start();
    let big = images::big_layer("data/blob", 2 << 20, 11);
    let img = images::image(vec![big.clone()]);
    push(&reg, "big/img:1", &img);
    let proxy = Proxy::start(&reg.addr(), Mode::Hold(1 << 20));
    let dir = tempfile::tempdir().unwrap();
    let addr = proxy.addr();
    let (digest, size, path) = (
        big.digest.clone(),
        big.gz.len() as u64,
        dir.path().to_path_buf(),
    );
    let t = std::thread::spawn(move || {
        let c = client(&addr, None);
        blob::fetch(&c, "big/img", &digest, size, &path, &|_, _| {})
    });
    assert!(
        proxy.wait_held(Duration::from_secs(60)),
        "download never reached the hold point"
    );
    reg.kill();
    proxy.release();
    let err = t.join().unwrap().unwrap_err();
    assert!(super::client::is_transient(&err), "{err:?}");
    let partial = blob::partial_path(dir.path(), &big.digest).unwrap();
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept >= 512 << 10, "partial download kept: {kept} bytes");
    reg.restart();
    proxy.set_mode(Mode::Pass);
    let c = client(&proxy.addr(), None);
    let before = proxy.heads().len();
    let p = blob::fetch(
        &c,
        "big/img",
        &big.digest,
        size_of(&big),
        dir.path(),
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(blob::sha256_digest(&std::fs::read(p).unwrap()), big.digest);
    let resumed = proxy.heads()[before..].iter().any(|h| {
        h.to_ascii_lowercase()
            .contains(&format!("range: bytes={kept}-"))
    });
    assert!(
        resumed,
        "no Range request from byte {kept}: {:?}",
        &proxy.heads()[before..]
    );
}

fn size_of(l: &images::Layer) -> u64 {
    l.gz.len() as u64
}

#[test]
fn blob_stream_replays_the_partial_prefix_then_resumes_transparently() {
    use std::io::Read;
    let reg = Registry::start();
    let big = images::big_layer("data/blob", 3 << 20, 13);
    let img = images::image(vec![big.clone()]);
    push(&reg, "big/img:1", &img);
    // Responses cut after 512 KiB: the stream must retry with Range behind the reader's back.
    let proxy = Proxy::start(&reg.addr(), Mode::Cut(512 << 10));
    let c = client(&proxy.addr(), None);
    let dir = tempfile::tempdir().unwrap();
    let partial = blob::partial_path(dir.path(), &big.digest).unwrap();
    // 1.5 MiB on disk; the remaining ~1.5 MiB takes the four attempts a blob gets.
    let have = 3usize << 19;
    std::fs::write(&partial, &big.gz[..have]).unwrap();
    let mut s = blob::BlobStream::open(
        &c,
        "big/img",
        &big.digest,
        size_of(&big),
        dir.path(),
        &|_, _| {},
    )
    .unwrap();
    assert_eq!(s.resumed_from(), have as u64);
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(s.verified());
    drop(s); // releases the partial file's lock
    assert!(got == big.gz, "reader saw exactly the blob once");
    let heads = proxy.heads();
    assert!(
        heads.iter().any(|h| h
            .to_ascii_lowercase()
            .contains(&format!("range: bytes={have}-"))),
        "{heads:?}"
    );
    assert!(heads.len() >= 3, "cut responses were retried: {heads:?}");
    assert_eq!(std::fs::read(&partial).unwrap(), big.gz);

    // A partial file whose bytes are not the blob's: the stream fails at its end with a digest
    // mismatch and deletes the file.
    let mut bad = big.gz[..have].to_vec();
    bad[100] ^= 1;
    std::fs::write(&partial, &bad).unwrap();
    proxy.set_mode(Mode::Pass);
    let mut s = blob::BlobStream::open(
        &c,
        "big/img",
        &big.digest,
        size_of(&big),
        dir.path(),
        &|_, _| {},
    )
    .unwrap();
    assert!(std::io::copy(&mut s, &mut std::io::sink()).is_err());
    assert!(!s.verified());
    assert!(
        matches!(s.take_error(), Some(RegistryError::DigestMismatch { .. })),
        "digest mismatch reported"
    );
    assert!(!partial.exists(), "mismatching partial file deleted");
}

#[test]
fn bearer_token_is_renewed_before_it_expires() {
    let reg = Registry::start_token(&[("bob", "hunter2")], false);
    let img = small_image("expiry");
    push(&reg, "team/exp:v1", &img);
    let strata_testkit::registry::Auth::Token(issuer) = &reg.auth else {
        unreachable!()
    };
    issuer.set_lifetime(2);
    let proxy = Proxy::start(&reg.addr(), Mode::Pass);
    let bob = client(&proxy.addr(), Some(("bob", "hunter2")));
    assert!(get_manifest(&bob, "team/exp", "v1").is_ok());
    let before = issuer.requests().len();
    let gets = |p: &Proxy| {
        p.heads()
            .iter()
            .filter(|h| h.starts_with("GET /v2/team/exp/manifests/v1"))
            .count()
    };
    let first = gets(&proxy);
    // Past the token's expiry (2 s, JWT `exp` too): the client must fetch a new token before
    // the request, not send the stale one and answer the registry's 401.
    std::thread::sleep(std::time::Duration::from_millis(2300));
    assert!(get_manifest(&bob, "team/exp", "v1").is_ok());
    assert_eq!(issuer.requests().len(), before + 1, "one new token");
    assert_eq!(
        gets(&proxy),
        first + 1,
        "no request was refused with 401 first"
    );
}
