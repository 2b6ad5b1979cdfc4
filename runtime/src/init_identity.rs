//! Tells a container's init from a later process that reuses its pid.
//!
//! libcontainer keeps only init's pid and calls the container running while any process has
//! it. Once init has exited and been reaped, the pid can be handed to an unrelated process
//! (pid_max may be as low as 32768), and a kill of "init" would hit that process. runc keeps
//! init's start time for this; we record it beside libcontainer's state.

use std::fs;
use std::io;
use std::path::Path;

use nix::unistd::Pid;

const RECORD: &str = "crius-init-start-time";

/// Remembers the start time of `pid`, the container's init, in the container's state dir.
pub(crate) fn record(container_dir: &Path, pid: Pid) -> io::Result<()> {
    let start_time = start_time(pid)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("init {pid} is gone")))?;
    fs::write(container_dir.join(RECORD), start_time.to_string())
}

/// Whether `pid` is still the recorded init; None when nothing was recorded.
pub(crate) fn is_recorded_init(container_dir: &Path, pid: Pid) -> io::Result<Option<bool>> {
    let recorded = match fs::read_to_string(container_dir.join(RECORD)) {
        Ok(recorded) => recorded,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let recorded: u64 = recorded
        .trim()
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Some(start_time(pid)? == Some(recorded)))
}

/// The start time of `pid` in clock ticks since boot; None when there is no such process.
fn start_time(pid: Pid) -> io::Result<Option<u64>> {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => parse_start_time(&stat).map(Some).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unparsable /proc/{pid}/stat"),
            )
        }),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Field 22 of /proc/<pid>/stat. The command name (field 2) may hold spaces and parentheses,
/// so fields are counted from the last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_field_22_counted_after_the_command_name() {
        let stat = "14700 (cat) R 14697 14697 4454 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 \
                    293869 3133440 390 18446744073709551615 94523421282304";
        assert_eq!(parse_start_time(stat), Some(293869));
        let tricky = "7 (a) b (c) R 1 7 7 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 42 3133440";
        assert_eq!(parse_start_time(tricky), Some(42));
        assert_eq!(parse_start_time("7 (cut short) R 1"), None);
    }

    #[test]
    fn a_record_matches_its_process_only() {
        let dir = tempfile::tempdir().unwrap();
        let me = Pid::this();
        assert_eq!(is_recorded_init(dir.path(), me).unwrap(), None);
        record(dir.path(), me).unwrap();
        assert_eq!(is_recorded_init(dir.path(), me).unwrap(), Some(true));
        // A different process: our parent started earlier than we did.
        assert_eq!(
            is_recorded_init(dir.path(), nix::unistd::getppid()).unwrap(),
            Some(false)
        );
    }
}
