//! `strata cp [-a] [-L] CONTAINER:SRC DEST|-` and `strata cp [-a] [-L] SRC|- CONTAINER:DEST`.
//!
//! Every container path is resolved inside the container's root (`openat2` `RESOLVE_IN_ROOT`,
//! trees read fd-relative: `strata_runtime::container::copy`), on the running container's
//! mount or, for a stopped one, on a mount made for the copy. Host paths are the user's own.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use strata_runtime::container::copy::{self, PathKind};
use strata_runtime::outfile::OutputFile;

use super::Global;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short = 'q', long)]
    pub quiet: bool,
    pub source: String,
    pub destination: String,
}

/// Docker's `splitCpArg`: `CONTAINER:PATH`, unless the argument is an absolute or `.`-relative
/// local path.
fn split(arg: &str) -> Option<(&str, &str)> {
    if arg.starts_with('/') || arg.starts_with('.') {
        return None;
    }
    arg.split_once(':')
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    match (split(&args.source), split(&args.destination)) {
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("must specify at least one container source"),
        (Some((c, p)), None) => from_container(global, &args, c, p),
        (None, Some((c, p))) => to_container(global, &args, c, p),
    }
}

fn done(args: &Args, bytes: u64, to: &str) {
    if !args.quiet {
        eprintln!(
            "Successfully copied {} to {to}",
            units::human_size_prec(bytes as f64, 3)
        );
    }
}

/// Counts what goes through it.
struct Counted<W: Write> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn from_container(global: &Global, args: &Args, name: &str, src: &str) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(name)?;
    let dest = args.destination.as_str();
    if dest == "-" {
        let mut out = std::io::stdout().lock();
        rt.with_rootfs(&c, |root| {
            copy::tar_path(root, name, src, args.follow_link, None, &mut out)
        })??;
        out.flush()?;
        return Ok(());
    }
    let dest_path = PathBuf::from(dest);
    let contents_only = src.ends_with("/.");
    let bytes = rt.with_rootfs(&c, |root| -> anyhow::Result<u64> {
        let kind = copy::kind_in_root(root, src)?;
        if kind == PathKind::Missing {
            bail!("Could not find the file {src} in container {name}");
        }
        let src_is_dir = kind == PathKind::Dir;
        let (target_dir, entry_name): (PathBuf, Option<Vec<u8>>) =
            match std::fs::metadata(&dest_path) {
                Ok(m) if m.is_dir() => {
                    (dest_path.clone(), (!contents_only).then(|| base_name(src)))
                }
                Ok(_) if src_is_dir => bail!("cannot copy a directory to a file: {dest}"),
                Ok(_) => (parent(&dest_path), Some(file_name(&dest_path)?)),
                Err(_) if dest.ends_with('/') && !src_is_dir => {
                    bail!("destination directory {dest} must exist")
                }
                Err(_) => {
                    let p = parent(&dest_path);
                    if !p.is_dir() {
                        bail!("invalid output path: directory {:?} does not exist", p);
                    }
                    (p, Some(file_name(&dest_path)?))
                }
            };
        if !src_is_dir && copy::is_regular_in_root(root, src, args.follow_link) {
            // One regular file: written through `OutputFile` (validated target, temp + rename).
            let target = target_dir.join(std::ffi::OsStr::from_bytes(
                entry_name.as_deref().unwrap_or(b"out"),
            ));
            let mut out = OutputFile::create(&target, 0o644)?;
            let mut counted = Counted {
                inner: Vec::new(),
                n: 0,
            };
            copy::tar_path(
                root,
                name,
                src,
                args.follow_link,
                entry_name.as_deref(),
                &mut counted,
            )?;
            let mut ar = tar::Archive::new(&counted.inner[..]);
            let mut entries = ar.entries()?;
            if let Some(e) = entries.next() {
                let mut e = e?;
                let mode = e.header().mode().unwrap_or(0o644);
                std::io::copy(&mut e, out.file())?;
                use std::os::unix::fs::PermissionsExt;
                out.file()
                    .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
            }
            out.commit()?;
            return Ok(counted.n);
        }
        // A tree (or a symlink/special file): streamed through a pipe into the tar reader.
        let (r, w) = nix::unistd::pipe().context("pipe")?;
        let mut n = 0;
        std::thread::scope(|s| -> anyhow::Result<()> {
            let writer = s.spawn(|| {
                let mut out = Counted {
                    inner: std::fs::File::from(w),
                    n: 0,
                };
                let res = copy::tar_path(
                    root,
                    name,
                    src,
                    args.follow_link,
                    entry_name.as_deref(),
                    &mut out,
                );
                (res, out.n)
            });
            let mut ar = tar::Archive::new(std::fs::File::from(r));
            ar.set_preserve_permissions(true);
            ar.set_preserve_mtime(true);
            let unpacked = ar.unpack(&target_dir);
            drop(ar);
            let (res, count) = writer
                .join()
                .map_err(|_| anyhow::anyhow!("copy thread panicked"))?;
            res?;
            unpacked.with_context(|| format!("extracting into {}", target_dir.display()))?;
            n = count;
            Ok(())
        })?;
        Ok(n)
    })??;
    done(args, bytes, dest);
    Ok(())
}

