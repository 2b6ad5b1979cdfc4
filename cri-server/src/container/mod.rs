//! Containers: their records and their life cycle through the shim.

mod exec;
mod lifecycle;
mod log;

use std::path::PathBuf;

use k8s_cri::v1 as cri;
use serde::{Deserialize, Serialize};

use crate::state::table::Record;

pub use exec::exec_sync;
pub use lifecycle::{
    create_container, find, recover, remove_container, start_container, stop_container,
};
pub use log::reopen_container_log;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
    /// The shim is gone and no exit status was recorded.
    Unknown,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub pod_id: String,
    /// The pod's reserved name, part of this container's.
    pub pod_name: String,
    pub config: cri::ContainerConfig,
    /// The image id (config digest).
    pub image_id: String,
    /// What ContainerStatus reports as image_ref: a repo digest, else the id.
    pub image_ref: String,
    pub state: ContainerState,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// The OOM killer killed a process of the container (reason OOMKilled).
    #[serde(default)]
    pub oom_killed: bool,
    pub pid: u32,
    /// `<state>/c/<id>`: config.json, the rootfs mount, the shim's socket and exit file.
    pub bundle: PathBuf,
    /// `<root>/containers/<id>`: the writable layer.
    pub layer_dir: PathBuf,
    pub log_path: String,
    /// The image's stop signal (e.g. "SIGQUIT"); empty: SIGTERM.
    pub stop_signal: String,
    /// The container's process from its spec: the template of every exec.
    pub process: oci_spec::runtime::Process,
}

impl Record for ContainerRecord {
    const KIND: &'static str = "containers";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> String {
        container_name(&self.config, &self.pod_name)
    }
}

/// The name CRI reserves: `name_podname_podnamespace_poduid_attempt`, as
/// containerd makes it (the pod's part already is `name_namespace_uid_attempt`,
/// so its attempt stands in the middle).
pub fn container_name(config: &cri::ContainerConfig, pod_name: &str) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}", m.name, pod_name, m.attempt)
}

impl ContainerRecord {
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    pub fn cri_state(&self) -> cri::ContainerState {
        match self.state {
            ContainerState::Created => cri::ContainerState::ContainerCreated,
            ContainerState::Running => cri::ContainerState::ContainerRunning,
            ContainerState::Exited => cri::ContainerState::ContainerExited,
            ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
        }
    }

    fn image_spec(&self) -> cri::ImageSpec {
        let mut image = self.config.image.clone().unwrap_or_default();
        image.user_specified_image = image.image.clone();
        image
    }

    pub fn to_cri(&self) -> cri::Container {
        cri::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.pod_id.clone(),
            metadata: self.config.metadata.clone(),
            image: Some(self.image_spec()),
            image_ref: self.image_ref.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.image_id.clone(),
        }
    }

    pub fn status(&self) -> cri::ContainerStatus {
        let (reason, message) = match self.state {
            // containerd's rule: an OOM kill names the exit, whatever its code.
            ContainerState::Exited if self.oom_killed => ("OOMKilled", String::new()),
            ContainerState::Exited if self.exit_code == 0 => ("Completed", String::new()),
            ContainerState::Exited => ("Error", String::new()),
            ContainerState::Unknown => ("Unknown", "the container's shim is gone".to_string()),
            _ => ("", String::new()),
        };
        cri::ContainerStatus {
            id: self.id.clone(),
            metadata: self.config.metadata.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            exit_code: self.exit_code,
            image: Some(self.image_spec()),
            image_ref: self.image_ref.clone(),
            reason: reason.to_string(),
            message,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self.log_path.clone(),
            resources: None,
            image_id: self.image_id.clone(),
            user: Some(self.user()),
        }
    }
}

impl ContainerRecord {
    /// The identity of the container's first process, as its spec resolved
    /// it (CRI's SupplementalGroupsPolicy makes kubelet read it back).
    pub fn user(&self) -> cri::ContainerUser {
        let user = self.process.user();
        let mut groups: Vec<i64> = user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| i64::from(*g))
            .collect();
        groups.sort_unstable();
        groups.dedup();
        cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: i64::from(user.uid()),
                gid: i64::from(user.gid()),
                supplemental_groups: groups,
            }),
        }
    }
}

