//! The exit file: where a shim records its container's exit status, so that
//! criusd can read it even when the shim is gone.
//!
//! Format: one line, `<exit_code> <finished_at_unix_nanos>\n`. Written to a
//! temporary file beside it and renamed into place, so a reader sees the
//! whole record or no file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// The exit status, or 128+N when killed by signal N.
    pub exit_code: i32,
    pub finished_at_unix_nanos: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExitFileError {
    #[error("write exit file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("read exit file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("exit file {path} is malformed: {content:?}")]
    Malformed { path: PathBuf, content: String },
}

/// Writes `record` to `path` atomically (temporary file, fsync, rename).
pub fn write(path: &Path, record: ExitRecord) -> Result<(), ExitFileError> {
    let wrap = |source| ExitFileError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let mut file = fs::File::create(&tmp).map_err(wrap)?;
    writeln!(
        file,
        "{} {}",
        record.exit_code, record.finished_at_unix_nanos
    )
    .map_err(wrap)?;
    file.sync_all().map_err(wrap)?;
    fs::rename(&tmp, path).map_err(wrap)
}

/// Reads the record at `path`; `Ok(None)` when there is no exit file (yet).
pub fn read(path: &Path) -> Result<Option<ExitRecord>, ExitFileError> {
    let content = match fs::read_to_string(path) {
        Ok(content) => content,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ExitFileError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    let malformed = || ExitFileError::Malformed {
        path: path.to_owned(),
        content: content.clone(),
    };
    let (code, finished) = content.trim_end().split_once(' ').ok_or_else(malformed)?;
    Ok(Some(ExitRecord {
        exit_code: code.parse().map_err(|_| malformed())?,
        finished_at_unix_nanos: finished.parse().map_err(|_| malformed())?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit");
        assert_eq!(read(&path).unwrap(), None);
        let record = ExitRecord {
            exit_code: 137,
            finished_at_unix_nanos: 1_700_000_000_123_456_789,
        };
        write(&path, record).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn rejects_a_malformed_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit");
        fs::write(&path, "137\n").unwrap();
        assert!(matches!(read(&path), Err(ExitFileError::Malformed { .. })));
    }
}
