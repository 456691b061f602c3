//! `login`/`logout` and authenticated pulls: htpasswd Basic auth and the Bearer token flow.

mod registry_common;

use std::os::unix::fs::PermissionsExt;

use registry_common::*;
use strata_testkit::registry::images;
use strata_testkit::registry::proxy::{Mode, Proxy};
use strata_testkit::registry::{Auth, Registry};

fn login(env: &Env, addr: &str, user: &str, pass: &str) -> (i32, String, String) {
    env.run(&["login", "-u", user, "-p", pass, addr])
}

#[test]
fn basic_auth_login_pull_logout() {
    let reg = Registry::start_basic("alice", "s3cret");
    let img = images::image(vec![images::busybox()]);
    push_image(&reg, "private/bb:1", &img);
    let addr = reg.addr();
    let env = Env::new();
    let name = format!("{addr}/private/bb:1");

    let (code, _, err) = env.run(&["pull", &name]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "Error: Get \"http://{addr}/v2/private/bb/manifests/1\": no basic auth credentials\n"
        )
    );

    let (code, out, err) = login(&env, &addr, "alice", "wrong");
    assert_eq!(code, 1, "{out}");
    assert!(
        err.ends_with(&format!(
            "Error: login attempt to http://{addr}/v2/ failed with status: 401 Unauthorized\n"
        )),
        "{err}"
    );
    assert!(
        !env.auth_file().exists(),
        "nothing stored after a failed login"
    );

    let (code, out, err) = login(&env, &addr, "alice", "s3cret");
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "Login Succeeded\n");
    let mode = std::fs::metadata(env.auth_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.auth_file()).unwrap()).unwrap();
    assert_eq!(
        doc["auths"][&addr]["auth"], "YWxpY2U6czNjcmV0",
        "base64(alice:s3cret)"
    );
    assert!(
        !env.dir.path().join("home/.docker").exists(),
        "REGISTRY_AUTH_FILE wins over HOME"
    );

    let out = env.ok(&["pull", &name]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");

    // Wrong stored credentials.
    std::fs::write(
        env.auth_file(),
        format!(r#"{{"auths":{{"{addr}":{{"auth":"YWxpY2U6bm9wZQ=="}}}}}}"#),
    )
    .unwrap();
    let (code, _, err) = env.run(&["pull", &format!("{addr}/private/bb:2")]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unauthorized: incorrect username or password"),
        "{err}"
    );

    let out = env.ok(&["logout", &addr]);
    assert_eq!(out, format!("Removing login credentials for {addr}\n"));
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.auth_file()).unwrap()).unwrap();
    assert!(doc["auths"].get(&addr).is_none());
    assert_eq!(
        env.ok(&["logout", &addr]),
        format!("Not logged in to {addr}\n")
    );
}

#[test]
fn docker_config_json_in_home_is_read() {
    let reg = Registry::start_basic("carol", "pw");
    push_image(&reg, "bb:latest", &images::image(vec![images::busybox()]));
    let env = Env::new();
    let addr = reg.addr();
    let docker = env.dir.path().join("home/.docker");
    std::fs::create_dir_all(&docker).unwrap();
    // base64("carol:pw"), plus an unrelated key that must survive logout.
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"http://{addr}/v2/":{{"auth":"Y2Fyb2w6cHc="}}}},"psFormat":"x"}}"#),
    )
    .unwrap();
    let mut c = env.command(&["pull", &format!("{addr}/bb")]);
    c.env_remove("REGISTRY_AUTH_FILE");
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut c = env.command(&["logout", &addr]);
    c.env_remove("REGISTRY_AUTH_FILE");
    let out = c.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("Removing login credentials for {addr}\n")
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker.join("config.json")).unwrap()).unwrap();
    assert_eq!(doc["psFormat"], "x");
    assert!(doc["auths"].as_object().unwrap().is_empty());
}

