//! Helpers for the core's unit tests: a temporary layer stack.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use crate::format::Flavour;
use crate::unionfs::{Fs, FsConfig};

pub(crate) struct Stack {
    pub dir: tempfile::TempDir,
    pub lowers: usize,
}

impl Stack {
    /// Upper is layer 0; lowers are 1..=n (top first).
    pub fn new(lowers: usize) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..=lowers {
            std::fs::create_dir(dir.path().join(format!("l{i}"))).unwrap();
        }
        std::fs::create_dir(dir.path().join("work")).unwrap();
        Stack { dir, lowers }
    }
    pub fn layer(&self, l: usize) -> PathBuf {
        self.dir.path().join(format!("l{l}"))
    }
    pub fn upper(&self) -> PathBuf {
        self.layer(0)
    }
    pub fn path(&self, l: usize, rel: &str) -> PathBuf {
        self.layer(l).join(rel)
    }
    pub fn write(&self, l: usize, rel: &str, data: &str) {
        std::fs::write(self.path(l, rel), data).unwrap();
    }
    pub fn mkdir(&self, l: usize, rel: &str) {
        std::fs::create_dir_all(self.path(l, rel)).unwrap();
    }
    pub fn whiteout(&self, l: usize, rel: &str) {
        nix::sys::stat::mknod(
            &self.path(l, rel),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
    }
    pub fn opaque(&self, l: usize, rel: &str) {
        let f = std::fs::File::open(self.path(l, rel)).unwrap();
        crate::at::lsetxattr(
            f.as_fd(),
            OsStr::new(""),
            OsStr::new("trusted.overlay.opaque"),
            b"y",
            0,
        )
        .unwrap();
    }
    pub fn fs(&self) -> Fs {
        self.fs_with(Flavour::Trusted)
    }
    /// A core whose lower files' data `d` supplies.
    pub fn fs_lazy(&self, d: std::sync::Arc<dyn crate::unionfs::LowerData>) -> Fs {
        self.build(Flavour::Trusted, Some(d))
    }
    /// A core writing the format in `flavour`.
    pub fn fs_with(&self, flavour: Flavour) -> Fs {
        self.build(flavour, None)
    }
    fn build(
        &self,
        flavour: Flavour,
        lower_data: Option<std::sync::Arc<dyn crate::unionfs::LowerData>>,
    ) -> Fs {
        let open = |p: &Path| -> std::os::fd::OwnedFd { std::fs::File::open(p).unwrap().into() };
        Fs::new(FsConfig {
            lowers: (1..=self.lowers).map(|l| open(&self.layer(l))).collect(),
            upper: Some(open(&self.upper())),
            work: Some(open(&self.dir.path().join("work"))),
            fsync_copyup: false,
            flavour,
            lower_data,
        })
        .unwrap()
    }
}
