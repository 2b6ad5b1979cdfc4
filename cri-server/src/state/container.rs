//! The container's record: what CreateContainer made (bundle, writable
//! layer, the process its spec resolved) and what its shim reported (pid,
//! exit). Plain data and its CRI views; the life cycle lives in `container/`.

use std::path::PathBuf;

use crius_proto::cri;
use serde::{Deserialize, Serialize};

use super::filter::Selector;
use super::table::Record;

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
    /// The image id (config digest), resolved at create from whatever name
    /// the request used (tag, digest, short name, ID).
    pub image_id: String,
    pub state: ContainerState,
    /// Unix nanoseconds, as the next two.
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
    /// The signal StopContainer sends first, as the CRI `Signal` value
    /// ContainerStatus reports (KEP-4960): the config's `stop_signal`, else
    /// the image's, else SIGTERM, resolved at create. RuntimeDefault (0) in
    /// a record written before it was kept, or for an image signal CRI has
    /// no name for: StopContainer then sends the image's `stop_signal`.
    #[serde(default)]
    pub effective_stop_signal: i32,
    /// The container's process from its spec: the template of every exec.
    pub process: oci_spec::runtime::Process,
    /// The limits its spec applied, for ContainerStatus.resources; `None` in
    /// a record written before they were kept.
    #[serde(default)]
    pub resources: Option<cri::LinuxContainerResources>,
    /// Why StartContainer failed, when it did: ContainerStatus reports the
    /// exit with reason `StartError` and this message (containerd's rule).
    #[serde(default)]
    pub start_error: Option<String>,
    /// The image volumes the container mounts (KEP-4639), one a mounted
    /// image: each holds its image's view and keeps the image from removal
    /// until the container is removed (`image::volume`).
    #[serde(default)]
    pub image_volumes: Vec<ImageVolume>,
}

/// An image volume of a container: mount number `mount` of its config's
/// `mounts` binds image `image_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVolume {
    pub mount: usize,
    /// The image's ID (config digest), `sha256:…`.
    pub image_id: String,
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
/// so its attempt stands in the middle). Pure.
pub fn container_name(config: &cri::ContainerConfig, pod_name: &str) -> String {
    let m = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}", m.name, pod_name, m.attempt)
}

impl ContainerRecord {
    /// `<bundle>/rootfs`, where the container's rootfs is mounted.
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

    /// The container as ListContainers reports it: `image_ref` and
    /// `image_id` both the image ID, as containerd's (internal/cri/server/
    /// container_list.go; kubelet's image GC reads `image_id`).
    pub fn to_cri(&self) -> cri::Container {
        cri::Container {
            id: self.id.clone(),
            pod_sandbox_id: self.pod_id.clone(),
            metadata: self.config.metadata.clone(),
            image: Some(reported_image(self.config.image.as_ref(), &[])),
            image_ref: self.image_id.clone(),
            state: self.cri_state() as i32,
            created_at: self.created_at,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            image_id: self.image_id.clone(),
        }
    }

    /// The container as ContainerStatus reports it, naming its image by
    /// `image` (its repo tags and digests, as the image store has them now;
    /// none when it is gone), as containerd does (internal/cri/server/
    /// container_status.go): `image_ref` the first repo digest, else the
    /// image ID; `image` as [`reported_image`]; `image_id` the image ID.
    pub fn status(&self, image: ImageNames<'_>) -> cri::ContainerStatus {
        let (reason, message) = match self.state {
            // containerd's rule: an OOM kill names the exit, whatever its code.
            ContainerState::Exited if self.start_error.is_some() => {
                ("StartError", self.start_error.clone().unwrap_or_default())
            }
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
            image: Some(reported_image(self.config.image.as_ref(), image.repo_tags)),
            image_ref: image.repo_digests.first().unwrap_or(&self.image_id).clone(),
            reason: reason.to_string(),
            message,
            labels: self.config.labels.clone(),
            annotations: self.config.annotations.clone(),
            mounts: self.reported_mounts(),
            log_path: self.log_path.clone(),
            resources: self.resources.clone().map(|linux| cri::ContainerResources {
                linux: Some(linux),
                windows: None,
            }),
            image_id: self.image_id.clone(),
            user: Some(self.user()),
            stop_signal: self.effective_stop_signal,
        }
    }