fn base_name(container_path: &str) -> Vec<u8> {
    let t = container_path.trim_end_matches('/');
    t.rsplit('/')
        .next()
        .filter(|s| !s.is_empty())
        .unwrap_or(".")
        .as_bytes()
        .to_vec()
}

fn parent(p: &Path) -> PathBuf {
    match p.parent() {
        Some(q) if !q.as_os_str().is_empty() => q.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn file_name(p: &Path) -> anyhow::Result<Vec<u8>> {
    p.file_name()
        .map(|n| n.as_bytes().to_vec())
        .with_context(|| format!("invalid destination path: {}", p.display()))
}

fn to_container(global: &Global, args: &Args, name: &str, dest: &str) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(name)?;
    let src = args.source.as_str();
    let bytes = rt.with_rootfs(&c, |root| -> anyhow::Result<u64> {
        let kind = copy::kind_in_root(root, dest)?;
        if src == "-" {
            if kind != PathKind::Dir {
                bail!("destination \"{name}:{dest}\" must be a directory");
            }
            return Ok(copy::extract(
                root,
                dest,
                std::io::stdin().lock(),
                args.archive,
            )?);
        }
        let meta = if args.follow_link {
            std::fs::metadata(src)
        } else {
            std::fs::symlink_metadata(src)
        }
        .with_context(|| format!("stat {src}: no such file or directory"))?;
        let contents_only = src.ends_with("/.");
        let (into, entry): (String, Option<Vec<u8>>) = match kind {
            PathKind::Dir => (dest.to_string(), (!contents_only).then(|| base_name(src))),
            PathKind::Other if meta.is_dir() => {
                bail!("cannot copy a directory to a file: {name}:{dest}")
            }
            _ => {
                let (p, n) = dest
                    .trim_end_matches('/')
                    .rsplit_once('/')
                    .unwrap_or(("", dest));
                if kind == PathKind::Missing && dest.ends_with('/') && !meta.is_dir() {
                    bail!("destination directory {name}:{dest} must exist");
                }
                if copy::kind_in_root(root, if p.is_empty() { "/" } else { p })? != PathKind::Dir {
                    bail!("Could not find the file {p} in container {name}");
                }
                (p.to_string(), Some(n.as_bytes().to_vec()))
            }
        };
        let (r, w) = nix::unistd::pipe().context("pipe")?;
        let follow = args.follow_link;
        std::thread::scope(|s| -> anyhow::Result<u64> {
            let writer = s.spawn(move || {
                host_tar(
                    Path::new(src),
                    entry,
                    meta.is_dir(),
                    follow,
                    std::fs::File::from(w),
                )
            });
            let got = copy::extract(root, &into, std::fs::File::from(r), args.archive);
            let wrote = writer
                .join()
                .map_err(|_| anyhow::anyhow!("copy thread panicked"))?;
            wrote?;
            Ok(got?)
        })
    })??;
    done(args, bytes, &args.destination);
    Ok(())
}

/// A tar of the host path `src` (entries named `entry/…`; `None`: its contents).
fn host_tar(
    src: &Path,
    entry: Option<Vec<u8>>,
    is_dir: bool,
    follow: bool,
    out: std::fs::File,
) -> anyhow::Result<()> {
    let mut b = tar::Builder::new(out);
    b.follow_symlinks(follow);
    match (&entry, is_dir) {
        (Some(n), true) => b.append_dir_all(std::ffi::OsStr::from_bytes(n), src)?,
        (Some(n), false) => b.append_path_with_name(src, std::ffi::OsStr::from_bytes(n))?,
        (None, _) => {
            for e in std::fs::read_dir(src)? {
                let e = e?;
                let p = e.path();
                if e.file_type()?.is_dir() {
                    b.append_dir_all(e.file_name(), &p)?;
                } else {
                    b.append_path_with_name(&p, e.file_name())?;
                }
            }
        }
    }
    b.into_inner()?.flush()?;
    Ok(())
}
