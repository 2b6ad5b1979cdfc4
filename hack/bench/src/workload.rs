//! The pods and containers the benchmark runs, shaped as kubelet sends them
//! (a PID namespace per container, network and IPC per pod), and the CRI
//! calls that create and tear them down.

use crate::client::Runtime;
use anyhow::Context;
use crius_proto::cri;
use std::path::Path;

/// What every pod of a run is made of.
pub struct Workload {
    /// The container image (busybox with `sleep` and `true`).
    pub image: String,
    /// Parent of each pod's log directory.
    pub log_root: String,
    /// Makes pod names unique across runs against the same runtime.
    pub run_id: String,
}

/// kubelet's defaults: the pod shares network and IPC, each container has its
/// own PID namespace (CRI's zero value would share one PID namespace per pod).
fn namespaces() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Pod as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl Workload {
    /// A pod's config; makes its log directory first, as kubelet does
    /// (containerd does not make it).
    pub fn new_pod(&self, name: &str) -> anyhow::Result<cri::PodSandboxConfig> {
        let full_name = format!("bench-{}-{name}", self.run_id);
        let log_directory = Path::new(&self.log_root).join(&full_name);
        std::fs::create_dir_all(&log_directory)
            .with_context(|| format!("making {}", log_directory.display()))?;
        Ok(cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: full_name.clone(),
                uid: format!("uid-{full_name}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_directory.display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// A container that idles: `sleep 3600`.
    pub fn container_config(&self) -> cri::ContainerConfig {
        self.container("sleeper", vec!["sleep".into(), "3600".into()])
    }

    /// A container `name` of the workload's image running `command`.
    pub fn container(&self, name: &str, command: Vec<String>) -> cri::ContainerConfig {
        cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: self.image.clone(),
                ..Default::default()
            }),
            command,
            log_path: format!("{name}.log"),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

pub async fn run_pod(rt: &mut Runtime, config: &cri::PodSandboxConfig) -> anyhow::Result<String> {
    Ok(rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .context("RunPodSandbox")?
        .into_inner()
        .pod_sandbox_id)
}

pub async fn create_container(
    rt: &mut Runtime,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> anyhow::Result<String> {
    Ok(rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        })
        .await
        .context("CreateContainer")?
        .into_inner()
        .container_id)
}

pub async fn start_container(rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
    rt.start_container(cri::StartContainerRequest {
        container_id: id.into(),
    })
    .await
    .context("StartContainer")?;
    Ok(())
}

pub async fn stop_container(rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.into(),
        timeout: 0,
    })
    .await
    .context("StopContainer")?;
    Ok(())
}

pub async fn remove_container(rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .context("RemoveContainer")?;
    Ok(())
}

pub async fn stop_pod(rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .context("StopPodSandbox")?;
    Ok(())
}

pub async fn remove_pod(rt: &mut Runtime, id: &str) -> anyhow::Result<()> {
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .context("RemovePodSandbox")?;
    Ok(())
}

/// A pod with one running container (`sleep 3600` unless started with
/// another), for the exec, streaming and memory measurements.
pub struct RunningPod {
    pub pod_id: String,
    pub container_id: String,
}

impl RunningPod {
    pub async fn start(rt: &mut Runtime, workload: &Workload, name: &str) -> anyhow::Result<Self> {
        Self::start_with(rt, workload, name, workload.container_config()).await
    }

    /// A pod running the container `config` describes.
    pub async fn start_with(
        rt: &mut Runtime,
        workload: &Workload,
        name: &str,
        config: cri::ContainerConfig,
    ) -> anyhow::Result<Self> {
        let pod = workload.new_pod(name)?;
        let pod_id = run_pod(rt, &pod).await?;
        let container_id = match create_and_start(rt, &pod_id, &pod, config).await {
            Ok(id) => id,
            Err(e) => {
                let _ = stop_pod(rt, &pod_id).await;
                let _ = remove_pod(rt, &pod_id).await;
                return Err(e);
            }
        };
        Ok(RunningPod {
            pod_id,
            container_id,
        })
    }

    /// Stops and removes the pod; removing a pod removes its containers.
    pub async fn remove(self, rt: &mut Runtime) -> anyhow::Result<()> {
        stop_pod(rt, &self.pod_id).await?;
        remove_pod(rt, &self.pod_id).await
    }
}

async fn create_and_start(
    rt: &mut Runtime,
    pod_id: &str,
    pod: &cri::PodSandboxConfig,
    config: cri::ContainerConfig,
) -> anyhow::Result<String> {
    let id = create_container(rt, pod_id, pod, config).await?;
    start_container(rt, &id).await?;
    Ok(id)
}
