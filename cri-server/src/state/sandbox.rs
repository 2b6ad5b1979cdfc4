//! The pod sandbox's record: what RunPodSandbox made and resolved, kept so
//! that StopPodSandbox and RemovePodSandbox undo exactly that and so that
//! container creation reads the pod from here rather than asking the pod
//! concern. Plain data and its CRI views; the rules that fill it live in
//! `pod/`.

use std::path::PathBuf;

use crius_proto::cri;
use serde::{Deserialize, Serialize};

use super::filter::Selector;
use super::table::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    Ready,
    NotReady,
}

/// The files a pod gives its containers to bind-mount, as RunPodSandbox
/// wrote them. Empty paths: not written (yet).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodFiles {
    /// The container's /etc/resolv.conf.
    pub resolv_conf: PathBuf,
    /// The container's /etc/hosts.
    pub hosts: PathBuf,
    /// The container's /etc/hostname.
    pub hostname: PathBuf,
}

/// A pod's pause process: PID 1 of its shared PID namespace, run as a
/// sandbox container under a shim of its own (libcontainer id: the pod's id).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    /// Its OCI bundle (spec, empty rootfs, shim socket, shim log, exit file).
    pub bundle: PathBuf,
    /// Its host pid; 0 until created.
    pub pid: u32,
    /// The pinned PID namespace the pod's containers join; `None` until pinned.
    pub pidns: Option<PathBuf>,
    /// Why the pause process is gone while the pod was ready (its exit
    /// status, or its shim lost); `None` while it runs. A pod whose pause
    /// process is gone is NOTREADY: its containers' PID namespace is dead.
    pub gone: Option<String>,
}

/// One range of a user namespace's ID map, as `/proc/<pid>/uid_map` holds
/// it: IDs `container_id..container_id + length` inside are
/// `host_id..host_id + length` outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

/// A pod's user namespace ID maps (KEP-127: exactly one range each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMappings {
    pub uids: IdMapping,
    pub gids: IdMapping,
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
    /// The pod's pinned user namespace (`userns_options` mode POD), which
    /// owns its network, IPC and UTS namespaces; `None`: the host's.
    #[serde(default)]
    pub userns: Option<PathBuf>,
    /// The ID maps of `userns`; `None` without one.
    #[serde(default)]
    pub user_mappings: Option<UserMappings>,
    pub ip: String,
    pub additional_ips: Vec<String>,
    /// The pod's cgroup as the cgroup driver named it (`CgroupDriver::pod_cgroup`);
    /// the driver places each container's cgroup in it.
    pub cgroup_parent: String,
    /// True when crius made the cgroup parent (no CRI cgroup_parent given) and removes it.
    pub owns_cgroup: bool,
    /// The hostname the pod's containers get: the pod's own when it has a
    /// UTS namespace, else the node's. Empty until RunPodSandbox resolves
    /// it, and in a record written before it was kept (the pod concern fills
    /// it in when the table loads).
    #[serde(default)]
    pub hostname: String,
    /// The files RunPodSandbox wrote for the containers. Empty until
    /// written, and in a record written before they were kept (the pod
    /// concern fills them in when the table loads).
    #[serde(default)]
    pub files: PodFiles,
    /// The pause process of a pod with a shared PID namespace
    /// (`namespace_options.pid == POD`); `None` for any other pod.
    #[serde(default)]
    pub pause: Option<PauseRecord>,
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

