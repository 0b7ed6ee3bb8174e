//! The data directory's manifest: format version, shard count and
//! partitioner, fixed at creation.
//!
//! `MANIFEST` is a small TOML file written atomically (temp, fsync, rename,
//! directory fsync). A daemon started with settings that disagree with it is
//! refused with a message that says what to do; it is never silently
//! misrouted.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::shard::partition::Partitioner;

/// Manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
/// File name in the data directory.
pub const MANIFEST_FILE: &str = "MANIFEST";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ManifestFile {
    format_version: u32,
    shards: u32,
    partitioner: String,
    /// Hex-encoded split keys (ranges partitioner only).
    #[serde(default)]
    split_keys: Vec<String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Reads the manifest of `dir`, if there is one.
pub fn read(dir: &Path) -> Result<Option<Partitioner>> {
    let path = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("read", &path, e)),
    };
    let m: ManifestFile = toml::from_str(&text)
        .map_err(|e| Error::corruption(&path, 0, format!("manifest is not valid: {e}")))?;
    if m.format_version != MANIFEST_VERSION {
        return Err(Error::Config(format!(
            "{} has format version {}, this build reads {MANIFEST_VERSION}",
            path.display(),
            m.format_version
        )));
    }
    let p = match m.partitioner.as_str() {
        "hash" => Partitioner::hash(m.shards)?,
        "ranges" => {
            let splits = m
                .split_keys
                .iter()
                .map(|s| {
                    unhex(s).ok_or_else(|| {
                        Error::corruption(&path, 0, format!("split key {s:?} is not hex"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Partitioner::ranges(splits)?
        }
        other => {
            return Err(Error::corruption(
                &path,
                0,
                format!("unknown partitioner {other:?}"),
            ));
        }
    };
    if p.shards() != m.shards {
        return Err(Error::corruption(
            &path,
            0,
            "shard count disagrees with the split keys",
        ));
    }
    Ok(Some(p))
}

/// Writes the manifest of `dir` durably.
pub fn write(dir: &Path, p: &Partitioner) -> Result<()> {
    let m = ManifestFile {
        format_version: MANIFEST_VERSION,
        shards: p.shards(),
        partitioner: match p {
            Partitioner::Hash { .. } => "hash".into(),
            Partitioner::Ranges { .. } => "ranges".into(),
        },
        split_keys: match p {
            Partitioner::Hash { .. } => vec![],
            Partitioner::Ranges { splits } => splits.iter().map(|s| hex(s)).collect(),
        },
    };
    let text =
        toml::to_string(&m).map_err(|e| Error::Config(format!("encoding the manifest: {e}")))?;
    crate::storage::store::write_file_atomic_std(&dir.join(MANIFEST_FILE), text.as_bytes())
}

/// Checks a requested partitioner against the directory's; `None` requested
/// means "whatever the directory has".
pub fn reconcile(
    dir: &Path,
    stored: Option<Partitioner>,
    requested: Option<Partitioner>,
    default: Partitioner,
) -> Result<Partitioner> {
    match (stored, requested) {
        (Some(s), Some(r)) if s != r => Err(Error::Config(format!(
            "data directory {} was created with partitioner '{s}', but this start asks for '{r}'. \
             Start without --shards/--split-keys to use the directory's setting, or with settings that match it; \
             to change the shard count, start a new directory and load a dump into it (flashkv-ctl dump/load).",
            dir.display()
        ))),
        (Some(s), _) => Ok(s),
        (None, Some(r)) => Ok(r),
        (None, None) => Ok(default),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_mismatch_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let p = Partitioner::ranges(vec![vec![0, 255], b"m".to_vec()]).unwrap();
        write(dir.path(), &p).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(p.clone()));
        let err = reconcile(
            dir.path(),
            Some(p.clone()),
            Some(Partitioner::hash(2).unwrap()),
            Partitioner::hash(2).unwrap(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("Start without --shards"), "{err}");
        assert_eq!(
            reconcile(
                dir.path(),
                Some(p.clone()),
                None,
                Partitioner::hash(8).unwrap()
            )
            .unwrap(),
            p
        );
    }
}
