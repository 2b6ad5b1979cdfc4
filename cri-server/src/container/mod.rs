//! Containers: their records and their life cycle through the shim.

mod exec;
mod lifecycle;
mod log;

use std::path::PathBuf;

use crius_proto::cri;
use serde::{Deserialize, Serialize};

use crate::error::CriError;
use crate::shim_client::ShimError;
use crate::state::filter::Selector;
use crate::state::table::Record;

pub use exec::exec_sync;
pub use lifecycle::{create_container, recover, remove_container, start_container, stop_container};
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
    /// The limits its spec applied, for ContainerStatus.resources; `None` in
    /// a record written before they were kept.
    #[serde(default)]
    pub resources: Option<cri::LinuxContainerResources>,
}

impl Record for ContainerRecord {
    const KIND: &'static str = "containers";
    const NOUN: &'static str = "container";
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

    pub fn to_cri(&self) -> cri::Container {
        cri::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.pod_id.clone(),
            metadata: self.config.metadata.clone(),
            image: Some(reported_image(self.config.image.as_ref())),
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
            image: Some(reported_image(self.config.image.as_ref())),
            image_ref: self.image_ref.clone(),
            reason: reason.to_string(),
            message,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.config.mounts.clone(),
            log_path: self.log_path.clone(),
            resources: self.resources.clone().map(|linux| cri::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
            image_id: self.image_id.clone(),
            user: Some(self.user()),
            // ContainerConfig.stop_signal is not honoured yet: reported as the
            // runtime default.
            stop_signal: cri::Signal::RuntimeDefault as i32,
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

/// The ImageSpec that ContainerStatus and ListContainers report. kubelet
/// creates a container from the image ID, with the pod spec's image name in
/// `user_specified_image` (kubernetes pkg/kubelet/kuberuntime/
/// kuberuntime_container.go:373), and shows the status' `image.image` as the
/// pod's image (kuberuntime_container.go:743). So `image` is the
/// user-specified image when there is one (CRI-O's rule), else what the
/// request named there (crictl and older clients send only that); the other
/// fields stay as sent.
pub(super) fn reported_image(sent: Option<&cri::ImageSpec>) -> cri::ImageSpec {
    let mut image = sent.cloned().unwrap_or_default();
    if !image.user_specified_image.is_empty() {
        image.image = image.user_specified_image.clone();
    }
    image
}

/// The answer to a call that needs a running container.
fn not_running(id: &str) -> CriError {
    CriError::FailedPrecondition(format!("container {id} is not running"))
}

/// A failed call to a running container's shim. The shim answers
/// FailedPrecondition when its container stopped after our record said
/// running (kubelet probes race with stops): that is "not running", as if the
/// record had said so, not an Internal error; anything else is Internal.
fn shim_call_error(id: &str, e: ShimError) -> CriError {
    match e {
        ShimError::Call { status, .. } if status.code() == tonic::Code::FailedPrecondition => {
            not_running(id)
        }
        e => anyhow::Error::from(e).into(),
    }
}

/// ListContainers' filter: true when it selects `c`.
pub fn matches(c: &ContainerRecord, filter: &cri::ContainerFilter) -> bool {
    let state = filter.state.as_ref().map(|s| s.state);
    c.pod_id.starts_with(&filter.pod_sandbox_id)
        && Selector::new(&filter.id, state, &filter.label_selector).selects(
            &c.id,
            c.cri_state() as i32,
            &c.config.labels,
        )
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
            resources: None,
        }
    }

    /// A record as create_container makes it: its resources from the spec
    /// built for `resources`.
    fn created_with(
        resources: Option<cri::LinuxContainerResources>,
        host: &crate::spec::HostCapabilities,
    ) -> ContainerRecord {
        let mut r = record(ContainerState::Running, 0);
        r.config.linux = Some(cri::LinuxContainerConfig {
            resources,
            security_context: None,
        });
        let rootfs = tempfile::tempdir().unwrap();
        let spec = crate::spec::container_spec(&crate::spec::ContainerSpecInput {
            container_id: &r.id,
            sandbox_id: &r.pod_id,
            image_name: "busybox",
            config: &r.config,
            sandbox: &Default::default(),
            image: &crate::spec::ImageConfigView {
                cmd: vec!["sh".into()],
                ..Default::default()
            },
            rootfs: rootfs.path(),
            namespaces: &crate::spec::SandboxNamespaces {
                network: Some("/run/crius/ns/p/net".into()),
                ipc: Some("/run/crius/ns/p/ipc".into()),
                uts: Some("/run/crius/ns/p/uts".into()),
                pid: None,
            },
            target_pid_namespace: None,
            cgroups_path: "/crius/pod-p1/c1".into(),
            hostname: "web",
            resolv_conf: None,
            hosts_file: None,
            hostname_file: None,
            shm_path: None,
            host,
        })
        .unwrap();
        r.resources = crate::spec::applied_resources(&spec);
        r
    }

    fn host() -> crate::spec::HostCapabilities {
        crate::spec::HostCapabilities {
            cgroup_v2: true,
            hugetlb: true,
            memory_swap: true,
            min_oom_score_adj: -500,
            apparmor: false,
            own_capabilities: (1 << 41) - 1,
        }
    }

    #[test]
    fn status_reports_the_applied_limits() {
        let requested = cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            oom_score_adj: -998,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "60M".to_string())].into(),
            ..Default::default()
        };
        let status = created_with(Some(requested), &host()).status();
        let linux = status.resources.unwrap().linux.unwrap();
        assert_eq!(linux.cpu_period, 100_000);
        assert_eq!(linux.cpu_quota, 50_000);
        assert_eq!(linux.cpu_shares, 512);
        assert_eq!(linux.memory_limit_in_bytes, 64 << 20);
        assert_eq!(linux.memory_swap_limit_in_bytes, 64 << 20, "swap pinned");
        assert_eq!(linux.oom_score_adj, -500, "clamped to the daemon's");
        assert_eq!(linux.cpuset_cpus, "0-1");
        assert_eq!(linux.cpuset_mems, "0");
        assert_eq!(
            linux.hugepage_limits,
            vec![cri::HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }]
        );
        assert_eq!(linux.unified.len(), 1);
        assert_eq!(linux.unified["memory.high"], "60M");
    }

    #[test]
    fn status_without_requested_limits_reports_none_applied() {
        let status = created_with(None, &host()).status();
        assert_eq!(
            status.resources,
            Some(cri::ContainerResources {
                linux: Some(cri::LinuxContainerResources::default()),
                windows: None,
            })
        );
        // Where the host cannot limit swap, none is reported.
        let no_swap = crate::spec::HostCapabilities {
            memory_swap: false,
            ..host()
        };
        let limited = cri::LinuxContainerResources {
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        };
        let linux = created_with(Some(limited), &no_swap)
            .status()
            .resources
            .unwrap()
            .linux
            .unwrap();
        assert_eq!(
            (
                linux.memory_limit_in_bytes,
                linux.memory_swap_limit_in_bytes
            ),
            (64 << 20, 0)
        );
    }

    #[test]
    fn a_record_written_before_resources_were_kept_reports_none() {
        let mut json = serde_json::to_value(created_with(None, &host())).unwrap();
        json.as_object_mut().unwrap().remove("resources");
        let old: ContainerRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old.resources, None);
        assert_eq!(old.status().resources, None);
    }

    #[test]
    fn the_reported_image_is_the_user_specified_one() {
        // kubelet 1.37: the image ID, and the pod spec's name.
        let kubelet = cri::ImageSpec {
            image: "sha256:aa".into(),
            user_specified_image: "registry.k8s.io/e2e-test-images/busybox:1.29-2".into(),
            runtime_handler: "runc".into(),
            ..Default::default()
        };
        assert_eq!(
            reported_image(Some(&kubelet)),
            cri::ImageSpec {
                image: "registry.k8s.io/e2e-test-images/busybox:1.29-2".into(),
                user_specified_image: "registry.k8s.io/e2e-test-images/busybox:1.29-2".into(),
                runtime_handler: "runc".into(),
                ..Default::default()
            }
        );
        // crictl: a name in image, nothing else.
        let crictl = cri::ImageSpec {
            image: "busybox:latest".into(),
            ..Default::default()
        };
        assert_eq!(reported_image(Some(&crictl)), crictl);
        assert_eq!(
            reported_image(Some(&cri::ImageSpec::default())),
            cri::ImageSpec::default()
        );
        assert_eq!(reported_image(None), cri::ImageSpec::default());

        let mut r = record(ContainerState::Running, 0);
        r.config.image = Some(kubelet);
        let (status, listed) = (r.status(), r.to_cri());
        assert_eq!(
            status.image.unwrap().image,
            "registry.k8s.io/e2e-test-images/busybox:1.29-2"
        );
        assert_eq!(
            listed.image.unwrap().image,
            "registry.k8s.io/e2e-test-images/busybox:1.29-2"
        );
        assert_eq!(status.image_id, "sha256:aa");
    }

    #[test]
    fn a_shim_that_saw_its_container_stop_means_not_running() {
        let stopped = ShimError::Call {
            call: "ExecSync",
            status: tonic::Status::failed_precondition(
                "container c1: exec: not allowed while the container is stopped",
            ),
        };
        let status = tonic::Status::from(shim_call_error("c1", stopped));
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "container c1 is not running");

        let broken = ShimError::Call {
            call: "ExecSync",
            status: tonic::Status::internal("disk full"),
        };
        let status = tonic::Status::from(shim_call_error("c1", broken));
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status.message().contains("disk full"),
            "{}",
            status.message()
        );
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
