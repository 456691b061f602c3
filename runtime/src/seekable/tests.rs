//! Seekable-layer unit tests on real tars (built with the testkit and by hand).

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use flate2::read::MultiGzDecoder;
use strata_testkit::fixtures::{self, LayerTar};

use super::estargz::{self, EstargzOptions, NO_PREFETCH_LANDMARK, PREFETCH_LANDMARK, TOC_TAR_NAME};
use super::*;
use crate::store::Store;

fn convert(tar: &[u8], opts: &EstargzOptions) -> (Vec<u8>, EstargzInfo) {
    let mut blob = Vec::new();
    let info = estargz::write_estargz(Cursor::new(tar), &mut blob, opts).unwrap();
    (blob, info)
}

fn gunzip(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    MultiGzDecoder::new(b).read_to_end(&mut out).unwrap();
    out
}

/// (name, content) of every entry of a tar, via the tar crate.
fn tar_files(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

/// A PAX extended header block (+ data) carrying `records`.
fn pax_header(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while format!("{len}").len() + rest != len {
            len += 1;
        }
        body.extend_from_slice(format!("{len} {k}=").as_bytes());
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/x").unwrap();
    h.set_size(body.len() as u64);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(&body);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn big(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// A layer with every entry kind, a big file, a PAX xattr and a GNU long name.
fn sample_tar() -> Vec<u8> {
    let mut t = LayerTar::new();
    t.dir("bin/", 0o755)
        .file("bin/sh", b"#!shell\n", 0o755)
        .dir("data/", 0o755)
        .file("data/big", &big(10_000), 0o644)
        .file("data/empty", b"", 0o644)
        .hardlink("data/link", "data/big")
        .symlink("data/sym", "../bin/sh")
        .fifo("data/fifo")
        .device("data/null", false, 1, 3)
        .whiteout("data/gone");
    let mut tar = t.into_bytes();
    tar.truncate(tar.len() - 1024); // drop end-of-archive, append more by hand
    tar.extend_from_slice(&pax_header(&[("SCHILY.xattr.user.k", b"v\x00w")]));
    let mut h = tar::Header::new_ustar();
    h.set_path("data/xattr").unwrap();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(2);
    h.set_mode(0o600);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(b"hi");
    tar.resize(tar.len() + 510, 0);
    let mut b = tar::Builder::new(Vec::new());
    let long = format!("data/{}", "l".repeat(150));
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(3);
    h.set_mode(0o644);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    tar.extend_from_slice(&b.into_inner().unwrap());
    tar
}

fn read_file_by_chunks(blob: &[u8], toc: &Toc, name: &str) -> Vec<u8> {
    let i = toc.lookup(name).unwrap();
    let mut out = Vec::new();
    for c in toc.file_chunks(i) {
        assert_eq!(c.file_offset, out.len() as u64);
        out.extend(decode_chunk(&blob[c.start as usize..c.end as usize], c).unwrap());
    }
    out
}

#[test]
fn estargz_roundtrip_is_a_gzip_tar_with_toc_and_footer() {
    let tar = sample_tar();
    let opts = EstargzOptions {
        chunk_size: 4096,
        ..EstargzOptions::default()
    };
    let (blob, info) = convert(&tar, &opts);
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.blob_digest.as_str(), fixtures::sha256(&blob));
    assert_eq!(info.prioritized, 0);

    // Any gzip reader sees one tar: the input's entries, landmark first, TOC last.
    let plain = gunzip(&blob);
    assert_eq!(info.diff_id.as_str(), fixtures::sha256(&plain));
    assert_eq!(info.uncompressed_size, plain.len() as u64);
    let files = tar_files(&plain);
    let orig = tar_files(&tar);
    assert_eq!(files[0].0, NO_PREFETCH_LANDMARK);
    assert_eq!(files[0].1, vec![0xf]);
    assert_eq!(files.last().unwrap().0, TOC_TAR_NAME);
    assert_eq!(&files[1..files.len() - 1], &orig[..]);
    // Header blocks are copied byte for byte: the input (minus its end blocks) is in there.
    let body = &tar[..tar.len() - 1024];
    assert!(plain.windows(body.len()).any(|w| w == body));

    // The reader API.
    let off = read_footer(&blob[blob.len() - FOOTER_SIZE..]).unwrap();
    let toc = parse_toc(&blob[off as usize..], Some(info.toc_digest.as_str())).unwrap();
    assert_eq!(toc.toc_offset(), off);
    let annotations = estargz::annotations(&info);
    assert_eq!(annotations[0].0, "containerd.io/snapshot/stargz/toc.digest");
    assert_eq!(annotations[0].1, info.toc_digest.as_str());
    assert_eq!(annotations[1].1, plain.len().to_string());
    // Every regular file reads back from its chunks alone.
    for (name, data) in &orig {
        let clean = name.trim_end_matches('/');
        let i = toc.lookup(clean).unwrap_or_else(|| panic!("{name} in TOC"));
        if toc.entries[i].kind == "reg" {
            assert_eq!(&read_file_by_chunks(&blob, &toc, clean), data, "{name}");
        }
    }
    // The 10000-byte file is 3 chunks of 4096, 4096 and 1808 bytes, each its own member.
    let i = toc.lookup("data/big").unwrap();
    let sizes: Vec<u64> = toc.file_chunks(i).iter().map(|c| c.size).collect();
    assert_eq!(sizes, vec![4096, 4096, 1808]);
    assert_eq!(toc.entries[i].digest, fixtures::sha256(&big(10_000)));
    assert!(toc
        .file_chunks(i)
        .windows(2)
        .all(|w| w[0].end <= w[1].start));
    // Metadata the lazy mount serves from the TOC.
    let e = &toc.entries[toc.lookup("data/xattr").unwrap()];
    assert_eq!(
        e.xattrs.get("user.k").map(Vec::as_slice),
        Some(&b"v\x00w"[..])
    );
    assert_eq!(e.mode, 0o600);
    let e = &toc.entries[toc.lookup("data/link").unwrap()];
    assert_eq!(
        (e.kind.as_str(), e.link_name.as_str()),
        ("hardlink", "data/big")
    );
    let e = &toc.entries[toc.lookup("data/null").unwrap()];
    assert_eq!((e.kind.as_str(), e.dev_major, e.dev_minor), ("char", 1, 3));
    assert!(toc.lookup(&format!("data/{}", "l".repeat(150))).is_some());
    assert!(toc.lookup("data/.wh.gone").is_some());
    // The JSON uses eStargz's field names.
    let json = serde_json::to_value(&toc.entries[i]).unwrap();
    for k in [
        "name",
        "type",
        "size",
        "mode",
        "digest",
        "offset",
        "chunkSize",
        "chunkDigest",
    ] {
        assert!(json.get(k).is_some(), "{k} in {json}");
    }
}

#[test]
fn estargz_blob_is_an_ordinary_layer_for_the_store() {
    let tar = fixtures::busybox_layer().unwrap();
    let (blob, info) = convert(&tar, &EstargzOptions::default());
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let l = s.add_layer(&blob[..], None, Some(&info.diff_id)).unwrap();
    assert_eq!(l.diff_id, info.diff_id);
    let diff = s.layer_diff_dir(&l.chain_id);
    assert!(diff.join("bin/busybox").is_file());
    assert!(diff.join(TOC_TAR_NAME).is_file());
    // The store rebuilds the exact decompressed tar (what a push would send).
    let mut rebuilt = Vec::new();
    s.layer_tar(&l.chain_id, &mut rebuilt).unwrap();
    assert_eq!(rebuilt, gunzip(&blob));
}

#[test]
fn prioritized_files_come_first_with_their_dirs_then_the_landmark() {
    let tar = sample_tar();
    let opts = EstargzOptions {
        prioritized: vec![
            "./data/xattr".into(),
            "/data/link".into(),
            "missing".into(),
            "../x".into(),
        ],
        ..EstargzOptions::default()
    };
    let (blob, info) = convert(&tar, &opts);
    assert_eq!(info.prioritized, 2);
    let off = read_footer(&blob).unwrap();
    let toc = parse_toc(&blob[off as usize..], Some(info.toc_digest.as_str())).unwrap();
    let names: Vec<&str> = toc.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        &names[..5],
        &[
            "data",
            "data/xattr",
            "data/big",
            "data/link",
            PREFETCH_LANDMARK
        ][..]
    );
    assert_eq!(toc.prefetch_landmark(), Some(4));
    assert!(!names.contains(&NO_PREFETCH_LANDMARK));
    // Still a valid layer with every entry exactly once (plus landmark and TOC).
    let files = tar_files(&gunzip(&blob));
    assert_eq!(files.len(), tar_files(&tar).len() + 2);
    // Converting the converted layer again keeps one TOC and one landmark.
    let plain = gunzip(&blob);
    let (again, _) = convert(&plain, &EstargzOptions::default());
    let names: Vec<String> = tar_files(&gunzip(&again))
        .into_iter()
        .map(|f| f.0)
        .collect();
    assert_eq!(names.iter().filter(|n| *n == TOC_TAR_NAME).count(), 1);
    assert_eq!(names.iter().filter(|n| n.ends_with("landmark")).count(), 1);
}

#[test]
fn hostile_tar_names_are_refused() {
    for bad in ["../evil", "a/../../evil", "/etc/evil"] {
        let mut t = LayerTar::new();
        t.file("ok", b"1", 0o644).file(bad, b"x", 0o644);
        let tar = t.into_bytes();
        let err = estargz::write_estargz(Cursor::new(&tar), Vec::new(), &EstargzOptions::default())
            .unwrap_err();
        assert!(
            matches!(err, SeekableError::UnsafeTar { .. }),
            "{bad}: {err}"
        );
    }
    let mut t = LayerTar::new();
    t.hardlink("l", "../../etc/shadow");
    let err = estargz::write_estargz(
        Cursor::new(t.into_bytes()),
        Vec::new(),
        &EstargzOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, SeekableError::UnsafeTar { .. }), "{err}");
    // A truncated tar is an error, not a shorter layer.
    let mut t = LayerTar::new();
    t.file("f", &big(5000), 0o644);
    let tar = t.into_bytes();
    let err = estargz::write_estargz(
        Cursor::new(&tar[..2048]),
        Vec::new(),
        &EstargzOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, SeekableError::TarFormat(_)), "{err}");
}

