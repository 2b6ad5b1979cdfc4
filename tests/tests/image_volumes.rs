//! Image volumes (KEP-4639, issue 13) against a real criusd: an image's
//! root filesystem, or one path of it, mounted read-only into containers
//! and seen from inside them; paths outside the image refused; the image
//! kept from removal while mounted (across a daemon restart) and freed,
//! with nothing left mounted, after its last container goes.

use std::path::PathBuf;

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_status, create_container, exec, pod_config, pull, run_container,
    run_pod, stop_and_remove_pod,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{mounts_under, require_root, Daemon};
use tonic::Code;

/// A read-only mount of image `image` (an ID or a name) at `container_path`,
/// or of `sub_path` inside it, as kubelet sends it.
fn image_volume(container_path: &str, image: &str, sub_path: &str) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        readonly: true,
        image: Some(cri::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        image_sub_path: sub_path.into(),
        ..Default::default()
    }
}

/// Runs `script` in the container with sh: its exit code and its stdout
/// and stderr together.
async fn sh(rt: &mut crius_tests::cri::Runtime, id: &str, script: &str) -> (i32, String) {
    let out = exec(rt, id, &["sh", "-c", script], 10)
        .await
        .expect("ExecSync");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.exit_code, text.trim().to_string())
}

async fn remove_image(daemon: &Daemon, image: &str) -> Result<(), tonic::Status> {
    daemon
        .images()
        .await
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
        })
        .await
        .map(drop)
}

/// The image's unpacked layer dirs, lowest first (ImageStatus verbose).
async fn layer_dirs(daemon: &Daemon, image: &str) -> Vec<PathBuf> {
    let status = daemon
        .images()
        .await
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    serde_json::from_value(info["layers"].clone()).unwrap()
}

