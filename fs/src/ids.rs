//! The identities the filesystem's parts share: [`Ino`] (a merged object), [`Fh`] (an open
//! handle), `LayerId` (a layer of the stack). A leaf module: every other one may use it.

/// The number of a merged object: its FUSE node id, and (except for the root, see
/// `InodeTable::st_ino`) the `st_ino` users see.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ino(u64);

impl Ino {
    /// The root directory (FUSE's fixed root node id).
    pub const ROOT: Ino = Ino(1);
    /// No object (a whiteout's entry, a negative lookup).
    pub(crate) const NONE: Ino = Ino(0);

    pub const fn get(self) -> u64 {
        self.0
    }

    /// The inode the kernel names by `n` (a FUSE node id).
    pub(crate) const fn from_raw(n: u64) -> Ino {
        Ino(n)
    }
}

impl std::fmt::Display for Ino {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An open file or directory handle (FUSE's `fh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fh(u64);

impl Fh {
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The handle the kernel names by `n`.
    pub(crate) const fn from_raw(n: u64) -> Fh {
        Fh(n)
    }
}

/// A layer of the stack: 0 is the upper layer when there is one, then the lower layers top
/// first.
pub(crate) type LayerId = u16;
