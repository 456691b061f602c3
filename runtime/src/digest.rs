//! Digests and identity newtypes.