/// A blob whose TOC is `json` (no data): TOC member at offset 0, then the footer.
fn blob_with_toc(json: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.set_path(TOC_TAR_NAME).unwrap();
    h.set_size(json.len() as u64);
    h.set_cksum();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(h.as_bytes()).unwrap();
    gz.write_all(json).unwrap();
    gz.write_all(&vec![0; 512 - json.len() % 512 + 1024])
        .unwrap();
    let mut blob = gz.finish().unwrap();
    blob.extend_from_slice(&estargz::footer_bytes(0));
    blob
}

#[test]
fn hostile_or_inconsistent_tocs_are_refused() {
    // A symlink replaced by a directory, then a file below it and a hard link to it: fine.
    let fine = br#"{"version":1,"entries":[{"name":"a","type":"symlink","linkName":"/etc"},{"name":"a/","type":"dir"},{"name":"a/f","type":"fifo"},{"name":"h","type":"hardlink","linkName":"./a/f"}]}"#;
    assert!(parse_toc(&blob_with_toc(fine), None).is_ok());
    let ok = br#"{"version":1,"entries":[{"name":"./a/","type":"dir"}]}"#;
    let toc = parse_toc(&blob_with_toc(ok), None).unwrap();
    assert_eq!(toc.entries[0].name, "a");
    let d = fixtures::sha256(ok);
    assert!(parse_toc(&blob_with_toc(ok), Some(&d)).is_ok());
    let wrong = format!("sha256:{}", "0".repeat(64));
    assert!(matches!(
        parse_toc(&blob_with_toc(ok), Some(&wrong)),
        Err(SeekableError::TocDigest { .. })
    ));
    let cases: &[&[u8]] = &[
        br#"{"version":1,"entries":[{"name":"../x","type":"dir"}]}"#,
        br#"{"version":1,"entries":[{"name":"/etc/x","type":"symlink","linkName":"y"}]}"#,
        br#"{"version":1,"entries":[{"name":"h","type":"hardlink","linkName":"../../etc/shadow"}]}"#,
        // chunk data beyond the TOC
        br#"{"version":1,"entries":[{"name":"f","type":"reg","size":5,"offset":10,"chunkDigest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#,
        // chunks that do not cover the file
        br#"{"version":1,"entries":[{"name":"f","type":"reg","size":5,"offset":0,"chunkSize":2}]}"#,
        br#"{"version":1,"entries":[{"name":"f","type":"chunk","offset":3}]}"#,
        br#"{"version":2,"entries":[]}"#,
        // below a symlink or a file the layer made
        br#"{"version":1,"entries":[{"name":"a","type":"symlink","linkName":"/etc"},{"name":"a/passwd","type":"fifo"}]}"#,
        br#"{"version":1,"entries":[{"name":"f","type":"fifo"},{"name":"f/x","type":"dir"}]}"#,
        // hard links to nothing, to a directory, through a symlink
        br#"{"version":1,"entries":[{"name":"h","type":"hardlink","linkName":"missing"}]}"#,
        br#"{"version":1,"entries":[{"name":"d","type":"dir"},{"name":"h","type":"hardlink","linkName":"d"}]}"#,
        br#"{"version":1,"entries":[{"name":"a","type":"symlink","linkName":"/etc"},{"name":"h","type":"hardlink","linkName":"a/shadow"}]}"#,
        br#"{"version":1,"entries":[{"name":"x","type":"weird"}]}"#,
        b"not json",
    ];
    for c in cases {
        assert!(
            parse_toc(&blob_with_toc(c), None).is_err(),
            "{}",
            String::from_utf8_lossy(c)
        );
    }
    // Footer: truncated or damaged tails are errors.
    let blob = blob_with_toc(ok);
    assert!(read_footer(&blob[..blob.len() - 1]).is_err());
    let mut bad = blob.clone();
    let n = bad.len();
    bad[n - 20] = b'X';
    assert!(read_footer(&bad).is_err());
    assert!(read_footer(&[0u8; 10]).is_err());
}

