//! create → start → wait → delete of a real busybox container (root only).

mod common;

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd};

use common::*;
use crius_runtime::oci_spec::runtime::{
    Arch, LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder, Spec,
};
use crius_runtime::{ContainerStatus, Runtime, RuntimeError, Signal, Stdio};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::getpid;

#[test]
fn create_start_wait_delete() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("lifecycle");
    let bundle = Bundle::isolated(&id, &["echo", "hello"]);
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };
    let (stdout, stdout_writer) = pipe();

    let pid = runtime
        .create(
            &id,
            bundle.path(),
            Stdio {
                stdout: Some(stdout_writer),
                ..Stdio::null()
            },
        )
        .unwrap();

    // Init is our child, in its own session, still youki's code (not exec'd yet).
    assert_eq!(parent_of(pid), getpid());
    assert_eq!(process_group_of(pid), pid);
    assert_eq!(comm_of(pid), "youki:[2:INIT]");
    assert_ne!(namespace_of(pid, "pid"), namespace_of(getpid(), "pid"));
    let state_now = runtime.state(&id).unwrap();
    assert_eq!(state_now.status, ContainerStatus::Created);
    assert_eq!(state_now.pid, Some(pid));
    for controller in CGROUP_CONTROLLERS {
        let procs = fs::read_to_string(cgroup_dir(controller, &id).join("cgroup.procs")).unwrap();
        assert_eq!(procs.trim(), pid.to_string(), "{controller} cgroup.procs");
    }

    runtime.start(&id).unwrap();
    assert_eq!(read_to_end(stdout), "hello\n");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));

    assert_eq!(runtime.state(&id).unwrap().status, ContainerStatus::Stopped);
    runtime.kill(&id, Signal::SIGTERM, false).unwrap();

    runtime.delete(&id, false).unwrap();
    for controller in CGROUP_CONTROLLERS {
        assert!(
            !cgroup_dir(controller, &id).exists(),
            "{controller} cgroup left behind"
        );
    }
    assert!(runtime.state(&id).unwrap_err().is_not_found());
    assert!(!state.path().join(&id).exists());
    runtime.delete(&id, false).unwrap();
}

#[test]
fn exit_code_and_stdin_reach_the_caller() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("exitcode");
    let bundle = Bundle::isolated(&id, &["sh", "-c", "read line; echo got $line; exit 7"]);
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };
    let (stdin_reader, stdin) = pipe();
    let (stdout, stdout_writer) = pipe();

    let pid = runtime
        .create(
            &id,
            bundle.path(),
            Stdio {
                stdin: Some(stdin_reader.into()),
                stdout: Some(stdout_writer),
                stderr: None,
            },
        )
        .unwrap();
    runtime.start(&id).unwrap();
    nix::unistd::write(&stdin, b"ping\n").unwrap();
    drop(stdin);

    assert_eq!(read_to_end(stdout), "got ping\n");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 7));
    runtime.delete(&id, false).unwrap();
}

#[test]
fn sigterm_ends_a_sleep_init_outside_a_pid_namespace() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("sigterm");
    // The kernel drops signals without a handler sent to a pid namespace's init, even from
    // the host, except SIGKILL: so this container shares the host pid namespace.
    use LinuxNamespaceType::*;
    let bundle = Bundle::new(&id, &["sleep", "100"], &[Ipc, Uts, Mount, Network]);
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };

    let pid = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();
    runtime.start(&id).unwrap();
    assert_eq!(runtime.state(&id).unwrap().status, ContainerStatus::Running);
    runtime.kill(&id, Signal::SIGTERM, false).unwrap();
    assert_eq!(wait(pid), WaitStatus::Signaled(pid, Signal::SIGTERM, false));
    assert_eq!(runtime.state(&id).unwrap().status, ContainerStatus::Stopped);
    runtime.delete(&id, false).unwrap();
}

#[test]
fn sigkill_to_all_ends_a_pid_namespace_init() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("sigkill");
    let bundle = Bundle::isolated(&id, &["sleep", "100"]);
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };

    let pid = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();
    runtime.start(&id).unwrap();
    runtime.kill(&id, Signal::SIGKILL, true).unwrap();
    assert_eq!(wait(pid), WaitStatus::Signaled(pid, Signal::SIGKILL, false));
    // Signalling a stopped container is fine, with or without `all`.
    runtime.kill(&id, Signal::SIGKILL, false).unwrap();
    runtime.kill(&id, Signal::SIGKILL, true).unwrap();
    runtime.delete(&id, false).unwrap();
    assert!(!cgroup_dir("memory", &id).exists());
}

