//! Small CRI request builders and calls the end-to-end tests share.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crius_proto::cri;
use crius_proto::cri::image_service_client::ImageServiceClient;
use crius_proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

pub type Runtime = RuntimeServiceClient<Channel>;

pub fn pod_config(name: &str, log_dir: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        labels: HashMap::from([("app".into(), name.into())]),
        annotations: HashMap::from([("note".into(), "kept verbatim".into())]),
        ..Default::default()
    }
}

/// `pod` with its PID namespace mode set: POD (the proto's default) gives
/// it a pause process as PID 1; CONTAINER makes each container's process
/// PID 1 of its own namespace.
pub fn with_pid_mode(
    mut pod: cri::PodSandboxConfig,
    mode: cri::NamespaceMode,
) -> cri::PodSandboxConfig {
    pod.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    pod
}

/// `pod` with a user namespace of mode `mode` (KEP-127): for POD, uids and
/// gids map container IDs `0..length` to host IDs `host_id..`.
pub fn with_userns(
    mut pod: cri::PodSandboxConfig,
    mode: cri::NamespaceMode,
    host_id: u32,
    length: u32,
) -> cri::PodSandboxConfig {
    let ids = match mode {
        cri::NamespaceMode::Pod => vec![cri::IdMapping {
            container_id: 0,
            host_id,
            length,
        }],
        _ => Vec::new(),
    };
    let linux = pod.linux.get_or_insert_with(Default::default);
    let sc = linux.security_context.get_or_insert_with(Default::default);
    let ns = sc.namespace_options.get_or_insert_with(Default::default);
    ns.userns_options = Some(cri::UserNamespace {
        mode: mode as i32,
        uids: ids.clone(),
        gids: ids,
    });
    pod
}

pub fn container_config(name: &str, image: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("role".into(), name.into())]),
        ..Default::default()
    }
}

pub async fn pull(images: &mut ImageServiceClient<Channel>, image: &str) -> String {
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("PullImage {image}: {e:?}"))
        .into_inner()
        .image_ref
}

pub async fn run_pod(
    rt: &mut Runtime,
    config: &cri::PodSandboxConfig,
) -> Result<String, tonic::Status> {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: String::new(),
    })
    .await
    .map(|r| r.into_inner().pod_sandbox_id)
}

pub async fn create_container(
    rt: &mut Runtime,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> Result<String, tonic::Status> {
    rt.create_container(cri::CreateContainerRequest {
        pod_sandbox_id: pod_id.into(),
        config: Some(config),
        sandbox_config: Some(pod.clone()),
    })
    .await
    .map(|r| r.into_inner().container_id)
}

/// Creates and starts a container.
pub async fn run_container(
    rt: &mut Runtime,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> String {
    let id = create_container(rt, pod_id, pod, config)
        .await
        .expect("CreateContainer");
    rt.start_container(cri::StartContainerRequest {
        container_id: id.clone(),
    })
    .await
    .expect("StartContainer");
    id
}

pub async fn container_status(rt: &mut Runtime, id: &str) -> cri::ContainerStatus {
    rt.container_status(cri::ContainerStatusRequest {
        container_id: id.into(),
        verbose: false,
    })
    .await
    .expect("ContainerStatus")
    .into_inner()
    .status
    .expect("a status")
}

/// ContainerStatus' verbose `info` (containerd's shape: pid, runtimeSpec,
/// config, …) as JSON.
pub async fn container_info(rt: &mut Runtime, id: &str) -> serde_json::Value {
    let info = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .info;
    serde_json::from_str(&info["info"]).expect("info is JSON")
}

pub async fn exec(
    rt: &mut Runtime,
    id: &str,
    cmd: &[&str],
    timeout: i64,
) -> Result<cri::ExecSyncResponse, tonic::Status> {
    rt.exec_sync(cri::ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout,
    })
    .await
    .map(|r| r.into_inner())
}

/// Polls `check` every 20 ms for up to 10 s.
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// StopPodSandbox then RemovePodSandbox, each expected to succeed.
pub async fn stop_and_remove_pod(rt: &mut Runtime, pod_id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: pod_id.into(),
    })
    .await
    .expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod_id.into(),
    })
    .await
    .expect("RemovePodSandbox");
}
