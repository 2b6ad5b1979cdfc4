//! The built-in pause workload of a pod sandbox: what the init of a bundle
//! annotated `io.kubernetes.cri.container-type: sandbox` runs instead of an
//! exec. It is PID 1 of the pod's shared PID namespace: it holds the
//! namespace for the pod's containers, reaps the orphans reparented to it and
//! exits on SIGTERM or SIGINT, as the Kubernetes pause image does
//! (kubernetes build/pause/linux/pause.c), with no image and no binary in the
//! rootfs: libcontainer's init, already in the sandbox's namespaces, cgroup,
//! rootfs, user, capabilities and seccomp filter, runs it in place of execve.
//! Being a fork of the shim, it shares the shim's pages; it closes the
//! shim's fds it inherited.

use std::ffi::CStr;

use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::Spec;

/// The annotation (containerd's, on its sandbox specs) and value that make a
/// bundle a pod sandbox.
pub const CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
/// [`CONTAINER_TYPE`]'s value on a pod sandbox's spec (containerd's
/// `ContainerTypeSandbox`); a container's is `container`.
pub const SANDBOX: &str = "sandbox";

/// The name the pause process shows (`comm`, and its command line).
const NAME: &CStr = c"pause";

/// True when the bundle's spec is a pod sandbox's (see [`CONTAINER_TYPE`]).
pub fn is_sandbox(spec: &Spec) -> bool {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(CONTAINER_TYPE))
        .is_some_and(|t| t == SANDBOX)
}

/// libcontainer's workload hook running [`run`]: it never returns to
/// libcontainer (the process exits from it).
#[derive(Clone)]
pub(crate) struct PauseExecutor;

impl Executor for PauseExecutor {
    fn exec(&self, _spec: &Spec) -> Result<(), ExecutorError> {
        close_inherited_fds()?;
        name_the_process();
        std::process::exit(run())
    }

    /// Nothing to look up in the (empty) rootfs.
    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        Ok(())
    }
}

/// Closes every fd but stdio: a fork of the shim that never execs would
/// otherwise hold the shim's listening socket and connections open after the
/// shim dies, and criusd could neither see the shim gone nor connect again.
fn close_inherited_fds() -> Result<(), ExecutorError> {
    // SAFETY: close_range takes two fd numbers and flags; it only closes fds
    // of this process, none of which Rust code here still uses.
    let closed = unsafe { libc::syscall(libc::SYS_close_range, 3, libc::c_uint::MAX, 0) };
    Errno::result(closed)
        .map(drop)
        .map_err(|e| ExecutorError::Other(format!("close the inherited fds: {e}")))
}

