//! Image fixtures built locally, no network: a busybox rootfs from Debian's `busybox-static`,
//! layer tars built entry by entry (whiteouts, opaque dirs, hard links, hostile entries), and
//! docker-archive tars (legacy `docker save` layout) ready for `strata load -i`.
//!
//! ```ignore
//! let dir = tempfile::tempdir()?;
//! let archive = dir.path().join("busybox.tar");
//! let id = fixtures::busybox_archive(&archive, "busybox:latest")?;   // "sha256:…"
//! // strata --root R load -i archive  →  "Loaded image: busybox:latest"
//! ```

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// Fixed mtime of fixture entries, so fixture tars (and image IDs) are reproducible.
pub const FIXTURE_MTIME: u64 = 1_700_000_000;

/// Applets linked to `/bin/busybox` in [`busybox_rootfs`].
pub const APPLETS: &[&str] = &[
    "sh",
    "ash",
    "ls",
    "cat",
    "echo",
    "httpd",
    "wget",
    "sleep",
    "id",
    "mkdir",
    "rm",
    "rmdir",
    "touch",
    "ps",
    "env",
    "true",
    "false",
    "grep",
    "sed",
    "head",
    "tail",
    "hostname",
    "mount",
    "umount",
    "chmod",
    "chown",
    "ln",
    "cp",
    "mv",
    "pwd",
    "kill",
    "date",
    "uname",
    "whoami",
    "nc",
    "sync",
    "test",
    "[",
    "find",
    "wc",
    "tee",
    "printf",
    "stat",
    "readlink",
    "seq",
    "dd",
    "du",
    "df",
    "mknod",
    "top",
    "vi",
    "which",
    "xargs",
    "yes",
    "sort",
    "uniq",
    "cut",
    "tr",
    "md5sum",
    "sha256sum",
    "basename",
    "dirname",
    "expr",
    "ping",
    "ip",
    "ifconfig",
    "netstat",
    "hexdump",
    "stty",
    "tty",
    "usleep",
    "nohup",
    "timeout",
    "pidof",
    "killall",
    "ln",
    "getty",
    "init",
];

/// The index page of the fixture's `/www`.
pub const INDEX_HTML: &str = "<html><body><h1>hello from strata</h1></body></html>\n";