#[test]
fn delete_refuses_a_running_container_unless_forced() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("forcedelete");
    let bundle = Bundle::isolated(&id, &["sleep", "100"]);
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };

    let pid = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();
    runtime.start(&id).unwrap();
    let err = runtime.delete(&id, false).unwrap_err();
    assert!(
        err.to_string().contains("running"),
        "unexpected error: {err}"
    );

    runtime.delete(&id, true).unwrap();
    assert_eq!(wait(pid), WaitStatus::Signaled(pid, Signal::SIGKILL, false));
    for controller in CGROUP_CONTROLLERS {
        assert!(!cgroup_dir(controller, &id).exists());
    }
    assert!(runtime.state(&id).unwrap_err().is_not_found());
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("createddelete");
    let bundle = Bundle::isolated(&id, &["true"]);

    let pid = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();
    runtime.delete(&id, false).unwrap();
    assert_eq!(wait(pid), WaitStatus::Signaled(pid, Signal::SIGKILL, false));
    assert!(!cgroup_dir("memory", &id).exists());
}

#[test]
fn unknown_and_duplicate_ids() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    assert!(runtime.start("nope").unwrap_err().is_not_found());
    assert!(runtime
        .kill("nope", Signal::SIGTERM, false)
        .unwrap_err()
        .is_not_found());
    runtime.delete("nope", true).unwrap();
    assert!(runtime.state("../etc").is_err());

    let id = unique_id("duplicate");
    let bundle = Bundle::isolated(&id, &["true"]);
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };
    let pid = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();
    let err = runtime
        .create(&id, bundle.path(), Stdio::null())
        .unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyExists { .. }), "{err}");
    runtime.delete(&id, true).unwrap();
    wait(pid);
}

#[test]
fn the_containers_oom_score_does_not_stick_to_the_caller() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("oomscore");
    let bundle = Bundle::isolated(&id, &["true"]);
    let config = bundle.path().join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    spec.process_mut()
        .as_mut()
        .unwrap()
        .set_oom_score_adj(Some(999));
    spec.save(&config).unwrap();
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };
    let ours = fs::read_to_string("/proc/self/oom_score_adj").unwrap();

    let pid = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();

    assert_eq!(
        fs::read_to_string("/proc/self/oom_score_adj").unwrap(),
        ours
    );
    let init_score = fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(init_score.trim(), "999");
    runtime.delete(&id, false).unwrap();
    wait(pid);
}

#[test]
fn resources_land_in_the_v1_controllers_of_a_hybrid_host() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("resources");
    let bundle = Bundle::isolated(&id, &["true"]);
    let config = bundle.path().join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * 1024 * 1024)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(100).build().unwrap())
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .quota(50_000)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    spec.linux_mut()
        .as_mut()
        .unwrap()
        .set_resources(Some(resources));
    spec.save(&config).unwrap();
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };

    let pid = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();

    let read = |controller: &str, file: &str| {
        fs::read_to_string(cgroup_dir(controller, &id).join(file))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("pids", "pids.max"), "100");
    assert_eq!(read("cpu", "cpu.shares"), "512");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    runtime.delete(&id, false).unwrap();
    wait(pid);
    assert!(!cgroup_dir("memory", &id).exists());
}

#[test]
fn a_failed_create_leaves_no_state_or_cgroup() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("badcreate");
    // A tmpfs with an option the kernel refuses (EINVAL): libcontainer's init
    // fails preparing the rootfs, after the cgroup and state were made. (A
    // missing bind source is refused before libcontainer runs.)
    let bundle = Bundle::isolated(&id, &["true"]);
    let config = bundle.path().join("config.json");
    let mut spec = oci_spec::runtime::Spec::load(&config).unwrap();
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    mounts.push(
        oci_spec::runtime::MountBuilder::default()
            .destination("/data")
            .typ("tmpfs")
            .source("tmpfs")
            .options(vec!["crius-no-such-option".to_string()])
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    spec.save(&config).unwrap();

    let err = runtime
        .create(&id, bundle.path(), Stdio::null())
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Libcontainer { .. }), "{err}");

    assert!(!state.path().join(&id).exists());
    for controller in CGROUP_CONTROLLERS {
        assert!(!cgroup_dir(controller, &id).exists(), "{controller}");
    }
    // libcontainer left its intermediate and init (exited, or killed by the cgroup cleanup)
    // for us to reap. Tests are serialized and reap their own, so these are this test's.
    let mut reaped = 0;
    while let Ok(status) = waitpid(None, None) {
        assert!(
            matches!(status, WaitStatus::Exited(..) | WaitStatus::Signaled(..)),
            "{status:?}"
        );
        reaped += 1;
    }
    assert_eq!(reaped, 2);
}