/// ListContainers' filter.
pub fn matches(c: &ContainerRecord, filter: &cri::ContainerFilter) -> bool {
    if !filter.id.is_empty() && !c.id.starts_with(&filter.id) {
        return false;
    }
    if !filter.pod_sandbox_id.is_empty() && !c.pod_id.starts_with(&filter.pod_sandbox_id) {
        return false;
    }
    if let Some(s) = &filter.state {
        if s.state != c.cri_state() as i32 {
            return false;
        }
    }
    filter
        .label_selector
        .iter()
        .all(|(k, v)| c.config.labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: ContainerState, exit_code: i32) -> ContainerRecord {
        ContainerRecord {
            id: "c1".into(),
            pod_id: "p1".into(),
            pod_name: "web_ns_u1_0".into(),
            config: cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "app".into(),
                    attempt: 3,
                }),
                image: Some(cri::ImageSpec {
                    image: "busybox".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            image_id: "sha256:aa".into(),
            image_ref: "docker.io/library/busybox@sha256:bb".into(),
            state,
            created_at: 1,
            started_at: 2,
            finished_at: 3,
            exit_code,
            oom_killed: false,
            pid: 42,
            bundle: PathBuf::from("/run/crius/c/c1"),
            layer_dir: PathBuf::from("/var/lib/crius/containers/c1"),
            log_path: "/logs/app.log".into(),
            stop_signal: String::new(),
            process: Default::default(),
        }
    }

    #[test]
    fn reserved_name_includes_the_pod() {
        assert_eq!(
            record(ContainerState::Created, 0).name(),
            "app_web_ns_u1_0_3"
        );
    }

    #[test]
    fn exit_reasons() {
        let done = record(ContainerState::Exited, 0).status();
        assert_eq!(done.reason, "Completed");
        assert_eq!(done.state, cri::ContainerState::ContainerExited as i32);
        assert_eq!(record(ContainerState::Exited, 137).status().reason, "Error");
        let oom = ContainerRecord {
            oom_killed: true,
            ..record(ContainerState::Exited, 137)
        };
        assert_eq!(oom.status().reason, "OOMKilled");
        assert_eq!(oom.status().exit_code, 137);
        assert_eq!(record(ContainerState::Running, 0).status().reason, "");
        let s = record(ContainerState::Running, 0).status();
        assert_eq!(s.image.unwrap().image, "busybox");
        assert_eq!(s.image_ref, "docker.io/library/busybox@sha256:bb");
        assert_eq!(s.image_id, "sha256:aa");
    }

    #[test]
    fn a_record_written_before_oom_reporting_reads_as_no_oom_kill() {
        let mut json = serde_json::to_value(record(ContainerState::Exited, 1)).unwrap();
        json.as_object_mut().unwrap().remove("oom_killed");
        let old: ContainerRecord = serde_json::from_value(json).unwrap();
        assert!(!old.oom_killed);
        assert_eq!(old.status().reason, "Error");
    }

    #[test]
    fn status_reports_the_resolved_user() {
        let mut r = record(ContainerState::Running, 0);
        let mut user = oci_spec::runtime::User::default();
        user.set_uid(1000);
        user.set_gid(1000);
        user.set_additional_gids(Some(vec![50000, 1000, 1234, 1000]));
        r.process.set_user(user);
        let linux = r.status().user.unwrap().linux.unwrap();
        assert_eq!((linux.uid, linux.gid), (1000, 1000));
        assert_eq!(linux.supplemental_groups, vec![1000, 1234, 50000]);
    }

    #[test]
    fn filter_by_pod_and_state() {
        let c = record(ContainerState::Running, 0);
        let running = Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        });
        assert!(matches(
            &c,
            &cri::ContainerFilter {
                pod_sandbox_id: "p".into(),
                state: running,
                ..Default::default()
            }
        ));
        assert!(!matches(
            &c,
            &cri::ContainerFilter {
                pod_sandbox_id: "q".into(),
                ..Default::default()
            }
        ));
    }
}
