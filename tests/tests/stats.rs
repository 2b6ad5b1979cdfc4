//! CRI stats against a real criusd: a container that burns CPU, holds memory
//! and writes a file shows it in ContainerStats, ListContainerStats and
//! PodSandboxStats; created containers are listed too; filters select; a
//! stopped pod has no stats.

use std::collections::HashMap;

use crius_proto::cri;
use crius_tests::cri::{
    container_config, create_container, exec, pod_config, pull, run_container, run_pod, Runtime,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon};

/// About a tenth of a second of CPU in busybox's shell.
const BURN: &str = "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done";

async fn container_stats(rt: &mut Runtime, id: &str) -> cri::ContainerStats {
    rt.container_stats(cri::ContainerStatsRequest {
        container_id: id.into(),
    })
    .await
    .expect("ContainerStats")
    .into_inner()
    .stats
    .expect("stats")
}

async fn list_ids(rt: &mut Runtime, filter: Option<cri::ContainerStatsFilter>) -> Vec<String> {
    let mut ids: Vec<String> = rt
        .list_container_stats(cri::ListContainerStatsRequest { filter })
        .await
        .expect("ListContainerStats")
        .into_inner()
        .stats
        .into_iter()
        .map(|s| s.attributes.expect("attributes").id)
        .collect();
    ids.sort();
    ids
}

fn value(v: &Option<cri::UInt64Value>) -> u64 {
    v.as_ref().expect("a value").value
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_of_containers_and_pods() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("stats", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let busy = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("busy", &busybox, &["sleep", "600"]),
    )
    .await;
    let idle = create_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("idle", &busybox, &["sleep", "600"]),
    )
    .await
    .expect("CreateContainer");

    let before = container_stats(&mut rt, &busy).await;
    let attributes = before.attributes.clone().unwrap();
    assert_eq!(attributes.id, busy);
    assert_eq!(attributes.metadata.unwrap().name, "busy");
    assert_eq!(
        attributes.labels.get("role").map(String::as_str),
        Some("busy")
    );
    let layer_before = value(&before.writable_layer.as_ref().unwrap().used_bytes);

    // Burn CPU and write 1 MiB into the writable layer, inside the container.
    let burn = exec(
        &mut rt,
        &busy,
        &[
            "sh",
            "-c",
            &format!("{BURN}; dd if=/dev/zero of=/data bs=1024 count=1024 2>/dev/null"),
        ],
        30,
    )
    .await
    .expect("ExecSync");
    assert_eq!(burn.exit_code, 0, "{burn:?}");

    let after = container_stats(&mut rt, &busy).await;
    let cpu = after.cpu.expect("cpu");
    assert!(cpu.timestamp > 0);
    let used = value(&cpu.usage_core_nano_seconds);
    let used_before = value(&before.cpu.as_ref().unwrap().usage_core_nano_seconds);
    assert!(used > used_before, "cpu {used_before} -> {used}");
    let nano_cores = value(&cpu.usage_nano_cores);
    assert!(
        nano_cores > 0 && nano_cores <= 2_000_000_000,
        "{nano_cores} nano cores on a 2-core host"
    );
    let memory = after.memory.expect("memory");
    assert!(memory.timestamp > 0);
    assert!(value(&memory.working_set_bytes) > 0, "{memory:?}");
    assert!(value(&memory.usage_bytes) >= value(&memory.working_set_bytes));
    let layer = after.writable_layer.clone().expect("writable layer");
    assert!(
        value(&layer.used_bytes) >= layer_before + 1024 * 1024,
        "{layer_before} -> {:?}",
        layer.used_bytes
    );
    assert!(value(&layer.inodes_used) >= 2, "upper/ and /data");
    assert_eq!(
        layer.fs_id.unwrap().mountpoint,
        daemon.root.join("containers").display().to_string()
    );
    eprintln!(
        "busy container: {used} ns cpu, {nano_cores} nano cores, working set {} B, \
         layer {} B",
        value(&memory.working_set_bytes),
        value(&layer.used_bytes)
    );

    // A created container is listed (its cgroup exists since create).
    let mut both = vec![busy.clone(), idle.clone()];
    both.sort();
    assert_eq!(list_ids(&mut rt, None).await, both);
    let idle_stats = container_stats(&mut rt, &idle).await;
    assert!(idle_stats.memory.is_some(), "{idle_stats:?}");
    let by = |id: &str, pod: &str, labels: &[(&str, &str)]| {
        Some(cri::ContainerStatsFilter {
            id: id.into(),
            pod_sandbox_id: pod.into(),
            label_selector: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
        })
    };
    assert_eq!(
        list_ids(&mut rt, by(&busy, "", &[])).await,
        vec![busy.clone()]
    );
    assert_eq!(
        list_ids(&mut rt, by("", &pod_id, &[("role", "idle")])).await,
        vec![idle.clone()]
    );
    assert!(list_ids(&mut rt, by("", "", &[("role", "none")]))
        .await
        .is_empty());
    let err = rt
        .container_stats(cri::ContainerStatsRequest {
            container_id: "0123456789abcdef-absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // The pod: its cgroup's totals hold its containers'.
    let pod_stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .unwrap();
    assert_eq!(pod_stats.attributes.unwrap().id, pod_id);
    let linux = pod_stats.linux.expect("linux stats");
    assert!(value(&linux.cpu.expect("pod cpu").usage_core_nano_seconds) >= used);
    assert!(value(&linux.memory.expect("pod memory").working_set_bytes) > 0);
    assert!(value(&linux.process.expect("pod processes").process_count) >= 1);
    let mut in_pod: Vec<String> = linux
        .containers
        .iter()
        .map(|c| c.attributes.as_ref().unwrap().id.clone())
        .collect();
    in_pod.sort();
    assert_eq!(in_pod, both);

    let listed = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
        .await
        .expect("ListPodSandboxStats")
        .into_inner()
        .stats;
    assert_eq!(listed.len(), 1);
    let err = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: "absent".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    // A stopped pod is no longer listed.
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.clone(),
    })
    .await
    .expect("StopPodSandbox");
    let listed = rt
        .list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None })
        .await
        .expect("ListPodSandboxStats after stop")
        .into_inner()
        .stats;
    assert!(listed.is_empty(), "{listed:?}");
    let err = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    // Stopped containers are still listed, without failing on their cgroups.
    assert_eq!(list_ids(&mut rt, None).await, both);

    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id,
    })
    .await
    .expect("RemovePodSandbox");
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
