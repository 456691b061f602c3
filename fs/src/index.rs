//! The merged directory index: a directory's contents resolved once across its layers into a map
//! `name -> Entry { kind, top layer, … }`, from each layer's directory as [`crate::format`]
//! reads it.
//!
//! Vocabulary: a *layer id* is an index into the layer stack (see `layers`). A directory's *candidate layers* are the layers in
//! which its path is a directory, top first, cut at the first layer where the name is a
//! non-directory or a whiteout; its *contributing layers* are the candidates cut after the first
//! opaque one. Whiteouts are kept in the map (kind [`WHITEOUT`]) so later creations know they
//! must replace them and removals know the name exists below.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;

use crate::at::{self, R};
use crate::format::{self, Name};
use crate::ids::{Ino, LayerId};

/// Pseudo file type of a whiteout entry in the index.
pub(crate) const WHITEOUT: u32 = 0;

#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// `S_IFMT` bits of the visible object, or [`WHITEOUT`].
    pub kind: u32,
    /// Top-most layer holding the name (the visible object, or the whiteout).
    pub top: LayerId,
    /// For directories: the candidate layers (see module doc).
    pub dir_layers: Vec<LayerId>,
    /// The name exists in some lower layer: removing it must leave a whiteout.
    pub lower: bool,
    /// Our inode number of the visible object ([`Ino::NONE`] for whiteouts).
    pub ino: Ino,
    /// Position in the directory (readdir offset cookie): assigned when the name enters the
    /// index, so every open handle sees one stable order however the directory changes.
    pub seq: u64,
    /// Still collecting `dir_layers` while building.
    open: bool,
}

impl Entry {
    pub fn new_upper(kind: u32, ino: Ino, lower: bool) -> Entry {
        Entry {
            kind,
            top: 0,
            dir_layers: if kind == libc::S_IFDIR {
                vec![0]
            } else {
                vec![]
            },
            lower,
            ino,
            seq: 0,
            open: false,
        }
    }

    pub fn whiteout_upper() -> Entry {
        Entry {
            kind: WHITEOUT,
            top: 0,
            dir_layers: vec![],
            lower: true,
            ino: Ino::NONE,
            seq: 0,
            open: false,
        }
    }

    pub fn visible(&self) -> bool {
        self.kind != WHITEOUT
    }
}

/// First readdir cookie of real entries (1 and 2 are `.` and `..`).
pub(crate) const FIRST_SEQ: u64 = 3;

#[derive(Debug)]
pub(crate) struct DirIndex {
    /// Contributing layers, top first.
    pub layers: Vec<LayerId>,
    /// Change entries in place only for fields other than identity; add and remove names with
    /// [`DirIndex::put`] and [`DirIndex::del`] so `order` stays in step.
    pub entries: HashMap<OsString, Entry>,
    /// Readdir order: seq -> name.
    pub order: BTreeMap<u64, OsString>,
    pub next_seq: u64,
    /// A name was added or removed through this mount since it was mounted.
    /// The kernel may cache the listings of directories for which this is false (see
    /// `Fs::listing_cacheable`).
    pub changed: bool,
}

impl DirIndex {
    /// An index from freshly merged entries: positions in name order.
    pub fn new(layers: Vec<LayerId>, mut entries: HashMap<OsString, Entry>) -> DirIndex {
        let mut names: Vec<_> = entries.keys().cloned().collect();
        names.sort_unstable();
        let mut order = BTreeMap::new();
        let mut seq = FIRST_SEQ;
        for n in names {
            if let Some(e) = entries.get_mut(&n) {
                e.seq = seq;
            }
            order.insert(seq, n);
            seq += 1;
        }
        DirIndex {
            layers,
            entries,
            order,
            next_seq: seq,
            changed: false,
        }
    }

    /// Add or replace `name` (it moves to the end of the readdir order).
    pub fn put(&mut self, name: &OsStr, mut e: Entry) {
        self.changed = true;
        if let Some(old) = self.entries.get(name) {
            self.order.remove(&old.seq);
        }
        e.seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(e.seq, name.to_os_string());
        self.entries.insert(name.to_os_string(), e);
    }

    pub fn del(&mut self, name: &OsStr) {
        self.changed = true;
        if let Some(old) = self.entries.remove(name) {
            self.order.remove(&old.seq);
        }
    }

