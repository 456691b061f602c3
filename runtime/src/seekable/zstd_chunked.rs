//! zstd:chunked (containers/storage `pkg/chunked`): a zstd layer whose files are separate
//! frames, with the TOC ("manifest") and tar-split in zstd skippable frames before a footer.

/// Layer annotation: digest of the compressed manifest.
pub const MANIFEST_CHECKSUM_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-checksum";
/// Layer annotation: `offset:compressed length:uncompressed length:type` of the manifest.
pub const MANIFEST_POSITION_ANNOTATION: &str =
    "io.github.containers.zstd-chunked.manifest-position";
