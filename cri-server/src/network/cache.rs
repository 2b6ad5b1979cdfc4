//! What an ADD was run with, and what it returned, kept on disk per pod so
//! that DEL (after a criusd restart or a config change) undoes exactly that.
//! Writes are atomic: a crash leaves the old record or the new one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cni::{CniError, PodNetwork};
use super::conf::NetworkConfList;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CachedNetwork {
    pub name: String,
    pub cni_version: String,
    pub plugins: Vec<Value>,
}

impl From<&NetworkConfList> for CachedNetwork {
    fn from(conf: &NetworkConfList) -> CachedNetwork {
        CachedNetwork {
            name: conf.name.clone(),
            cni_version: conf.cni_version.clone(),
            plugins: conf.plugins.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CacheRecord {
    pub pod: PodNetwork,
    pub network: CachedNetwork,
    /// The whole list's ADD result; `None` while ADD is under way (or was cut short).
    pub result: Option<Value>,
}

/// `<dir>/<pod-id>.json`; the id must be a plain file name.
pub(crate) fn record_path(dir: &Path, pod_id: &str) -> Result<PathBuf, CniError> {
    let plain = !pod_id.is_empty()
        && pod_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !pod_id.starts_with('.');
    if !plain {
        return Err(CniError::InvalidPodId(pod_id.to_string()));
    }
    Ok(dir.join(format!("{pod_id}.json")))
}

fn cache_err(path: &Path) -> impl FnOnce(io::Error) -> CniError + '_ {
    move |source| CniError::Cache {
        path: path.to_path_buf(),
        source,
    }
}

/// The cached record at `path`; `None` when there is none. Errors:
/// CacheIo, or CacheCorrupt for a record that does not parse.
pub(crate) fn read(path: &Path) -> Result<Option<CacheRecord>, CniError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(cache_err(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| CniError::CacheCorrupt {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Writes `record` at `path` crash-safely (temp file, fsync, rename, fsync
/// of the dir). Idempotent. Errors: CacheIo naming the path.
pub(crate) fn write(path: &Path, record: &CacheRecord) -> Result<(), CniError> {
    let dir = path.parent().expect("a record path has a parent");
    fs::create_dir_all(dir).map_err(cache_err(dir))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(record).expect("a cache record serializes");
    let mut file = File::create(&tmp).map_err(cache_err(&tmp))?;
    file.write_all(&bytes).map_err(cache_err(&tmp))?;
    file.sync_all().map_err(cache_err(&tmp))?;
    fs::rename(&tmp, path).map_err(cache_err(path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(cache_err(dir))
}

/// Removes the record at `path`. Idempotent: a missing record is no error.
pub(crate) fn remove(path: &Path) -> Result<(), CniError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(cache_err(path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record() -> CacheRecord {
        CacheRecord {
            pod: PodNetwork {
                id: "p1".into(),
                name: "web".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                netns: "/run/crius/ns/p1/net".into(),
                port_mappings: vec![],
            },
            network: CachedNetwork {
                name: "crius".into(),
                cni_version: "1.0.0".into(),
                plugins: vec![json!({"type": "bridge"})],
            },
            result: Some(json!({"ips": []})),
        }
    }

    #[test]
    fn record_round_trips_and_remove_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(&dir.path().join("cni-cache"), "p1").unwrap();
        assert_eq!(read(&path).unwrap(), None);
        write(&path, &record()).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record()));
        assert!(!path.with_extension("json.tmp").exists());
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }

    #[test]
    fn corrupt_record_is_an_error_not_absence() {
        let dir = tempfile::tempdir().unwrap();
        let path = record_path(dir.path(), "p1").unwrap();
        fs::write(&path, "{").unwrap();
        assert!(matches!(read(&path), Err(CniError::CacheCorrupt { .. })));
    }

    #[test]
    fn pod_id_must_be_a_plain_name() {
        let dir = Path::new("/c");
        assert_eq!(record_path(dir, "ab12").unwrap(), Path::new("/c/ab12.json"));
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(record_path(dir, bad).is_err(), "{bad:?}");
        }
    }
}