    pub fn get(&self, name: &OsStr) -> Option<&Entry> {
        self.entries.get(name)
    }
    /// True when no visible entry remains.
    pub fn is_empty(&self) -> bool {
        !self.entries.values().any(Entry::visible)
    }
}

/// What an on-disk entry of one layer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Raw {
    Object { kind: u32, ino: u64 },
    Whiteout,
}

/// One layer's view of a directory.
pub(crate) struct LayerDir {
    pub opaque: bool,
    /// The directory's redirect xattr (see [`format::XATTR_REDIRECT`]), when it has one.
    pub redirect: Option<Vec<u8>>,
    pub items: Vec<(OsString, Raw)>,
}

fn dtype_kind(t: u8) -> Option<u32> {
    Some(match t {
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_REG => libc::S_IFREG,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        _ => return None,
    })
}

/// Read one layer's directory `dirfd` (opened `O_RDONLY | O_DIRECTORY`) and classify entries.
pub(crate) fn read_layer_dir(dirfd: std::os::fd::BorrowedFd<'_>) -> R<LayerDir> {
    let marks = format::read_dir_marks(dirfd, false);
    let mut opaque = marks.opaque;
    let xwh = marks.xwhiteouts;
    let redirect = marks.redirect;
    let probe = dirfd;
    let raw = at::read_dir_fd(probe)?;
    let mut items: Vec<(OsString, Raw)> = Vec::with_capacity(raw.len());
    let mut wh_names: Vec<OsString> = Vec::new();
    for (name, d_ino, t) in raw {
        match format::classify(name.as_bytes()) {
            Name::Plain => {}
            Name::OpaqueMarker => {
                opaque = true;
                continue;
            }
            Name::Whiteout(target) => {
                wh_names.push(OsStr::from_bytes(target).to_os_string());
                continue;
            }
            // AUFS metadata (.wh..wh.plnk, .wh..wh.aufs) and whiteouts of `.`/`..`.
            Name::Meta | Name::Invalid => continue,
        }
        let kind = match dtype_kind(t) {
            Some(k) if k != libc::S_IFCHR && !(xwh && k == libc::S_IFREG) => k,
            _ => {
                let st = match at::fstatat(probe.as_fd(), &name) {
                    Ok(st) => st,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => return Err(e),
                };
                if format::is_whiteout(probe.as_fd(), &name, &st, xwh) {
                    items.push((name, Raw::Whiteout));
                    continue;
                }
                st.st_mode & libc::S_IFMT
            }
        };
        items.push((name, Raw::Object { kind, ino: d_ino }));
    }
    for w in wh_names {
        if !items.iter().any(|(n, _)| *n == w) {
            items.push((w, Raw::Whiteout));
        }
    }
    Ok(LayerDir {
        opaque,
        redirect,
        items,
    })
}

/// Merge `ld` (layer `layer`, `is_upper` when it is the upper layer) into `entries`.
pub(crate) fn merge_layer(
    entries: &mut HashMap<OsString, Entry>,
    layer: LayerId,
    is_upper: bool,
    ld: LayerDir,
    mut make_ino: impl FnMut(LayerId, u64) -> Ino,
) {
    for (name, raw) in ld.items {
        match entries.get_mut(&name) {
            None => {
                let e = match raw {
                    Raw::Whiteout => Entry {
                        kind: WHITEOUT,
                        top: layer,
                        dir_layers: vec![],
                        lower: !is_upper,
                        ino: Ino::NONE,
                        seq: 0,
                        open: false,
                    },
                    Raw::Object { kind, ino } => Entry {
                        kind,
                        top: layer,
                        dir_layers: if kind == libc::S_IFDIR {
                            vec![layer]
                        } else {
                            vec![]
                        },
                        lower: !is_upper,
                        ino: make_ino(layer, ino),
                        seq: 0,
                        open: kind == libc::S_IFDIR,
                    },
                };
                entries.insert(name, e);
            }
            Some(e) => {
                if !is_upper {
                    e.lower = true;
                }
                if e.open {
                    match raw {
                        Raw::Object {
                            kind: libc::S_IFDIR,
                            ..
                        } => e.dir_layers.push(layer),
                        _ => e.open = false,
                    }
                }
            }
        }
    }
}