/// sha256 of `b` as `sha256:<hex>`.
pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// Build a minimal busybox root filesystem in `dir` (which must exist).
pub fn busybox_rootfs(dir: &Path) -> io::Result<()> {
    for d in [
        "bin", "dev", "etc", "proc", "sys", "root", "tmp", "www", "home", "usr/bin", "usr/sbin",
        "var/log", "var/www",
    ] {
        fs::create_dir_all(dir.join(d))?;
    }
    fs::copy("/bin/busybox", dir.join("bin/busybox"))?;
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755))?;
    let mut seen = std::collections::BTreeSet::new();
    for a in APPLETS {
        if seen.insert(*a) {
            symlink("busybox", dir.join("bin").join(a))?;
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    fs::write(
        dir.join("etc/motd"),
        "welcome to the strata busybox fixture\n",
    )?;
    fs::write(dir.join("www/index.html"), INDEX_HTML)?;
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Builds an uncompressed layer tar entry by entry. All entries are owned by root, mtime
/// [`FIXTURE_MTIME`], unless said otherwise. Paths are written exactly as given (so hostile
/// archives can be built too).
pub struct LayerTar {
    b: tar::Builder<Vec<u8>>,
}

impl Default for LayerTar {
    fn default() -> Self {
        Self::new()
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(FIXTURE_MTIME);
    h.set_size(size);
    h
}

/// Write `path` into the header's name field without the tar crate's safety checks (so
/// `../x` and `/x` can be produced for hostile fixtures).
fn raw_name(h: &mut tar::Header, path: &str) {
    let name = &mut h.as_old_mut().name;
    name.fill(0);
    let b = path.as_bytes();
    name[..b.len().min(100)].copy_from_slice(&b[..b.len().min(100)]);
}

fn raw_link(h: &mut tar::Header, target: &str) {
    let name = &mut h.as_old_mut().linkname;
    name.fill(0);
    let b = target.as_bytes();
    name[..b.len().min(100)].copy_from_slice(&b[..b.len().min(100)]);
}

impl LayerTar {
    pub fn new() -> LayerTar {
        LayerTar {
            b: tar::Builder::new(Vec::new()),
        }
    }

    fn append(&mut self, mut h: tar::Header, path: &str, data: &[u8]) -> &mut Self {
        raw_name(&mut h, path);
        h.set_cksum();
        self.b.append(&h, data).expect("append to in-memory tar");
        self
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> &mut Self {
        self.append(header(tar::EntryType::Directory, mode, 0), path, b"")
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> &mut Self {
        self.append(
            header(tar::EntryType::Regular, mode, data.len() as u64),
            path,
            data,
        )
    }

    pub fn file_owned(
        &mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> &mut Self {
        let mut h = header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.append(h, path, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        raw_link(&mut h, target);
        self.append(h, path, b"")
    }

    pub fn hardlink(&mut self, path: &str, target: &str) -> &mut Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        raw_link(&mut h, target);
        self.append(h, path, b"")
    }

    pub fn fifo(&mut self, path: &str) -> &mut Self {
        self.append(header(tar::EntryType::Fifo, 0o644, 0), path, b"")
    }

    /// A character (`block == false`) or block device node `major:minor`, mode 0666.
    pub fn device(&mut self, path: &str, block: bool, major: u32, minor: u32) -> &mut Self {
        let kind = if block {
            tar::EntryType::Block
        } else {
            tar::EntryType::Char
        };
        let mut h = header(kind, 0o666, 0);
        h.set_device_major(major).expect("ustar header");
        h.set_device_minor(minor).expect("ustar header");
        self.append(h, path, b"")
    }

    /// `dir/.wh.name`: deletes `dir/name` of lower layers.
    pub fn whiteout(&mut self, path: &str) -> &mut Self {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), b"", 0o644)
    }

    /// `dir/.wh..wh..opq`: hides every lower child of `dir`.
    pub fn opaque(&mut self, dir: &str) -> &mut Self {
        self.file(
            &format!("{}/.wh..wh..opq", dir.trim_end_matches('/')),
            b"",
            0o644,
        )
    }

    /// Finish: the tar bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.b.into_inner().expect("finish in-memory tar")
    }
}

/// An uncompressed layer tar of the tree at `dir`: entries in lexical order, relative names,
/// real modes and owners, mtime [`FIXTURE_MTIME`].
pub fn tar_of_dir(dir: &Path) -> io::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    add_tree(&mut b, dir, "")?;
    b.into_inner()
}

fn add_tree(b: &mut tar::Builder<Vec<u8>>, base: &Path, rel: &str) -> io::Result<()> {
    let abs = if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    };
    let mut names: Vec<_> = fs::read_dir(&abs)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for n in names {
        let r = if rel.is_empty() {
            n.clone()
        } else {
            format!("{rel}/{n}")
        };
        let p = base.join(&r);
        let m = fs::symlink_metadata(&p)?;
        let ft = m.file_type();
        let mode = m.mode() & 0o7777;
        let mut h = if ft.is_dir() {
            header(tar::EntryType::Directory, mode, 0)
        } else if ft.is_symlink() {
            header(tar::EntryType::Symlink, mode, 0)
        } else {
            header(tar::EntryType::Regular, mode, m.len())
        };
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        if ft.is_dir() {
            b.append_data(&mut h, format!("{r}/"), io::empty())?;
            add_tree(b, base, &r)?;
        } else if ft.is_symlink() {
            let t = fs::read_link(&p)?;
            b.append_link(&mut h, &r, t)?;
        } else {
            b.append_data(&mut h, &r, fs::File::open(&p)?)?;
        }
    }
    Ok(())
}

/// gzip `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

/// One image of a docker-archive.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// e.g. `["busybox:latest"]`; may be empty.
    pub repo_tags: Vec<String>,
    /// Layer tars, base first. Uncompressed as `docker save` writes them (gzip also loads).
    pub layers: Vec<Vec<u8>>,
    /// Config JSON; `rootfs` and (if absent) `history` are filled in from `layers`.
    pub config: Value,
}

impl ImageSpec {
    /// A spec with the default busybox-like config (`Cmd: ["sh"]`, PATH set, created
    /// 2024-01-01).
    pub fn new(repo_tags: &[&str], layers: Vec<Vec<u8>>) -> ImageSpec {
        ImageSpec {
            repo_tags: repo_tags.iter().map(|s| s.to_string()).collect(),
            layers,
            config: default_config(),
        }
    }

    /// Config bytes exactly as written to the archive; their sha256 is the image ID.
    pub fn config_bytes(&self) -> Vec<u8> {
        let mut c = self.config.clone();
        let diff_ids: Vec<String> = self
            .layers
            .iter()
            .map(|l| sha256(&uncompressed(l)))
            .collect();
        c["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
        if c.get("history").is_none() {
            let created = c
                .get("created")
                .cloned()
                .unwrap_or(json!("2024-01-01T00:00:00Z"));
            let h: Vec<Value> = (0..self.layers.len())
                .map(|i| json!({"created": created, "created_by": format!("/bin/sh -c #(nop) ADD layer {i} in / ")}))
                .collect();
            c["history"] = Value::Array(h);
        }
        serde_json::to_vec(&c).expect("serialize config")
    }

    /// `sha256:<hex>` of the config.
    pub fn image_id(&self) -> String {
        sha256(&self.config_bytes())
    }
}

fn uncompressed(l: &[u8]) -> Vec<u8> {
    if l.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(l), &mut out).expect("gunzip");
        out
    } else {
        l.to_vec()
    }
}