async fn remove_container(rt: &mut crius_tests::cri::Runtime, id: &str) {
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: id.into(),
    })
    .await
    .expect("RemoveContainer");
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_are_read_only_shared_and_freed_with_their_last_container() {
    if !require_root() {
        return;
    }
    let mut daemon = Daemon::start_networked();
    let views = daemon.state.join("image-volumes");
    let mut rt = daemon.runtime().await;
    let registry = TestRegistry::shared();
    let busybox = registry.image("crius/busybox:latest");
    let layers = registry.image("crius/layers:latest");
    pull(&mut daemon.images().await, &busybox).await;
    // kubelet mounts the image by the ID PullImage answered.
    let layers_id = pull(&mut daemon.images().await, &layers).await;
    let layers_dirs = layer_dirs(&daemon, &layers_id).await;
    assert_eq!(layers_dirs.len(), 3, "busybox's base and two layers");
    let pod = pod_config("image-volumes", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    let mut config = container_config("first", &busybox, &["sleep", "600"]);
    config.mounts = vec![
        // Three layers: an overlay of them.
        image_volume("/mnt/whole", &layers_id, ""),
        image_volume("/mnt/data", &layers_id, "data"),
        // One layer: a read-only bind of it.
        image_volume("/mnt/bin", &busybox, "bin"),
    ];
    let first = run_container(&mut rt, &pod_id, &pod, config).await;
    for (script, expected) in [
        ("cat /mnt/whole/data/keep.txt", "kept from the lower layer"),
        ("cat /mnt/data/replaced.txt", "upper"),
        ("cat /mnt/data/links/symlink.txt", "linked"),
        // Whiteouts and opaque dirs as in a rootfs.
        (
            "ls /mnt/data/removed.txt /mnt/data/opaque/old.txt 2>/dev/null; ls /mnt/data/opaque",
            "new.txt",
        ),
        // Not noexec: the image's own binaries run.
        ("/mnt/whole/bin/busybox echo ran", "ran"),
        ("/mnt/bin/busybox echo ran", "ran"),
    ] {
        assert_eq!(
            sh(&mut rt, &first, script).await,
            (0, expected.into()),
            "{script}"
        );
    }
    for path in [
        "/mnt/whole/new",
        "/mnt/whole/data/keep.txt",
        "/mnt/data/new",
        "/mnt/bin/new",
    ] {
        let (code, out) = sh(&mut rt, &first, &format!("touch {path}")).await;
        assert!(
            code != 0 && out.contains("Read-only file system"),
            "{path}: {out}"
        );
    }
    let status = container_status(&mut rt, &first).await;
    let whole = status
        .mounts
        .iter()
        .find(|m| m.container_path == "/mnt/whole")
        .and_then(|m| m.image.clone())
        .expect("the image volume in ContainerStatus");
    assert_eq!(
        (whole.image.as_str(), whole.image_ref.as_str()),
        (layers_id.as_str(), layers_id.as_str())
    );

    // A second container of the same image shares its view: one mount an image.
    let mut config = container_config("second", &busybox, &["sleep", "600"]);
    config.mounts = vec![image_volume("/mnt/image", &layers, "data/opaque")];
    let second = run_container(&mut rt, &pod_id, &pod, config).await;
    assert_eq!(
        sh(&mut rt, &second, "cat /mnt/image/new.txt").await,
        (0, "added by the upper layer".into())
    );
    assert_eq!(mounts_under(&views).len(), 2, "{:?}", mounts_under(&views));

    let refused = remove_image(&daemon, &layers).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains(&layers_id), "{refused:?}");
    assert!(
        [&first, &second]
            .iter()
            .any(|c| refused.message().contains(&format!("container {c}"))),
        "{refused:?}"
    );

    // A restart keeps the users: the containers still see their volumes,
    // the image is still refused, and the views come back on demand.
    daemon.restart();
    let mut rt = daemon.runtime().await;
    assert_eq!(
        sh(&mut rt, &first, "cat /mnt/data/keep.txt").await,
        (0, "kept from the lower layer".into())
    );
    remove_container(&mut rt, &first).await;
    let refused = remove_image(&daemon, &layers_id).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains(&format!("container {second}")),
        "{refused:?}"
    );
    assert!(
        remove_image(&daemon, &busybox).await.is_ok(),
        "no container mounts busybox now"
    );
    remove_container(&mut rt, &second).await;
    assert_eq!(mounts_under(&views), Vec::<PathBuf>::new());
    assert_eq!(std::fs::read_dir(&views).map(|d| d.count()).unwrap_or(0), 0);

    remove_image(&daemon, &layers)
        .await
        .expect("RemoveImage once unmounted");
    for dir in &layers_dirs {
        assert!(!dir.exists(), "{} left", dir.display());
    }
    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn image_volumes_outside_the_image_writable_or_not_pulled_are_refused() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let registry = TestRegistry::shared();
    let busybox = registry.image("crius/busybox:latest");
    let symlinks = registry.image("crius/symlinks:latest");
    pull(&mut daemon.images().await, &busybox).await;
    pull(&mut daemon.images().await, &symlinks).await;
    let pod = pod_config("image-volume-refusals", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    let mut writable = image_volume("/mnt/image", &symlinks, "");
    writable.readonly = false;
    let refusals = [
        (
            image_volume("/mnt/image", &symlinks, "../etc"),
            Code::InvalidArgument,
            "config.mounts: mounts[0].image_sub_path \"../etc\": leaves the image",
        ),
        // `/opt/app/logs` -> `../../../../../../crius-app-logs`
        (
            image_volume("/mnt/image", &symlinks, "opt/app/logs"),
            Code::InvalidArgument,
            "config.mounts: mounts[0].image_sub_path \"opt/app/logs\": leaves the image",
        ),
        // `/data` -> `/missing`, inside the image: absent.
        (
            image_volume("/mnt/image", &symlinks, "data"),
            Code::InvalidArgument,
            "config.mounts: mounts[0].image_sub_path \"data\": \"missing\" does not exist in the image",
        ),
        (
            image_volume("/mnt/image", &symlinks, "not-existing"),
            Code::InvalidArgument,
            "config.mounts: mounts[0].image_sub_path \"not-existing\": \"not-existing\" does not exist in the image",
        ),
        (
            writable,
            Code::InvalidArgument,
            "config.mounts: mounts[0].readonly: an image volume is read-only",
        ),
        (
            image_volume("/mnt/image", &registry.image("crius/absent:1"), ""),
            Code::NotFound,
            "of config.mounts[0].image not found",
        ),
    ];
    for (mount, code, message) in refusals {
        let sub_path = mount.image_sub_path.clone();
        let mut config = container_config("refused", &busybox, &["sleep", "600"]);
        config.mounts = vec![mount];
        let err = create_container(&mut rt, &pod_id, &pod, config)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{sub_path:?}: {err:?}");
        assert!(err.message().contains(message), "{sub_path:?}: {err:?}");
        assert!(
            !err.message().contains(&*daemon.state.to_string_lossy()),
            "{err:?}"
        );
        assert_eq!(
            mounts_under(&daemon.state.join("image-volumes")),
            Vec::<PathBuf>::new()
        );
    }
    // A path that stays inside, through a relative symlink: accepted.
    let mut config = container_config("inside", &busybox, &["sleep", "600"]);
    config.mounts = vec![image_volume("/mnt/etc", &symlinks, "etc/../etc")];
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    let (code, out) = sh(&mut rt, &id, "readlink /mnt/etc/localtime").await;
    assert_eq!((code, out.as_str()), (0, "/usr/share/zoneinfo/Nowhere"));
    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert_eq!(daemon.leaks(), Vec::<String>::new());
    assert_eq!(
        mounts_under(&daemon.state.join("image-volumes")),
        Vec::<PathBuf>::new()
    );
}