pub(crate) fn finish(entries: &mut HashMap<OsString, Entry>) {
    for e in entries.values_mut() {
        e.open = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn open_dir(p: &std::path::Path) -> OwnedFd {
        std::fs::File::open(p).unwrap().into()
    }

    #[test]
    fn reads_every_whiteout_and_opaque_form() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        std::fs::write(d.join("plain"), b"x").unwrap();
        std::fs::write(d.join(".wh.gone"), b"").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        nix::sys::stat::mknod(
            &d.join("chr"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        let ld = read_layer_dir(open_dir(d).as_fd()).unwrap();
        assert!(!ld.opaque);
        let get = |n: &str| ld.items.iter().find(|(x, _)| x == n).map(|(_, r)| *r);
        assert!(matches!(
            get("plain"),
            Some(Raw::Object {
                kind: libc::S_IFREG,
                ..
            })
        ));
        assert_eq!(get("gone"), Some(Raw::Whiteout));
        assert_eq!(get("chr"), Some(Raw::Whiteout));
        assert!(get(".wh.gone").is_none());
        // Opaque by marker file.
        std::fs::write(d.join("sub/.wh..wh..opq"), b"").unwrap();
        assert!(
            read_layer_dir(open_dir(&d.join("sub")).as_fd())
                .unwrap()
                .opaque
        );
        // Opaque by xattr, and xattr whiteouts in an `x` directory.
        let o = d.join("o");
        std::fs::create_dir(&o).unwrap();
        std::fs::write(o.join("w"), b"").unwrap();
        let of = open_dir(&o);
        at::lsetxattr(
            of.as_fd(),
            OsStr::new(""),
            OsStr::new("trusted.overlay.opaque"),
            b"x",
            0,
        )
        .unwrap();
        at::lsetxattr(
            of.as_fd(),
            OsStr::new("w"),
            OsStr::new("trusted.overlay.whiteout"),
            b"",
            0,
        )
        .unwrap();
        let ld = read_layer_dir(open_dir(&o).as_fd()).unwrap();
        assert!(!ld.opaque);
        assert_eq!(ld.items[0].1, Raw::Whiteout);
        at::lsetxattr(
            of.as_fd(),
            OsStr::new(""),
            OsStr::new("user.overlay.opaque"),
            b"y",
            0,
        )
        .unwrap();
        at::lremovexattr(
            of.as_fd(),
            OsStr::new(""),
            OsStr::new("trusted.overlay.opaque"),
        )
        .unwrap();
        assert!(read_layer_dir(open_dir(&o).as_fd()).unwrap().opaque);
    }

    #[test]
    fn merge_top_wins_and_dirs_collect_layers() {
        let mut m = HashMap::new();
        let obj = |k| Raw::Object { kind: k, ino: 7 };
        let l0 = LayerDir {
            opaque: false,
            redirect: None,
            items: vec![
                ("d".into(), obj(libc::S_IFDIR)),
                ("f".into(), obj(libc::S_IFREG)),
                ("w".into(), Raw::Whiteout),
            ],
        };
        let l1 = LayerDir {
            opaque: false,
            redirect: None,
            items: vec![
                ("d".into(), obj(libc::S_IFDIR)),
                ("f".into(), obj(libc::S_IFDIR)),
                ("w".into(), obj(libc::S_IFREG)),
                ("new".into(), obj(libc::S_IFLNK)),
            ],
        };
        let l2 = LayerDir {
            opaque: false,
            redirect: None,
            items: vec![("d".into(), obj(libc::S_IFREG))],
        };
        let l3 = LayerDir {
            opaque: false,
            redirect: None,
            items: vec![("d".into(), obj(libc::S_IFDIR))],
        };
        let num = |l: LayerId, i: u64| Ino::from_raw(((l as u64) << 48) | i);
        merge_layer(&mut m, 0, true, l0, num);
        merge_layer(&mut m, 1, false, l1, num);
        merge_layer(&mut m, 2, false, l2, num);
        merge_layer(&mut m, 3, false, l3, num);
        finish(&mut m);
        let d = &m[OsStr::new("d")];
        assert_eq!(d.dir_layers, vec![0, 1], "a file in layer 2 cuts the dir");
        assert!(d.lower);
        assert_eq!(m[OsStr::new("f")].kind, libc::S_IFREG);
        assert!(!m[OsStr::new("w")].visible());
        assert!(m[OsStr::new("w")].lower);
        assert_eq!(m[OsStr::new("new")].top, 1);
        assert_eq!(m[OsStr::new("new")].ino, Ino::from_raw((1 << 48) | 7));
    }
}
