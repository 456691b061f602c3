//! `COPY` and `ADD`: resolve the sources (context, another stage, an image, a heredoc, a URL),
//! decide where each lands, digest what will be written (content, mode, owner — never mtime:
//! that digest is the cache key), and write the layer tar. No container is involved.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::ignore::{clean, glob_match, has_glob, Ignore};
use super::tree::{Node, Tree, TreeError};
use super::{io_at, BuildError};
use crate::digest::Hasher;

/// Numeric owner of copied files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

/// Look a name up in `/etc/passwd` or `/etc/group` text (field 0 = name, field 2 = id).
fn lookup_id(db: &str, name: &str) -> Option<u32> {
    db.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&name)).then(|| f.get(2)?.parse().ok())?
    })
}

/// `--chown=USER[:GROUP]`, names looked up in the image's own `/etc/passwd` and `/etc/group`;
/// no group: the gid is the uid (Docker's rule).
pub fn parse_chown(spec: &str, image: Option<&Tree>) -> Result<Owner, BuildError> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |p: &str| image.map(|t| t.read_small(p)).unwrap_or_default();
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => lookup_id(&read("/etc/passwd"), u).ok_or_else(|| BuildError::Chown {
            what: "uid",
            kind: "user",
            name: u.to_string(),
        })?,
    };
    let gid = match g {
        None => uid,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup_id(&read("/etc/group"), g).ok_or_else(|| BuildError::Chown {
                what: "gid",
                kind: "group",
                name: g.to_string(),
            })?,
        },
    };
    Ok(Owner { uid, gid })
}

/// Where the sources come from.
pub enum Source<'a> {
    /// The build context, with its `.dockerignore` rules.
    Context { tree: &'a Tree, ignore: &'a Ignore },
    /// Another stage's or an image's filesystem (`--from`).
    Image(&'a Tree),
}

/// What one COPY/ADD asks for, variables already expanded.
pub struct CopyRequest<'a> {
    pub instr: &'static str,
    pub srcs: Vec<String>,
    /// Heredoc sources by name, content already expanded.
    pub heredocs: Vec<(String, String)>,
    /// Absolute destination (WORKDIR applied).
    pub dest: String,
    pub source: Source<'a>,
    /// The stage's current filesystem (None: empty scratch).
    pub image: Option<&'a Tree>,
    pub owner: Option<Owner>,
    pub chmod: Option<u32>,
    /// ADD: URLs are downloaded and local archives extracted.
    pub add: bool,
    pub checksum: Option<String>,
    /// Where downloads are kept while the step runs.
    pub tmp: PathBuf,
}

enum Content {
    Dir,
    File(Node),
    Symlink(OsString),
    Bytes(Vec<u8>),
    Download(PathBuf),
    /// A local tar (maybe compressed) extracted under the item's path; entries keep their
    /// owners unless `--chown` gave one.
    Archive(Node, Option<Owner>),
}

struct Item {
    content: Content,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

/// What will be written: entries by path (relative to `/`, parents first) and the digest that
/// names the step in `created_by` and the cache.
pub struct Plan {
    items: BTreeMap<String, Item>,
    /// `file:<hex>`, `dir:<hex>` or `multi:<hex>`.
    pub digest: String,
    /// Temp files of downloads, removed on drop.
    downloads: Vec<PathBuf>,
}

impl Drop for Plan {
    fn drop(&mut self) {
        for d in &self.downloads {
            let _ = std::fs::remove_file(d);
        }
    }
}

impl Plan {
    /// Nothing would be written.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn join(comps: &[OsString]) -> String {
    comps
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn tree_err(instr: &'static str, path: &str, e: TreeError) -> BuildError {
    match e {
        TreeError::Escapes => BuildError::Outside {
            instr,
            path: path.to_string(),
        },
        TreeError::Loop => BuildError::Fs {
            path: path.to_string(),
            source: nix::errno::Errno::ELOOP,
        },
        TreeError::Io(source) => BuildError::Fs {
            path: path.to_string(),
            source,
        },
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// Does the file look like a tar (after gzip/zstd decompression)?
fn is_archive(node: &Node) -> bool {
    // Only regular files are opened (a FIFO in the context would block the build).
    if !node.is_file() {
        return false;
    }
    let Ok(f) = node.open() else { return false };
    let Ok(mut r) = crate::store::decompress(BufReader::new(f)) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(_) => return false,
        }
    }
    if n < 512 {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    // Old (v7) tars: check the header checksum.
    let stored = std::str::from_utf8(&head[148..156])
        .ok()
        .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' '))
        .and_then(|s| u32::from_str_radix(s, 8).ok());
    let sum: u32 = head
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    stored == Some(sum) && head[0] != 0
}

struct Planner<'a> {
    req: &'a CopyRequest<'a>,
    items: BTreeMap<String, Item>,
    hasher: Hasher,
    downloads: Vec<PathBuf>,
}

