//! exec into a running busybox container (root only).

mod common;

use common::*;
use crius_runtime::oci_spec::runtime::{Process, ProcessBuilder, UserBuilder};
use crius_runtime::{Pid, Runtime, RuntimeError, Signal, Stdio};
use nix::sys::signal::kill;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::getpid;

fn process(args: &[&str]) -> Process {
    ProcessBuilder::default()
        .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .build()
        .unwrap()
}

/// A started `sleep 100` container, force-deleted (and its init reaped) on drop.
struct Sleeper {
    runtime: Runtime,
    id: String,
    init: Pid,
    _state: tempfile::TempDir,
    _bundle: Bundle,
}

impl Sleeper {
    fn start(name: &str) -> Sleeper {
        let state = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(state.path());
        let id = unique_id(name);
        let bundle = Bundle::isolated(&id, &["sleep", "100"]);
        let init = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();
        runtime.start(&id).unwrap();
        Sleeper {
            runtime,
            id,
            init,
            _state: state,
            _bundle: bundle,
        }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.runtime.delete(&self.id, true);
        // Reap every child the test left, not only init: an unreaped exec'd process is a
        // zombie in the container's pid namespace, and init cannot finish exiting before it
        // is gone. Tests are serialized, so all our children are this test's.
        while waitpid(None, None).is_ok() {}
    }
}

#[test]
fn exec_returns_both_streams_and_the_exit_code() {
    require_root!();
    let _serial = serial();
    let container = Sleeper::start("exec-streams");
    let (stdout, stdout_writer) = pipe();
    let (stderr, stderr_writer) = pipe();

    let pid = container
        .runtime
        .exec(
            &container.id,
            &process(&["sh", "-c", "echo out; echo err >&2; exit 3"]),
            Stdio {
                stdin: None,
                stdout: Some(stdout_writer),
                stderr: Some(stderr_writer),
            },
        )
        .unwrap();

    assert_eq!(read_to_end(stdout), "out\n");
    assert_eq!(read_to_end(stderr), "err\n");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 3));
}

#[test]
fn exec_runs_as_the_process_says_inside_the_container() {
    require_root!();
    let _serial = serial();
    let container = Sleeper::start("exec-process");
    let (stdout, stdout_writer) = pipe();
    let mut exec = process(&["sh", "-c", "echo $FOO; pwd; id -u; id -g; hostname"]);
    exec.set_env(Some(vec!["PATH=/bin".into(), "FOO=bar".into()]))
        .set_cwd("/bin".into())
        .set_user(
            UserBuilder::default()
                .uid(1000u32)
                .gid(1001u32)
                .build()
                .unwrap(),
        );

    let pid = container
        .runtime
        .exec(
            &container.id,
            &exec,
            Stdio {
                stdout: Some(stdout_writer),
                ..Stdio::null()
            },
        )
        .unwrap();

    assert_eq!(read_to_end(stdout), "bar\n/bin\n1000\n1001\ncrius-test\n");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
}

#[test]
fn exec_is_our_child_leading_its_own_group_in_the_container() {
    require_root!();
    let _serial = serial();
    let container = Sleeper::start("exec-group");

    let pid = container
        .runtime
        .exec(&container.id, &process(&["sleep", "10"]), Stdio::null())
        .unwrap();

    assert_eq!(parent_of(pid), getpid());
    assert_eq!(process_group_of(pid), pid);
    for ns in ["pid", "mnt", "net", "ipc", "uts"] {
        assert_eq!(
            namespace_of(pid, ns),
            namespace_of(container.init, ns),
            "{ns}"
        );
    }
    let procs =
        std::fs::read_to_string(cgroup_dir("memory", &container.id).join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|line| line == pid.to_string()));

    // What the shim does at an ExecSync timeout: kill the whole group.
    kill(Pid::from_raw(-pid.as_raw()), Signal::SIGKILL).unwrap();
    assert_eq!(wait(pid), WaitStatus::Signaled(pid, Signal::SIGKILL, false));
}

#[test]
fn exec_of_a_missing_binary_fails_and_leaves_its_child_to_reap() {
    require_root!();
    let _serial = serial();
    let container = Sleeper::start("exec-missing");

    let err = container
        .runtime
        .exec(&container.id, &process(&["no-such-binary"]), Stdio::null())
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Libcontainer { .. }), "{err}");
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    eprintln!("missing binary: {chain}");

    // Both of libcontainer's children are left to us: the intermediate (it bails out before
    // reaping it) and the exec's own process, which failed to exec. Reap them: a zombie in the
    // container's pid namespace would keep its init from finishing its exit.
    let mut statuses = [waitpid(None, None).unwrap(), waitpid(None, None).unwrap()];
    statuses.sort_by_key(|status| match status {
        WaitStatus::Exited(_, code) => *code,
        _ => i32::MAX,
    });
    for status in &statuses {
        assert_ne!(status.pid(), Some(container.init));
    }
    assert!(
        matches!(statuses, [WaitStatus::Exited(_, 0), WaitStatus::Exited(_, code)] if code != 0),
        "{statuses:?}"
    );
}

#[test]
fn exec_into_unknown_or_stopped_container_fails() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let err = runtime
        .exec("nope", &process(&["true"]), Stdio::null())
        .unwrap_err();
    assert!(err.is_not_found());

    let container = Sleeper::start("exec-stopped");
    container
        .runtime
        .kill(&container.id, Signal::SIGKILL, false)
        .unwrap();
    assert_eq!(
        wait(container.init),
        WaitStatus::Signaled(container.init, Signal::SIGKILL, false)
    );
    let err = container
        .runtime
        .exec(&container.id, &process(&["true"]), Stdio::null())
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::InvalidStatus { .. }),
        "unexpected {err}"
    );
}
