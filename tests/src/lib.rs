//! strata-testkit: helpers shared by the integration tests of every crate.
//!
//! Everything here exists to make tests honest and safe on a shared machine: real mounts that are
//! always unmounted (guards with `Drop`, lazy unmount as a last resort), children that are always
//! reaped, steps that run under a watchdog so a stuck FUSE request can never hang the suite.
//!
//! - [`mount`]: mount guards, FUSE connection abort, timeouts.
//! - [`fixtures`]: images and layer tars built locally (busybox from Debian's busybox-static).
//! - [`registry`]: a real `docker-registry` on 127.0.0.1, started and stopped by the test.
//! - [`container`]: helpers to run the `strata` binary and clean up containers.
//! - [`podman`]: a throw-away podman installation in a test's dir, for peer checks.
//! - [`user`]: a throw-away unprivileged user with subordinate ranges, for rootless tests.

pub mod container;
pub mod fixtures;
pub mod mount;
pub mod podman;
pub mod registry;
pub mod user;
