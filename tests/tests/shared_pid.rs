//! A pod's shared PID namespace against a real criusd (issue 9, item 13):
//! the pause process is PID 1 and reaps orphans, the pod's containers see
//! each other, a container that ignores nothing stops on SIGTERM at once,
//! TARGET joins another container's namespace, and a killed pause shim
//! makes the pod NOTREADY.

use std::time::{Duration, Instant};

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_status, exec, pod_config, pull, run_container, run_pod,
    stop_and_remove_pod, wait_for, with_pid_mode, Runtime,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon};

/// The output of `cmd` run in container `id` (it must succeed).
async fn output(rt: &mut Runtime, id: &str, cmd: &[&str]) -> String {
    let reply = exec(rt, id, cmd, 10).await.expect("ExecSync");
    assert_eq!(reply.exit_code, 0, "{cmd:?}: {reply:?}");
    String::from_utf8_lossy(&reply.stdout).to_string()
}

/// Creates and starts container `name` running `cmd` in the pod.
async fn start(
    rt: &mut Runtime,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    name: &str,
    image: &str,
    cmd: &[&str],
) -> String {
    run_container(rt, pod_id, pod, container_config(name, image, cmd)).await
}

async fn verbose_pod_info(rt: &mut Runtime, id: &str) -> (i32, serde_json::Value) {
    let reply = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner();
    let info = serde_json::from_str(&reply.info["info"]).expect("info is JSON");
    (reply.status.unwrap().state, info)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pause_process_is_pid_1_of_a_shared_pid_pod() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("shared", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    let (state, info) = verbose_pod_info(&mut rt, &pod_id).await;
    assert_eq!(state, cri::PodSandboxState::SandboxReady as i32);
    let pause_pid = info["pid"].as_u64().expect("the pause process's pid");
    assert!(pause_pid > 0, "{info}");
    // Started, the init names itself once libcontainer hands it over (a
    // moment after RunPodSandbox answers); by then it runs as it will.
    wait_for("the pause process to name itself", || {
        std::fs::read_to_string(format!("/proc/{pause_pid}/comm"))
            .is_ok_and(|comm| comm.trim() == "pause")
    });
    // Unprivileged: no capabilities, uid 65535, no new privileges, seccomp.
    let status = std::fs::read_to_string(format!("/proc/{pause_pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:")[0], "65535", "{status}");
    assert_eq!(field("CapEff:")[0], "0000000000000000", "{status}");
    assert_eq!(field("CapBnd:")[0], "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs:")[0], "1", "{status}");
    assert_eq!(field("Seccomp:")[0], "2", "{status}");
    // Its root is an empty dir but for /dev (no image, no binary), and its
    // command line names no host path.
    let root: Vec<_> = std::fs::read_dir(format!("/proc/{pause_pid}/root"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(root, ["dev"]);
    let cmdline = std::fs::read(format!("/proc/{pause_pid}/cmdline")).unwrap();
    assert!(cmdline.starts_with(b"pause\0"), "{cmdline:?}");
    assert!(cmdline[5..].iter().all(|b| *b == 0), "{cmdline:?}");
    // The shim stays outside the pod's PID and mount namespaces.
    let ppid: u32 = field("PPid:")[0].parse().unwrap();
    let ns = |pid: u32, kind: &str| std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    for kind in ["pid", "mnt"] {
        assert_ne!(
            ns(ppid, kind),
            ns(pause_pid as u32, kind),
            "the shim joined the pod's {kind}"
        );
        assert_eq!(ns(ppid, kind), ns(std::process::id(), kind));
    }

    let web = start(&mut rt, &pod_id, &pod, "web", &busybox, &["sleep", "600"]).await;
    let tool = start(&mut rt, &pod_id, &pod, "tool", &busybox, &["sleep", "600"]).await;
    let ps = output(&mut rt, &tool, &["ps", "-o", "pid,comm"]).await;
    let pid1 = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"));
    assert_eq!(
        pid1.and_then(|l| l.split_whitespace().nth(1)),
        Some("pause"),
        "{ps}"
    );
    assert!(
        ps.lines().filter(|l| l.contains("sleep")).count() >= 2,
        "the other container's process is seen: {ps}"
    );
    drop(web);

    // An orphan is reparented to the pause process, which reaps it: a
    // background child of a shell that exits at once.
    let orphan = output(&mut rt, &tool, &["sh", "-c", "sleep 2 & echo $!"]).await;
    let orphan = orphan.trim().to_string();
    let row = |ps: &str| -> Option<Vec<String>> {
        ps.lines()
            .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .find(|f| f.first() == Some(&orphan))
    };
    let ps = output(&mut rt, &tool, &["ps", "-o", "pid,ppid,stat,comm"]).await;
    assert_eq!(row(&ps).map(|f| f[1].clone()).as_deref(), Some("1"), "{ps}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps = output(&mut rt, &tool, &["ps", "-o", "pid,ppid,stat,comm"]).await;
        if row(&ps).is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the orphan was not reaped: {ps}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A shell as the container's init is not PID 1 here: SIGTERM ends it
    // at once (as PID 1 it would wait out the whole grace period).
    let top = start(
        &mut rt,
        &pod_id,
        &pod,
        "top",
        &busybox,
        &["sh", "-c", "top"],
    )
    .await;
    let started = Instant::now();
    rt.stop_container(cri::StopContainerRequest {
        container_id: top.clone(),
        timeout: 60,
    })
    .await
    .expect("StopContainer");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let st = container_status(&mut rt, &top).await;
    assert_eq!(st.exit_code, 143, "ended by SIGTERM");

    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert!(!alive(pause_pid as i32), "the pause process survived");
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_without_a_shared_pid_namespace_run_no_process_and_target_joins() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = with_pid_mode(
        pod_config("own-pid", &daemon.dir.path().join("logs")),
        cri::NamespaceMode::Container,
    );
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let (_, info) = verbose_pod_info(&mut rt, &pod_id).await;
    assert_eq!(info["pid"], 0, "{info}");
    assert!(
        daemon.pause_shim_pids().is_empty(),
        "no pause process, no shim"
    );

    let app = start(&mut rt, &pod_id, &pod, "app", &busybox, &["sleep", "600"]).await;
    let mut debug = container_config("debug", &busybox, &["sleep", "600"]);
    debug.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Target as i32,
                target_id: app.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let debug_id = crius_tests::cri::create_container(&mut rt, &pod_id, &pod, debug)
        .await
        .expect("CreateContainer TARGET");
    rt.start_container(cri::StartContainerRequest {
        container_id: debug_id.clone(),
    })
    .await
    .expect("StartContainer");
    let ps = output(&mut rt, &debug_id, &["ps", "-o", "pid,comm"]).await;
    let pid1 = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"));
    assert_eq!(
        pid1.and_then(|l| l.split_whitespace().nth(1)),
        Some("sleep"),
        "{ps}"
    );
    assert_eq!(
        ps.lines().filter(|l| l.contains("sleep")).count(),
        2,
        "{ps}"
    );

    // An unknown target is NotFound.
    let mut bad = container_config("bad", &busybox, &["true"]);
    bad.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Target as i32,
                target_id: "nosuchcontainer".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let err = crius_tests::cri::create_container(&mut rt, &pod_id, &pod, bad)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_pause_shim_makes_the_pod_not_ready_and_removable() {
    if !require_root() {
        return;
    }
    let mut daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let pod = pod_config("lost", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let (_, info) = verbose_pod_info(&mut rt, &pod_id).await;
    let pause_pid = info["pid"].as_u64().unwrap() as i32;

    // Survives a daemon restart: watched again.
    daemon.restart();
    let mut rt = daemon.runtime().await;
    let (state, info) = verbose_pod_info(&mut rt, &pod_id).await;
    assert_eq!(state, cri::PodSandboxState::SandboxReady as i32, "{info}");

    let shims = daemon.pause_shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let mut state = 0;
    let mut info = serde_json::Value::Null;
    wait_for("the pod to turn NOTREADY", || {
        (state, info) = futures_lite_block(verbose_pod_info(&mut rt, &pod_id));
        state == cri::PodSandboxState::SandboxNotready as i32
    });
    let reason = info["notReadyReason"].as_str().unwrap_or_default();
    assert!(reason.contains("shim is gone"), "{info}");
    // The orphaned pause process is killed by the stop (left a zombie for
    // whoever adopted it); all is released.
    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert!(!alive(pause_pid), "the pause process survived");
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

/// True while `pid` runs (a zombie or no process at all is not alive).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => {
            !matches!(stat.rsplit(')').next().map(str::trim_start), Some(s) if s.starts_with('Z') || s.starts_with('X'))
        }
        Err(_) => false,
    }
}

/// Runs a future to completion from a synchronous poll loop.
fn futures_lite_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