#[test]
fn tampered_chunks_are_errors_never_data() {
    let mut t = LayerTar::new();
    t.file("f", &big(20_000), 0o644);
    let (blob, info) = convert(&t.into_bytes(), &EstargzOptions::default());
    let off = read_footer(&blob).unwrap();
    let toc = parse_toc(&blob[off as usize..], Some(info.toc_digest.as_str())).unwrap();
    let c = toc.file_chunks(toc.lookup("f").unwrap())[0].clone();
    let range = &blob[c.start as usize..c.end as usize];
    assert_eq!(decode_chunk(range, &c).unwrap(), big(20_000));
    // A chunk whose digest does not match.
    let mut lie = c.clone();
    lie.digest = crate::digest::Digest::of_bytes(b"something else");
    assert!(matches!(
        decode_chunk(range, &lie),
        Err(SeekableError::ChunkDigest { .. })
    ));
    // Flipped compressed bytes, a short range, a wrong range.
    let mut flipped = range.to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    assert!(decode_chunk(&flipped, &c).is_err());
    assert!(decode_chunk(&range[..range.len() / 2], &c).is_err());
    assert!(decode_chunk(&blob[..c.end as usize], &c).is_err());
}

#[test]
fn toc_json_field_names_match_estargz() {
    let e = TocEntry {
        name: "a".into(),
        kind: "reg".into(),
        link_name: "l".into(),
        user_name: "u".into(),
        group_name: "g".into(),
        dev_major: 1,
        dev_minor: 2,
        chunk_offset: 3,
        chunk_size: 4,
        chunk_digest: "d".into(),
        inner_offset: 5,
        mod_time: "2020-01-01T00:00:00Z".into(),
        xattrs: BTreeMap::from([("user.a".to_string(), b"\x00\x01".to_vec())]),
        ..TocEntry::default()
    };
    let v = serde_json::to_value(&e).unwrap();
    for k in [
        "name",
        "type",
        "linkName",
        "userName",
        "groupName",
        "devMajor",
        "devMinor",
        "chunkOffset",
        "chunkSize",
        "chunkDigest",
        "innerOffset",
        "modtime",
        "xattrs",
    ] {
        assert!(v.get(k).is_some(), "{k}");
    }
    assert_eq!(v["xattrs"]["user.a"], "AAE=");
    assert!(v.get("size").is_none(), "zero fields are omitted");
    let back: TocEntry = serde_json::from_value(v).unwrap();
    assert_eq!(back, e);
}

