//! The state store: one JSON file a record under `<root>/meta/<kind>/<id>.json`.
//!
//! Crash safety comes from write-to-temp, fsync, rename, fsync-dir: a kill -9 at
//! any instant leaves either the old or the new record, never a torn one (a
//! rename within a directory is atomic). Leftover temp files are removed at open.
//! Plain files were chosen over an embedded database because the records are few
//! and small, are read once at start-up and then served from memory, and can be
//! inspected and repaired by hand; no dependency is needed.

pub mod container;
pub mod filter;
pub mod sandbox;
pub mod table;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

const TMP_SUFFIX: &str = ".tmp";
const RECORD_SUFFIX: &str = ".json";
const CORRUPT_SUFFIX: &str = ".corrupt";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state store: encoding {kind}/{id}: {source}")]
    Encode {
        kind: String,
        id: String,
        source: serde_json::Error,
    },
    #[error("state store: invalid record id {0:?}")]
    InvalidId(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the store under `dir` and removes temp files that a
    /// crash left behind.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        for kind in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let kind = kind.map_err(io_err(&dir))?.path();
            if !kind.is_dir() {
                continue;
            }
            for entry in fs::read_dir(&kind).map_err(io_err(&kind))? {
                let path = entry.map_err(io_err(&kind))?.path();
                if path.to_string_lossy().ends_with(TMP_SUFFIX) {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
        }
        Ok(Store { dir })
    }

    fn kind_dir(&self, kind: &str) -> PathBuf {
        self.dir.join(kind)
    }

    fn record_path(&self, kind: &str, id: &str) -> Result<PathBuf, StoreError> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(StoreError::InvalidId(id.to_string()));
        }
        Ok(self.kind_dir(kind).join(format!("{id}{RECORD_SUFFIX}")))
    }

    /// Writes a record atomically and durably.
    pub fn put<T: Serialize>(&self, kind: &str, id: &str, value: &T) -> Result<(), StoreError> {
        let path = self.record_path(kind, id)?;
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Encode {
            kind: kind.to_string(),
            id: id.to_string(),
            source,
        })?;
        let dir = self.kind_dir(kind);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = dir.join(format!("{id}{RECORD_SUFFIX}{TMP_SUFFIX}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        file.write_all(&bytes).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&dir)
    }

    /// Removes a record; removing an absent one succeeds.
    pub fn delete(&self, kind: &str, id: &str) -> Result<(), StoreError> {
        let path = self.record_path(kind, id)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.kind_dir(kind)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Loads every record of a kind. A record that does not decode (a disk
    /// fault, or a format from another version) is moved aside as
    /// `<id>.json.corrupt` and logged, so that one bad file cannot keep the
    /// daemon from starting.
    pub fn load_all<T: DeserializeOwned>(
        &self,
        kind: &str,
    ) -> Result<Vec<(String, T)>, StoreError> {
        let dir = self.kind_dir(kind);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut records = Vec::new();
        for entry in entries {
            let path = entry.map_err(io_err(&dir))?.path();
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let Some(id) = name.strip_suffix(RECORD_SUFFIX) else {
                continue;
            };
            let bytes = fs::read(&path).map_err(io_err(&path))?;
            match serde_json::from_slice(&bytes) {
                Ok(value) => records.push((id.to_string(), value)),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "undecodable state record moved aside");
                    let aside = dir.join(format!("{name}{CORRUPT_SUFFIX}"));
                    fs::rename(&path, &aside).map_err(io_err(&path))?;
                }
            }
        }
        records.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(records)
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pod {
        name: String,
        attempt: u32,
    }

    fn pod(name: &str, attempt: u32) -> Pod {
        Pod {
            name: name.into(),
            attempt,
        }
    }

    #[test]
    fn put_load_delete() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.put("pods", "b", &pod("b", 1)).unwrap();
        store.put("pods", "a", &pod("a", 0)).unwrap();
        store.put("pods", "a", &pod("a", 2)).unwrap();
        let all: Vec<(String, Pod)> = store.load_all("pods").unwrap();
        assert_eq!(
            all,
            vec![("a".into(), pod("a", 2)), ("b".into(), pod("b", 1))]
        );
        store.delete("pods", "a").unwrap();
        store.delete("pods", "a").unwrap();
        let all: Vec<(String, Pod)> = Store::open(tmp.path()).unwrap().load_all("pods").unwrap();
        assert_eq!(all, vec![("b".into(), pod("b", 1))]);
        assert!(store.load_all::<Pod>("containers").unwrap().is_empty());
    }

    /// A crash in the middle of `put` leaves a torn temp file beside the
    /// intact old record: the old record survives and the debris is removed.
    #[test]
    fn torn_write_keeps_old_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.put("pods", "p1", &pod("p1", 1)).unwrap();
        let new = serde_json::to_vec(&pod("p1", 2)).unwrap();
        let torn_tmp = tmp.path().join("pods/p1.json.tmp");
        fs::write(&torn_tmp, &new[..new.len() / 2]).unwrap();

        let reopened = Store::open(tmp.path()).unwrap();
        assert!(!torn_tmp.exists(), "temp debris removed at open");
        let all: Vec<(String, Pod)> = reopened.load_all("pods").unwrap();
        assert_eq!(all, vec![("p1".into(), pod("p1", 1))]);
    }

    #[test]
    fn undecodable_record_is_moved_aside() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        store.put("pods", "good", &pod("good", 0)).unwrap();
        fs::write(tmp.path().join("pods/bad.json"), b"{\"name\":").unwrap();
        let all: Vec<(String, Pod)> = store.load_all("pods").unwrap();
        assert_eq!(all, vec![("good".into(), pod("good", 0))]);
        assert!(tmp.path().join("pods/bad.json.corrupt").exists());
    }

    #[test]
    fn ids_cannot_escape_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        assert!(matches!(
            store.put("pods", "../x", &pod("x", 0)),
            Err(StoreError::InvalidId(_))
        ));
    }
}