#[test]
fn bearer_token_flow_anonymous_and_credentialed() {
    // Anonymous clients may pull.
    let reg = Registry::start_token(&[("bob", "hunter2")], true);
    let img = images::image(vec![
        images::busybox(),
        images::layer(&[("etc/token", b"t")]),
    ]);
    push_image(&reg, "team/app:v1", &img);
    let addr = reg.addr();
    let env = Env::new();
    let out = env.ok(&["pull", &format!("{addr}/team/app:v1")]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let Auth::Token(issuer) = &reg.auth else {
        unreachable!()
    };
    assert!(issuer
        .requests()
        .iter()
        .any(|r| r.user.is_none() && r.scopes.contains(&"repository:team/app:pull".to_string())));

    let (code, _, err) = login(&env, &addr, "bob", "wrong");
    assert_eq!(code, 1);
    assert!(
        err.contains("unauthorized: incorrect username or password"),
        "{err}"
    );
    let (code, out, _) = login(&env, &addr, "bob", "hunter2");
    assert_eq!((code, out.as_str()), (0, "Login Succeeded\n"));
    assert!(issuer
        .requests()
        .iter()
        .any(|r| r.user.as_deref() == Some("bob")));
}

#[test]
fn bearer_without_anonymous_access_is_denied() {
    let reg = Registry::start_token(&[("bob", "hunter2")], false);
    push_image(
        &reg,
        "secret/app:v1",
        &images::image(vec![images::busybox()]),
    );
    let addr = reg.addr();
    let env = Env::new();
    let (code, _, err) = env.run(&["pull", &format!("{addr}/secret/app:v1")]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        format!(
            "Error: pull access denied for {addr}/secret/app, repository does not exist or may require \
             'docker login': denied: requested access to the resource is denied\n"
        )
    );
    assert!(env.store().images().unwrap().is_empty());
    env.ok(&["login", "-u", "bob", "-p", "hunter2", &addr]);
    let out = env.ok(&["pull", &format!("{addr}/secret/app:v1")]);
    assert!(out.ends_with(&format!("{addr}/secret/app:v1\n")), "{out}");
}

#[test]
fn redirected_blobs_do_not_carry_credentials() {
    let reg = Registry::start_basic("alice", "s3cret");
    let cdn = Registry::start();
    let img = images::image(vec![
        images::busybox(),
        images::layer(&[("etc/cdn", b"cdn")]),
    ]);
    push_image(&reg, "r/app:1", &img);
    push_image(&cdn, "r/app:1", &img);
    let cdn_proxy = Proxy::start(&cdn.addr(), Mode::Pass);
    let front = Proxy::start(&reg.addr(), Mode::Redirect(cdn_proxy.addr()));
    let env = Env::new();
    env.ok(&["login", "-u", "alice", "-p", "s3cret", &front.addr()]);
    let out = env.ok(&["pull", &format!("{}/r/app:1", front.addr())]);
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let front_heads = front.heads();
    assert!(
        front_heads.iter().any(|h| h.contains("/manifests/1")
            && h.to_ascii_lowercase().contains("\r\nauthorization: basic ")),
        "credentials go to the registry itself: {front_heads:?}"
    );
    let cdn_heads = cdn_proxy.heads();
    assert!(
        cdn_heads.iter().any(|h| h.contains("/blobs/sha256:")),
        "blobs came from the CDN"
    );
    assert!(
        !cdn_heads
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("\r\nauthorization:")),
        "no credentials sent to another host: {cdn_heads:?}"
    );
}

#[test]
fn credential_helper_stores_gets_and_erases() {
    let reg = Registry::start_basic("dave", "pw2");
    push_image(&reg, "bb:1", &images::image(vec![images::busybox()]));
    let addr = reg.addr();
    let env = Env::new();
    // A real helper executable speaking Docker's protocol, keeping its secret in one file.
    let bin = env.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-strtest");
    std::fs::write(
        &helper,
        "#!/bin/sh\nd=\"$(dirname \"$0\")/secret.json\"\ncase \"$1\" in\n\
         store) cat > \"$d\" ;;\n\
         get) read s; [ -f \"$d\" ] && cat \"$d\" || { echo 'credentials not found in native keychain'; exit 1; } ;;\n\
         erase) read s; rm -f \"$d\" ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(env.auth_file(), r#"{"credsStore":"strtest"}"#).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |args: &[&str]| {
        let out = env.command(args).env("PATH", &path).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["login", "-u", "dave", "-p", "pw2", &addr]);
    assert_eq!((code, out.as_str()), (0, "Login Succeeded\n"), "{err}");
    let secret: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bin.join("secret.json")).unwrap()).unwrap();
    assert_eq!(secret["Username"], "dave");
    assert_eq!(secret["Secret"], "pw2");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.auth_file()).unwrap()).unwrap();
    assert_eq!(
        doc["auths"][&addr],
        serde_json::json!({}),
        "no secret in the file"
    );
    let (code, out, err) = run(&["pull", &format!("{addr}/bb:1")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Status: Downloaded newer image for"), "{out}");
    let (code, out, _) = run(&["logout", &addr]);
    assert_eq!(
        (code, out),
        (0, format!("Removing login credentials for {addr}\n"))
    );
    assert!(
        !bin.join("secret.json").exists(),
        "helper erased the secret"
    );
}

#[test]
fn identity_token_in_the_auth_file_is_used_with_the_oauth2_refresh_flow() {
    // As `az acr login` / Docker SSO leave it: no password, an `identitytoken`.
    let reg = Registry::start_token(&[("bob", "hunter2")], false);
    let img = images::image(vec![images::busybox()]);
    push_image(&reg, "secret/idt:v1", &img);
    let Auth::Token(issuer) = &reg.auth else {
        unreachable!()
    };
    issuer.add_refresh_token("refresh-abc", "bob");
    let pushed = issuer.requests().len();
    let addr = reg.addr();
    let env = Env::new();
    let write_auth = |token: &str| {
        let doc = serde_json::json!({"auths": {addr.clone(): {
            "auth": strata_testkit::registry::token::base64(b"<token>:"),
            "identitytoken": token,
        }}});
        std::fs::write(env.auth_file(), doc.to_string()).unwrap();
    };

    write_auth("not-a-known-token");
    let (code, _, err) = env.run(&["pull", &format!("{addr}/secret/idt:v1")]);
    assert_eq!(code, 1, "{err}");
    assert!(env.store().images().unwrap().is_empty());

    write_auth("refresh-abc");
    let out = env.ok(&["pull", &format!("{addr}/secret/idt:v1")]);
    assert!(out.ends_with(&format!("{addr}/secret/idt:v1\n")), "{out}");
    let reqs = issuer.requests()[pushed..].to_vec();
    assert!(
        reqs.iter()
            .any(|r| r.grant.as_deref() == Some("refresh_token")
                && r.user.as_deref() == Some("bob")
                && r.scopes.contains(&"repository:secret/idt:pull".to_string())),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .all(|r| r.grant.as_deref() == Some("refresh_token")),
        "only OAuth2 refresh-token requests, no Basic-auth GET: {reqs:?}"
    );
}
