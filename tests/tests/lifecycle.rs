//! Failure paths and restarts against a real criusd: a failed create leaves
//! nothing behind and frees its name; containers outlive a criusd restart.

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_status, create_container, exec, pod_config, pull, run_container,
    run_pod, wait_for,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{mounts_under, require_root, Daemon};

fn dir_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_container_create_is_rolled_back() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("rollback", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    // The spec is built after the rootfs is mounted: a bad mount fails late
    // (a missing host_path is created, but never under /proc).
    let mut bad = container_config("c", &busybox, &["sleep", "600"]);
    bad.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: "/proc/crius-test/missing".into(),
        ..Default::default()
    });
    let err = create_container(&mut rt, &pod_id, &pod, bad)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("host_path"), "{}", err.message());
    assert!(mounts_under(&daemon.state.join("c")).is_empty());
    assert!(dir_is_empty(&daemon.state.join("c")));
    assert!(dir_is_empty(&daemon.root.join("containers")));
    assert!(daemon.shim_pids().is_empty());

    // The name was released: the same container, fixed, is created.
    let id = create_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("c", &busybox, &["sleep", "600"]),
    )
    .await
    .expect("CreateContainer after the failed one");
    // An unknown image is NotFound and reserves nothing either.
    let err = create_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("d", "nope/absent:1", &[]),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    rt.remove_container(cri::RemoveContainerRequest { container_id: id })
        .await
        .expect("RemoveContainer of a created container");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("RemovePodSandbox");
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_pod_network_is_rolled_back() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let conf = daemon.cni_conf_dir.join("10-test.conflist");
    let good = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        good.replace("\"portmap\"", "\"crius-no-such-plugin\""),
    )
    .unwrap();

    let pod = pod_config("netfail", &daemon.dir.path().join("logs"));
    let err = run_pod(&mut rt, &pod).await.unwrap_err();
    assert!(
        err.message().contains("crius-no-such-plugin"),
        "{}",
        err.message()
    );
    assert!(
        mounts_under(daemon.dir.path()).is_empty(),
        "pinned namespaces left"
    );
    assert!(dir_is_empty(&daemon.state.join("pods")));
    assert_eq!(daemon.leaks(), Vec::<String>::new());

    // Name released; with the network fixed the same pod runs.
    std::fs::write(&conf, good).unwrap();
    let id = run_pod(&mut rt, &pod)
        .await
        .expect("RunPodSandbox after the fix");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_climbing_cgroup_parent_is_refused_and_rolled_back() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let mut pod = pod_config("cgclimb", &daemon.dir.path().join("logs"));
    pod.linux = Some(cri::LinuxPodSandboxConfig {
        cgroup_parent: "/kubepods/../../etc".into(),
        ..Default::default()
    });
    let err = run_pod(&mut rt, &pod).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with("config.linux.cgroup_parent: ")
            && err.message().contains("/kubepods/../../etc"),
        "{}",
        err.message()
    );
    assert!(
        mounts_under(daemon.dir.path()).is_empty(),
        "pinned namespaces left"
    );
    assert!(dir_is_empty(&daemon.state.join("pods")));
    assert_eq!(daemon.leaks(), Vec::<String>::new());

    // Name released: the same pod without the bad parent runs.
    pod.linux = None;
    let id = run_pod(&mut rt, &pod)
        .await
        .expect("RunPodSandbox after the fix");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .unwrap();
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_outlive_a_criusd_restart() {
    if !require_root() {
        return;
    }
    let mut daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("restart", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.unwrap();
    let script = "while [ ! -f /tmp/stop ]; do sleep 0.1; done; exit 7";
    let id = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("c", &busybox, &["sh", "-c", script]),
    )
    .await;
    let shims = daemon.shim_pids();
    assert_eq!(shims.len(), 1);

    drop(rt);
    daemon.restart();
    assert_eq!(daemon.shim_pids(), shims, "the shim outlived criusd");
    let mut rt = daemon.runtime().await;
    let status = container_status(&mut rt, &id).await;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    let r = exec(&mut rt, &id, &["echo", "still here"], 5)
        .await
        .unwrap();
    assert_eq!(r.stdout, b"still here\n");

    // The exit is still noticed by the new criusd.
    exec(&mut rt, &id, &["touch", "/tmp/stop"], 5)
        .await
        .unwrap();
    let mut exited = false;
    for _ in 0..100 {
        let s = container_status(&mut rt, &id).await;
        if s.state == cri::ContainerState::ContainerExited as i32 {
            assert_eq!(s.exit_code, 7);
            assert_eq!(s.reason, "Error");
            exited = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(exited, "the exit was not recorded after the restart");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    wait_for("shims to exit", || daemon.shim_pids().is_empty());
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

/// A shell that ignores SIGTERM, and says so in `/ignoring` once it does.
const STUBBORN: [&str; 3] = ["sh", "-c", "trap '' TERM; touch /ignoring; exec sleep 600"];

/// Starts StopContainer(`id`, 120 s) in a task and checks, two seconds on,
/// that it still waits: the container ([`STUBBORN`]) ignores SIGTERM. Waits
/// first until it does: a SIGTERM before its shell ran `trap` would end it.
async fn long_stop(
    rt: &crius_proto::cri::runtime_service_client::RuntimeServiceClient<tonic::transport::Channel>,
    id: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<cri::StopContainerResponse>, tonic::Status>> {
    let mut rt = rt.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while exec(&mut rt, id, &["test", "-e", "/ignoring"], 5)
        .await
        .map_or(true, |r| r.exit_code != 0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the container never trapped SIGTERM"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let container_id = id.to_string();
    let long = tokio::spawn(async move {
        rt.stop_container(cri::StopContainerRequest {
            container_id,
            timeout: 120,
        })
        .await
    });
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!long.is_finished(), "the container ignores SIGTERM");
    long
}

/// A stop with a long grace period is shortened by a later stop with a
/// shorter one, and by the pod's stop: the container, ignoring SIGTERM, is
/// killed at once (137), both calls return, and status calls answer
/// meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_later_stop_shortens_a_long_one() {
    use std::time::{Duration, Instant};
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("shorten", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.unwrap();

    // StopContainer(120), then StopContainer(0) two seconds later.
    let id = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("c1", &busybox, &STUBBORN),
    )
    .await;
    let long = long_stop(&rt, &id).await;
    let asked = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(1), container_status(&mut rt, &id))
        .await
        .expect("ContainerStatus answers during a stop");
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    let listed = tokio::time::timeout(
        Duration::from_secs(1),
        rt.list_containers(cri::ListContainersRequest::default()),
    )
    .await
    .expect("ListContainers answers during a stop")
    .unwrap();
    assert_eq!(listed.into_inner().containers.len(), 1);
    tokio::time::timeout(
        Duration::from_secs(2),
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 0,
        }),
    )
    .await
    .expect("StopContainer(0) kills at once")
    .unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let status = container_status(&mut rt, &id).await;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 137);
    tokio::time::timeout(Duration::from_secs(2), long)
        .await
        .expect("the first stop returns too")
        .unwrap()
        .unwrap();

    // StopContainer(120), then StopPodSandbox two seconds later.
    let id2 = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("c2", &busybox, &STUBBORN),
    )
    .await;
    let long = long_stop(&rt, &id2).await;
    tokio::time::timeout(
        Duration::from_secs(2),
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        }),
    )
    .await
    .expect("StopPodSandbox kills at once")
    .unwrap();
    let status = container_status(&mut rt, &id2).await;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!(status.exit_code, 137);
    tokio::time::timeout(Duration::from_secs(2), long)
        .await
        .expect("the first stop returns too")
        .unwrap()
        .unwrap();

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .unwrap();
    wait_for("shims to exit", || daemon.shim_pids().is_empty());
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