#[test]
fn zstd_chunked_position_footer_and_hostile_manifests() {
    use super::zstd_chunked::{parse_position, parse_toc, read_footer, ManifestPosition};
    assert_eq!(
        parse_position("315157:955:3228:1").unwrap(),
        ManifestPosition {
            offset: 315157,
            compressed_len: 955,
            uncompressed_len: 3228,
            kind: 1
        }
    );
    for bad in ["", "1:2:3", "1:2:3:4:5", "a:b:c:d", "-1:2:3:1"] {
        assert!(parse_position(bad).is_err(), "{bad}");
    }
    assert!(read_footer(&[0u8; 100]).is_err());
    assert!(read_footer(b"short").is_err());

    // A manifest with a hostile name, as a writer would frame it: refused.
    let json = br#"{"version":1,"entries":[{"type":"reg","name":"../../etc/passwd","size":1,"offset":8,"endOffset":9,"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000"}]}"#;
    let compressed = zstd::bulk::compress(json, 3).unwrap();
    let pos = ManifestPosition {
        offset: 100,
        compressed_len: compressed.len() as u64,
        uncompressed_len: json.len() as u64,
        kind: 1,
    };
    assert!(matches!(
        parse_toc(&compressed, &pos, None),
        Err(SeekableError::Unsafe { .. })
    ));
    // Wrong lengths or type.
    let short = ManifestPosition {
        uncompressed_len: 5,
        ..pos
    };
    assert!(parse_toc(&compressed, &short, None).is_err());
    let other = ManifestPosition { kind: 2, ..pos };
    assert!(parse_toc(&compressed, &other, None).is_err());
    // A sane manifest: the single-chunk file's digest is its chunk digest, range [8, 9).
    let json = String::from_utf8_lossy(json)
        .replace("../../etc/passwd", "etc/passwd")
        .into_bytes();
    let compressed = zstd::bulk::compress(&json, 3).unwrap();
    let pos = ManifestPosition {
        compressed_len: compressed.len() as u64,
        uncompressed_len: json.len() as u64,
        ..pos
    };
    let toc = parse_toc(&compressed, &pos, None).unwrap();
    let c = &toc.chunks()[0];
    assert_eq!(
        (c.start, c.end, c.size, c.compression),
        (8, 9, 1, Compression::Zstd)
    );
}

