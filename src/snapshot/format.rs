//! The snapshot archive format, documented in `docs/snapshot-format.md`.
//!
//! A tar (optionally gzip/zstd-compressed) whose first entry is `snapshot.json`, then every
//! file, then `snapshot.crc32` (the CRC-32 of each file). Nothing else. In version 1 (plain
//! snapshots) `snapshot.json` is the manifest: kind, collections, every file with its size,
//! aliases. In version 2 (incremental snapshots) it is only the [`Opening`] (kind and
//! collections), the same for every snapshot of the same collections, and the manifest
//! follows the files as `snapshot.contents.json`: so two snapshots' tars share their
//! opening up to the first file that changed, and a create resumes the SHA-256 there.
//! The SHA-256 of the whole archive (the `.checksum` sidecar) covers every byte; the
//! per-file CRC-32 catches damage even when no SHA-256 is known, at a tenth of the cost of
//! a second SHA-256 pass.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::collection::registry::validate_name;
use crate::error::{Error, Result};

/// Name of the manifest entry (always first; in version 2 the [`Opening`]).
pub(crate) const MANIFEST: &str = "snapshot.json";
/// Name of the version 2 manifest entry, after the files.
pub(crate) const CONTENTS: &str = "snapshot.contents.json";
/// Name of the per-file checksum entry (always last).
pub(crate) const CHECKSUMS: &str = "snapshot.crc32";
/// Value of the manifest's `format` field.
pub(crate) const FORMAT_NAME: &str = "snapstream-snapshot";
/// The version of plain snapshots: the manifest first.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// The version of incremental snapshots: the [`Opening`] first, the manifest after the files.
pub(crate) const LISTED_LAST_VERSION: u32 = 2;

/// Largest manifest or checksum entry accepted.
pub(crate) const MAX_META_SIZE: u64 = 64 << 20;
/// Most files one archive may list.
pub(crate) const MAX_FILES: usize = 1_000_000;
/// Largest single file one archive may hold.
pub(crate) const MAX_FILE_SIZE: u64 = 1 << 40;
/// Largest total of file sizes one archive may hold.
pub(crate) const MAX_TOTAL_SIZE: u64 = 16 << 40;

/// What a snapshot holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// One collection; its files sit at the archive root.
    Collection,
    /// Every collection (under `collections/{name}/`) and the aliases.
    Full,
}

/// One file of the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Path inside the archive.
    pub path: String,
    /// Exact size in bytes.
    pub size: u64,
}

/// One collection of the archive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestCollection {
    /// The collection's name when the snapshot was taken.
    pub name: String,
    /// Its directory inside the archive (`""` for a collection snapshot).
    pub dir: String,
    /// Its files: `config.json` and `data/*.seg`.
    pub files: Vec<ManifestFile>,
}

/// `snapshot.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Always [`FORMAT_VERSION`] for this build.
    pub format_version: u32,
    /// What the snapshot holds.
    pub kind: SnapshotKind,
    /// When the snapshot was sealed (RFC 3339, UTC).
    pub created_at: String,
    /// The software that wrote it.
    pub producer: String,
    /// The collections.
    pub collections: Vec<ManifestCollection>,
    /// Alias → collection (full snapshots).
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

/// A collection as the [`Opening`] names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpeningCollection {
    /// Its name.
    pub name: String,
    /// Its directory inside the archive.
    pub dir: String,
}

/// `snapshot.json` of a version 2 archive: what it holds, nothing that changes between two
/// snapshots of the same collections (no time, no files).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Opening {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// Always [`LISTED_LAST_VERSION`].
    pub format_version: u32,
    /// What the snapshot holds.
    pub kind: SnapshotKind,
    /// The collections, in archive order.
    pub collections: Vec<OpeningCollection>,
}

impl Opening {
    /// The opening of an archive of `manifest`'s collections.
    pub(crate) fn of(manifest: &Manifest) -> Self {
        Opening {
            format: FORMAT_NAME.into(),
            format_version: LISTED_LAST_VERSION,
            kind: manifest.kind,
            collections: manifest
                .collections
                .iter()
                .map(|c| OpeningCollection {
                    name: c.name.clone(),
                    dir: c.dir.clone(),
                })
                .collect(),
        }
    }

    /// Checks it as a manifest is checked, before any file is written; returns the
    /// manifest the archive's files are gathered into (each collection listing only its
    /// `config.json`, of size 0, until its entries stream past).
    pub(crate) fn validate(&self, expected: Option<SnapshotKind>) -> Result<Manifest> {
        if self.format_version != LISTED_LAST_VERSION {
            return Err(bad("snapshot.json is not a version 2 opening"));
        }
        let probe = Manifest {
            format: self.format.clone(),
            format_version: self.format_version,
            kind: self.kind,
            created_at: String::new(),
            producer: String::new(),
            collections: self
                .collections
                .iter()
                .map(|c| ManifestCollection {
                    name: c.name.clone(),
                    dir: c.dir.clone(),
                    files: vec![ManifestFile {
                        path: join(&c.dir, crate::collection::CONFIG_FILE),
                        size: 0,
                    }],
                })
                .collect(),
            aliases: BTreeMap::new(),
        };
        probe.validate(expected)?;
        let mut gathered = probe;
        for c in &mut gathered.collections {
            c.files.clear();
        }
        Ok(gathered)
    }
}