pub fn default_config() -> Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"]
        }
    })
}

fn tar_add(b: &mut tar::Builder<fs::File>, path: &str, data: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
    b.append_data(&mut h, path, data)
}

/// Write a docker-archive (legacy `docker save` layout: `manifest.json`, `repositories`,
/// `<id>.json`, `<v1id>/layer.tar`) holding `images`. Returns their image IDs.
pub fn write_docker_archive(path: &Path, images: &[ImageSpec]) -> io::Result<Vec<String>> {
    let mut b = tar::Builder::new(fs::File::create(path)?);
    let mut manifest = Vec::new();
    let mut repositories = serde_json::Map::new();
    let mut written = std::collections::BTreeSet::new();
    let mut ids = Vec::new();
    for img in images {
        let config = img.config_bytes();
        let id = sha256(&config);
        let idhex = id.trim_start_matches("sha256:").to_string();
        if written.insert(format!("{idhex}.json")) {
            tar_add(&mut b, &format!("{idhex}.json"), &config)?;
        }
        let mut layer_paths = Vec::new();
        let mut chain = String::new();
        let mut parent_v1: Option<String> = None;
        for l in &img.layers {
            let diff = sha256(&uncompressed(l));
            chain = if chain.is_empty() {
                diff
            } else {
                sha256(format!("{chain} {diff}").as_bytes())
            };
            let v1 = chain.trim_start_matches("sha256:").to_string();
            if written.insert(v1.clone()) {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                b.append_data(&mut h, format!("{v1}/"), io::empty())?;
                tar_add(&mut b, &format!("{v1}/VERSION"), b"1.0")?;
                let j = json!({"id": v1, "parent": parent_v1});
                tar_add(&mut b, &format!("{v1}/json"), j.to_string().as_bytes())?;
                tar_add(&mut b, &format!("{v1}/layer.tar"), l)?;
            }
            layer_paths.push(format!("{v1}/layer.tar"));
            parent_v1 = Some(v1);
        }
        for t in &img.repo_tags {
            let (name, tag) = t.rsplit_once(':').unwrap_or((t, "latest"));
            let e = repositories.entry(name.to_string()).or_insert(json!({}));
            e[tag] = json!(parent_v1.clone().unwrap_or_default());
        }
        manifest.push(json!({"Config": format!("{idhex}.json"), "RepoTags": img.repo_tags, "Layers": layer_paths}));
        ids.push(id);
    }
    tar_add(
        &mut b,
        "manifest.json",
        serde_json::to_string(&manifest)?.as_bytes(),
    )?;
    tar_add(
        &mut b,
        "repositories",
        Value::Object(repositories).to_string().as_bytes(),
    )?;
    b.into_inner()?.sync_all()?;
    Ok(ids)
}

/// The busybox layer tar: [`busybox_rootfs`] built in a temp dir and archived.
pub fn busybox_layer() -> io::Result<Vec<u8>> {
    let tmp = tempfile::tempdir()?;
    busybox_rootfs(tmp.path())?;
    tar_of_dir(tmp.path())
}

/// A one-layer busybox docker-archive tagged `tag`. Returns the image ID.
pub fn busybox_archive(path: &Path, tag: &str) -> io::Result<String> {
    let spec = ImageSpec::new(&[tag], vec![busybox_layer()?]);
    Ok(write_docker_archive(path, &[spec])?.remove(0))
}

/// A two-layer image: busybox plus a layer that whiteouts `/etc/motd`, makes `/home` opaque
/// with a new file, adds a hard-linked pair and overrides `/www/index.html`.
pub fn layered_spec(tag: &str) -> io::Result<ImageSpec> {
    let mut top = LayerTar::new();
    top.whiteout("etc/motd")
        .dir("home/", 0o755)
        .opaque("home")
        .file("home/new", b"new\n", 0o644)
        .dir("data/", 0o755)
        .file("data/a", b"shared content\n", 0o644)
        .hardlink("data/b", "data/a")
        .file("www/index.html", b"<h1>v2</h1>\n", 0o644);
    let mut spec = ImageSpec::new(&[tag], vec![busybox_layer()?, top.into_bytes()]);
    spec.config["created"] = json!("2024-02-01T00:00:00Z");
    Ok(spec)
}
