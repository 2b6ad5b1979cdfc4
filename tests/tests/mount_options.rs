//! Security of mounts and stops (issue 11), checked from inside the
//! containers: a container's own stop signal (KEP-4960).

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_status, pod_config, pull, run_container, run_pod,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon};

/// Stops and removes the pod, then checks that nothing of it is left.
async fn remove_pod(daemon: &Daemon, rt: &mut crius_tests::cri::Runtime, pod_id: String) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("RemovePodSandbox");
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_sends_the_containers_stop_signal() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("stop-signal", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let volume = daemon.dir.path().join("signals");
    std::fs::create_dir(&volume).unwrap();

    // The trap runs once the foreground sleep ends: within a second.
    let script = "trap 'echo got-usr1 > /out/seen; exit 0' USR1; \
                  trap 'echo got-term > /out/seen; exit 3' TERM; \
                  while true; do sleep 1; done";
    let mut config = container_config("usr1", &busybox, &["sh", "-c", script]);
    config.stop_signal = cri::Signal::Sigusr1 as i32;
    config.mounts.push(cri::Mount {
        container_path: "/out".into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    });
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    assert_eq!(
        container_status(&mut rt, &id).await.stop_signal,
        cri::Signal::Sigusr1 as i32
    );
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 20,
    })
    .await
    .expect("StopContainer");
    let status = container_status(&mut rt, &id).await;
    assert_eq!(
        std::fs::read_to_string(volume.join("seen")).unwrap(),
        "got-usr1\n"
    );
    // The trap's own exit, not a SIGKILL after the grace period.
    assert_eq!(status.exit_code, 0);
    assert_eq!(status.stop_signal, cri::Signal::Sigusr1 as i32);

    // Without one: the image names none, so SIGTERM, reported as such.
    let config = container_config("default", &busybox, &["sleep", "600"]);
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    assert_eq!(
        container_status(&mut rt, &id).await.stop_signal,
        cri::Signal::Sigterm as i32
    );

    // A value that is no Signal: refused, naming the field.
    let mut config = container_config("bad-signal", &busybox, &["sleep", "600"]);
    config.stop_signal = 66;
    let err = crius_tests::cri::create_container(&mut rt, &pod_id, &pod, config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("config.stop_signal"), "{err:?}");

    remove_pod(&daemon, &mut rt, pod_id).await;
}
