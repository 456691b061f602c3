//! strata-runtime: everything between the `strata` command line and the union filesystem.
//!
//! Module ownership and vocabulary (see `docs/internals.md` and `../shared/DESIGN.md`):
//! - [`digest`]: `Digest`, `ImageId`, `ChainId`, `DiffId` newtypes and hashing helpers.
//! - [`reference`]: Docker image references — parsing, normalization, familiar form.
//! - [`store`]: the on-disk image store: blobs, layers, images, references.
//! - [`archive`]: docker-archive and OCI layout, both directions; `import` of rootfs tarballs.
//! - [`registry`]: OCI distribution client (pull, push, auth).
//! - [`driver`]: storage drivers (`fuse`, `overlay`, `vfs`) that mount a container rootfs.
//! - [`container`]: container records, the supervisor, namespaces, exec, logs, ports.
//! - [`changes`]: `diff` of a container's upper dir and `commit` of it as a layer.
//! - [`lazy`]: lazily pulled layers (eStargz): skeleton from the TOC, data on first open.
//! - [`rootless`]: entering the user namespace of an unprivileged user, its default paths.
//! - [`seekable`]: eStargz and zstd:chunked layer blobs (TOC, chunks, writer) for lazy pulls.
//! - [`events`]: the events log every state change appends to (`strata events` reads it).
//! - `fsutil`: atomic file replacement, directory fsync, file locks, staging names (one owner).
//!
//! This crate prints nothing: it returns data and typed errors; `cli` renders them.

pub mod archive;
pub mod build;
pub mod changes;
pub mod container;
pub mod digest;
pub mod driver;
pub mod engine;
pub mod events;
pub mod filters;
mod fsutil;
pub mod lazy;
pub mod network;
pub mod outfile;
pub mod reference;
pub mod registry;
pub mod rootless;
pub mod seekable;
pub mod store;
pub mod timeargs;
pub mod units;
pub mod volume;