/// Downloads of a plan that failed are removed with the planner.
impl Drop for Planner<'_> {
    fn drop(&mut self) {
        for d in &self.downloads {
            let _ = std::fs::remove_file(d);
        }
    }
}

impl Planner<'_> {
    /// Copied files belong to root unless `--chown` says otherwise (Docker's rule, also for
    /// `--from`).
    fn owner(&self) -> (u32, u32) {
        self.req.owner.map_or((0, 0), |o| (o.uid, o.gid))
    }

    fn add(&mut self, path: String, item: Item) {
        self.items.insert(path, item);
    }

    /// A source node (already resolved) goes to `dest` (its final path).
    fn node(&mut self, node: &Node, ctx_rel: &[OsString], dest: &str) -> Result<(), BuildError> {
        let instr = self.req.instr;
        let (uid, gid) = self.owner();
        let mtime = node.st.st_mtime.max(0) as u64;
        if node.is_dir() {
            let mode = self.req.chmod.unwrap_or(node.mode());
            if !dest.is_empty() {
                self.add(
                    dest.to_string(),
                    Item {
                        content: Content::Dir,
                        mode,
                        uid,
                        gid,
                        mtime,
                    },
                );
            }
            let tree = self.tree();
            let children = tree
                .list(ctx_rel)
                .map_err(|e| tree_err(instr, &join(ctx_rel), TreeError::Io(e)))?;
            for (name, child) in children {
                let mut rel = ctx_rel.to_vec();
                rel.push(name.clone());
                if self.excluded(&rel) && !self.has_exceptions() {
                    continue;
                }
                let d = if dest.is_empty() {
                    name.to_string_lossy().into_owned()
                } else {
                    format!("{dest}/{}", name.to_string_lossy())
                };
                let before = self.items.len();
                self.node(&child, &rel, &d)?;
                if self.excluded(&rel) && child.is_dir() && self.items.len() == before + 1 {
                    // An excluded directory with nothing re-included below it.
                    self.items.remove(&d);
                } else if self.excluded(&rel) && !child.is_dir() {
                    self.items.remove(&d);
                }
            }
            return Ok(());
        }
        let mode = self.req.chmod.unwrap_or(node.mode());
        let content = if node.is_symlink() {
            let t = node
                .readlink()
                .map_err(|e| tree_err(instr, &join(ctx_rel), TreeError::Io(e)))?;
            Content::Symlink(t)
        } else if node.is_file() {
            if self.req.add && matches!(self.req.source, Source::Context { .. }) && is_archive(node)
            {
                Content::Archive(node.clone(), self.req.owner)
            } else {
                Content::File(node.clone())
            }
        } else {
            // Devices, fifos, sockets are not copied.
            return Ok(());
        };
        self.add(
            dest.to_string(),
            Item {
                content,
                mode,
                uid,
                gid,
                mtime,
            },
        );
        Ok(())
    }

    fn tree(&self) -> &Tree {
        match &self.req.source {
            Source::Context { tree, .. } => tree,
            Source::Image(t) => t,
        }
    }

    fn excluded(&self, rel: &[OsString]) -> bool {
        match &self.req.source {
            Source::Context { ignore, .. } => ignore.excluded(&join(rel)),
            Source::Image(_) => false,
        }
    }

    fn has_exceptions(&self) -> bool {
        match &self.req.source {
            Source::Context { ignore, .. } => ignore.has_exceptions(),
            Source::Image(_) => false,
        }
    }

    /// Paths (context-relative, clean) matching a glob source.
    fn glob(&self, pattern: &str) -> Result<Vec<Vec<OsString>>, BuildError> {
        let parts: Vec<&str> = pattern.split('/').filter(|p| !p.is_empty()).collect();
        let mut found: Vec<Vec<OsString>> = vec![Vec::new()];
        for (i, part) in parts.iter().enumerate() {
            let mut next = Vec::new();
            for base in &found {
                if has_glob(part) {
                    let Ok(list) = self.tree().list(base) else {
                        continue;
                    };
                    for (name, n) in list {
                        if glob_match(part, &name.to_string_lossy())
                            && (i + 1 == parts.len() || n.is_dir() || n.is_symlink())
                        {
                            let mut p = base.clone();
                            p.push(name);
                            next.push(p);
                        }
                    }
                } else {
                    let mut p = base.clone();
                    p.push(OsString::from(part));
                    next.push(p);
                }
            }
            found = next;
        }
        Ok(found
            .into_iter()
            .filter(|p| !self.excluded(p))
            .filter(|p| matches!(self.tree().stat(p), Ok(Some(_))))
            .collect())
    }

    fn download(&mut self, url: &str) -> Result<(PathBuf, String), BuildError> {
        let resp = ureq::get(url)
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .map_err(|e| BuildError::Download {
                url: url.to_string(),
                source: Box::new(e),
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(BuildError::DownloadStatus {
                url: url.to_string(),
                status,
            });
        }
        let path = self.req.tmp.join(format!(
            "{}-{}-add",
            std::process::id(),
            self.downloads.len()
        ));
        self.downloads.push(path.clone());
        let mut f = File::create(&path).map_err(io_at(&path))?;
        let mut h = Hasher::new();
        let mut body = resp.into_body();
        let mut r = body.as_reader();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = r.read(&mut buf).map_err(io_at(&path))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            f.write_all(&buf[..n]).map_err(io_at(&path))?;
        }
        let digest = h.finish().to_string();
        if let Some(want) = &self.req.checksum {
            if *want != digest {
                return Err(BuildError::Checksum {
                    expected: want.clone(),
                    actual: digest,
                });
            }
        }
        let name = url
            .split(['?', '#'])
            .next()
            .unwrap_or("")
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty() && !n.contains(':'))
            .unwrap_or("__unnamed__")
            .to_string();
        Ok((path, name))
    }
}

