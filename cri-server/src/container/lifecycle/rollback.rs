//! CreateContainer's rollback, step by step, without root: fakes for the
//! shim, the snapshotter and the cgroup driver, real records in a temp dir.
//! Each test makes one step fail and checks that everything done before it
//! is undone, the name is free again and the error names the step. Later
//! calls that must change nothing when they fail (update) are here too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crius_proto::cri;
use tonic::Code;

use super::*;
use crate::cgroups::fake::FakeCgroups;
use crate::cgroups::CgroupLayout;
use crate::config::Config;
use crate::container::update_container_resources;
use crate::events::Events;
use crate::image::snapshot::fake::{FakeSnapshotStep, FakeSnapshotter};
use crate::image::ImageStore;
use crate::image::{ImageConfig, ImageRecord};
use crate::runtime_handlers::{HandlerFeatures, RuntimeHandler, RuntimeHandlers};
use crate::shim_client::fake::{FakeShimStep, FakeShims};
use crate::shim_client::{ShimRuntime, Shims};
use crate::spec::HostCapabilities;
use crate::state::container::container_name;
use crate::state::table::Table;
use crate::state::Store;

const IMAGE_ID: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const LAYER: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

struct Fixture {
    deps: ContainerDeps,
    /// The dirs: records under `root/meta`, bundles under `state/c`.
    config: Config,
    shims: Arc<FakeShims>,
    snapshots: Arc<FakeSnapshotter>,
    pod: PodRecord,
    _tmp: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let config = Config {
            root: tmp.path().join("root"),
            state: tmp.path().join("state"),
            ..Default::default()
        };
        let shims = Arc::new(FakeShims::default());
        let snapshots = Arc::new(FakeSnapshotter::new(config.container_dir()));
        let store = Store::open(config.root.join("meta")).unwrap();
        let images = ImageStore::open(&config, store.clone(), snapshots.clone()).unwrap();
        let layout = CgroupLayout::detect().unwrap();
        let host = Arc::new(HostCapabilities::detect(layout.limits()).unwrap());
        images
            .record(ImageRecord {
                id: IMAGE_ID.into(),
                repo_tags: vec!["docker.io/library/busybox:latest".into()],
                repo_digests: vec![],
                size: 1,
                chain_ids: vec![LAYER.into()],
                config: ImageConfig {
                    cmd: vec!["sh".into()],
                    ..Default::default()
                },
                blobs: vec![],
            })
            .unwrap();
        let pod_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: "web".into(),
                namespace: "default".into(),
                uid: "u1".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let pod = PodRecord::new(
            "p1".repeat(32),
            tmp.path().join("state/pods/p1"),
            pod_config,
            1,
        );
        // The pod is recorded, for the containers' events.
        let pods = Arc::new(Table::<PodRecord>::load(store.clone()).unwrap());
        pods.reserve_name(&crate::state::table::Record::name(&pod), &pod.id)
            .unwrap();
        pods.insert(pod.clone()).unwrap();
        let containers = Arc::new(Table::load(store).unwrap());
        Fixture {
            deps: ContainerDeps {
                events: Arc::new(Events::new(pods, containers.clone())),
                containers,
                images: Arc::new(images),
                shims: Arc::new(Shims::new(shims.clone())),
                snapshotter: snapshots.clone(),
                cgroups: Arc::new(FakeCgroups::default()),
                host: host.clone(),
                bundles_dir: config.state.join("c"),
                protected_host_dirs: vec![config.root.clone(), config.state.clone()],
                stops: Arc::default(),
                handlers: Arc::new(
                    RuntimeHandlers::in_process(config.state.join("runtime"), &host)
                        .with(runc_handler()),
                ),
            },
            config,
            shims,
            snapshots,
            pod,
            _tmp: tmp,
        }
    }

    fn request(&self, image: &str) -> cri::CreateContainerRequest {
        cri::CreateContainerRequest {
            pod_sandbox_id: self.pod.id.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: image.into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: None,
        }
    }

    fn name(&self) -> String {
        let req = self.request("busybox");
        container_name(
            req.config.as_ref().unwrap(),
            &crate::state::sandbox::pod_name(&self.pod.config),
        )
    }

    async fn create(&self, req: cri::CreateContainerRequest) -> Result<String, tonic::Status> {
        create_container(&self.deps, self.pod.clone(), req)
            .await
            .map_err(tonic::Status::from)
    }

    /// The failed create's id: the one container dir the snapshotter was
    /// asked to remove.
    fn failed_id(&self) -> String {
        let removed = self.snapshots.removed();
        assert_eq!(removed.len(), 1, "one rollback: {removed:?}");
        removed[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Nothing of any container is left: every prepared rootfs removed, no
    /// shim up, no bundle or container dir, no record in the table or on disk.
    #[track_caller]
    fn assert_nothing_left(&self) {
        let (prepared, removed) = (self.snapshots.prepared(), self.snapshots.removed());
        for dir in &prepared {
            assert!(removed.contains(dir), "{dir:?} prepared, not removed");
        }
        assert!(
            self.shims.up().is_empty(),
            "shims up: {:?}",
            self.shims.up()
        );
        for id in self.shims.spawned() {
            let calls = self.shims.calls(&id);
            if calls.contains(&"Create") {
                let create = calls.iter().position(|c| *c == "Create").unwrap();
                let after = &calls[create..];
                assert!(
                    after.contains(&"Delete") && after.contains(&"Shutdown"),
                    "shim of {id}: {calls:?}"
                );
            }
        }
        let state = &self.config.state;
        assert!(
            self.snapshots.views().is_empty(),
            "image volumes' views left: {:?}",
            self.snapshots.views()
        );
        for dir in [
            state.join("c"),
            self.config.container_dir(),
            state.join("image-volumes"),
        ] {
            assert_eq!(entries(&dir), Vec::<PathBuf>::new(), "left in {dir:?}");
        }
        assert!(
            self.deps.containers.list().is_empty(),
            "a record in the table"
        );
        assert_eq!(
            entries(&self.config.root.join("meta/containers")),
            Vec::<PathBuf>::new(),
            "a record on disk"
        );
    }

    /// The name is free: the same create succeeds now (the failure cleared)
    /// and leaves one created container with a shim that was created.
    async fn assert_name_free(&self) {
        self.shims.fail_at(None);
        self.snapshots.fail_at(None);
        let id = self.create(self.request("busybox")).await.unwrap();
        let record = self.deps.containers.find(&id).unwrap().snapshot();
        assert_eq!(record.state, ContainerState::Created);
        assert_eq!(record.pid, 4242);
        assert_eq!(self.shims.calls(&id), ["Spawn", "Create"]);
        assert!(record.bundle.join("config.json").is_file());
    }
}

/// A request of `name` mounting the fixture's image at `/mnt/image`, or
/// `sub_path` of it.
fn with_image_volume(fx: &Fixture, name: &str, sub_path: &str) -> cri::CreateContainerRequest {
    let mut req = fx.request("busybox");
    let config = req.config.as_mut().unwrap();
    config.metadata.as_mut().unwrap().name = name.into();
    config.mounts = vec![cri::Mount {
        container_path: "/mnt/image".into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: IMAGE_ID.into(),
            user_specified_image: "busybox".into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }];
    req
}

/// Gives the fixture's image layer an `etc/passwd`.
fn fill_layer(fx: &Fixture) {
    let image = fx.deps.images.resolve(IMAGE_ID).unwrap();
    let layer = &fx.deps.images.layer_dirs(&image)[0];
    std::fs::create_dir_all(layer.join("etc")).unwrap();
    std::fs::write(layer.join("etc/passwd"), "root\n").unwrap();
}

/// The source of the bind at `destination` in the container's config.json.
fn bind_source(record: &ContainerRecord, destination: &str) -> PathBuf {
    let spec = oci_spec::runtime::Spec::load(record.bundle.join("config.json")).unwrap();
    let mounts = spec.mounts().clone().unwrap_or_default();
    let bind = mounts
        .iter()
        .find(|m| m.destination() == Path::new(destination))
        .unwrap_or_else(|| panic!("no mount at {destination}"));
    assert!(
        bind.options().as_ref().unwrap().contains(&"ro".to_string()),
        "{bind:?}"
    );
    bind.source().clone().unwrap()
}

#[tokio::test]
async fn containers_share_an_image_volume_until_the_last_is_removed() {
    let fx = Fixture::new();
    fill_layer(&fx);
    let whole = fx
        .create(with_image_volume(&fx, "whole", ""))
        .await
        .unwrap();
    let etc = fx
        .create(with_image_volume(&fx, "etc", "etc"))
        .await
        .unwrap();
    let view = fx.config.state.join("image-volumes").join(&IMAGE_ID[7..]);
    assert_eq!(fx.snapshots.views(), std::slice::from_ref(&view));
    assert_eq!(fx.snapshots.views_mounted(), 1, "one view for both");

    let whole_record = fx.deps.containers.find(&whole).unwrap().snapshot();
    let etc_record = fx.deps.containers.find(&etc).unwrap().snapshot();
    assert_eq!(
        bind_source(&whole_record, "/mnt/image"),
        view.join("rootfs")
    );
    assert_eq!(
        bind_source(&etc_record, "/mnt/image"),
        view.join("rootfs/etc")
    );
    let reported = etc_record
        .status(crate::state::container::ImageNames::default())
        .mounts[0]
        .image
        .clone()
        .unwrap();
    assert_eq!(
        (reported.image.as_str(), reported.image_ref.as_str()),
        (IMAGE_ID, IMAGE_ID)
    );
    // What a restart reads back: the record on disk.
    let on_disk = Table::<ContainerRecord>::load(Store::open(fx.config.root.join("meta")).unwrap())
        .unwrap()
        .find(&etc)
        .unwrap()
        .snapshot();
    assert_eq!(on_disk.image_volumes, etc_record.image_volumes);

    let refused = tonic::Status::from(CriError::from(
        fx.deps.images.remove("busybox").await.unwrap_err(),
    ));
    assert_eq!(refused.code(), Code::FailedPrecondition);
    remove_container(&fx.deps, &whole).await.unwrap();
    assert_eq!(
        fx.snapshots.views(),
        std::slice::from_ref(&view),
        "etc still mounts it"
    );
    let refused = tonic::Status::from(CriError::from(
        fx.deps.images.remove("busybox").await.unwrap_err(),
    ));
    assert!(
        refused.message().contains(&format!("container {etc}")),
        "{refused:?}"
    );
    remove_container(&fx.deps, &etc).await.unwrap();
    fx.assert_nothing_left();
    fx.deps.images.remove("busybox").await.unwrap().unwrap();
}

#[tokio::test]
async fn an_image_volume_of_an_image_not_pulled_fails_before_anything_is_made() {
    let fx = Fixture::new();
    let mut req = with_image_volume(&fx, "app", "");
    req.config.as_mut().unwrap().mounts[0]
        .image
        .as_mut()
        .unwrap()
        .image = "nope:1".into();
    let status = fx.create(req).await.unwrap_err();
    assert_step(
        &status,
        Code::NotFound,
        "image \"nope:1\" of config.mounts[0].image not found",
    );
    assert!(fx.snapshots.prepared().is_empty() && fx.snapshots.views_mounted() == 0);
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_writable_image_volume_is_refused_before_anything_is_made() {
    let fx = Fixture::new();
    let mut req = with_image_volume(&fx, "app", "");
    req.config.as_mut().unwrap().mounts[0].readonly = false;
    let status = fx.create(req).await.unwrap_err();
    assert_step(&status, Code::InvalidArgument, "mounts[0].readonly");
    assert!(fx.snapshots.prepared().is_empty() && fx.snapshots.views_mounted() == 0);
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn an_image_sub_path_outside_the_image_is_undone() {
    let fx = Fixture::new();
    fill_layer(&fx);
    for sub_path in ["etc/../..", "not-existing"] {
        let status = fx
            .create(with_image_volume(&fx, "app", sub_path))
            .await
            .unwrap_err();
        assert_step(
            &status,
            Code::InvalidArgument,
            &format!("config.mounts: mounts[0].image_sub_path {sub_path:?}: "),
        );
        assert!(!status.message().contains("image-volumes"), "{status:?}");
        fx.assert_nothing_left();
    }
    assert!(fx.shims.spawned().is_empty(), "no shim before the volumes");
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_failed_view_mount_is_undone() {
    let fx = Fixture::new();
    fx.snapshots.fail_at(Some(FakeSnapshotStep::MountView));
    let status = fx
        .create(with_image_volume(&fx, "app", ""))
        .await
        .unwrap_err();
    assert_step(&status, Code::Internal, "mounting an image volume");
    assert_eq!(fx.snapshots.prepared(), fx.snapshots.removed());
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_failure_after_the_image_volume_releases_it() {
    let fx = Fixture::new();
    fx.shims.fail_at(Some(FakeShimStep::Create));
    let status = fx
        .create(with_image_volume(&fx, "app", ""))
        .await
        .unwrap_err();
    assert_step(
        &status,
        Code::Internal,
        "creating the container in its shim",
    );
    assert_eq!(fx.snapshots.views_mounted(), 1);
    fx.assert_nothing_left();
    fx.deps.images.remove(IMAGE_ID).await.unwrap().unwrap();
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(d) => d.map(|e| e.unwrap().path()).collect(),
        Err(_) => vec![],
    }
}

#[track_caller]
fn assert_step(status: &tonic::Status, code: Code, step: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(step), "{status:?} names {step:?}");
}

#[tokio::test]
async fn a_taken_name_fails_before_anything_is_made() {
    let fx = Fixture::new();
    fx.deps
        .containers
        .reserve_name(&fx.name(), "other")
        .unwrap();
    let status = fx.create(fx.request("busybox")).await.unwrap_err();
    assert_step(
        &status,
        Code::AlreadyExists,
        &format!("name {:?} is reserved", fx.name()),
    );
    assert!(fx.snapshots.prepared().is_empty() && fx.snapshots.removed().is_empty());
    assert!(fx.shims.spawned().is_empty());
    fx.assert_nothing_left();
    fx.deps.containers.release_name(&fx.name(), "other");
    fx.assert_name_free().await;
}

#[tokio::test]
async fn an_unknown_image_fails_before_anything_is_made() {
    let fx = Fixture::new();
    let status = fx.create(fx.request("nope:1")).await.unwrap_err();
    assert_step(&status, Code::NotFound, "image \"nope:1\" not found");
    assert!(fx.snapshots.prepared().is_empty() && fx.snapshots.removed().is_empty());
    assert!(fx.shims.spawned().is_empty());
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_failed_rootfs_is_undone() {
    let fx = Fixture::new();
    fx.snapshots.fail_at(Some(FakeSnapshotStep::Prepare));
    let status = fx.create(fx.request("busybox")).await.unwrap_err();
    assert_step(&status, Code::Internal, "preparing the container's rootfs");
    let id = fx.failed_id();
    assert!(fx.shims.spawned().is_empty(), "no shim before the rootfs");
    assert_eq!(
        fx.shims.calls(&id),
        ["Connect"],
        "rollback looked for a shim"
    );
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_failed_spec_is_undone() {
    let fx = Fixture::new();
    let mut req = fx.request("busybox");
    let config = req.config.as_mut().unwrap();
    config.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: String::new(),
        ..Default::default()
    });
    let status = fx.create(req).await.unwrap_err();
    assert_step(&status, Code::InvalidArgument, "config.mounts");
    let id = fx.failed_id();
    assert_eq!(fx.snapshots.prepared(), fx.snapshots.removed());
    assert!(fx.shims.spawned().is_empty(), "no shim before the spec");
    assert_eq!(fx.shims.calls(&id), ["Connect"]);
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_failed_shim_spawn_is_undone() {
    let fx = Fixture::new();
    fx.shims.fail_at(Some(FakeShimStep::Spawn));
    let status = fx.create(fx.request("busybox")).await.unwrap_err();
    assert_step(&status, Code::Internal, "spawning the container's shim");
    let id = fx.failed_id();
    assert_eq!(fx.snapshots.prepared(), fx.snapshots.removed());
    assert_eq!(fx.shims.calls(&id), ["Spawn", "Connect"]);
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_failed_shim_create_is_undone() {
    let fx = Fixture::new();
    fx.shims.fail_at(Some(FakeShimStep::Create));
    let status = fx.create(fx.request("busybox")).await.unwrap_err();
    assert_step(
        &status,
        Code::Internal,
        "creating the container in its shim",
    );
    let id = fx.failed_id();
    assert_eq!(fx.snapshots.prepared(), fx.snapshots.removed());
    assert_eq!(
        fx.shims.calls(&id),
        ["Spawn", "Create", "Delete", "Shutdown"]
    );
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_failed_record_write_is_undone() {
    let fx = Fixture::new();
    // The store writes records under meta/containers/: a file there fails
    // the write, for root too.
    let records = fx.config.root.join("meta/containers");
    let _ = std::fs::remove_dir_all(&records);
    std::fs::write(&records, b"").unwrap();
    let status = fx.create(fx.request("busybox")).await.unwrap_err();
    assert_step(&status, Code::Internal, "writing the container's record");
    let id = fx.failed_id();
    assert_eq!(fx.snapshots.prepared(), fx.snapshots.removed());
    assert_eq!(
        fx.shims.calls(&id),
        ["Spawn", "Create", "Delete", "Shutdown"]
    );
    std::fs::remove_file(&records).unwrap();
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_rollback_that_fails_keeps_the_container_unknown_for_remove() {
    let fx = Fixture::new();
    fx.shims.fail_at(Some(FakeShimStep::Create));
    fx.snapshots.fail_at(Some(FakeSnapshotStep::Remove));
    let status = fx.create(fx.request("busybox")).await.unwrap_err();
    assert_step(
        &status,
        Code::Internal,
        "creating the container in its shim",
    );
    let kept = fx.deps.containers.list();
    assert_eq!(kept.len(), 1, "kept, not leaked");
    assert_eq!(kept[0].state, ContainerState::Unknown);
    let again = fx.create(fx.request("busybox")).await.unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "the name stays held");
    fx.snapshots.fail_at(None);
    fx.shims.fail_at(None);
    remove_container(&fx.deps, &kept[0].id).await.unwrap();
    fx.assert_nothing_left();
    fx.assert_name_free().await;
}

#[tokio::test]
async fn a_container_runs_stops_and_goes_through_the_fakes() {
    let fx = Fixture::new();
    let id = fx.create(fx.request("busybox")).await.unwrap();
    start_container(&fx.deps, &id).await.unwrap();
    let entry = fx.deps.containers.find(&id).unwrap();
    assert_eq!(entry.snapshot().state, ContainerState::Running);
    stop_container(&fx.deps, &id, 0).await.unwrap();
    assert_eq!(entry.snapshot().state, ContainerState::Exited);
    assert_eq!(entry.snapshot().exit_code, 137);
    remove_container(&fx.deps, &id).await.unwrap();
    fx.assert_nothing_left();
    let calls = fx.shims.calls(&id);
    assert_eq!(&calls[..3], ["Spawn", "Create", "Start"], "{calls:?}");
    assert!(calls.ends_with(&["Delete", "Shutdown"]), "{calls:?}");
}

/// Each transition is one event, in order: CREATED, STARTED, STOPPED (by a
/// stop, by the container's own exit, or by a failed start), DELETED; with
/// the pod's status and the container's as it is then.
#[tokio::test]
async fn each_transition_is_one_event_in_order() {
    use crate::events::testing::{assert_no_more, next, next_event};
    use crate::events::EventType::*;
    let fx = Fixture::new();
    let mut events = fx.deps.events.subscribe();
    let stopped = fx.create(fx.request("busybox")).await.unwrap();
    let created = next_event(&mut events).await;
    assert_eq!(created.container_event_type(), ContainerCreatedEvent);
    assert_eq!(created.pod_sandbox_status.unwrap().id, fx.pod.id);
    let status = &created.containers_statuses[..];
    assert!(
        matches!(status, [c] if c.id == stopped && c.state() == cri::ContainerState::ContainerCreated),
        "{status:?}"
    );
    start_container(&fx.deps, &stopped).await.unwrap();
    stop_container(&fx.deps, &stopped, 0).await.unwrap();
    // A second stop and a remove of what is stopped change nothing more.
    stop_container(&fx.deps, &stopped, 0).await.unwrap();
    remove_container(&fx.deps, &stopped).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        (ContainerStartedEvent, stopped.clone())
    );
    let exit = next_event(&mut events).await;
    assert_eq!(exit.container_event_type(), ContainerStoppedEvent);
    assert_eq!(exit.containers_statuses[0].exit_code, 137);
    let deleted = next_event(&mut events).await;
    assert_eq!(
        (deleted.container_event_type(), &deleted.container_id),
        (ContainerDeletedEvent, &stopped)
    );
    assert!(deleted.containers_statuses.is_empty(), "gone from its pod");
    assert_no_more(&mut events).await;

    // A container that exits by itself is STOPPED once, before its removal.
    let ended = fx.create(fx.request("busybox")).await.unwrap();
    start_container(&fx.deps, &ended).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        (ContainerCreatedEvent, ended.clone())
    );
    assert_eq!(
        next(&mut events).await,
        (ContainerStartedEvent, ended.clone())
    );
    fx.shims.end(&ended);
    let exit = next_event(&mut events).await;
    assert_eq!(
        (exit.container_event_type(), &exit.container_id),
        (ContainerStoppedEvent, &ended)
    );
    assert_eq!(
        exit.containers_statuses[0].state(),
        cri::ContainerState::ContainerExited
    );
    remove_container(&fx.deps, &ended).await.unwrap();
    assert_eq!(
        next(&mut events).await,
        (ContainerDeletedEvent, ended.clone())
    );

    // A start that fails stops the container.
    let failed = fx.create(fx.request("busybox")).await.unwrap();
    fx.shims.fail_at(Some(FakeShimStep::Start));
    start_container(&fx.deps, &failed).await.unwrap_err();
    fx.shims.fail_at(None);
    remove_container(&fx.deps, &failed).await.unwrap();
    for kind in [
        ContainerCreatedEvent,
        ContainerStoppedEvent,
        ContainerDeletedEvent,
    ] {
        assert_eq!(next(&mut events).await, (kind, failed.clone()));
    }
    assert_no_more(&mut events).await;
}

/// containerd's rule: a failed start leaves the container exited, 128,
/// reason StartError with the error as message, and it is removed whole.
#[tokio::test]
async fn a_failed_start_leaves_the_container_exited_with_the_start_error() {
    let fx = Fixture::new();
    let id = fx.create(fx.request("busybox")).await.unwrap();
    fx.shims.fail_at(Some(FakeShimStep::Start));
    let status = start_container(&fx.deps, &id)
        .await
        .map_err(tonic::Status::from)
        .unwrap_err();
    assert_step(&status, Code::Internal, "injected failure");
    let record = fx.deps.containers.find(&id).unwrap().snapshot();
    assert_eq!(record.state, ContainerState::Exited);
    let cri = record.status(crate::state::container::ImageNames::default());
    assert_eq!(cri.exit_code, 128);
    assert!(cri.finished_at > 0);
    assert_eq!(cri.started_at, 0);
    assert_eq!(cri.reason, "StartError");
    assert_eq!(cri.message, status.message());
    // Exited now: another start is refused, not retried.
    let again = start_container(&fx.deps, &id).await.unwrap_err();
    assert_eq!(tonic::Status::from(again).code(), Code::FailedPrecondition);

    fx.shims.fail_at(None);
    remove_container(&fx.deps, &id).await.unwrap();
    fx.assert_nothing_left();
    let calls = fx.shims.calls(&id);
    assert!(calls.ends_with(&["Delete", "Shutdown"]), "{calls:?}");
}

#[tokio::test]
async fn a_later_stop_with_a_shorter_deadline_kills_at_once() {
    let fx = Fixture::new();
    let id = fx.create(fx.request("busybox")).await.unwrap();
    start_container(&fx.deps, &id).await.unwrap();
    fx.shims.ignore_sigterm(true);
    let long = tokio::spawn({
        let deps = fx.deps.clone();
        let id = id.clone();
        async move { stop_container(&deps, &id, 120).await }
    });
    // The first stop has sent SIGTERM and waits out its grace period.
    let sent = tokio::time::timeout(Duration::from_secs(5), async {
        while fx.shims.signals(&id).is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(sent.is_ok(), "no SIGTERM sent");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!long.is_finished(), "the container ignores SIGTERM");
    let entry = fx.deps.containers.find(&id).unwrap();
    assert_eq!(entry.snapshot().state, ContainerState::Running);

    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(1), stop_container(&fx.deps, &id, 0))
        .await
        .expect("the short stop kills at once")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), long)
        .await
        .expect("the long stop returns too")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(entry.snapshot().state, ContainerState::Exited);
    assert_eq!(entry.snapshot().exit_code, 137);
    assert_eq!(
        fx.shims.signals(&id),
        [libc::SIGTERM, libc::SIGKILL],
        "SIGTERM, then SIGKILL once"
    );
    remove_container(&fx.deps, &id).await.unwrap();
    fx.assert_nothing_left();
}

#[tokio::test]
async fn a_remove_during_a_long_stop_kills_at_once() {
    let fx = Fixture::new();
    let id = fx.create(fx.request("busybox")).await.unwrap();
    start_container(&fx.deps, &id).await.unwrap();
    fx.shims.ignore_sigterm(true);
    let long = tokio::spawn({
        let deps = fx.deps.clone();
        let id = id.clone();
        async move { stop_container(&deps, &id, 120).await }
    });
    while fx.shims.signals(&id).is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::timeout(Duration::from_secs(1), remove_container(&fx.deps, &id))
        .await
        .expect("the remove kills at once")
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), long)
        .await
        .expect("the long stop returns too")
        .unwrap()
        .unwrap();
    assert_eq!(fx.shims.signals(&id), [libc::SIGTERM, libc::SIGKILL]);
    fx.assert_nothing_left();
}