/// The archive directory of a collection in a full snapshot.
pub(crate) fn full_collection_dir(name: &str) -> String {
    format!("collections/{name}")
}

/// `dir/file`, or `file` at the root.
pub(crate) fn join(dir: &str, file: &str) -> String {
    if dir.is_empty() {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

fn bad(msg: impl Into<String>) -> Error {
    Error::bad_input(format!("invalid snapshot: {}", msg.into()))
}

/// The WAL range `(start, end)` of a segment path `data/{start}-{end}.seg`.
pub(crate) fn segment_range(rel: &str) -> Option<(u64, u64)> {
    let stem = rel.strip_prefix("data/")?.strip_suffix(".seg")?;
    let (a, b) = stem.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Whether `rel` (a path inside a collection directory) is a file a collection may have.
fn allowed_collection_file(rel: &str) -> bool {
    if rel == crate::collection::CONFIG_FILE {
        return true;
    }
    let Some(name) = rel.strip_prefix("data/") else {
        return false;
    };
    let Some(stem) = name.strip_suffix(".seg") else {
        return false;
    };
    let mut parts = stem.split('-');
    matches!((parts.next(), parts.next(), parts.next()), (Some(a), Some(b), None)
        if a.len() == 20 && b.len() == 20 && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()))
}

/// Where one collection's files stand while they are checked in archive order.
#[derive(Debug, Default)]
pub(crate) struct FileOrder {
    /// Files checked so far.
    count: usize,
    /// The WAL end of the last segment.
    prev_end: Option<u64>,
}

impl FileOrder {
    /// Checks the collection's next file, `path` of `size` bytes under the collection's
    /// `dir`: a path a collection may have, `config.json` first, then segments in WAL order
    /// without overlap, a sane size.
    pub(crate) fn next(&mut self, dir: &str, path: &str, size: u64) -> Result<()> {
        let rel = if dir.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(dir).and_then(|r| r.strip_prefix('/'))
        };
        let rel = match rel {
            Some(rel) if allowed_collection_file(rel) => rel,
            _ => return Err(bad(format!("unexpected path `{path}`"))),
        };
        if rel == crate::collection::CONFIG_FILE {
            // The config comes first: segments are loaded as they stream past it.
            if self.count != 0 {
                return Err(bad(format!("`{path}` must be the collection's first file")));
            }
        } else if let Some((start, end)) = segment_range(rel) {
            // Segments in WAL order, never overlapping: the order they are applied in.
            if self.count == 0 {
                return Err(bad(format!(
                    "`{path}` comes before the collection's config.json"
                )));
            }
            if start > end || self.prev_end.is_some_and(|p| start <= p) {
                return Err(bad(format!("segment `{path}` is out of order")));
            }
            self.prev_end = Some(end);
        }
        if size > MAX_FILE_SIZE {
            return Err(bad(format!(
                "`{path}` claims an absurd size of {size} bytes"
            )));
        }
        self.count += 1;
        Ok(())
    }
}

impl Manifest {
    /// Checks the manifest before any file is written: format, version, kind, names, and
    /// that every path is one a collection may have, listed once, with a sane size.
    pub fn validate(&self, expected: Option<SnapshotKind>) -> Result<()> {
        self.validate_header(expected)?;
        let mut seen = HashSet::new();
        let mut names = HashSet::new();
        for c in &self.collections {
            validate_name(&c.name).map_err(|e| bad(e.to_string()))?;
            if !names.insert(c.name.as_str()) {
                return Err(bad(format!("collection `{}` is listed twice", c.name)));
            }
            self.validate_collection(c, &mut seen)?;
        }
        let count = seen.len();
        if count > MAX_FILES {
            return Err(bad(format!(
                "{count} files is more than the limit of {MAX_FILES}"
            )));
        }
        let total = self.files().fold(0u64, |t, f| t.saturating_add(f.size));
        if total > MAX_TOTAL_SIZE {
            return Err(bad(format!(
                "total size of {total} bytes is more than the limit"
            )));
        }
        for (alias, target) in &self.aliases {
            validate_name(alias).map_err(|e| bad(e.to_string()))?;
            if !names.contains(target.as_str()) {
                return Err(bad(format!(
                    "alias `{alias}` points to `{target}`, which is not in the snapshot"
                )));
            }
        }
        Ok(())
    }

    /// Format, version and kind.
    fn validate_header(&self, expected: Option<SnapshotKind>) -> Result<()> {
        if self.format != FORMAT_NAME {
            return Err(bad(format!("unknown format `{}`", self.format)));
        }
        if !(FORMAT_VERSION..=LISTED_LAST_VERSION).contains(&self.format_version) {
            return Err(bad(format!(
                "format version {} is not supported (this build reads versions \
                 {FORMAT_VERSION} and {LISTED_LAST_VERSION})",
                self.format_version
            )));
        }
        match (expected, self.kind) {
            (Some(SnapshotKind::Collection), SnapshotKind::Full) => Err(bad(
                "this is a full-storage snapshot, not a collection snapshot",
            )),
            (Some(SnapshotKind::Full), SnapshotKind::Collection) => Err(bad(
                "this is a collection snapshot, not a full-storage snapshot",
            )),
            (_, SnapshotKind::Collection) if self.collections.len() != 1 => Err(bad(
                "a collection snapshot must hold exactly one collection",
            )),
            _ => Ok(()),
        }
    }

    /// One collection's directory and files: `config.json` first, then segments in WAL
    /// order without overlap, each path allowed, listed once (`seen` holds every path so
    /// far) and of a sane size.
    fn validate_collection<'a>(
        &self,
        c: &'a ManifestCollection,
        seen: &mut HashSet<&'a str>,
    ) -> Result<()> {
        let expected_dir = match self.kind {
            SnapshotKind::Collection => String::new(),
            SnapshotKind::Full => full_collection_dir(&c.name),
        };
        if c.dir != expected_dir {
            return Err(bad(format!(
                "collection `{}` has unexpected directory `{}`",
                c.name, c.dir
            )));
        }
        let mut order = FileOrder::default();
        for f in &c.files {
            order.next(&c.dir, &f.path, f.size)?;
            if !seen.insert(f.path.as_str()) {
                return Err(bad(format!("`{}` is listed twice", f.path)));
            }
        }
        if order.count == 0 {
            return Err(bad(format!("collection `{}` has no config.json", c.name)));
        }
        Ok(())
    }

    /// Every file, in archive order.
    pub fn files(&self) -> impl Iterator<Item = &ManifestFile> {
        self.collections.iter().flat_map(|c| c.files.iter())
    }
}