/// Resolve the sources and decide every entry of the layer.
pub fn plan(req: &CopyRequest<'_>) -> Result<Plan, BuildError> {
    let instr = req.instr;
    let mut p = Planner {
        req,
        items: BTreeMap::new(),
        hasher: Hasher::new(),
        downloads: Vec::new(),
    };
    // The destination, resolved inside the image (its symlinks followed there).
    let dest_slash = req.dest.ends_with('/') || req.dest.ends_with("/.");
    let (dest_comps, dest_node) = match req.image {
        Some(t) => match t
            .resolve(&req.dest, true)
            .map_err(|e| tree_err(instr, &req.dest, e))?
        {
            Some((c, n)) => (c, n),
            None => {
                // A parent is a file: Docker fails the same way (mkdir: not a directory).
                return Err(BuildError::Fs {
                    path: req.dest.clone(),
                    source: nix::errno::Errno::ENOTDIR,
                });
            }
        },
        None => (
            clean(&req.dest)
                .split('/')
                .filter(|c| !c.is_empty() && *c != "..")
                .map(OsString::from)
                .collect(),
            None,
        ),
    };
    let dest = join(&dest_comps);
    let dest_is_dir = dest_slash || dest_node.as_ref().is_some_and(|n| n.is_dir());

    // Sources → (node, context-relative comps) or heredocs / downloads.
    enum Src {
        Node(Node, Vec<OsString>),
        Heredoc(String, String),
        Url(String),
    }
    let mut srcs: Vec<Src> = Vec::new();
    for s in &req.srcs {
        if let Some(name) = s.strip_prefix("<<") {
            let name = name.trim_start_matches('-').trim_matches(['"', '\'']);
            if let Some((n, c)) = req.heredocs.iter().find(|(n, _)| n == name) {
                srcs.push(Src::Heredoc(n.clone(), c.clone()));
                continue;
            }
        }
        if req.add && is_url(s) {
            srcs.push(Src::Url(s.clone()));
            continue;
        }
        let cleaned = clean(s);
        if matches!(req.source, Source::Context { .. }) && cleaned.starts_with("..") {
            return Err(BuildError::Outside {
                instr,
                path: s.clone(),
            });
        }
        let matches = if has_glob(&cleaned) {
            let m = p.glob(&cleaned)?;
            if m.is_empty() {
                return Err(BuildError::NoSources { instr });
            }
            m.into_iter().map(|c| join(&c)).collect()
        } else {
            vec![cleaned.clone()]
        };
        for m in matches {
            let resolved = p
                .tree()
                .resolve(&m, true)
                .map_err(|e| tree_err(instr, s, e))?;
            let not_found = || BuildError::NotFound {
                instr,
                path: s.clone(),
            };
            let Some((comps, Some(node))) = resolved else {
                return Err(not_found());
            };
            if p.excluded(&comps) && !(node.is_dir() && p.has_exceptions()) {
                return Err(not_found());
            }
            srcs.push(Src::Node(node, comps));
        }
    }
    if srcs.len() > 1 && !dest_is_dir {
        return Err(BuildError::MultiDest { instr });
    }
    let kind = match srcs.as_slice() {
        [Src::Node(n, _)] if n.is_dir() => "dir",
        [_] => "file",
        _ => "multi",
    };
    let into = |name: &str| -> String {
        if dest.is_empty() {
            name.to_string()
        } else {
            format!("{dest}/{name}")
        }
    };
    let (cuid, cgid) = p.owner();
    for s in srcs {
        match s {
            Src::Node(node, comps) => {
                let target = if node.is_dir() {
                    dest.clone()
                } else if dest_is_dir || (req.add && is_archive(&node)) {
                    let base = comps
                        .last()
                        .map(|c| c.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if req.add && is_archive(&node) {
                        dest.clone()
                    } else {
                        into(&base)
                    }
                } else {
                    dest.clone()
                };
                if node.is_dir() && dest_node.is_some() {
                    // An existing destination keeps its own metadata.
                    let before: Vec<String> = p.items.keys().cloned().collect();
                    p.node(&node, &comps, &target)?;
                    if !before.contains(&target) {
                        p.items.remove(&target);
                    }
                } else {
                    p.node(&node, &comps, &target)?;
                    if node.is_dir() {
                        // A destination made for a directory's contents is a new directory
                        // like any parent (0755), not a copy of the source's own mode.
                        if let Some(item) = p.items.get_mut(&target) {
                            item.mode = 0o755;
                        }
                    }
                }
            }
            Src::Heredoc(name, content) => {
                let target = if dest_is_dir {
                    into(&name)
                } else {
                    dest.clone()
                };
                p.add(
                    target,
                    Item {
                        content: Content::Bytes(content.into_bytes()),
                        mode: req.chmod.unwrap_or(0o644),
                        uid: cuid,
                        gid: cgid,
                        mtime: now(),
                    },
                );
            }
            Src::Url(url) => {
                let (path, name) = p.download(&url)?;
                let target = if dest_is_dir {
                    into(&name)
                } else {
                    dest.clone()
                };
                p.add(
                    target,
                    Item {
                        content: Content::Download(path),
                        mode: req.chmod.unwrap_or(0o600),
                        uid: cuid,
                        gid: cgid,
                        mtime: now(),
                    },
                );
            }
        }
    }
    // Parent directories: as the image has them, or new (0755, the --chown owner).
    let mut parents: Vec<String> = Vec::new();
    for path in p.items.keys() {
        let comps: Vec<&str> = path.split('/').collect();
        for k in 1..comps.len() {
            parents.push(comps[..k].join("/"));
        }
    }
    for parent in parents {
        if p.items.contains_key(&parent) {
            continue;
        }
        let existing = req.image.and_then(|t| {
            let comps: Vec<OsString> = parent.split('/').map(OsString::from).collect();
            t.stat(&comps).ok().flatten().filter(|n| n.is_dir())
        });
        let item = match existing {
            Some(n) => Item {
                content: Content::Dir,
                mode: n.mode(),
                uid: n.st.st_uid,
                gid: n.st.st_gid,
                mtime: n.st.st_mtime.max(0) as u64,
            },
            None => Item {
                content: Content::Dir,
                mode: 0o755,
                uid: cuid,
                gid: cgid,
                mtime: now(),
            },
        };
        p.items.insert(parent, item);
    }
    // An archive's destination directory is an entry of the layer too: as the image has it,
    // or new (0755, root, as Docker's extraction makes it).
    for (path, item) in p.items.iter_mut() {
        if !matches!(item.content, Content::Archive(..)) {
            continue;
        }
        let comps: Vec<OsString> = path.split('/').map(OsString::from).collect();
        let existing = req
            .image
            .and_then(|t| t.stat(&comps).ok().flatten().filter(|n| n.is_dir()));
        (item.mode, item.uid, item.gid, item.mtime) = match existing {
            Some(n) => (
                n.mode(),
                n.st.st_uid,
                n.st.st_gid,
                n.st.st_mtime.max(0) as u64,
            ),
            None => (0o755, 0, 0, now()),
        };
    }
    // The digest: every entry's path, type, mode, owner and content (not its mtime).
    let mut h = std::mem::take(&mut p.hasher);
    for (path, item) in &p.items {
        h.update(path.as_bytes());
        h.update(format!("\0{:o}\0{}\0{}\0", item.mode, item.uid, item.gid).as_bytes());
        match &item.content {
            Content::Dir => h.update(b"d"),
            Content::Symlink(t) => {
                h.update(b"l");
                h.update(t.as_bytes());
            }
            Content::Bytes(b) => {
                h.update(b"f");
                h.update(b);
            }
            Content::File(n) | Content::Archive(n, _) => {
                h.update(b"f");
                let mut f = n.open().map_err(|e| BuildError::Fs {
                    path: path.clone(),
                    source: e,
                })?;
                hash_reader(&mut f, &mut h).map_err(io_at(path))?;
            }
            Content::Download(d) => {
                h.update(b"f");
                let mut f = File::open(d).map_err(io_at(d))?;
                hash_reader(&mut f, &mut h).map_err(io_at(d))?;
            }
        }
        h.update(b"\n");
    }
    let digest = format!("{kind}:{}", h.finish().hex());
    Ok(Plan {
        items: std::mem::take(&mut p.items),
        digest,
        downloads: std::mem::take(&mut p.downloads),
    })
}

fn hash_reader(r: &mut impl Read, h: &mut Hasher) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        h.update(&buf[..n]);
    }
}

