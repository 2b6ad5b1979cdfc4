//! Reaps every child of the shim: the container's init, exec processes, and
//! orphans reparented to the shim as child subreaper.
//!
//! Coexisting with libcontainer: `create` and `exec` fork an intermediate
//! child and reap it by pid. The shim calls them synchronously on its only
//! thread, so the reaper task (`waitpid(-1)`) cannot run during such a call,
//! and a caller registers the pid it got back with [`Reaper::watch`] before it
//! next awaits. Thus the reaper never takes libcontainer's intermediate, and
//! never reaps a pid of ours before it is watched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::oneshot;

/// How a reaped process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// The exit status, or 128+N when killed by signal N (the shell's rule).
    pub code: i32,
    pub at: SystemTime,
}

/// The exit code of a terminated process; None for a status that is not an end.
pub fn exit_code(status: WaitStatus) -> Option<(Pid, i32)> {
    match status {
        WaitStatus::Exited(pid, code) => Some((pid, code)),
        WaitStatus::Signaled(pid, signal, _core_dumped) => Some((pid, 128 + signal as i32)),
        _ => None,
    }
}

#[derive(Clone)]
pub struct Reaper {
    watched: Arc<Mutex<HashMap<Pid, oneshot::Sender<Exit>>>>,
}

impl Reaper {
    /// Starts reaping on SIGCHLD in a task of the current runtime. Call before
    /// the shim has any child.
    pub fn start() -> std::io::Result<Reaper> {
        let sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            watched: Arc::default(),
        };
        tokio::spawn(reaper.clone().run(sigchld));
        Ok(reaper)
    }

    /// The exit of child `pid`, once reaped. Call right after the child was
    /// created, before the next await.
    pub fn watch(&self, pid: Pid) -> oneshot::Receiver<Exit> {
        let (sender, receiver) = oneshot::channel();
        self.lock().insert(pid, sender);
        receiver
    }

    async fn run(self, mut sigchld: Signal) {
        while sigchld.recv().await.is_some() {
            self.reap_all();
        }
    }

    fn reap_all(&self) {
        loop {
            let status = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::warn!(%err, "waitpid failed");
                    return;
                }
                Ok(status) => status,
            };
            let Some((pid, code)) = exit_code(status) else {
                continue;
            };
            let exit = Exit {
                code,
                at: SystemTime::now(),
            };
            match self.lock().remove(&pid) {
                // The waiter may have gone (e.g. a cancelled ExecSync); the
                // zombie is gone all the same.
                Some(sender) => {
                    let _ = sender.send(exit);
                }
                None => tracing::debug!(%pid, code, "reaped an orphan"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Pid, oneshot::Sender<Exit>>> {
        // The map stays consistent even if a holder panicked.
        self.watched.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use nix::sys::signal::Signal;

    use super::*;

    #[test]
    fn exit_status_is_the_code() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some((pid, 3)));
        assert_eq!(exit_code(WaitStatus::Exited(pid, 0)), Some((pid, 0)));
    }

    #[test]
    fn death_by_signal_is_128_plus_the_signal() {
        let pid = Pid::from_raw(42);
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some((pid, 137))
        );
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGTERM, true)),
            Some((pid, 143))
        );
    }

    #[test]
    fn other_statuses_are_no_exit() {
        let pid = Pid::from_raw(42);
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
        assert_eq!(exit_code(WaitStatus::Stopped(pid, Signal::SIGSTOP)), None);
        assert_eq!(exit_code(WaitStatus::Continued(pid)), None);
    }
}
