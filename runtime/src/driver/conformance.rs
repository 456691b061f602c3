//! One conformance suite, run against every storage driver: each case builds real layer dirs in
//! a temp dir, mounts them with the driver (as root), and checks the merged view.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::stat::{mknod, Mode, SFlag};

use super::{by_name, is_mountpoint, Layers, Mounted};

struct Bed {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    lowers: Vec<PathBuf>,
}

impl Bed {
    fn new() -> Bed {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        for d in ["upper", "work", "merged"] {
            fs::create_dir(base.join(d)).unwrap();
        }
        Bed {
            _tmp: tmp,
            base,
            lowers: Vec::new(),
        }
    }

    /// Add a layer on top of the others and return its dir.
    fn layer(&mut self) -> PathBuf {
        let dir = self.base.join(format!("l{}", self.lowers.len()));
        fs::create_dir(&dir).unwrap();
        self.lowers.insert(0, dir.clone());
        dir
    }

    fn layers(&self) -> Layers {
        Layers {
            lowers: self.lowers.clone(),
            upper: self.base.join("upper"),
            work: self.base.join("work"),
        }
    }

    fn mount(&self, driver: &str) -> Box<dyn Mounted> {
        let d = by_name(driver).unwrap();
        d.mount(&self.layers(), &self.merged()).unwrap()
    }

    fn merged(&self) -> PathBuf {
        self.base.join("merged")
    }
}

fn write(p: &Path, s: &str) {
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(p, s).unwrap();
}

fn whiteout(p: &Path) {
    mknod(p, SFlag::S_IFCHR, Mode::from_bits_truncate(0), 0).unwrap();
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn create(driver: &str) {
    let mut bed = Bed::new();
    write(&bed.layer().join("etc/base"), "base");
    {
        let m = bed.mount(driver);
        write(&m.path().join("etc/new"), "new");
        fs::create_dir(m.path().join("newdir")).unwrap();
        assert_eq!(fs::read_to_string(m.path().join("etc/new")).unwrap(), "new");
    }
    assert!(!is_mountpoint(&bed.merged()));
    let m = bed.mount(driver);
    assert_eq!(fs::read_to_string(m.path().join("etc/new")).unwrap(), "new");
    assert!(m.path().join("newdir").is_dir());
    assert_eq!(listing(&m.path().join("etc")), ["base", "new"]);
}

fn read_through(driver: &str) {
    let mut bed = Bed::new();
    let bottom = bed.layer();
    write(&bottom.join("a/shadowed"), "bottom");
    write(&bottom.join("a/only-bottom"), "ob");
    let top = bed.layer();
    write(&top.join("a/shadowed"), "top");
    write(&top.join("a/only-top"), "ot");
    let m = bed.mount(driver);
    let a = m.path().join("a");
    assert_eq!(fs::read_to_string(a.join("shadowed")).unwrap(), "top");
    assert_eq!(fs::read_to_string(a.join("only-bottom")).unwrap(), "ob");
    assert_eq!(listing(&a), ["only-bottom", "only-top", "shadowed"]);
}

fn write_lower(driver: &str) {
    let mut bed = Bed::new();
    let l = bed.layer();
    write(&l.join("f"), "old");
    {
        let m = bed.mount(driver);
        fs::write(m.path().join("f"), "changed").unwrap();
        assert_eq!(fs::read_to_string(m.path().join("f")).unwrap(), "changed");
    }
    assert_eq!(fs::read_to_string(l.join("f")).unwrap(), "old");
    let m = bed.mount(driver);
    assert_eq!(fs::read_to_string(m.path().join("f")).unwrap(), "changed");
}

fn delete_lower(driver: &str) {
    let mut bed = Bed::new();
    let bottom = bed.layer();
    write(&bottom.join("d/gone"), "x");
    write(&bottom.join("d/kept"), "k");
    write(&bottom.join("d/wh-by-layer"), "w");
    whiteout(&bed.layer().join("d").tap_mkdir().join("wh-by-layer"));
    {
        let m = bed.mount(driver);
        assert_eq!(listing(&m.path().join("d")), ["gone", "kept"]);
        fs::remove_file(m.path().join("d/gone")).unwrap();
        assert!(!m.path().join("d/gone").exists());
    }
    assert!(bottom.join("d/gone").exists());
    let m = bed.mount(driver);
    assert_eq!(listing(&m.path().join("d")), ["kept"]);
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        fs::create_dir_all(&self).unwrap();
        self
    }
}