fn header(kind: tar::EntryType, item: &Item, size: u64) -> tar::Header {
    let mut hd = tar::Header::new_gnu();
    hd.set_entry_type(kind);
    hd.set_mode(item.mode);
    hd.set_uid(item.uid as u64);
    hd.set_gid(item.gid as u64);
    hd.set_mtime(item.mtime);
    hd.set_size(size);
    hd
}

/// Write the plan as an uncompressed layer tar.
pub fn write_tar(plan: &Plan, out: impl Write) -> Result<(), BuildError> {
    let mut b = tar::Builder::new(out);
    let tmp = PathBuf::from("layer");
    for (path, item) in &plan.items {
        let io = io_at(&tmp);
        match &item.content {
            Content::Dir => {
                let mut hd = header(tar::EntryType::Directory, item, 0);
                b.append_data(&mut hd, format!("{path}/"), std::io::empty())
                    .map_err(io)?;
            }
            Content::Symlink(t) => {
                let mut hd = header(tar::EntryType::Symlink, item, 0);
                b.append_link(&mut hd, path, std::path::Path::new(t))
                    .map_err(io)?;
            }
            Content::Bytes(bytes) => {
                let mut hd = header(tar::EntryType::Regular, item, bytes.len() as u64);
                b.append_data(&mut hd, path, &bytes[..]).map_err(io)?;
            }
            Content::File(n) => {
                let f = n.open().map_err(|e| BuildError::Fs {
                    path: path.clone(),
                    source: e,
                })?;
                let size = f.metadata().map_err(io_at(path))?.len();
                let mut hd = header(tar::EntryType::Regular, item, size);
                b.append_data(&mut hd, path, f.take(size)).map_err(io)?;
            }
            Content::Download(d) => {
                let f = File::open(d).map_err(io_at(d))?;
                let size = f.metadata().map_err(io_at(d))?.len();
                let mut hd = header(tar::EntryType::Regular, item, size);
                b.append_data(&mut hd, path, f.take(size)).map_err(io)?;
            }
            Content::Archive(n, owner) => {
                if !path.is_empty() {
                    let mut hd = header(tar::EntryType::Directory, item, 0);
                    b.append_data(&mut hd, format!("{path}/"), std::io::empty())
                        .map_err(io)?;
                }
                extract_into(&mut b, n, path, *owner)?
            }
        }
    }
    b.into_inner().map_err(io_at(&tmp))?;
    Ok(())
}

