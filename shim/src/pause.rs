//! The pod's pause process: `crius-shim` run under the name `pause` (a
//! multi-call binary, as busybox is) is PID 1 of a pod's shared PID
//! namespace. It holds the namespace open for the pod's containers, reaps the
//! orphans reparented to it, and exits on SIGTERM or SIGINT: what the
//! Kubernetes pause image does (kubernetes build/pause/linux/pause.c), with
//! no image to pull. criusd runs it as the pod's sandbox container (an empty
//! read-only rootfs with this binary bound at `/pause`, no capabilities, the
//! default seccomp profile), under an ordinary container shim that stays
//! outside the pod's mount and PID namespaces.

use std::ffi::OsStr;
use std::path::Path;
use std::process::ExitCode;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// The name the binary answers to as the pause process (its path in the
/// sandbox's rootfs is `/pause`).
pub const NAME: &str = "pause";

/// True when the binary was started as the pause process: `argv[0]`'s file
/// name is [`NAME`].
pub fn invoked_as_pause(argv0: Option<&OsStr>) -> bool {
    argv0.and_then(|a| Path::new(a).file_name()) == Some(OsStr::new(NAME))
}

/// What one delivered signal asks of the pause process.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Reap every child that has ended, then wait again.
    Reap,
    /// Exit with status 0.
    Exit,
}

fn action(signal: Signal) -> Action {
    match signal {
        Signal::SIGTERM | Signal::SIGINT => Action::Exit,
        _ => Action::Reap,
    }
}

/// Runs the pause process until SIGTERM or SIGINT: exit status 0; 2 if its
/// signals cannot be taken (it then says why on stderr).
///
/// The signals are blocked and taken with `sigwait`: PID 1 of a namespace
/// gets no default action for signals sent from inside it, so a handler-less
/// wait is both the smallest and the surest way to see them.
pub fn run() -> ExitCode {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    if let Err(err) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        eprintln!("pause: blocking its signals: {err}");
        return ExitCode::from(2);
    }
    loop {
        match signals.wait() {
            Ok(signal) if action(signal) == Action::Exit => return ExitCode::SUCCESS,
            Ok(_) => reap_all(),
            Err(err) => {
                eprintln!("pause: waiting for a signal: {err}");
                return ExitCode::from(2);
            }
        }
    }
}

/// Reaps every ended child without blocking: orphans of the pod's
/// containers become the pause process's children and would stay zombies.
fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn answers_to_its_name_anywhere_on_a_path() {
        assert!(invoked_as_pause(Some(OsStr::new("/pause"))));
        assert!(invoked_as_pause(Some(OsStr::new("pause"))));
        assert!(invoked_as_pause(Some(OsStr::new("/usr/lib/crius/pause"))));
        assert!(!invoked_as_pause(Some(OsStr::new("/usr/bin/crius-shim"))));
        assert!(!invoked_as_pause(Some(OsStr::new("/pause/shim"))));
        assert!(!invoked_as_pause(None));
    }

    #[test]
    fn term_and_int_end_it_and_child_signals_reap() {
        assert_eq!(action(Signal::SIGTERM), Action::Exit);
        assert_eq!(action(Signal::SIGINT), Action::Exit);
        assert_eq!(action(Signal::SIGCHLD), Action::Reap);
    }

    /// Forked (the test harness is multi-threaded; the child runs only
    /// `run`), the pause process stays up and exits 0 on SIGTERM or SIGINT.
    #[test]
    fn runs_until_sigterm_or_sigint() {
        use nix::unistd::{fork, ForkResult};
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the child calls only `run` (sigprocmask, sigwait,
            // waitpid) and exits without unwinding into the harness.
            let child = match unsafe { fork() }.unwrap() {
                ForkResult::Child => {
                    let code = if run() == ExitCode::SUCCESS { 0 } else { 2 };
                    std::process::exit(code)
                }
                ForkResult::Parent { child } => child,
            };
            std::thread::sleep(Duration::from_millis(100));
            assert_eq!(
                waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap(),
                WaitStatus::StillAlive,
                "pause ended early"
            );
            nix::sys::signal::kill(child, signal).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                    WaitStatus::Exited(_, code) => {
                        assert_eq!(code, 0, "{signal}");
                        break;
                    }
                    WaitStatus::StillAlive if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    other => panic!("pause did not exit on {signal}: {other:?}"),
                }
            }
        }
    }
}