#[test]
fn zstd_chunked_writer_keeps_the_tar_and_reads_back_through_its_toc() {
    use super::zstd_chunked::{self as zc, ZstdChunkedOptions};
    let tar = sample_tar();
    let mut blob = Vec::new();
    let opts = ZstdChunkedOptions {
        chunk_size: 4096,
        ..ZstdChunkedOptions::default()
    };
    let info = zc::write_zstd_chunked(Cursor::new(&tar), &mut blob, &opts).unwrap();
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.blob_digest.as_str(), fixtures::sha256(&blob));
    // Any zstd reader sees exactly the input tar: same diffID.
    let mut plain = Vec::new();
    zstd::stream::read::Decoder::new(&blob[..])
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    assert_eq!(plain, tar);
    assert_eq!(info.diff_id.as_str(), fixtures::sha256(&tar));
    // Annotations, footer and manifest agree; every file reads back from its chunks.
    let a = zc::annotations(&info);
    let pos = zc::parse_position(&a[1].1).unwrap();
    assert_eq!(zc::read_footer(&blob).unwrap(), pos);
    let m = &blob[pos.offset as usize..(pos.offset + pos.compressed_len) as usize];
    let toc = zc::parse_toc(m, &pos, Some(&a[0].1)).unwrap();
    for (name, data) in tar_files(&tar) {
        let clean = name.trim_end_matches('/');
        let i = toc.lookup(clean).unwrap();
        if toc.entries[i].kind == "reg" {
            assert_eq!(read_file_by_chunks(&blob, &toc, clean), data, "{name}");
        }
    }
    let big = toc.lookup("data/big").unwrap();
    assert_eq!(toc.file_chunks(big).len(), 3);
    // The store takes it as an ordinary zstd layer.
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(t.path()).unwrap();
    let l = s.add_layer(&blob[..], None, Some(&info.diff_id)).unwrap();
    assert!(s.layer_diff_dir(&l.chain_id).join("data/big").is_file());
}

#[test]
fn record_padding_and_missing_end_blocks_are_kept_byte_for_byte() {
    use super::zstd_chunked::{write_zstd_chunked, ZstdChunkedOptions};
    let mut t = LayerTar::new();
    t.file("a", b"abc", 0o644).file("b", &big(3000), 0o600);
    let tar = t.into_bytes();
    let mut padded = tar.clone();
    padded.resize(10240 * 2, 0); // GNU tar's 10 KiB records
    let mut no_end = tar.clone();
    no_end.truncate(tar.len() - 1024);
    for input in [&padded, &no_end] {
        let mut blob = Vec::new();
        let info = write_zstd_chunked(
            Cursor::new(input),
            &mut blob,
            &ZstdChunkedOptions::default(),
        )
        .unwrap();
        let mut plain = Vec::new();
        zstd::stream::read::Decoder::new(&blob[..])
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(&plain, input);
        assert_eq!(info.diff_id.as_str(), fixtures::sha256(input));
        // eStargz re-frames the end, but keeps every entry.
        let (blob, _) = convert(input, &EstargzOptions::default());
        assert_eq!(tar_files(&gunzip(&blob)).len(), 4);
    }
    // Garbage where a header should be is an error.
    let mut bad = tar.clone();
    bad[512 + 512 + 100] ^= 0xff; // inside the second header (after "a" and its block)
    assert!(write_zstd_chunked(
        Cursor::new(&bad),
        Vec::new(),
        &ZstdChunkedOptions::default()
    )
    .is_err());
}