/// Re-emit the entries of a local archive under `dest` (ADD's auto-extraction). Entries that
/// would climb out of `dest` are refused.
fn extract_into<W: Write>(
    b: &mut tar::Builder<W>,
    node: &Node,
    dest: &str,
    owner: Option<Owner>,
) -> Result<(), BuildError> {
    let path = PathBuf::from(dest);
    let f = node.open().map_err(|e| BuildError::Fs {
        path: dest.to_string(),
        source: e,
    })?;
    let r = crate::store::decompress(BufReader::new(f)).map_err(io_at(&path))?;
    let mut ar = tar::Archive::new(r);
    let prefix = |p: &str| -> Result<String, BuildError> {
        let c = clean(p);
        if c.starts_with("..") {
            return Err(BuildError::Outside {
                instr: "ADD",
                path: p.to_string(),
            });
        }
        Ok(match (dest.is_empty(), c.is_empty()) {
            (_, true) => dest.to_string(),
            (true, false) => c,
            (false, false) => format!("{dest}/{c}"),
        })
    };
    // Directories written so far (the destination's own are in the plan).
    let mut dirs: std::collections::HashSet<String> = std::collections::HashSet::new();
    dirs.insert(dest.to_string());
    for e in ar.entries().map_err(io_at(&path))? {
        let mut e = e.map_err(io_at(&path))?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let target = prefix(&name)?;
        if target.is_empty() {
            continue;
        }
        // Parents the archive does not list are created as extraction would: 0755.
        let parts: Vec<&str> = target.split('/').collect();
        for k in 1..parts.len() {
            let parent = parts[..k].join("/");
            if parent.len() <= dest.len() || !dirs.insert(parent.clone()) {
                continue;
            }
            let (uid, gid) = owner.map_or((0, 0), |o| (o.uid as u64, o.gid as u64));
            let mut hd = tar::Header::new_gnu();
            hd.set_entry_type(tar::EntryType::Directory);
            hd.set_mode(0o755);
            hd.set_uid(uid);
            hd.set_gid(gid);
            hd.set_mtime(now());
            hd.set_size(0);
            b.append_data(&mut hd, format!("{parent}/"), std::io::empty())
                .map_err(io_at(&path))?;
        }
        // Extended attributes (PAX `SCHILY.xattr.*`) go along, as Docker's extraction keeps them.
        let kind = e.header().entry_type();
        let emitted = kind.is_file()
            || kind.is_dir()
            || kind.is_symlink()
            || kind.is_hard_link()
            || matches!(
                kind,
                tar::EntryType::Continuous
                    | tar::EntryType::Char
                    | tar::EntryType::Block
                    | tar::EntryType::Fifo
            );
        let mut pax = Vec::new();
        if !emitted {
            continue;
        }
        if let Some(exts) = e.pax_extensions().map_err(io_at(&path))? {
            for x in exts.flatten() {
                if let Ok(k) = x.key() {
                    if k.starts_with("SCHILY.xattr.") {
                        let mut rec = Vec::with_capacity(k.len() + x.value_bytes().len() + 2);
                        rec.extend_from_slice(b" ");
                        rec.extend_from_slice(k.as_bytes());
                        rec.push(b'=');
                        rec.extend_from_slice(x.value_bytes());
                        rec.push(b'\n');
                        pax.extend_from_slice(&pax_record(rec));
                    }
                }
            }
        }
        if !pax.is_empty() {
            let mut hd = tar::Header::new_ustar();
            hd.set_entry_type(tar::EntryType::XHeader);
            hd.set_mode(0o644);
            hd.set_size(pax.len() as u64);
            b.append_data(&mut hd, "PaxHeader", &pax[..])
                .map_err(io_at(&path))?;
        }
        // A fresh header: only what a layer needs, every numeric field well-formed (archives
        // in the wild leave some empty).
        let old = e.header();
        let kind = old.entry_type();
        let mut hd = tar::Header::new_gnu();
        hd.set_entry_type(kind);
        hd.set_mode(old.mode().unwrap_or(0o644) & 0o7777);
        let (uid, gid) = match owner {
            Some(o) => (o.uid as u64, o.gid as u64),
            None => (old.uid().unwrap_or(0), old.gid().unwrap_or(0)),
        };
        hd.set_uid(uid);
        hd.set_gid(gid);
        hd.set_mtime(old.mtime().unwrap_or(0));
        hd.set_size(if kind.is_file() || kind == tar::EntryType::Continuous {
            e.size()
        } else {
            0
        });
        if let (Ok(Some(maj)), Ok(Some(min))) = (old.device_major(), old.device_minor()) {
            let _ = hd.set_device_major(maj);
            let _ = hd.set_device_minor(min);
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let link = e
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            let link = if kind.is_hard_link() {
                prefix(&link)?
            } else {
                link
            };
            b.append_link(&mut hd, &target, &link)
                .map_err(io_at(&path))?;
        } else if kind.is_dir() {
            dirs.insert(target.clone());
            b.append_data(&mut hd, format!("{target}/"), std::io::empty())
                .map_err(io_at(&path))?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let size = e.size();
            b.append_data(&mut hd, &target, (&mut e).take(size))
                .map_err(io_at(&path))?;
        } else if matches!(
            kind,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
        ) {
            b.append_data(&mut hd, &target, std::io::empty())
                .map_err(io_at(&path))?;
        }
        // PAX/GNU metadata entries are consumed by the reader.
    }
    Ok(())
}

