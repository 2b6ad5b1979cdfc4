//! `tty: true` containers against a real criusd: they run on a pty their
//! shim owns, their output in the CRI log as stdout lines, with or without
//! `stdin: true`, and stop and go away like any other container.

use std::path::Path;

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_status, pod_config, pull, run_container, run_pod, wait_for,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon};

/// The CRI log's complete records as `<stream> <tag> <content>`, without
/// timestamps. top keeps writing: the file may end in half a record.
fn records(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    text[..complete]
        .split_terminator('\n')
        .filter_map(|line| line.split_once(' ').map(|(_, record)| record.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn tty_containers_run_on_a_pty_with_their_output_in_the_log() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let logs = daemon.dir.path().join("logs");
    let pod = pod_config("tty", &logs);
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    let script = "tty; echo TERM=$TERM; stty size; echo hello-tty; exec top -b -d 1";
    let mut ids = Vec::new();
    for (name, stdin) in [("tty", false), ("tty-stdin", true)] {
        let mut config = container_config(name, &busybox, &["sh", "-c", script]);
        config.tty = true;
        config.stdin = stdin;
        let id = run_container(&mut rt, &pod_id, &pod, config).await;
        let log = logs.join(format!("{name}.log"));
        // top redraws every second: the container keeps writing.
        wait_for("top's output in the log", || {
            records(&log).iter().any(|r| r.starts_with("stdout F Mem:"))
        });
        let records = records(&log);
        assert_eq!(
            records[..4],
            [
                "stdout F /dev/pts/0",
                "stdout F TERM=xterm",
                "stdout F 24 80",
                "stdout F hello-tty",
            ],
            "{name}: {records:#?}"
        );
        assert!(
            records.iter().all(|r| r.starts_with("stdout ")),
            "{name}: a terminal has no stderr: {records:#?}"
        );
        assert!(
            records.iter().all(|r| !r.ends_with('\r')),
            "{name}: the terminal's \\r is logged: {records:#?}"
        );
        let status = container_status(&mut rt, &id).await;
        assert_eq!(
            status.state,
            cri::ContainerState::ContainerRunning as i32,
            "{name}: {status:?}"
        );
        ids.push(id);
    }

    for id in ids {
        rt.stop_container(cri::StopContainerRequest {
            container_id: id.clone(),
            timeout: 3,
        })
        .await
        .expect("StopContainer");
        let status = container_status(&mut rt, &id).await;
        assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
        // top ends on SIGTERM: no need to wait out the timeout for a kill.
        assert_eq!(status.exit_code, 143, "{status:?}");
        rt.remove_container(cri::RemoveContainerRequest { container_id: id })
            .await
            .expect("RemoveContainer");
    }
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("RemovePodSandbox");
    wait_for("shims to exit", || daemon.shim_pids().is_empty());
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
