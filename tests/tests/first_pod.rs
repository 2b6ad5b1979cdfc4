//! The first pod, end to end against a real criusd: pull → RunPodSandbox →
//! CreateContainer → StartContainer → logs → ExecSync → a second pod reached
//! over the pod network → stop → remove, and nothing left behind.

use std::path::Path;
use std::time::{Duration, Instant};

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_info, container_status, exec, pod_config, pull, run_container,
    run_pod, wait_for,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{processes, require_root, Daemon, DaemonOptions};

#[tokio::test(flavor = "multi_thread")]
async fn first_pod_end_to_end() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    let daemon = Daemon::start_with(DaemonOptions {
        config_toml: registry.config_toml(),
        network: true,
        ..Default::default()
    });
    let mut rt = daemon.runtime().await;
    let mut images = daemon.images().await;
    let logs = daemon.dir.path().join("logs");

    // Pull: directly, and through the registry.k8s.io mirror.
    let busybox = registry.image("crius/busybox:latest");
    let pulled = pull(&mut images, &busybox).await;
    assert!(pulled.starts_with("sha256:"), "{pulled}");
    pull(&mut images, "registry.k8s.io/crius/httpd:latest").await;

    // Pod A runs the shell.
    let pod_a = pod_config("a", &logs);
    let pod_a_id = run_pod(&mut rt, &pod_a).await.expect("RunPodSandbox");
    let dup = run_pod(&mut rt, &pod_a).await.unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists, "{dup:?}");

    let mut shell_config =
        container_config("shell", &busybox, &["sh", "-c", "echo hello; sleep 600"]);
    shell_config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        security_context: None,
    });
    let shell = run_container(&mut rt, &pod_a_id, &pod_a, shell_config).await;
    let log_file = logs.join("shell.log");
    wait_for("hello in the CRI log", || {
        std::fs::read_to_string(&log_file).is_ok_and(|l| l.contains(" stdout F hello\n"))
    });
    let status = container_status(&mut rt, &shell).await;
    assert_eq!(status.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(status.log_path, log_file.display().to_string());
    assert_eq!(status.labels["role"], "shell");
    assert!(status.started_at >= status.created_at && status.created_at > 0);
    // The limits it runs with, as kubelet reads them back (in-place resize).
    let applied = status.resources.and_then(|r| r.linux).expect("resources");
    assert_eq!(
        (
            applied.memory_limit_in_bytes,
            applied.cpu_quota,
            applied.cpu_period
        ),
        (64 << 20, 50_000, 100_000)
    );

    // `crictl inspect`'s info: the pid to nsenter, the spec it runs with.
    let info = container_info(&mut rt, &shell).await;
    let pid = info["pid"].as_u64().expect("a pid");
    let pid_ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_ne!(pid_ns(&pid.to_string()), pid_ns("self"), "pid {pid}");
    assert_eq!(info["sandboxID"], pod_a_id.as_str());
    assert_eq!(
        info["runtimeSpec"]["process"]["args"],
        serde_json::json!(["sh", "-c", "echo hello; sleep 600"])
    );
    assert_eq!(info["config"]["metadata"]["name"], "shell");
    assert!(
        Path::new(info["rootfs"].as_str().unwrap()).is_dir(),
        "{info}"
    );
    let pod_info = rt
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_a_id.clone(),
            verbose: true,
        })
        .await
        .expect("PodSandboxStatus")
        .into_inner()
        .info;
    let pod_info: serde_json::Value = serde_json::from_str(&pod_info["info"]).unwrap();
    let netns = pod_info["namespaces"]["network"].as_str().expect("a netns");
    assert!(Path::new(netns).exists(), "{pod_info}");
    assert_eq!(pod_info["config"]["metadata"]["name"], "a");
    assert!(pod_info["cniResult"]["ips"].is_array(), "{pod_info}");

    // ExecSync: both streams and the exit code.
    let r = exec(
        &mut rt,
        &shell,
        &["sh", "-c", "echo out; echo err >&2; exit 3"],
        0,
    )
    .await
    .expect("ExecSync");
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    assert_eq!(r.exit_code, 3);

    // The container sees what RunPodSandbox resolved for it: the pod's
    // hostname, and its hostname, hosts and resolv.conf files mounted.
    let r = exec(
        &mut rt,
        &shell,
        &[
            "sh",
            "-c",
            "hostname; cat /etc/hostname; grep -c '\\ba$' /etc/hosts; grep -c ' /etc/resolv.conf ' /proc/self/mountinfo",
        ],
        5,
    )
    .await
    .expect("ExecSync");
    assert_eq!(
        (String::from_utf8_lossy(&r.stdout).as_ref(), r.exit_code),
        ("a\na\n1\n1\n", 0),
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );

    // ExecSync at its timeout: DeadlineExceeded, and the sleep is gone.
    let started = Instant::now();
    let err = exec(&mut rt, &shell, &["sleep", "10"], 1)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    wait_for("no `sleep 10` left", || {
        !processes().iter().any(|(_, cmd)| cmd == "sleep 10")
    });

    // Pod B serves HTTP; pod A reaches it over the pod network.
    let pod_b = pod_config("b", &logs);
    let pod_b_id = run_pod(&mut rt, &pod_b).await.expect("RunPodSandbox b");
    run_container(
        &mut rt,
        &pod_b_id,
        &pod_b,
        container_config("web", "registry.k8s.io/crius/httpd:latest", &[]),
    )
    .await;
    let ip = |id: String| {
        let mut rt = rt.clone();
        async move {
            rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
        }
    };
    let (status_a, status_b) = (ip(pod_a_id.clone()).await, ip(pod_b_id.clone()).await);
    let (ip_a, ip_b) = (status_a.network.unwrap().ip, status_b.network.unwrap().ip);
    assert!(!ip_a.is_empty() && !ip_b.is_empty());
    assert_ne!(ip_a, ip_b);
    assert_eq!(status_a.annotations["note"], "kept verbatim");
    let url = format!("http://{ip_b}/");
    let mut page = String::new();
    for _ in 0..50 {
        let r = exec(&mut rt, &shell, &["wget", "-q", "-O", "-", &url], 5)
            .await
            .unwrap();
        page = String::from_utf8_lossy(&r.stdout).into_owned();
        if r.exit_code == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.contains("crius-httpd-ok"), "page from {url}: {page:?}");

    let listed = rt
        .list_containers(cri::ListContainersRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 2);

    // Stop and remove everything.
    for id in [&pod_a_id, &pod_b_id] {
        rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .expect("StopPodSandbox");
    }
    let status = container_status(&mut rt, &shell).await;
    assert_eq!(status.state, cri::ContainerState::ContainerExited as i32);
    // Exited, the verbose status still answers with what is known.
    let info = container_info(&mut rt, &shell).await;
    assert_eq!(info["pid"].as_u64(), Some(pid));
    for id in [&pod_a_id, &pod_b_id] {
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .expect("RemovePodSandbox");
        // Idempotent.
        rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
        .expect("RemovePodSandbox again");
    }
    assert!(rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .items
        .is_empty());
    wait_for("shims to exit", || daemon.shim_pids().is_empty());
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
