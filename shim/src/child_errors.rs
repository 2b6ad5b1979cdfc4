//! What libcontainer's forked processes log when a create fails.
//!
//! libcontainer's intermediate and init processes report a failed create to
//! the shim in one line, the top of their error ("failed to prepare
//! rootfs", "failed to unix syscall"); the mount, path and errno are only in
//! their `tracing` events (`failed to mount Mount { destination: … }`,
//! `err=Mount(Syscall(Nix(ENOTDIR)))`), which they emit through the shim's
//! subscriber, inherited on fork. [`ErrorEvents`] copies libcontainer's
//! ERROR events, from every process, to one anonymous in-memory file shared
//! across the forks, so the shim can fold them into the create's error
//! (shim.log has them too, but criusd removes it with the bundle when it
//! rolls the create back; an anonymous file leaves nothing behind).

use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// At most this many of the last lines are kept for an error.
const MAX_LINES: usize = 8;
/// A longer line is cut here (a Debug of a whole spec can be long).
const MAX_LINE_LEN: usize = 1024;

/// The file libcontainer's ERROR events are written to; cheap to clone.
#[derive(Clone)]
pub struct ErrorEvents {
    file: Arc<File>,
}

impl ErrorEvents {
    /// A new, empty capture file: close-on-exec (no container process keeps
    /// it), appended to by every process that shares it.
    pub fn new() -> io::Result<ErrorEvents> {
        let fd = memfd_create(c"crius-shim-child-errors", MemFdCreateFlag::MFD_CLOEXEC)?;
        fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            FcntlArg::F_SETFL(OFlag::O_APPEND),
        )?;
        Ok(ErrorEvents {
            file: Arc::new(File::from(fd)),
        })
    }

    /// The tracing layer that writes the events.
    pub fn layer(&self) -> ErrorEventsLayer {
        ErrorEventsLayer {
            events: self.clone(),
        }
    }

    /// The lines written since the last take, oldest first, each once, at
    /// most the last [`MAX_LINES`]; errno names are followed by their text
    /// (`ENOTDIR (Not a directory)`). Empties the file.
    pub fn take(&self) -> io::Result<Vec<String>> {
        let mut file = &*self.file;
        let mut text = String::new();
        file.seek(SeekFrom::Start(0))?;
        file.read_to_string(&mut text)?;
        file.set_len(0)?;
        let mut lines: Vec<String> = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let line = with_errno_text(line);
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        let skip = lines.len().saturating_sub(MAX_LINES);
        Ok(lines.split_off(skip))
    }

    fn write_line(&self, line: &str) {
        // One write(2) a line: with O_APPEND, lines of several processes do
        // not interleave. A failed write only loses detail.
        let _ = (&*self.file).write_all(line.as_bytes());
    }
}

/// Writes libcontainer's (and libcgroups') ERROR events to [`ErrorEvents`]:
/// the message, then each field as `name=value`, on one line.
pub struct ErrorEventsLayer {
    events: ErrorEvents,
}

impl<S: Subscriber> Layer<S> for ErrorEventsLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let ours = ["libcontainer", "libcgroups"]
            .iter()
            .any(|krate| meta.target().starts_with(krate));
        if *meta.level() != Level::ERROR || !ours {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        let mut text = line.message;
        text.push_str(&line.fields);
        let mut text: String = text
            .chars()
            .map(|c| if c == '\n' { ' ' } else { c })
            .take(MAX_LINE_LEN)
            .collect();
        text.push('\n');
        self.events.write_line(&text);
    }
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

/// `line` with each errno name (as nix's Debug prints it, `ENOENT`)
/// followed by its text: `ENOENT (No such file or directory)`.
fn with_errno_text(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(word);
        if let Some(errno) = errno_named(word) {
            let _ = write!(out, " ({})", errno.desc());
        }
        word.clear();
    };
    for c in line.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// The errno whose name is `word` (`EACCES`), if any.
fn errno_named(word: &str) -> Option<Errno> {
    if word.len() < 3
        || !word.starts_with('E')
        || !word
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return None;
    }
    (1..256)
        .map(Errno::from_raw)
        .find(|errno| *errno != Errno::UnknownErrno && format!("{errno:?}") == word)
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn errno_names_get_their_text() {
        assert_eq!(
            with_errno_text("err=Mount(Syscall(Nix(ENOTDIR)))"),
            "err=Mount(Syscall(Nix(ENOTDIR (Not a directory))))"
        );
        assert_eq!(
            with_errno_text("ENOENT at /etc/ERROR EXIT"),
            "ENOENT (No such file or directory) at /etc/ERROR EXIT"
        );
    }

    #[test]
    fn libcontainers_errors_are_kept_once_and_in_order() {
        let events = ErrorEvents::new().unwrap();
        let subscriber = tracing_subscriber::registry().with(events.layer());
        tracing::subscriber::with_default(subscriber, || {
            let mount = "/etc";
            tracing::error!(target: "libcontainer::rootfs::mount", "failed to mount {mount:?}: syscall");
            tracing::error!(target: "libcontainer::process::init::process", err = ?Errno::ENOTDIR, "failed to prepare rootfs");
            tracing::error!(target: "libcontainer::rootfs::mount", "failed to mount {mount:?}: syscall");
            // Not libcontainer's, or not an error: left out.
            tracing::error!(target: "crius_shim::server", "the RPC failed");
            tracing::warn!(target: "libcontainer::rootfs::mount", "retrying");
        });
        assert_eq!(
            events.take().unwrap(),
            [
                r#"failed to mount "/etc": syscall"#,
                "failed to prepare rootfs err=ENOTDIR (Not a directory)",
            ]
        );
        assert!(events.take().unwrap().is_empty(), "taken once");
    }

    #[test]
    fn only_the_last_lines_are_kept() {
        let events = ErrorEvents::new().unwrap();
        let subscriber = tracing_subscriber::registry().with(events.layer());
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..20 {
                tracing::error!(target: "libcontainer", "line {i}");
            }
        });
        let lines = events.take().unwrap();
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines.last().unwrap(), "line 19");
    }
}
