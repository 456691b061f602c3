//! Union-filesystem + POSIX conformance suite. Every case runs against kernel overlayfs
//! (`kernel::`), strata-overlay (`strata::`) and, when `STRATA_CONFORMANCE_MOUNT` is set, any other
//! mount command (`custom::`, ignored by default). See docs/conformance.md.

#[macro_use]
mod util;
#[macro_use]
mod harness;
#[macro_use]
mod gaps;

mod compat;
mod copyup;
mod fuzz;
mod inode;
mod io;
mod merge;
mod misc;
mod ops;
mod options;
mod perms;
mod posix;
mod rename;
mod ro;
mod rootless;
mod selftest;
mod stress;
mod whiteout;
mod xattr;