/// A PAX record from " key=value\n": its decimal length (counting itself) in front.
fn pax_record(rest: Vec<u8>) -> Vec<u8> {
    let mut len = rest.len() + 1;
    while len.to_string().len() + rest.len() != len {
        len += 1;
    }
    let mut out = len.to_string().into_bytes();
    out.extend_from_slice(&rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ctx() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("dir/sub")).unwrap();
        std::fs::write(d.path().join("dir/sub/x"), "x").unwrap();
        std::fs::write(d.path().join("dir/y.log"), "y").unwrap();
        std::fs::write(d.path().join("a.conf"), "a").unwrap();
        std::fs::write(d.path().join("b.conf"), "b").unwrap();
        d
    }

    fn image() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::create_dir_all(d.path().join("srv")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/:/bin/sh\nweb:x:33:33::/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nwww:x:44:\n").unwrap();
        std::os::unix::fs::symlink("/srv", d.path().join("link")).unwrap();
        d
    }

    fn paths(srcs: &[&str], dest: &str, ignore: &str) -> Result<Vec<String>, BuildError> {
        let c = ctx();
        let i = image();
        let ctx_tree = Tree::context(c.path()).unwrap();
        let img_tree = Tree::image(&[i.path().to_path_buf()]).unwrap();
        let ignore = Ignore::parse(ignore);
        let req = CopyRequest {
            instr: "COPY",
            srcs: srcs.iter().map(|s| s.to_string()).collect(),
            heredocs: Vec::new(),
            dest: dest.to_string(),
            source: Source::Context {
                tree: &ctx_tree,
                ignore: &ignore,
            },
            image: Some(&img_tree),
            owner: None,
            chmod: None,
            add: false,
            checksum: None,
            tmp: std::env::temp_dir(),
        };
        Ok(plan(&req)?.items.keys().cloned().collect())
    }

    #[test]
    fn destinations() {
        // A file to a path: that path; to an existing dir or a `/`-ended path: inside it.
        assert_eq!(paths(&["a.conf"], "/new", "").unwrap(), ["new"]);
        assert_eq!(
            paths(&["a.conf"], "/srv", "").unwrap(),
            ["srv", "srv/a.conf"]
        );
        assert_eq!(
            paths(&["a.conf"], "/x/y/", "").unwrap(),
            ["x", "x/y", "x/y/a.conf"]
        );
        // A directory's contents, not the directory.
        assert_eq!(
            paths(&["dir"], "/d", "").unwrap(),
            ["d", "d/sub", "d/sub/x", "d/y.log"]
        );
        // Globs; .dockerignore; symlinks of the image followed for the destination.
        assert_eq!(
            paths(&["*.conf"], "/c/", "b.conf").unwrap(),
            ["c", "c/a.conf"]
        );
        assert_eq!(
            paths(&["dir"], "/d", "**/*.log").unwrap(),
            ["d", "d/sub", "d/sub/x"]
        );
        assert_eq!(
            paths(&["a.conf"], "/link/", "").unwrap(),
            ["srv", "srv/a.conf"]
        );
        // Errors, in Docker's words.
        assert!(matches!(
            paths(&["a.conf", "b.conf"], "/f", ""),
            Err(BuildError::MultiDest { .. })
        ));
        assert!(matches!(
            paths(&["dir/y.log"], "/f", "*/*.log"),
            Err(BuildError::NotFound { .. })
        ));
        assert!(matches!(
            paths(&["../a"], "/f", ""),
            Err(BuildError::Outside { .. })
        ));
        assert!(matches!(
            paths(&["*.none"], "/f/", ""),
            Err(BuildError::NoSources { .. })
        ));
    }

    #[test]
    fn chown_from_the_image() {
        let i = image();
        let t = Tree::image(&[i.path().to_path_buf()]).unwrap();
        assert_eq!(
            parse_chown("web", Some(&t)).unwrap(),
            Owner { uid: 33, gid: 33 }
        );
        assert_eq!(
            parse_chown("web:www", Some(&t)).unwrap(),
            Owner { uid: 33, gid: 44 }
        );
        assert_eq!(parse_chown("7:8", None).unwrap(), Owner { uid: 7, gid: 8 });
        assert!(parse_chown("nobody", Some(&t)).is_err());
        assert!(parse_chown("web:nogroup", Some(&t)).is_err());
    }

    #[test]
    fn digest_ignores_mtime_but_not_content_or_mode() {
        let c = ctx();
        let digest = |c: &Path| {
            let t = Tree::context(c).unwrap();
            let ig = Ignore::default();
            let req = CopyRequest {
                instr: "COPY",
                srcs: vec!["dir".into()],
                heredocs: Vec::new(),
                dest: "/d".into(),
                source: Source::Context {
                    tree: &t,
                    ignore: &ig,
                },
                image: None,
                owner: None,
                chmod: None,
                add: false,
                checksum: None,
                tmp: std::env::temp_dir(),
            };
            plan(&req).unwrap().digest.clone()
        };
        let first = digest(c.path());
        assert!(first.starts_with("dir:"));
        let f = std::fs::File::options()
            .write(true)
            .open(c.path().join("dir/sub/x"))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
        drop(f);
        assert_eq!(digest(c.path()), first);
        std::fs::set_permissions(
            c.path().join("dir/sub/x"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        let moded = digest(c.path());
        assert_ne!(moded, first);
        std::fs::write(c.path().join("dir/sub/x"), "changed").unwrap();
        assert_ne!(digest(c.path()), moded);
    }
}