#[test]
fn seccomp_filters_the_init() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("seccomp");
    let bundle = Bundle::isolated(
        &id,
        &[
            "sh",
            "-c",
            "mkdir /made 2>/dev/null || echo denied; grep Seccomp: /proc/self/status",
        ],
    );
    let config = bundle.path().join("config.json");
    let mut spec = Spec::load(&config).unwrap();
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
    spec.save(&config).unwrap();
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };
    let (stdout, stdout_writer) = pipe();

    let pid = runtime
        .create(
            &id,
            bundle.path(),
            Stdio {
                stdout: Some(stdout_writer),
                ..Stdio::null()
            },
        )
        .unwrap();
    runtime.start(&id).unwrap();

    assert_eq!(read_to_end(stdout), "denied\nSeccomp:\t2\n");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    runtime.delete(&id, false).unwrap();
}

#[test]
fn delete_after_init_died_kills_what_is_left_in_the_cgroup() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("leftover");
    // Without a pid namespace, init's death does not take its background child along.
    use LinuxNamespaceType::*;
    let bundle = Bundle::new(
        &id,
        &["sh", "-c", "sleep 100 >/dev/null 2>&1 & echo $!"],
        &[Ipc, Uts, Mount, Network],
    );
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };
    let (stdout, stdout_writer) = pipe();

    let pid = runtime
        .create(
            &id,
            bundle.path(),
            Stdio {
                stdout: Some(stdout_writer),
                ..Stdio::null()
            },
        )
        .unwrap();
    runtime.start(&id).unwrap();
    let leftover: i32 = read_to_end(stdout).trim().parse().unwrap();
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    let procs = fs::read_to_string(cgroup_dir("memory", &id).join("cgroup.procs")).unwrap();
    assert_eq!(procs.trim(), leftover.to_string());

    runtime.delete(&id, false).unwrap();
    for controller in CGROUP_CONTROLLERS {
        assert!(!cgroup_dir(controller, &id).exists(), "{controller}");
    }
    assert!(
        exits_within_5s(leftover),
        "the leftover process survived delete"
    );
}

/// Whether a process that is not our child exits (or is already gone) within 5 s.
fn exits_within_5s(pid: i32) -> bool {
    // SAFETY: plain syscalls on integers and an fd we own.
    unsafe {
        let fd = nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0);
        if fd < 0 {
            return std::io::Error::last_os_error().raw_os_error() == Some(nix::libc::ESRCH);
        }
        let fd = std::os::fd::OwnedFd::from_raw_fd(fd as i32);
        // A pidfd polls readable once the process has exited.
        let mut poll_fd = nix::libc::pollfd {
            fd: fd.as_raw_fd(),
            events: nix::libc::POLLIN,
            revents: 0,
        };
        nix::libc::poll(&mut poll_fd, 1, 5000) == 1
    }
}

#[test]
fn a_reused_init_pid_is_not_the_container() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("pidreuse");
    let bundle = Bundle::isolated(&id, &["true"]);
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };
    let pid = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();
    runtime.start(&id).unwrap();
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));

    // Stand in an unrelated live process for one that got init's pid after it was reaped.
    // Start times count clock ticks (10 ms): a real reuse of the pid comes
    // much later, and so must the stand-in, or it looks like init itself.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let mut unrelated = std::process::Command::new("sleep")
        .arg("100")
        .spawn()
        .unwrap();
    let state_json = state.path().join(&id).join("state.json");
    let mut saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&state_json).unwrap()).unwrap();
    saved["pid"] = unrelated.id().into();
    fs::write(&state_json, saved.to_string()).unwrap();

    assert_eq!(runtime.state(&id).unwrap().status, ContainerStatus::Stopped);
    runtime.kill(&id, Signal::SIGKILL, false).unwrap();
    let process = crius_runtime::oci_spec::runtime::ProcessBuilder::default()
        .args(vec!["true".to_string()])
        .build()
        .unwrap();
    let err = runtime.exec(&id, &process, Stdio::null()).unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidStatus { .. }), "{err}");
    runtime.delete(&id, false).unwrap();
    assert!(!cgroup_dir("memory", &id).exists());

    assert!(
        unrelated.try_wait().unwrap().is_none(),
        "the unrelated process was hit"
    );
    unrelated.kill().unwrap();
    unrelated.wait().unwrap();
}
