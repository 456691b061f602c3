//! strata-fs: the union filesystem.
