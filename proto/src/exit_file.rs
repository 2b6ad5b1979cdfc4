//! The exit file: where a shim records its container's exit status, so that
//! criusd can read it even when the shim is gone.
//!
//! Format: one line, `<exit_code> <finished_at_unix_nanos>[ oom_killed]\n`:
//! the flag word is there only when the OOM killer struck, so a record
//! without it (as older shims wrote it) still reads. Written to a temporary
//! file beside it and renamed into place, so a reader sees the whole record
//! or no file.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// The exit status, or 128+N when killed by signal N.
    pub exit_code: i32,
    pub finished_at_unix_nanos: i64,
    /// The OOM killer killed a process of the container's cgroup.
    pub oom_killed: bool,
}

const OOM_KILLED: &str = "oom_killed";

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
    let oom_flag = if record.oom_killed {
        format!(" {OOM_KILLED}")
    } else {
        String::new()
    };
    writeln!(
        file,
        "{} {}{oom_flag}",
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
    let mut fields = content.trim_end().split(' ');
    let (Some(code), Some(finished)) = (fields.next(), fields.next()) else {
        return Err(malformed());
    };
    let oom_killed = match fields.next() {
        None => false,
        Some(OOM_KILLED) => true,
        Some(_) => return Err(malformed()),
    };
    if fields.next().is_some() {
        return Err(malformed());
    }
    Ok(Some(ExitRecord {
        exit_code: code.parse().map_err(|_| malformed())?,
        finished_at_unix_nanos: finished.parse().map_err(|_| malformed())?,
        oom_killed,
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
            oom_killed: false,
        };
        write(&path, record).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn round_trips_an_oom_kill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit");
        let record = ExitRecord {
            exit_code: 137,
            finished_at_unix_nanos: 42,
            oom_killed: true,
        };
        write(&path, record).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "137 42 oom_killed\n");
        assert_eq!(read(&path).unwrap(), Some(record));
    }

    #[test]
    fn reads_a_record_without_the_oom_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit");
        fs::write(&path, "1 42\n").unwrap();
        assert_eq!(
            read(&path).unwrap(),
            Some(ExitRecord {
                exit_code: 1,
                finished_at_unix_nanos: 42,
                oom_killed: false,
            })
        );
    }

    #[test]
    fn rejects_a_malformed_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit");
        for content in ["137\n", "137 42 oom\n", "137 42 oom_killed extra\n"] {
            fs::write(&path, content).unwrap();
            assert!(
                matches!(read(&path), Err(ExitFileError::Malformed { .. })),
                "{content:?}"
            );
        }
    }
}