/// The fixture's binary handler: runc, without `rro`.
fn runc_handler() -> RuntimeHandler {
    RuntimeHandler {
        name: "runc".into(),
        runtime: ShimRuntime::Binary {
            path: "/usr/sbin/runc".into(),
            root: "/run/crius/runtimes/runc".into(),
            hide_unified_cgroup: false,
        },
        features: HandlerFeatures::default(),
    }
}

#[tokio::test]
async fn a_container_runs_on_its_pods_runtime_handler() {
    let mut fx = Fixture::new();
    let default = fx.create(fx.request("busybox")).await.unwrap();
    fx.pod.runtime_handler = "runc".into();
    let mut req = fx.request("busybox");
    req.config.as_mut().unwrap().metadata.as_mut().unwrap().name = "on-runc".into();
    let on_runc = fx.create(req).await.unwrap();
    assert_eq!(
        fx.shims.spawned_runtimes(),
        [
            (
                default,
                ShimRuntime::InProcess {
                    root: fx.config.state.join("runtime")
                }
            ),
            (on_runc, runc_handler().runtime),
        ]
    );
}

#[tokio::test]
async fn a_handler_without_rro_refuses_a_recursive_read_only_mount() {
    let mut fx = Fixture::new();
    fx.pod.runtime_handler = "runc".into();
    let mut req = fx.request("busybox");
    req.config.as_mut().unwrap().mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: "/tmp".into(),
        readonly: true,
        recursive_read_only: true,
        ..Default::default()
    }];
    let status = fx.create(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "config.mounts.recursive_read_only: runtime handler \"runc\" does not make mounts read-only recursively"
    );
    assert!(fx.shims.spawned().is_empty());
    fx.assert_nothing_left();
}

