//! CRI metrics against a real criusd: a pod whose container sends traffic to
//! its bridge's gateway over eth0 shows it in ListPodSandboxMetrics (as the
//! `POD` container's network counters) and in PodSandboxStats; the container's
//! own metrics carry kubelet's cAdvisor labels and plausible values; every
//! metric has the labels its descriptor names.

use std::collections::HashMap;

use crius_proto::cri;
use crius_tests::cri::stop_and_remove_pod;
use crius_tests::cri::{container_config, exec, pod_config, pull, run_container, run_pod};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon};

/// Pings the default gateway (the bridge) and knocks on a closed port of it:
/// ARP, ICMP and TCP both ways on eth0, whichever the container may send.
const TRAFFIC: &str = "gw=$(ip route | awk '/default/ {print $3}'); \
    ping -c 3 -W 1 $gw; wget -q -T 2 -O /dev/null http://$gw:9/; true";

fn value(m: &cri::Metric) -> u64 {
    m.value.as_ref().expect("a value").value
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_and_container_metrics_with_network_traffic() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("metrics", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let ctr = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("net", &busybox, &["sleep", "600"]),
    )
    .await;
    exec(&mut rt, &ctr, &["sh", "-c", TRAFFIC], 30)
        .await
        .expect("traffic");

    let descriptors: HashMap<String, cri::MetricDescriptor> = rt
        .list_metric_descriptors(cri::ListMetricDescriptorsRequest {})
        .await
        .expect("ListMetricDescriptors")
        .into_inner()
        .descriptors
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    let all = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    let ours = all
        .iter()
        .find(|p| p.pod_sandbox_id == pod_id)
        .expect("the pod's metrics");
    let everything = ours
        .metrics
        .iter()
        .chain(ours.container_metrics.iter().flat_map(|c| &c.metrics));
    for m in everything {
        let d = descriptors
            .get(&m.name)
            .unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(m.label_values.len(), d.label_keys.len(), "{}", m.name);
        assert!(m.timestamp > 0, "{}", m.name);
    }

    // The pod: eth0's counters, labelled as cAdvisor's POD container.
    let eth0 = |name: &str| {
        ours.metrics
            .iter()
            .find(|m| m.name == name && m.label_values.last().map(String::as_str) == Some("eth0"))
            .unwrap_or_else(|| panic!("{name} of eth0 in {:?}", ours.metrics))
    };
    for name in [
        "container_network_receive_bytes_total",
        "container_network_receive_packets_total",
        "container_network_transmit_bytes_total",
        "container_network_transmit_packets_total",
    ] {
        assert!(value(eth0(name)) > 0, "{name}");
        assert_eq!(eth0(name).metric_type, cri::MetricType::Counter as i32);
    }
    assert!(
        value(eth0("container_network_receive_bytes_total")) >= 42,
        "an ARP reply at least"
    );
    let keys = &descriptors["container_network_receive_bytes_total"].label_keys;
    let labels: HashMap<_, _> = keys
        .iter()
        .map(String::as_str)
        .zip(
            eth0("container_network_receive_bytes_total")
                .label_values
                .iter()
                .map(String::as_str),
        )
        .collect();
    assert_eq!(labels["container"], "POD");
    assert_eq!(labels["pod"], "metrics");
    assert_eq!(labels["namespace"], "e2e");
    assert_eq!(labels["name"], pod_id);
    assert!(
        !ours
            .metrics
            .iter()
            .any(|m| m.label_values.last().map(String::as_str) == Some("lo")),
        "loopback left out"
    );

    // The container: cAdvisor's labels and plausible figures.
    let container = ours
        .container_metrics
        .iter()
        .find(|c| c.container_id == ctr)
        .expect("the container's metrics");
    let metric = |name: &str| {
        container
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} in {:?}", container.metrics))
    };
    let keys = &descriptors["container_memory_working_set_bytes"].label_keys;
    let labels: HashMap<_, _> = keys
        .iter()
        .map(String::as_str)
        .zip(
            metric("container_memory_working_set_bytes")
                .label_values
                .iter()
                .map(String::as_str),
        )
        .collect();
    assert_eq!(labels["container"], "net");
    assert_eq!(labels["pod"], "metrics");
    assert_eq!(labels["namespace"], "e2e");
    assert_eq!(labels["name"], ctr);
    assert_eq!(labels["image"], busybox);
    assert!(labels["id"].contains(&ctr), "the cgroup: {}", labels["id"]);
    assert!(value(metric("container_memory_working_set_bytes")) > 0);
    assert_eq!(
        metric("container_memory_working_set_bytes").metric_type,
        cri::MetricType::Gauge as i32
    );
    assert!(value(metric("container_processes")) >= 1, "sleep");
    assert!(value(metric("container_threads")) >= 1);
    assert!(value(metric("container_file_descriptors")) >= 1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let started = value(metric("container_start_time_seconds"));
    assert!(started <= now && now - started < 300, "{started} vs {now}");
    let seen = value(metric("container_last_seen"));
    assert!(seen >= started && seen <= now + 1, "{seen}");

    // PodSandboxStats reports the same interface.
    let stats = rt
        .pod_sandbox_stats(cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await
        .expect("PodSandboxStats")
        .into_inner()
        .stats
        .unwrap();
    let network = stats.linux.unwrap().network.expect("network stats");
    let default = network.default_interface.expect("eth0");
    assert_eq!(default.name, "eth0");
    assert!(
        default.rx_bytes.unwrap().value >= value(eth0("container_network_receive_bytes_total"))
    );
    assert!(default.tx_bytes.unwrap().value > 0);

    stop_and_remove_pod(&mut rt, &pod_id).await;
    let after = rt
        .list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {})
        .await
        .expect("ListPodSandboxMetrics")
        .into_inner()
        .pod_metrics;
    assert!(
        after.iter().all(|p| p.pod_sandbox_id != pod_id),
        "a removed pod has none"
    );
}
