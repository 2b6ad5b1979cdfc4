//! The CRI log file format: one record per line,
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n`.
//!
//! `F` closes a line that ended with `\n`; `P` is a partial chunk: a line
//! longer than [`MAX_RECORD`] is split into `P` chunks of that size, and a
//! stream that closes mid-line ends with a `P` record. Each stream keeps its
//! own pending line, so interleaved stdout and stderr never mix in a record.
//! A terminal's output is all `stdout` (as containerd and CRI-O log it), its
//! lines ending in `\r\n` (see [`Source`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, SecondsFormat, Utc};

/// The most content bytes one record holds.
pub const MAX_RECORD: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// What the container's output comes through, which decides where a line ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Pipes: a line ends at `\n`; a `\r` before it is the program's own.
    Pipes,
    /// A pty, whose line discipline writes each `\n` as `\r\n` (ONLCR): a
    /// line ends at `\r\n` or `\n`, and the `\r` is not logged (containerd's
    /// log reader drops it the same way, also when `\r\n` straddles reads).
    Terminal,
}

#[derive(Clone, Copy)]
enum Tag {
    Partial,
    Full,
}

/// Turns the raw output of a container's stdout and stderr into CRI log records.
pub struct CriLogWriter<W> {
    sink: W,
    source: Source,
    /// The unfinished line of each stream, at most [`MAX_RECORD`] bytes.
    pending: [Vec<u8>; 2],
    /// One record is assembled here and written with a single write, so an
    /// appending file never holds half a record from us.
    record: Vec<u8>,
}

/// The CRI log file at its path, which kubelet rotates: it renames the file,
/// then has the shim reopen the path.
pub struct CriLogFile {
    path: PathBuf,
    writer: CriLogWriter<File>,
}

impl CriLogFile {
    /// Opens (appending) or creates the log file, and its parent directories,
    /// for output from `source`.
    pub fn open(path: &Path, source: Source) -> io::Result<Self> {
        Ok(CriLogFile {
            path: path.to_owned(),
            writer: CriLogWriter::new(open_appending(path)?, source),
        })
    }

    /// Closes the file and opens (or creates) the one now at the path. On
    /// error the old file stays in use. A line begun before carries on in
    /// the new file.
    pub fn reopen(&mut self) -> io::Result<()> {
        self.writer.sink = open_appending(&self.path)?;
        Ok(())
    }

    pub fn writer(&mut self) -> &mut CriLogWriter<File> {
        &mut self.writer
    }
}

fn open_appending(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

impl<W: Write> CriLogWriter<W> {
    pub fn new(sink: W, source: Source) -> Self {
        CriLogWriter {
            sink,
            source,
            pending: [Vec::new(), Vec::new()],
            record: Vec::new(),
        }
    }

    /// Takes the next chunk read from `stream`; writes every record it completes.
    pub fn write(&mut self, stream: Stream, mut data: &[u8], now: SystemTime) -> io::Result<()> {
        let timestamp = rfc3339_nano(now);
        let mut pending = std::mem::take(&mut self.pending[stream.index()]);
        let result = (|| {
            while let Some(newline) = data.iter().position(|&b| b == b'\n') {
                pending.extend_from_slice(&data[..newline]);
                data = &data[newline + 1..];
                if self.source == Source::Terminal && pending.last() == Some(&b'\r') {
                    pending.pop();
                }
                self.emit_overlong(stream, &timestamp, &mut pending)?;
                self.emit(stream, &timestamp, Tag::Full, &pending)?;
                pending.clear();
            }
            pending.extend_from_slice(data);
            self.emit_overlong(stream, &timestamp, &mut pending)
        })();
        self.pending[stream.index()] = pending;
        result
    }

    /// The stream closed: an unfinished line becomes a final `P` record.
    pub fn finish(&mut self, stream: Stream, now: SystemTime) -> io::Result<()> {
        let pending = std::mem::take(&mut self.pending[stream.index()]);
        if pending.is_empty() {
            return Ok(());
        }
        self.emit(stream, &rfc3339_nano(now), Tag::Partial, &pending)
    }

    /// Writes `P` records of [`MAX_RECORD`] bytes while more than that is
    /// pending. A terminal's trailing `\r` waits: it may begin a line end.
    fn emit_overlong(
        &mut self,
        stream: Stream,
        timestamp: &str,
        pending: &mut Vec<u8>,
    ) -> io::Result<()> {
        let held = usize::from(self.source == Source::Terminal && pending.last() == Some(&b'\r'));
        let mut start = 0;
        while pending.len() - held - start > MAX_RECORD {
            self.emit(
                stream,
                timestamp,
                Tag::Partial,
                &pending[start..start + MAX_RECORD],
            )?;
            start += MAX_RECORD;
        }
        pending.drain(..start);
        Ok(())
    }

    fn emit(
        &mut self,
        stream: Stream,
        timestamp: &str,
        tag: Tag,
        content: &[u8],
    ) -> io::Result<()> {
        self.record.clear();
        self.record.extend_from_slice(timestamp.as_bytes());
        self.record.push(b' ');
        self.record.extend_from_slice(stream.name().as_bytes());
        self.record.extend_from_slice(match tag {
            Tag::Partial => b" P ",
            Tag::Full => b" F ",
        });
        self.record.extend_from_slice(content);
        self.record.push(b'\n');
        self.sink.write_all(&self.record)
    }
}

fn rfc3339_nano(time: SystemTime) -> String {
    DateTime::<Utc>::from(time).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const TS: &str = "2023-11-14T22:13:20.000000042Z";

    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_700_000_000, 42)
    }

    fn records(writer: &CriLogWriter<Vec<u8>>) -> Vec<String> {
        String::from_utf8(writer.sink.clone())
            .unwrap()
            // Not lines(): it would take a logged `\r` for part of the line end.
            .split_terminator('\n')
            .map(|line| line.strip_prefix(TS).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn complete_lines_are_full_records() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Pipes);
        log.write(Stream::Stdout, b"hello\n\nworld\n", at())
            .unwrap();
        assert_eq!(
            records(&log),
            [" stdout F hello", " stdout F ", " stdout F world"]
        );
    }

    #[test]
    fn a_line_split_across_reads_is_one_record() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Pipes);
        log.write(Stream::Stdout, b"hel", at()).unwrap();
        assert!(records(&log).is_empty());
        log.write(Stream::Stdout, b"lo\nwor", at()).unwrap();
        log.write(Stream::Stdout, b"ld\n", at()).unwrap();
        assert_eq!(records(&log), [" stdout F hello", " stdout F world"]);
    }

    #[test]
    fn a_stream_closing_mid_line_ends_with_a_partial_record() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Pipes);
        log.write(Stream::Stderr, b"done\nno newline", at())
            .unwrap();
        log.finish(Stream::Stderr, at()).unwrap();
        log.finish(Stream::Stdout, at()).unwrap();
        assert_eq!(records(&log), [" stderr F done", " stderr P no newline"]);
    }

    #[test]
    fn long_lines_are_split_into_partial_chunks() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Pipes);
        let mut line = vec![b'a'; MAX_RECORD];
        line.extend(vec![b'b'; MAX_RECORD]);
        line.extend(b"tail\n");
        // Fed in odd-sized reads, as a pipe would deliver it.
        for chunk in line.chunks(5000) {
            log.write(Stream::Stdout, chunk, at()).unwrap();
        }
        let got = records(&log);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], format!(" stdout P {}", "a".repeat(MAX_RECORD)));
        assert_eq!(got[1], format!(" stdout P {}", "b".repeat(MAX_RECORD)));
        assert_eq!(got[2], " stdout F tail");
    }

    #[test]
    fn a_line_of_exactly_the_maximum_is_one_full_record() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Pipes);
        log.write(Stream::Stdout, &[b'x'; MAX_RECORD], at())
            .unwrap();
        assert!(records(&log).is_empty());
        log.write(Stream::Stdout, b"\n", at()).unwrap();
        assert_eq!(
            records(&log),
            [format!(" stdout F {}", "x".repeat(MAX_RECORD))]
        );
    }

    #[test]
    fn interleaved_streams_keep_their_own_lines() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Pipes);
        log.write(Stream::Stdout, b"out-", at()).unwrap();
        log.write(Stream::Stderr, b"err-", at()).unwrap();
        log.write(Stream::Stdout, b"line\n", at()).unwrap();
        log.write(Stream::Stderr, b"line\n", at()).unwrap();
        assert_eq!(records(&log), [" stdout F out-line", " stderr F err-line"]);
    }

    #[test]
    fn a_pipe_keeps_the_programs_carriage_returns() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Pipes);
        log.write(Stream::Stdout, b"dos\r\n", at()).unwrap();
        assert_eq!(records(&log), [" stdout F dos\r"]);
    }

    #[test]
    fn a_terminals_line_ends_are_crlf_and_not_logged() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Terminal);
        // What `sh -c 'tty; echo hello-tty'` writes through a pty, in odd reads.
        log.write(Stream::Stdout, b"/dev/pts/0\r", at()).unwrap();
        log.write(Stream::Stdout, b"\nhello-tty\r\nprogress\rdone\n", at())
            .unwrap();
        log.write(Stream::Stdout, b"no end", at()).unwrap();
        log.finish(Stream::Stdout, at()).unwrap();
        assert_eq!(
            records(&log),
            [
                " stdout F /dev/pts/0",
                " stdout F hello-tty",
                // A lone \r is the program's (top redraws with it): content.
                " stdout F progress\rdone",
                " stdout P no end",
            ]
        );
    }

    #[test]
    fn a_terminals_crlf_straddling_the_record_limit_splits_no_record() {
        let mut log = CriLogWriter::new(Vec::new(), Source::Terminal);
        let mut line = vec![b'a'; MAX_RECORD];
        line.push(b'\r');
        log.write(Stream::Stdout, &line, at()).unwrap();
        assert!(records(&log).is_empty(), "the \\r may end the line");
        log.write(Stream::Stdout, b"\n", at()).unwrap();
        assert_eq!(
            records(&log),
            [format!(" stdout F {}", "a".repeat(MAX_RECORD))]
        );
    }

    #[test]
    fn open_creates_parent_directories_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pods/p1/c1/0.log");
        CriLogFile::open(&path, Source::Pipes)
            .unwrap()
            .writer()
            .write(Stream::Stdout, b"one\n", at())
            .unwrap();
        CriLogFile::open(&path, Source::Pipes)
            .unwrap()
            .writer()
            .write(Stream::Stdout, b"two\n", at())
            .unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{TS} stdout F one\n{TS} stdout F two\n")
        );
    }

    #[test]
    fn reopen_after_a_rename_writes_a_new_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let rotated = dir.path().join("0.log.1");
        let mut log = CriLogFile::open(&path, Source::Pipes).unwrap();
        log.writer()
            .write(Stream::Stdout, b"before\nhalf ", at())
            .unwrap();
        fs::rename(&path, &rotated).unwrap();
        // Until the reopen, the renamed file still takes the output.
        log.writer()
            .write(Stream::Stderr, b"still old\n", at())
            .unwrap();
        log.reopen().unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        log.writer()
            .write(Stream::Stdout, b"a line\nafter\n", at())
            .unwrap();
        assert_eq!(
            fs::read_to_string(&rotated).unwrap(),
            format!("{TS} stdout F before\n{TS} stderr F still old\n")
        );
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{TS} stdout F half a line\n{TS} stdout F after\n")
        );
    }

    #[test]
    fn a_failed_reopen_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/0.log");
        let mut log = CriLogFile::open(&path, Source::Pipes).unwrap();
        // The path's parent cannot be made: a file stands where the dir was.
        fs::rename(dir.path().join("logs"), dir.path().join("old")).unwrap();
        fs::write(dir.path().join("logs"), "").unwrap();
        assert!(log.reopen().is_err());
        log.writer().write(Stream::Stdout, b"kept\n", at()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("old/0.log")).unwrap(),
            format!("{TS} stdout F kept\n")
        );
    }
}
