//! GetContainerEvents against a real criusd (issue 12, KEP-3386's Evented
//! PLEG): two subscribers and `crictl events` see a pod's and its
//! containers' life cycle in the order it happened, with the pod's and the
//! containers' statuses; a container that exits by itself is STOPPED.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use crius_proto::cri;
use crius_proto::cri::ContainerEventType::{self, *};
use crius_tests::cri::{
    container_config, pod_config, pull, run_container, run_pod, stop_and_remove_pod, wait_for,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon};
use tonic::codec::Streaming;

type Events = Streaming<cri::ContainerEventResponse>;

async fn subscribe(daemon: &Daemon) -> Events {
    daemon
        .runtime()
        .await
        .get_container_events(cri::GetEventsRequest {})
        .await
        .expect("GetContainerEvents")
        .into_inner()
}

/// The next event (within 20 s).
async fn next(events: &mut Events) -> cri::ContainerEventResponse {
    tokio::time::timeout(Duration::from_secs(20), events.message())
        .await
        .expect("an event within 20 s")
        .expect("the stream goes on")
        .expect("an event, not the stream's end")
}

/// The next `n` events' types and ids.
async fn take(events: &mut Events, n: usize) -> Vec<(ContainerEventType, String)> {
    let mut seen = Vec::new();
    for _ in 0..n {
        let e = next(events).await;
        seen.push((e.container_event_type(), e.container_id));
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_see_the_life_cycle_in_order() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;

    let mut first = subscribe(&daemon).await;
    let mut second = subscribe(&daemon).await;
    let mut crictl = daemon
        .crictl()
        .args(["events", "--output", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("crictl events");
    wait_for("crictl to subscribe", || {
        daemon
            .log_text()
            .matches("container events subscribed")
            .count()
            == 3
    });

    let pod = pod_config("events", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let sleeper = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("sleeper", &busybox, &["sleep", "600"]),
    )
    .await;
    let quick = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("quick", &busybox, &["sh", "-c", "exit 3"]),
    )
    .await;
    let mut want = vec![
        (ContainerCreatedEvent, pod_id.clone()),
        (ContainerStartedEvent, pod_id.clone()),
        (ContainerCreatedEvent, sleeper.clone()),
        (ContainerStartedEvent, sleeper.clone()),
        (ContainerCreatedEvent, quick.clone()),
        (ContainerStartedEvent, quick.clone()),
    ];
    assert_eq!(take(&mut first, want.len()).await, want);

    // The quick one exits by itself: STOPPED, with its exit code.
    let stopped = next(&mut first).await;
    assert_eq!(
        (stopped.container_event_type(), &stopped.container_id),
        (ContainerStoppedEvent, &quick)
    );
    let status = stopped.pod_sandbox_status.expect("the pod's status");
    assert_eq!(status.id, pod_id);
    assert_eq!(status.metadata.as_ref().unwrap().name, "events");
    assert_eq!(status.state(), cri::PodSandboxState::SandboxReady);
    let mut statuses = stopped.containers_statuses;
    statuses.sort_by_key(|c| c.metadata.as_ref().unwrap().name.clone());
    let states: Vec<_> = statuses
        .iter()
        .map(|c| (c.id.as_str(), c.state(), c.exit_code))
        .collect();
    assert_eq!(
        states,
        [
            (quick.as_str(), cri::ContainerState::ContainerExited, 3),
            (sleeper.as_str(), cri::ContainerState::ContainerRunning, 0),
        ]
    );
    want.push((ContainerStoppedEvent, quick.clone()));

    rt.stop_container(cri::StopContainerRequest {
        container_id: sleeper.clone(),
        timeout: 10,
    })
    .await
    .expect("StopContainer");
    for id in [&sleeper, &quick] {
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await
        .expect("RemoveContainer");
    }
    stop_and_remove_pod(&mut rt, &pod_id).await;
    let rest = [
        (ContainerStoppedEvent, sleeper.clone()),
        (ContainerDeletedEvent, sleeper.clone()),
        (ContainerDeletedEvent, quick.clone()),
        (ContainerStoppedEvent, pod_id.clone()),
        (ContainerDeletedEvent, pod_id.clone()),
    ];
    assert_eq!(take(&mut first, rest.len()).await, rest);
    want.extend(rest);
    // The other subscriber saw the same, in the same order.
    assert_eq!(take(&mut second, want.len()).await, want);
    let none = tokio::time::timeout(Duration::from_millis(300), first.message()).await;
    assert!(none.is_err(), "nothing more: {none:?}");

    // crictl printed the same events (protobuf JSON objects, one after another).
    std::thread::sleep(Duration::from_millis(500));
    crictl.kill().expect("ending crictl events");
    let mut out = String::new();
    crictl
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    crictl
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    crictl.wait().unwrap();
    let printed: Vec<(String, String)> = serde_json::Deserializer::from_str(&out)
        .into_iter::<serde_json::Value>()
        .map(|v| {
            let v = v.unwrap_or_else(|e| panic!("crictl's JSON: {e}: {out}"));
            (
                v["containerEventType"].as_str().unwrap_or_default().into(),
                v["containerId"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let want_printed: Vec<(String, String)> = want
        .iter()
        .map(|(kind, id)| (kind.as_str_name().to_string(), id.clone()))
        .collect();
    assert_eq!(printed, want_printed, "crictl events: {out}\n{err}");
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
