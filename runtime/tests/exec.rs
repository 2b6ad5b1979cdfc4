//! exec into a running busybox container (root only).

mod common;

use common::*;
use crius_runtime::oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxCapabilitiesBuilder, LinuxSeccompAction,
    LinuxSeccompBuilder, LinuxSyscallBuilder, Process, ProcessBuilder, Spec, UserBuilder,
};
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
        Sleeper::start_with(name, |_| {})
    }

    fn start_with(name: &str, edit_spec: impl FnOnce(&mut Spec)) -> Sleeper {
        let state = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(state.path());
        let id = unique_id(name);
        let bundle = Bundle::isolated(&id, &["sleep", "100"]);
        let config = bundle.path().join("config.json");
        let mut spec = Spec::load(&config).unwrap();
        edit_spec(&mut spec);
        spec.save(&config).unwrap();
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

/// A filter that denies mkdir with EPERM and allows the rest.
fn deny_mkdir(spec: &mut Spec) {
    let deny_mkdir = LinuxSyscallBuilder::default()
        .names(vec!["mkdir".to_string(), "mkdirat".to_string()])
        .action(LinuxSeccompAction::ScmpActErrno)
        .errno_ret(1u32)
        .build()
        .unwrap();
    let seccomp = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![Arch::ScmpArchX86_64])
        .syscalls(vec![deny_mkdir])
        .build()
        .unwrap();
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_seccomp(Some(seccomp));
}

/// Runs the probe script as `exec` and returns its stdout.
fn exec_output(container: &Sleeper, exec: &Process) -> String {
    let (stdout, stdout_writer) = pipe();
    let pid = container
        .runtime
        .exec(
            &container.id,
            exec,
            Stdio {
                stdout: Some(stdout_writer),
                ..Stdio::null()
            },
        )
        .unwrap();
    let out = read_to_end(stdout);
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    out
}

const SECCOMP_PROBE: &str =
    "mkdir /made 2>/dev/null || echo denied; grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status";

#[test]
fn exec_runs_under_the_containers_seccomp_filter() {
    require_root!();
    let _serial = serial();
    let container = Sleeper::start_with("exec-seccomp", deny_mkdir);

    // Unprivileged, no noNewPrivileges asked: the filter still loads, with no_new_privs.
    let mut unprivileged = process(&["sh", "-c", SECCOMP_PROBE]);
    unprivileged.set_no_new_privileges(None).set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1000u32)
            .build()
            .unwrap(),
    );
    assert_eq!(
        exec_output(&container, &unprivileged),
        "denied\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );

    // With CAP_SYS_ADMIN the filter loads without no_new_privs.
    let sys_admin = [Capability::SysAdmin].into_iter().collect::<Capabilities>();
    let mut privileged = process(&["sh", "-c", SECCOMP_PROBE]);
    privileged
        .set_no_new_privileges(None)
        .set_capabilities(Some(
            LinuxCapabilitiesBuilder::default()
                .bounding(sys_admin.clone())
                .effective(sys_admin.clone())
                .permitted(sys_admin)
                .inheritable(Capabilities::new())
                .ambient(Capabilities::new())
                .build()
                .unwrap(),
        ));
    assert_eq!(
        exec_output(&container, &privileged),
        "denied\nNoNewPrivs:\t0\nSeccomp:\t2\n"
    );
}