#[tokio::test]
async fn a_pod_whose_handler_is_no_longer_configured_gets_no_container() {
    let mut fx = Fixture::new();
    fx.pod.runtime_handler = "kata".into();
    let status = fx.create(fx.request("busybox")).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        format!(
            "pod {}: its runtime handler \"kata\" is no longer configured",
            fx.pod.id
        )
    );
    fx.assert_nothing_left();
    fx.pod.runtime_handler = String::new();
    fx.assert_name_free().await;
}

/// In a pod with a user namespace, the rootfs is prepared through it and a
/// volume is bound through an idmapped clone in the bundle; a failed shim
/// create undoes the clone too, and the volume keeps its files.
#[tokio::test]
async fn a_user_namespace_pods_idmapped_binds_are_undone() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: idmapped mounts need root");
        return;
    }
    let mut fx = Fixture::new();
    let tmp = fx._tmp.path().to_path_buf();
    let userns = crate::idmap::tests::pinned_userns(&tmp.join("ns"));
    let ids = crate::state::sandbox::IdMapping {
        container_id: 0,
        host_id: 200000,
        length: 65536,
    };
    fx.pod.userns = Some(userns.clone());
    fx.pod.user_mappings = Some(crate::state::sandbox::UserMappings {
        uids: ids,
        gids: ids,
    });
    // The pod's files are bound (and idmapped) too.
    let files = tmp.join("pod-files");
    std::fs::create_dir(&files).unwrap();
    for name in ["resolv.conf", "hosts", "hostname"] {
        std::fs::write(files.join(name), "").unwrap();
    }
    fx.pod.files = crate::state::sandbox::PodFiles {
        resolv_conf: files.join("resolv.conf"),
        hosts: files.join("hosts"),
        hostname: files.join("hostname"),
    };
    let volume = tmp.join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("kept"), "x").unwrap();
    let mut req = fx.request("busybox");
    req.config.as_mut().unwrap().mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    }];
    fx.shims.fail_at(Some(FakeShimStep::Create));
    let status = fx.create(req).await.unwrap_err();
    assert_step(
        &status,
        Code::Internal,
        "creating the container in its shim",
    );
    assert_eq!(fx.snapshots.idmaps(), [Some(userns)]);
    fx.assert_nothing_left();
    assert!(volume.join("kept").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let under_tmp = (mounts.lines())
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(&tmp) && !m.ends_with("/ns/user"))
        .count();
    assert_eq!(under_tmp, 0, "{mounts}");
    crate::namespaces::unpin(&tmp.join("ns")).unwrap();
}

