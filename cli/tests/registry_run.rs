//! `strata run` of an image that is not in the store pulls it first, as Docker does.

mod registry_common;

use registry_common::*;
use strata_testkit::registry::images;
use strata_testkit::registry::Registry;

#[test]
fn run_pulls_a_missing_image() {
    let reg = Registry::start();
    let img = images::image(vec![images::busybox()]);
    push_image(&reg, "runme:latest", &img);
    let env = Env::new();
    let name = format!("{}/runme", reg.addr());
    let (code, out, err) = env.run(&[
        "--storage-driver",
        "vfs",
        "run",
        "--rm",
        &name,
        "echo",
        "pulled-and-ran",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "pulled-and-ran\n");
    assert!(
        err.starts_with(&format!(
            "Unable to find image '{name}:latest' locally\nlatest: Pulling from runme\n{id}: Pulling fs layer\n\
             {id}: Verifying Checksum\n{id}: Download complete\n{id}: Pull complete\nDigest: {}\n\
             Status: Downloaded newer image for {name}:latest\n",
            img.manifest_digest,
            id = short(&img.layers[0].digest),
        )),
        "{err}"
    );
    assert_eq!(
        env.store().resolve(&name).unwrap().id.to_string(),
        img.config_digest
    );

    // A missing tag: the pull error, exit 125, nothing left behind.
    let (code, _, err) = env.run(&[
        "--storage-driver",
        "vfs",
        "run",
        "--rm",
        &format!("{name}:nope"),
        "true",
    ]);
    assert_eq!(code, 125);
    assert!(
        err.contains(&format!(
            "manifest for {name}:nope not found: manifest unknown: manifest unknown"
        )),
        "{err}"
    );
    assert_eq!(env.store().images().unwrap().len(), 1);
}