/// The name CRI reserves: `name_namespace_uid_attempt`, as containerd makes
/// it. Pure.
pub fn pod_name(config: &cri::PodSandboxConfig) -> String {
    let m = metadata(config);
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

impl PodRecord {
    /// A ready pod as RunPodSandbox starts it, holding nothing yet: each
    /// setup step records what it makes. Pure.
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
            userns: None,
            user_mappings: None,
            ip: String::new(),
            additional_ips: Vec::new(),
            cgroup_parent: String::new(),
            owns_cgroup: false,
            hostname: String::new(),
            files: PodFiles::default(),
            pause: None,
        }
    }

    /// True when the pod may run containers: not stopped, and its pause
    /// process (if it has one) still runs.
    pub fn is_ready(&self) -> bool {
        self.state == PodState::Ready && self.pause.as_ref().is_none_or(|p| p.gone.is_none())
    }

    /// The namespace modes the pod's config asks for (defaults when unset).
    pub fn namespace_options(&self) -> cri::NamespaceOption {
        self.config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.clone())
            .unwrap_or_default()
    }

    /// The pod as ListPodSandbox reports it.
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

    /// READY only when [`PodRecord::is_ready`].
    pub fn cri_state(&self) -> cri::PodSandboxState {
        if self.is_ready() {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        }
    }

    /// The pod as PodSandboxStatus reports it.
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

    /// What PodSandboxStatus(verbose) returns as `info["info"]`: a JSON
    /// object in containerd's shape (its `SandboxInfo`, internal/cri/types/
    /// sandbox_info.go) where crius has an equivalent: `pid` (the pause
    /// process's host pid; 0 for a pod without one, or once it is gone, as
    /// containerd's is once its task is),
    /// `netNamespaceClosed` (the pinned netns is gone), `runtimeHandler`,
    /// `config` (the CRI PodSandboxConfig as sent), `cniResult` (the cached
    /// result of the pod's CNI ADD, as the plugins returned it; null without
    /// one) and `runtimeSpec` holding only `linux.namespaces`: the pinned
    /// namespaces its containers join (containerd's pause spec lists them
    /// there, and guides read the netns path from it). crius adds
    /// `namespaces` (`network`, `ipc`, `uts`, `pid`: the pinned paths, null
    /// where the pod shares the node's or, for `pid`, has no shared one),
    /// `cgroupParent`, `sandboxDir` and, when the pause process is gone,
    /// `notReadyReason`. No `image`: a crius pod has none. Pure.
    pub fn verbose_info(
        &self,
        cni_result: Option<serde_json::Value>,
        netns_closed: bool,
    ) -> serde_json::Value {
        let pause = self.pause.as_ref();
        let pidns = pause.and_then(|p| p.pidns.clone());
        let pinned = [
            ("network", &self.netns),
            ("ipc", &self.ipcns),
            ("uts", &self.utsns),
            ("pid", &pidns),
        ];
        let spec_namespaces: Vec<_> = pinned
            .iter()
            .filter_map(|(kind, path)| {
                let path = path.as_ref()?;
                Some(serde_json::json!({"type": kind, "path": path}))
            })
            .collect();
        let namespaces: serde_json::Map<String, serde_json::Value> = pinned
            .iter()
            .map(|(kind, path)| (kind.to_string(), serde_json::json!(path)))
            .collect();
        let running_pause = pause.filter(|p| p.gone.is_none());
        let mut info = serde_json::json!({
            "pid": running_pause.map_or(0, |p| p.pid),
            "netNamespaceClosed": netns_closed,
            "runtimeHandler": self.runtime_handler,
            "config": self.config,
            "cniResult": cni_result,
            "runtimeSpec": {"linux": {"namespaces": spec_namespaces}},
            "namespaces": namespaces,
            "cgroupParent": self.cgroup_parent,
            "sandboxDir": self.dir,
        });
        if let Some(reason) = pause.and_then(|p| p.gone.as_ref()) {
            info["notReadyReason"] = serde_json::json!(reason);
        }
        info
    }

    /// ListPodSandbox's filter: true when it selects this pod.
    pub fn matches(&self, filter: &cri::PodSandboxFilter) -> bool {
        let state = filter.state.as_ref().map(|s| s.state);
        Selector::new(&filter.id, state, &filter.label_selector).selects(
            &self.id,
            self.cri_state() as i32,
            &self.config.labels,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pod(id: &str, state: PodState, labels: &[(&str, &str)]) -> PodRecord {
        let config = cri::PodSandboxConfig {
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
        };
        PodRecord {
            state,
            ip: "10.0.0.2".into(),
            additional_ips: vec!["fd00::2".into()],
            cgroup_parent: "/crius/x".into(),
            owns_cgroup: true,
            ..PodRecord::new(
                id.into(),
                PathBuf::from("/run/crius/pods").join(id),
                config,
                1,
            )
        }
    }

    #[test]
    fn reserved_name_is_name_namespace_uid_attempt() {
        let p = pod("a", PodState::Ready, &[]);
        assert_eq!(pod_name(&p.config), "web_ns_u1_2");
        assert_eq!(p.name(), "web_ns_u1_2");
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
        assert!(p.matches(&f("", None, &[])));
        assert!(p.matches(&f(
            "abc",
            Some(cri::PodSandboxState::SandboxReady),
            &[("app", "web")]
        )));
        assert!(!p.matches(&f("abd", None, &[])));
        assert!(!p.matches(&f("", Some(cri::PodSandboxState::SandboxNotready), &[])));
        assert!(!p.matches(&f("", None, &[("app", "db")])));
    }

    #[test]
    fn status_reports_network_and_state() {
        let s = pod("a", PodState::NotReady, &[]).status();
        assert_eq!(s.state, cri::PodSandboxState::SandboxNotready as i32);
        let net = s.network.unwrap();
        assert_eq!(net.ip, "10.0.0.2");
        assert_eq!(net.additional_ips[0].ip, "fd00::2");
    }

    #[test]
    fn verbose_info_has_the_config_namespaces_and_cni_result() {
        let mut p = pod("a", PodState::Ready, &[("app", "web")]);
        p.netns = Some(p.dir.join("ns/net"));
        p.utsns = Some(p.dir.join("ns/uts"));
        p.runtime_handler = "runc".into();
        let cni = serde_json::json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/16"}]});
        let info = p.verbose_info(Some(cni.clone()), false);
        for key in [
            "pid",
            "netNamespaceClosed",
            "runtimeHandler",
            "config",
            "cniResult",
            "runtimeSpec",
            "namespaces",
            "cgroupParent",
            "sandboxDir",
        ] {
            assert!(info.get(key).is_some(), "{key} missing from {info}");
        }
        assert_eq!(info["pid"], 0, "no pause process yet");
        assert_eq!(info["runtimeHandler"], "runc");
        assert_eq!(info["cniResult"], cni);
        assert_eq!(info["namespaces"]["network"], "/run/crius/pods/a/ns/net");
        assert_eq!(info["namespaces"]["uts"], "/run/crius/pods/a/ns/uts");
        assert!(info["namespaces"]["ipc"].is_null(), "the node's IPC");
        assert_eq!(
            info["runtimeSpec"]["linux"]["namespaces"],
            serde_json::json!([
                {"type": "network", "path": "/run/crius/pods/a/ns/net"},
                {"type": "uts", "path": "/run/crius/pods/a/ns/uts"},
            ])
        );
        let config: cri::PodSandboxConfig = serde_json::from_value(info["config"].clone()).unwrap();
        assert_eq!(config, p.config);
        assert_eq!(info["config"]["metadata"]["namespace"], "ns");
        // Host network, nothing cached: nulls, not errors.
        p.netns = None;
        let host = p.verbose_info(None, false);
        assert!(host["cniResult"].is_null());
        assert!(host["namespaces"]["network"].is_null());
        assert!(
            host["namespaces"]["pid"].is_null(),
            "no shared PID namespace"
        );
        assert!(host.get("notReadyReason").is_none());
    }

    /// A shared-PID pod reports its pause process's pid and pinned PID
    /// namespace while it runs; once it is gone the pod is NOTREADY, with
    /// the reason in the verbose info and pid 0.
    #[test]
    fn the_pause_process_gives_pid_and_readiness() {
        let mut p = pod("a", PodState::Ready, &[]);
        p.pause = Some(PauseRecord {
            bundle: "/run/crius/c/a".into(),
            pid: 4242,
            pidns: Some("/run/crius/pods/a/ns/pid".into()),
            gone: None,
        });
        assert!(p.is_ready());
        assert_eq!(p.cri_state(), cri::PodSandboxState::SandboxReady);
        let info = p.verbose_info(None, false);
        assert_eq!(info["pid"], 4242);
        assert_eq!(info["namespaces"]["pid"], "/run/crius/pods/a/ns/pid");

        p.pause.as_mut().unwrap().gone = Some("the pause process exited with status 137".into());
        assert!(!p.is_ready());
        assert_eq!(
            p.status().state,
            cri::PodSandboxState::SandboxNotready as i32
        );
        let not_ready = cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxNotready as i32,
            }),
            ..Default::default()
        };
        assert!(p.matches(&not_ready));
        let info = p.verbose_info(None, false);
        assert_eq!(info["pid"], 0);
        assert_eq!(
            info["notReadyReason"],
            "the pause process exited with status 137"
        );
    }

    /// A record as a criusd before the resolved hostname and files were
    /// kept wrote it: it loads, with them empty for the pod concern to fill.
    #[test]
    fn a_record_written_before_the_resolved_fields_loads_with_them_empty() {
        let old = r#"{
            "id": "p1",
            "config": {"metadata": {"name": "web", "uid": "u1", "namespace": "ns", "attempt": 0}},
            "runtime_handler": "",
            "created_at": 1,
            "state": "Ready",
            "dir": "/run/crius/pods/p1",
            "netns": "/run/crius/pods/p1/ns/net",
            "ipcns": null,
            "utsns": "/run/crius/pods/p1/ns/uts",
            "ip": "10.0.0.2",
            "additional_ips": [],
            "cgroup_parent": "/crius/pod-p1",
            "owns_cgroup": true
        }"#;
        let pod: PodRecord = serde_json::from_str(old).unwrap();
        assert_eq!(pod.hostname, "");
        assert_eq!(pod.files, PodFiles::default());
        assert_eq!(pod.name(), "web_ns_u1_0");
        assert_eq!(pod.cgroup_parent, "/crius/pod-p1");
    }

    #[test]
    fn the_resolved_fields_survive_a_round_trip() {
        let mut p = pod("a", PodState::Ready, &[]);
        p.hostname = "web-0".into();
        p.files = PodFiles {
            resolv_conf: p.dir.join("resolv.conf"),
            hosts: p.dir.join("hosts"),
            hostname: p.dir.join("hostname"),
        };
        let back: PodRecord = serde_json::from_value(serde_json::to_value(&p).unwrap()).unwrap();
        assert_eq!(back.hostname, "web-0");
        assert_eq!(back.files, p.files);
    }
}