/// An update reaches the shim as the merged `linux.resources` and the record
/// keeps what is in force; a refused one (the shim's, or a bad value)
/// changes nothing; an exited container is refused.
#[tokio::test]
async fn an_update_is_recorded_only_once_the_shim_applied_it() {
    let fx = Fixture::new();
    let mut req = fx.request("busybox");
    req.config.as_mut().unwrap().linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = fx.create(req).await.unwrap();
    let resources = |fx: &Fixture| {
        let record = fx.deps.containers.find(&id).unwrap().snapshot();
        record.resources.unwrap()
    };
    let update = cri::LinuxContainerResources {
        memory_limit_in_bytes: 256 << 20,
        ..Default::default()
    };
    update_container_resources(&fx.deps, &id, &update)
        .await
        .unwrap();
    let applied = fx.shims.updates(&id);
    assert_eq!(applied.len(), 1);
    assert_eq!(applied[0]["memory"]["limit"], 256 << 20);
    assert_eq!(applied[0]["cpu"]["shares"], 512);
    assert!(applied[0].get("devices").is_none(), "{}", applied[0]);
    let in_force = resources(&fx);
    assert_eq!(
        (in_force.memory_limit_in_bytes, in_force.cpu_shares),
        (256 << 20, 512)
    );

    fx.shims.fail_at(Some(FakeShimStep::Update));
    let refused = cri::LinuxContainerResources {
        memory_limit_in_bytes: 4096,
        ..Default::default()
    };
    let status = update_container_resources(&fx.deps, &id, &refused)
        .await
        .map_err(tonic::Status::from)
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert_eq!(resources(&fx), in_force);
    fx.shims.fail_at(None);

    let bad = cri::LinuxContainerResources {
        cpu_shares: -2,
        ..Default::default()
    };
    let status = update_container_resources(&fx.deps, &id, &bad)
        .await
        .map_err(tonic::Status::from)
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "linux.cpu_shares: -2 is negative");
    assert_eq!(fx.shims.updates(&id).len(), 1);

    let entry = fx.deps.containers.find(&id).unwrap();
    fx.deps
        .containers
        .update(&entry, |r| r.state = ContainerState::Exited)
        .unwrap();
    let status = update_container_resources(&fx.deps, &id, &update)
        .await
        .map_err(tonic::Status::from)
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), format!("container {id} is not running"));

    let status = update_container_resources(&fx.deps, "nosuch", &update)
        .await
        .map_err(tonic::Status::from)
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}
