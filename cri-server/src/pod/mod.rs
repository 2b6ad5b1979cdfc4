//! Pod sandboxes: their records and their life cycle. A pod is its pinned
//! namespaces, its network (CNI) and its cgroup parent; it has no process
//! until the shim issue adds the shared-PID pause process.

mod files;
mod lifecycle;

use std::path::PathBuf;

use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};

use crate::state::table::Record;

pub use files::{hostname, node_hostname};
pub use lifecycle::{remove_pod, run_pod, stop_pod};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub id: String,
    pub config: cri::PodSandboxConfig,
    pub runtime_handler: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub state: PodState,
    /// `<state>/pods/<id>`: pinned namespaces (`ns/`), resolv.conf, hostname, hosts.
    pub dir: PathBuf,
    pub netns: Option<PathBuf>,
    pub ipcns: Option<PathBuf>,
    pub utsns: Option<PathBuf>,
    pub ip: String,
    pub additional_ips: Vec<String>,
    /// The cgroup under which each container gets `<cgroup_parent>/<container id>`.
    pub cgroup_parent: String,
    /// True when crius made the cgroup parent (no CRI cgroup_parent given) and removes it.
    pub owns_cgroup: bool,
}

impl Record for PodRecord {
    const KIND: &'static str = "pods";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> String {
        pod_name(&self.config)
    }
}

fn metadata(config: &cri::PodSandboxConfig) -> cri::PodSandboxMetadata {
    config.metadata.clone().unwrap_or_default()
}

/// The name CRI reserves: `name_namespace_uid_attempt`, as containerd makes it.
pub fn pod_name(config: &cri::PodSandboxConfig) -> String {
    let m = metadata(config);
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

impl PodRecord {
    pub fn namespace_options(&self) -> cri::NamespaceOption {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default()
    }

    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    pub fn hostname_file(&self) -> PathBuf {
        self.dir.join("hostname")
    }

    pub fn hosts_file(&self) -> PathBuf {
        self.dir.join("hosts")
    }

    pub fn to_cri(&self) -> cri::PodSandbox {
        cri::PodSandbox {
            id: self.id.clone(),
            metadata: Some(metadata(&self.config)),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }

    pub fn cri_state(&self) -> cri::PodSandboxState {
        match self.state {
            PodState::Ready => cri::PodSandboxState::SandboxReady,
            PodState::NotReady => cri::PodSandboxState::SandboxNotready,
        }
    }

    pub fn status(&self) -> cri::PodSandboxStatus {
        let ns = self.namespace_options();
        cri::PodSandboxStatus {
            id: self.id.clone(),
            metadata: Some(metadata(&self.config)),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: self.ip.clone(),
                additional_ips: self
                    .additional_ips
                    .iter()
                    .map(|ip| cri::PodIp { ip: ip.clone() })
                    .collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace { options: Some(ns) }),
            }),
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            runtime_handler: self.runtime_handler.clone(),
        }
    }
}

/// ListPodSandbox's filter.
pub fn matches(pod: &PodRecord, filter: &cri::PodSandboxFilter) -> bool {
    if !filter.id.is_empty() && !pod.id.starts_with(&filter.id) {
        return false;
    }
    if let Some(s) = &filter.state {
        if s.state != pod.cri_state() as i32 {
            return false;
        }
    }
    filter
        .label_selector
        .iter()
        .all(|(k, v)| pod.config.labels.get(k) == Some(v))
}
