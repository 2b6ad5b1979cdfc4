//! Pod sandboxes: their records and their life cycle. A pod is its pinned
//! namespaces, its network (CNI) and its cgroup parent; it has no process
//! until the shim issue adds the shared-PID pause process.

mod files;
mod lifecycle;

use std::path::PathBuf;

use crius_proto::cri;
use serde::{Deserialize, Serialize};

use crate::state::filter::Selector;
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
    /// The pod's cgroup as the cgroup driver named it (`CgroupDriver::pod_cgroup`);
    /// the driver places each container's cgroup in it.
    pub cgroup_parent: String,
    /// True when crius made the cgroup parent (no CRI cgroup_parent given) and removes it.
    pub owns_cgroup: bool,
}

impl Record for PodRecord {
    const KIND: &'static str = "pods";
    const NOUN: &'static str = "pod sandbox";
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
    /// A ready pod as RunPodSandbox starts it, holding nothing yet: each
    /// setup step records what it makes.
    pub fn new(id: String, dir: PathBuf, config: cri::PodSandboxConfig, created_at: i64) -> Self {
        PodRecord {
            id,
            config,
            runtime_handler: String::new(),
            created_at,
            state: PodState::Ready,
            dir,
            netns: None,
            ipcns: None,
            utsns: None,
            ip: String::new(),
            additional_ips: Vec::new(),
            cgroup_parent: String::new(),
            owns_cgroup: false,
        }
    }

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

/// ListPodSandbox's filter: true when it selects `pod`.
pub fn matches(pod: &PodRecord, filter: &cri::PodSandboxFilter) -> bool {
    let state = filter.state.as_ref().map(|s| s.state);
    Selector::new(&filter.id, state, &filter.label_selector).selects(
        &pod.id,
        pod.cri_state() as i32,
        &pod.config.labels,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pod(id: &str, state: PodState, labels: &[(&str, &str)]) -> PodRecord {
        PodRecord {
            id: id.into(),
            config: cri::PodSandboxConfig {
                metadata: Some(cri::PodSandboxMetadata {
                    name: "web".into(),
                    uid: "u1".into(),
                    namespace: "ns".into(),
                    attempt: 2,
                }),
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<HashMap<_, _>>(),
                ..Default::default()
            },
            runtime_handler: String::new(),
            created_at: 1,
            state,
            dir: PathBuf::from("/run/crius/pods").join(id),
            netns: None,
            ipcns: None,
            utsns: None,
            ip: "10.0.0.2".into(),
            additional_ips: vec!["fd00::2".into()],
            cgroup_parent: "/crius/x".into(),
            owns_cgroup: true,
        }
    }

    #[test]
    fn reserved_name_is_name_namespace_uid_attempt() {
        assert_eq!(
            pod_name(&pod("a", PodState::Ready, &[]).config),
            "web_ns_u1_2"
        );
    }

    #[test]
    fn filter_by_id_prefix_state_and_labels() {
        let p = pod(
            "abcdef",
            PodState::Ready,
            &[("app", "web"), ("tier", "front")],
        );
        let f = |id: &str, state: Option<cri::PodSandboxState>, labels: &[(&str, &str)]| {
            cri::PodSandboxFilter {
                id: id.into(),
                state: state.map(|s| cri::PodSandboxStateValue { state: s as i32 }),
                label_selector: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            }
        };
        assert!(matches(&p, &f("", None, &[])));
        assert!(matches(
            &p,
            &f(
                "abc",
                Some(cri::PodSandboxState::SandboxReady),
                &[("app", "web")]
            )
        ));
        assert!(!matches(&p, &f("abd", None, &[])));
        assert!(!matches(
            &p,
            &f("", Some(cri::PodSandboxState::SandboxNotready), &[])
        ));
        assert!(!matches(&p, &f("", None, &[("app", "db")])));
    }

    #[test]
    fn status_reports_network_and_state() {
        let s = pod("a", PodState::NotReady, &[]).status();
        assert_eq!(s.state, cri::PodSandboxState::SandboxNotready as i32);
        let net = s.network.unwrap();
        assert_eq!(net.ip, "10.0.0.2");
        assert_eq!(net.additional_ips[0].ip, "fd00::2");
    }
}