/// Formats the `snapshot.crc32` entry: `<8 hex>  <path>` per line, in archive order.
pub(crate) fn format_checksums(files: &[(String, u32)]) -> String {
    files
        .iter()
        .map(|(path, crc)| format!("{crc:08x}  {path}\n"))
        .collect()
}

/// Parses the `snapshot.crc32` entry.
pub(crate) fn parse_checksums(text: &str) -> Result<BTreeMap<String, u32>> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (crc, path) = line
            .split_once("  ")
            .ok_or_else(|| bad("malformed snapshot.crc32 line"))?;
        let crc = (crc.len() == 8)
            .then(|| u32::from_str_radix(crc, 16).ok())
            .flatten()
            .ok_or_else(|| bad("malformed checksum in snapshot.crc32"))?;
        if out.insert(path.to_string(), crc).is_some() {
            return Err(bad(format!("`{path}` appears twice in snapshot.crc32")));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            format: FORMAT_NAME.into(),
            format_version: FORMAT_VERSION,
            kind: SnapshotKind::Collection,
            created_at: String::new(),
            producer: String::new(),
            collections: vec![ManifestCollection {
                name: "c".into(),
                dir: String::new(),
                files: paths
                    .iter()
                    .map(|p| ManifestFile {
                        path: p.to_string(),
                        size: 1,
                    })
                    .collect(),
            }],
            aliases: BTreeMap::new(),
        }
    }

    #[test]
    fn only_collection_files_are_allowed() {
        let seg = |a: u32, b: u32| format!("data/{a:020}-{b:020}.seg");
        let (s1, s2) = (seg(0, 3), seg(4, 4));
        manifest(&["config.json", &s1, &s2]).validate(None).unwrap();
        assert!(
            manifest(&["config.json", &s2, &s1]).validate(None).is_err(),
            "out of order"
        );
        assert!(
            manifest(&["config.json", &s1, &seg(3, 5)])
                .validate(None)
                .is_err(),
            "overlap"
        );
        assert!(
            manifest(&[&s1, "config.json"]).validate(None).is_err(),
            "config not first"
        );
        manifest(&[
            "config.json",
            "data/00000000000000000000-00000000000000000003.seg",
        ])
        .validate(None)
        .unwrap();
        for bad_path in [
            "../x",
            "/etc/passwd",
            "data/../../x.seg",
            "data/x.seg",
            "config.json/..",
            "other",
        ] {
            assert!(
                manifest(&["config.json", bad_path]).validate(None).is_err(),
                "{bad_path}"
            );
        }
        assert!(manifest(&["config.json", "config.json"])
            .validate(None)
            .is_err());
        assert!(
            manifest(&["data/00000000000000000000-00000000000000000003.seg"])
                .validate(None)
                .is_err()
        );
        assert!(manifest(&["config.json"])
            .validate(Some(SnapshotKind::Full))
            .is_err());
    }

    #[test]
    fn checksum_lines_round_trip() {
        let text = format_checksums(&[("config.json".into(), 0xdead_beef), ("data/x".into(), 7)]);
        let m = parse_checksums(&text).unwrap();
        assert_eq!((m["config.json"], m["data/x"]), (0xdead_beef, 7));
        assert!(parse_checksums("zz  x\n").is_err());
        assert!(parse_checksums(&format!("{text}{text}")).is_err());
    }
}