fn opaque_dir(driver: &str) {
    let mut bed = Bed::new();
    write(&bed.layer().join("d/old"), "o");
    let top = bed.layer();
    write(&top.join("d/new"), "n");
    xattr_set(&top.join("d"), "trusted.overlay.opaque", b"y");
    let m = bed.mount(driver);
    assert_eq!(listing(&m.path().join("d")), ["new"]);
    // A directory removed and re-created in the container is opaque too.
    fs::remove_dir_all(m.path().join("d")).unwrap();
    fs::create_dir(m.path().join("d")).unwrap();
    assert!(listing(&m.path().join("d")).is_empty());
}

fn xattr_set(p: &Path, k: &str, v: &[u8]) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let k = std::ffi::CString::new(k).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe { libc::setxattr(c.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn deep_stack(driver: &str) {
    let mut bed = Bed::new();
    for i in 0..128 {
        let l = bed.layer();
        write(&l.join(format!("files/f{i:03}")), &i.to_string());
        write(&l.join("top"), &i.to_string());
    }
    let m = bed.mount(driver);
    assert_eq!(listing(&m.path().join("files")).len(), 128);
    assert_eq!(fs::read_to_string(m.path().join("top")).unwrap(), "127");
    assert_eq!(
        fs::read_to_string(m.path().join("files/f000")).unwrap(),
        "0"
    );
}

fn unmount_with_open_files(driver: &str) {
    let mut bed = Bed::new();
    write(&bed.layer().join("f"), "data");
    let m = bed.mount(driver);
    let open = fs::File::open(m.path().join("f")).unwrap();
    let cwd_holder = fs::File::open(m.path()).unwrap();
    drop(m);
    assert!(!is_mountpoint(&bed.merged()));
    drop(open);
    drop(cwd_holder);
}

macro_rules! suite {
    ($modname:ident, $driver:expr) => {
        mod $modname {
            #[test]
            fn create() {
                super::create($driver)
            }
            #[test]
            fn read_through() {
                super::read_through($driver)
            }
            #[test]
            fn write_lower() {
                super::write_lower($driver)
            }
            #[test]
            fn delete_lower() {
                super::delete_lower($driver)
            }
            #[test]
            fn opaque_dir() {
                super::opaque_dir($driver)
            }
            #[test]
            fn deep_stack_128() {
                super::deep_stack($driver)
            }
            #[test]
            fn unmount_with_open_files() {
                super::unmount_with_open_files($driver)
            }
        }
    };
}

suite!(vfs, "vfs");
suite!(overlay, "overlay");
suite!(fuse, "fuse");
suite!(fuse_overlayfs, "fuse-overlayfs");
suite!(
    strata_overlay_program,
    super::strata_overlay_spec().as_str()
);

/// `fuse-overlayfs` with our own `strata-overlay` as its mount program (built next to the test
/// binary's target dir by the workspace build).
fn strata_overlay_spec() -> String {
    let exe = std::env::current_exe().unwrap();
    // target/debug/deps/strata_runtime-HASH -> target/debug/strata-overlay
    let bin = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("strata-overlay");
    assert!(
        bin.is_file(),
        "{} missing: build it with `cargo build -p strata-fs`",
        bin.display()
    );
    super::DriverKind::MountProgram(Some(bin)).to_string()
}