    /// The mounts ContainerStatus reports: the config's, each image volume's
    /// `image` with the ID of the image it mounts in `image` and `image_ref`
    /// (KEP-5365: the digest kubelet shows for the volume; critest compares
    /// `image_ref` with PullImage's answer, the image ID), the rest as sent.
    /// Pure.
    fn reported_mounts(&self) -> Vec<cri::Mount> {
        let mut mounts = self.config.mounts.clone();
        for volume in &self.image_volumes {
            let image = mounts.get_mut(volume.mount).and_then(|m| m.image.as_mut());
            if let Some(image) = image {
                image.image = volume.image_id.clone();
                image.image_ref = volume.image_id.clone();
            }
        }
        mounts
    }

    /// What ContainerStatus(verbose) returns as `info["info"]`: a JSON
    /// object in containerd's shape (its `ContainerInfo`, internal/cri/
    /// server/container_status.go), so `crictl inspect` templates read the
    /// same: `sandboxID`, `pid` (the container's init as the shim reported
    /// it, kept after the exit; 0 before create finished), `snapshotKey`
    /// (the key of the writable layer: the container id, as containerd's
    /// CRI plugin uses), `snapshotter`, `config` (the CRI ContainerConfig
    /// as sent) and `runtimeSpec` (the OCI spec it runs with, from its
    /// bundle's config.json; null when the bundle is gone). crius adds where
    /// that snapshot lives: `rootfs` (the mounted root filesystem),
    /// `writableLayer` (the dir of its upper and work dirs) and `bundle`.
    /// Pure.
    pub fn verbose_info(&self, runtime_spec: Option<serde_json::Value>) -> serde_json::Value {
        serde_json::json!({
            "sandboxID": self.pod_id,
            "pid": self.pid,
            "snapshotKey": self.id,
            "snapshotter": "overlayfs",
            "rootfs": self.rootfs(),
            "writableLayer": self.layer_dir,
            "bundle": self.bundle,
            "config": self.config,
            "runtimeSpec": runtime_spec,
        })
    }

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

    /// ListContainers' filter: true when it selects this container.
    pub fn matches(&self, filter: &cri::ContainerFilter) -> bool {
        let state = filter.state.as_ref().map(|s| s.state);
        self.pod_id.starts_with(&filter.pod_sandbox_id)
            && Selector::new(&filter.id, state, &filter.label_selector).selects(
                &self.id,
                self.cri_state() as i32,
                &self.config.labels,
            )
    }
}

/// The names the image store has for a container's image when its status
/// is asked: none when the image is gone.
#[derive(Debug, Clone, Copy, Default)]
pub struct ImageNames<'a> {
    /// `registry/repository:tag`, in the order the image got them.
    pub repo_tags: &'a [String],
    /// `registry/repository@sha256:…`, in the order the image got them.
    pub repo_digests: &'a [String],
}

/// The ImageSpec that ContainerStatus and ListContainers report. kubelet
/// creates a container from the image ID, with the pod spec's image name in
/// `user_specified_image` (kubernetes pkg/kubelet/kuberuntime/
/// kuberuntime_container.go:373), and shows the status' `image.image` as the
/// pod's image (kuberuntime_container.go:743). So `image` is the
/// user-specified image when there is one (CRI-O's rule), else the image's
/// first tag in `repo_tags` (containerd's ContainerStatus, so that a
/// container made from an ID or a short name shows its full name), else
/// what the request named there; the other fields stay as sent. Pure.
pub fn reported_image(sent: Option<&cri::ImageSpec>, repo_tags: &[String]) -> cri::ImageSpec {
    let mut image = sent.cloned().unwrap_or_default();
    if !image.user_specified_image.is_empty() {
        image.image = image.user_specified_image.clone();
    } else if let Some(tag) = repo_tags.first() {
        image.image = tag.clone();
    }
    image
}