/// Names the process `pause`: its `comm`, and its command line, which
/// would otherwise be the shim's (host paths) for `ps` in the pod. The
/// argument strings are rewritten in place (what setproctitle does): glibc's
/// `program_invocation_name` points at them, and the rewrite keeps their
/// length, so the kernel reads `pause` and NULs.
fn name_the_process() {
    let _ = nix::sys::prctl::set_name(NAME);
    let length: usize = std::env::args_os().map(|a| a.len() + 1).sum();
    extern "C" {
        static program_invocation_name: *mut libc::c_char;
    }
    // SAFETY: glibc sets program_invocation_name to argv[0], and the
    // argument strings follow it contiguously for `length` bytes (each
    // argument and its NUL), which this process owns and no one else reads
    // as Rust data (std copied them at start-up).
    unsafe {
        let start = program_invocation_name.cast::<u8>();
        if start.is_null() || length == 0 {
            return;
        }
        std::ptr::write_bytes(start, 0, length);
        let name = NAME.to_bytes();
        std::ptr::copy_nonoverlapping(name.as_ptr(), start, name.len().min(length - 1));
    }
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

/// The pause loop: exit status 0 on SIGTERM or SIGINT; 2 if its signals
/// cannot be taken (it says why on stderr, the sandbox's /dev/null).
///
/// The signals are blocked and taken with `sigwait`: PID 1 of a namespace
/// gets no default action for signals sent from inside it, so a
/// handler-less wait is both the smallest and the surest way to see them.
pub fn run() -> i32 {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(signal);
    }
    if let Err(err) = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&signals), None) {
        eprintln!("pause: blocking its signals: {err}");
        return 2;
    }
    // A child that ended before SIGCHLD was blocked sent its signal to no
    // one (ignored by default): reap it now, or it stays a zombie until the
    // next child ends.
    reap_all();
    loop {
        match signals.wait() {
            Ok(signal) if action(signal) == Action::Exit => return 0,
            Ok(_) => reap_all(),
            Err(err) => {
                eprintln!("pause: waiting for a signal: {err}");
                return 2;
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
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    #[test]
    fn only_a_sandbox_annotation_makes_a_sandbox() {
        let mut spec = Spec::default();
        assert!(!is_sandbox(&spec));
        spec.set_annotations(Some(HashMap::from([(
            CONTAINER_TYPE.to_string(),
            "container".to_string(),
        )])));
        assert!(!is_sandbox(&spec));
        spec.set_annotations(Some(HashMap::from([(
            CONTAINER_TYPE.to_string(),
            SANDBOX.to_string(),
        )])));
        assert!(is_sandbox(&spec));
    }

    #[test]
    fn term_and_int_end_it_and_child_signals_reap() {
        assert_eq!(action(Signal::SIGTERM), Action::Exit);
        assert_eq!(action(Signal::SIGINT), Action::Exit);
        assert_eq!(action(Signal::SIGCHLD), Action::Reap);
    }

    /// Kills and reaps the child it holds when dropped (`None` once the
    /// test reaped it: its pid may belong to another process then).
    struct KillOnDrop(Option<Pid>);

    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            if let Some(pid) = self.0 {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
            }
        }
    }

    /// Forked (the test harness is multi-threaded; the child runs only the
    /// pause workload, then exits without unwinding), the pause process
    /// renames itself, reaps an orphan's zombie, stays up and exits 0 on
    /// SIGTERM or SIGINT.
    #[test]
    fn runs_until_sigterm_or_sigint_and_reaps() {
        use nix::unistd::{fork, ForkResult};
        for signal in [Signal::SIGTERM, Signal::SIGINT] {
            // SAFETY: the child runs only the executor (prctl, sigprocmask,
            // sigwait, fork, waitpid) and exits.
            let child = match unsafe { fork() }.unwrap() {
                ForkResult::Child => {
                    // A child that ends at once: the pause process reaps it.
                    if let Ok(ForkResult::Child) = unsafe { fork() } {
                        std::process::exit(0);
                    }
                    let _ = PauseExecutor.exec(&Spec::default());
                    std::process::exit(3)
                }
                ForkResult::Parent { child } => child,
            };
            // A failed assertion must not leave the forked pause running.
            let mut unreaped = KillOnDrop(Some(child));
            let deadline = Instant::now() + Duration::from_secs(10);
            let status_of = |field: &str| {
                let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap();
                (status.lines())
                    .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
                    .unwrap_or_default()
            };
            // Renamed, and its child (a zombie once it exits) is gone; only
            // stdio is left open.
            loop {
                let children =
                    std::fs::read_to_string(format!("/proc/{child}/task/{child}/children"))
                        .unwrap_or_default();
                if status_of("Name:") == "pause" && children.trim().is_empty() {
                    break;
                }
                assert!(Instant::now() < deadline, "not renamed or not reaped");
                std::thread::sleep(Duration::from_millis(10));
            }
            let fds: Vec<_> = std::fs::read_dir(format!("/proc/{child}/fd"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert!(
                fds.iter().all(|fd| ["0", "1", "2"].contains(&fd.as_str())),
                "{fds:?}"
            );
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap();
            assert!(cmdline.starts_with(b"pause\0"), "{cmdline:?}");
            assert!(cmdline[5..].iter().all(|b| *b == 0), "{cmdline:?}");
            nix::sys::signal::kill(child, signal).unwrap();
            loop {
                match waitpid(child, Some(WaitPidFlag::WNOHANG)).unwrap() {
                    WaitStatus::Exited(_, code) => {
                        unreaped.0 = None;
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
