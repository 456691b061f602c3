//! The namespace lock: taken shared by every operation and exclusive by directory renames (the
//! one change that moves many paths at once). Its guards are the tokens that prove it is held:
//! the functions further down the lock order (copy-up, index changes, see `tree`) take one.

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

#[derive(Default)]
pub(crate) struct Namespace(RwLock<()>);

/// The namespace lock held shared.
pub(crate) struct Shared<'a> {
    _guard: RwLockReadGuard<'a, ()>,
}

/// The namespace lock held exclusively (no other operation runs).
pub(crate) struct Exclusive<'a> {
    _guard: RwLockWriteGuard<'a, ()>,
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Shared<'_> {}
    impl Sealed for super::Exclusive<'_> {}
}

/// Proof that the namespace lock is held, shared or exclusive.
pub(crate) trait Held: sealed::Sealed {}
impl Held for Shared<'_> {}
impl Held for Exclusive<'_> {}

impl Namespace {
    pub fn shared(&self) -> Shared<'_> {
        // Recursive: a shared holder must never wait behind a queued renamer (the renamer waits
        // for it to finish).
        Shared {
            _guard: self.0.read_recursive(),
        }
    }

    pub fn exclusive(&self) -> Exclusive<'_> {
        Exclusive {
            _guard: self.0.write(),
        }
    }
}