/// A container record for tests: `app` of pod `p1`, image busybox.
#[cfg(test)]
pub(crate) fn fixture(state: ContainerState, exit_code: i32) -> ContainerRecord {
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
        effective_stop_signal: cri::Signal::Sigterm as i32,
        process: Default::default(),
        resources: None,
        start_error: None,
        image_volumes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: ContainerState, exit_code: i32) -> ContainerRecord {
        fixture(state, exit_code)
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
            reported_image(Some(&kubelet), &[]),
            cri::ImageSpec {
                image: "registry.k8s.io/e2e-test-images/busybox:1.29-2".into(),
                user_specified_image: "registry.k8s.io/e2e-test-images/busybox:1.29-2".into(),
                runtime_handler: "runc".into(),
                ..Default::default()
            }
        );
        // The image's tags do not override the user's name.
        let tags = ["docker.io/library/busybox:latest".to_string()];
        assert_eq!(
            reported_image(Some(&kubelet), &tags).image,
            "registry.k8s.io/e2e-test-images/busybox:1.29-2"
        );
        // crictl: a name in image, nothing else: the image's first tag, as
        // containerd, else the name as sent.
        let crictl = cri::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        };
        assert_eq!(reported_image(Some(&crictl), &[]), crictl);
        assert_eq!(
            reported_image(Some(&crictl), &tags).image,
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            reported_image(Some(&cri::ImageSpec::default()), &[]),
            cri::ImageSpec::default()
        );
        assert_eq!(reported_image(None, &[]), cri::ImageSpec::default());

        let mut r = record(ContainerState::Running, 0);
        r.config.image = Some(kubelet);
        let (status, listed) = (r.status(ImageNames::default()), r.to_cri());
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
    fn verbose_info_has_containerds_keys_and_round_trips_the_config() {
        let mut r = record(ContainerState::Running, 0);
        r.config.command = vec!["sh".into(), "-c".into(), "sleep 1".into()];
        r.config.labels.insert("role".into(), "app".into());
        let spec = serde_json::json!({"ociVersion": "1.0.2", "process": {"args": ["sh"]}});
        let info = r.verbose_info(Some(spec.clone()));
        for key in [
            "sandboxID",
            "pid",
            "snapshotKey",
            "snapshotter",
            "rootfs",
            "writableLayer",
            "bundle",
            "config",
            "runtimeSpec",
        ] {
            assert!(info.get(key).is_some(), "{key} missing from {info}");
        }
        assert_eq!(info["pid"], 42);
        assert_eq!(info["sandboxID"], "p1");
        assert_eq!(info["snapshotKey"], "c1");
        assert_eq!(info["rootfs"], "/run/crius/c/c1/rootfs");
        assert_eq!(info["writableLayer"], "/var/lib/crius/containers/c1");
        assert_eq!(info["runtimeSpec"], spec);
        let config: cri::ContainerConfig = serde_json::from_value(info["config"].clone()).unwrap();
        assert_eq!(config, r.config);
        // Go templates and jq read the CRI config by its proto field names.
        assert_eq!(info["config"]["metadata"]["name"], "app");
        assert_eq!(info["config"]["log_path"], "");
        // A container whose bundle is gone still answers with what is known.
        let gone = r.verbose_info(None);
        assert!(gone["runtimeSpec"].is_null());
        assert_eq!(gone["pid"], 42);
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
        let done = record(ContainerState::Exited, 0).status(ImageNames::default());
        assert_eq!(done.reason, "Completed");
        assert_eq!(done.state, cri::ContainerState::ContainerExited as i32);
        assert_eq!(
            record(ContainerState::Exited, 137)
                .status(ImageNames::default())
                .reason,
            "Error"
        );
        let oom = ContainerRecord {
            oom_killed: true,
            ..record(ContainerState::Exited, 137)
        };
        assert_eq!(oom.status(ImageNames::default()).reason, "OOMKilled");
        assert_eq!(oom.status(ImageNames::default()).exit_code, 137);
        assert_eq!(
            record(ContainerState::Running, 0)
                .status(ImageNames::default())
                .reason,
            ""
        );
    }

    #[test]
    fn the_image_is_named_as_containerd_names_it() {
        let r = record(ContainerState::Running, 0);
        let tags = [
            "docker.io/library/busybox:latest".to_string(),
            "docker.io/library/busybox:1.36".to_string(),
        ];
        let digests = [
            "docker.io/library/busybox@sha256:bb".to_string(),
            "registry.k8s.io/busybox@sha256:bb".to_string(),
        ];
        let s = r.status(ImageNames {
            repo_tags: &tags,
            repo_digests: &digests,
        });
        assert_eq!(s.image.unwrap().image, "docker.io/library/busybox:latest");
        assert_eq!(s.image_ref, "docker.io/library/busybox@sha256:bb");
        assert_eq!(s.image_id, "sha256:aa");
        // The image is gone: the ID, and the name as sent.
        let s = r.status(ImageNames::default());
        assert_eq!(s.image.unwrap().image, "busybox");
        assert_eq!(s.image_ref, "sha256:aa");
        assert_eq!(s.image_id, "sha256:aa");
        // Listed: the ID in both, as containerd.
        let listed = r.to_cri();
        assert_eq!(
            (listed.image_ref.as_str(), listed.image_id.as_str()),
            ("sha256:aa", "sha256:aa")
        );
    }

    #[test]
    fn a_record_written_before_oom_reporting_reads_as_no_oom_kill() {
        let mut json = serde_json::to_value(record(ContainerState::Exited, 1)).unwrap();
        json.as_object_mut().unwrap().remove("oom_killed");
        let old: ContainerRecord = serde_json::from_value(json).unwrap();
        assert!(!old.oom_killed);
        assert_eq!(old.status(ImageNames::default()).reason, "Error");
    }

    #[test]
    fn status_reports_the_resolved_stop_signal() {
        let mut r = record(ContainerState::Running, 0);
        r.effective_stop_signal = cri::Signal::Sigusr1 as i32;
        assert_eq!(
            r.status(ImageNames::default()).stop_signal,
            cri::Signal::Sigusr1 as i32
        );
        // A record written before: the runtime default, which kubelet reads
        // as "not reported".
        let mut json = serde_json::to_value(&r).unwrap();
        json.as_object_mut()
            .unwrap()
            .remove("effective_stop_signal");
        let old: ContainerRecord = serde_json::from_value(json).unwrap();
        assert_eq!(
            old.status(ImageNames::default()).stop_signal,
            cri::Signal::RuntimeDefault as i32
        );
    }

    #[test]
    fn status_reports_each_image_volume_by_its_image_id() {
        let mut r = record(ContainerState::Running, 0);
        let sent = cri::ImageSpec {
            image: "sha256:cc".into(),
            user_specified_image: "registry.example/data:1".into(),
            ..Default::default()
        };
        r.config.mounts = vec![
            cri::Mount {
                container_path: "/host".into(),
                host_path: "/srv".into(),
                ..Default::default()
            },
            cri::Mount {
                container_path: "/mnt/image-volume".into(),
                readonly: true,
                image: Some(sent.clone()),
                image_sub_path: "etc".into(),
                ..Default::default()
            },
        ];
        r.image_volumes = vec![ImageVolume {
            mount: 1,
            image_id: "sha256:dd".into(),
        }];
        let mounts = r.status(ImageNames::default()).mounts;
        assert_eq!(mounts[0], r.config.mounts[0]);
        assert_eq!(
            mounts[1].image,
            Some(cri::ImageSpec {
                image: "sha256:dd".into(),
                image_ref: "sha256:dd".into(),
                ..sent
            })
        );
        assert_eq!(mounts[1].image_sub_path, "etc");
        // A record written before image volumes: none.
        let mut json = serde_json::to_value(&r).unwrap();
        json.as_object_mut().unwrap().remove("image_volumes");
        let old: ContainerRecord = serde_json::from_value(json).unwrap();
        assert!(old.image_volumes.is_empty());
    }

    #[test]
    fn status_reports_the_resolved_user() {
        let mut r = record(ContainerState::Running, 0);
        let mut user = oci_spec::runtime::User::default();
        user.set_uid(1000);
        user.set_gid(1000);
        user.set_additional_gids(Some(vec![50000, 1000, 1234, 1000]));
        r.process.set_user(user);
        let linux = r.status(ImageNames::default()).user.unwrap().linux.unwrap();
        assert_eq!((linux.uid, linux.gid), (1000, 1000));
        assert_eq!(linux.supplemental_groups, vec![1000, 1234, 50000]);
    }

    #[test]
    fn filter_by_pod_and_state() {
        let c = record(ContainerState::Running, 0);
        let running = Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        });
        assert!(c.matches(&cri::ContainerFilter {
            pod_sandbox_id: "p".into(),
            state: running,
            ..Default::default()
        }));
        assert!(!c.matches(&cri::ContainerFilter {
            pod_sandbox_id: "q".into(),
            ..Default::default()
        }));
    }
}
