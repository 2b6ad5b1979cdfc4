//! Images against a real criusd and the loopback test registry: pulls direct
//! and through a mirror, status and listing, the unpacked layers of
//! `crius/layers` (whiteouts, hard link, symlink), a container of the 125
//! layers of `crius/many-layers`, removal with garbage collection, and the
//! errors of bad and absent references.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crius_proto::cri;
use crius_proto::cri::image_service_client::ImageServiceClient;
use crius_tests::cri::{
    container_config, exec, pod_config, run_container, run_pod, stop_and_remove_pod,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{mounts_under, require_root, Daemon, DaemonOptions};
use tonic::transport::Channel;
use tonic::Code;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

async fn pull(
    images: &mut ImageServiceClient<Channel>,
    image: &str,
) -> Result<String, tonic::Status> {
    images
        .pull_image(cri::PullImageRequest {
            image: spec(image),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

async fn status(images: &mut ImageServiceClient<Channel>, image: &str) -> cri::ImageStatusResponse {
    images
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
}

async fn list(images: &mut ImageServiceClient<Channel>, filter: Option<&str>) -> Vec<cri::Image> {
    images
        .list_images(cri::ListImagesRequest {
            filter: filter.map(|f| cri::ImageFilter { image: spec(f) }),
        })
        .await
        .expect("ListImages")
        .into_inner()
        .images
}

async fn remove(images: &mut ImageServiceClient<Channel>, image: &str) {
    images
        .remove_image(cri::RemoveImageRequest { image: spec(image) })
        .await
        .expect("RemoveImage");
}

fn start(registry: &TestRegistry) -> Daemon {
    Daemon::start_with(DaemonOptions {
        config_toml: registry.config_toml(),
        ..Default::default()
    })
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn pull_direct_and_through_a_mirror_then_remove() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    let daemon = start(registry);
    let mut images = daemon.images().await;

    let direct = registry.image("crius/busybox:latest");
    let started = std::time::Instant::now();
    let id = pull(&mut images, &direct).await.expect("pull direct");
    eprintln!("cold pull of {direct}: {:?}", started.elapsed());
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let image = status(&mut images, &direct)
        .await
        .image
        .expect("pulled image has a status");
    assert_eq!(image.id, id);
    assert_eq!(image.repo_tags, std::slice::from_ref(&direct));
    assert_eq!(image.repo_digests.len(), 1);
    let digest_prefix = format!("{}@sha256:", registry.image("crius/busybox"));
    assert!(
        image.repo_digests[0].starts_with(&digest_prefix),
        "{:?}",
        image.repo_digests
    );
    assert!(
        image.size > 100_000,
        "busybox and its libraries: {}",
        image.size
    );
    assert_eq!(
        image.spec.as_ref().map(|s| s.image.as_str()),
        Some(id.as_str())
    );

    // Through the mirror of registry.k8s.io: the same image, a second name.
    let mirrored = "registry.k8s.io/crius/busybox:latest";
    assert_eq!(
        pull(&mut images, mirrored).await.expect("pull via mirror"),
        id
    );
    let image = status(&mut images, &id).await.image.unwrap();
    assert_eq!(image.repo_tags, [direct.clone(), mirrored.to_string()]);
    assert_eq!(image.repo_digests.len(), 2);
    assert!(image.repo_digests[1].starts_with("registry.k8s.io/crius/busybox@sha256:"));
    // Every name finds it: digest, id hex, id prefix.
    for name in [&image.repo_digests[0], &id[7..], &id[7..19]] {
        assert_eq!(
            status(&mut images, name).await.image.map(|i| i.id),
            Some(id.clone()),
            "{name}"
        );
    }

    let all = list(&mut images, None).await;
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, id);
    assert_eq!(list(&mut images, Some(mirrored)).await.len(), 1);
    assert!(list(&mut images, Some("registry.k8s.io/crius/absent:1"))
        .await
        .is_empty());

    let fs_info = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    let used = fs_info.image_filesystems[0]
        .used_bytes
        .as_ref()
        .unwrap()
        .value;
    assert!(
        used >= image.size,
        "{used} bytes used for an image of {}",
        image.size
    );

    let blobs = daemon.root.join("images/blobs/sha256");
    let layers = daemon.root.join("images/layers");
    assert!(
        names(&blobs).len() >= 2,
        "manifest and config (layers are kept unpacked only): {:?}",
        names(&blobs)
    );
    assert!(!names(&layers).is_empty());

    remove(&mut images, mirrored).await;
    assert!(
        status(&mut images, &direct).await.image.is_none(),
        "all tags go with the image"
    );
    assert!(list(&mut images, None).await.is_empty());
    assert!(
        names(&blobs).is_empty(),
        "blobs collected: {:?}",
        names(&blobs)
    );
    assert!(
        names(&layers).is_empty(),
        "layers collected: {:?}",
        names(&layers)
    );
    remove(&mut images, mirrored).await;
}

/// What `crius/layers:latest` holds under /data once its layers are stacked
/// (hack/test-images/src/catalog.rs, `LAYERS_MERGED_DATA`).
fn expected_data_tree() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("data", "dir"),
        ("data/keep.txt", "file:kept from the lower layer\n"),
        ("data/links", "dir"),
        ("data/links/hardlink.txt", "file:linked\n"),
        ("data/links/original.txt", "file:linked\n"),
        ("data/links/symlink.txt", "symlink:original.txt"),
        ("data/opaque", "dir"),
        ("data/opaque/new.txt", "file:added by the upper layer\n"),
        ("data/recreated-after", "dir"),
        (
            "data/recreated-after/newfile",
            "file:re-created by the upper layer\n",
        ),
        ("data/recreated-before", "dir"),
        (
            "data/recreated-before/newfile",
            "file:re-created by the upper layer\n",
        ),
        ("data/replaced.txt", "file:upper\n"),
    ])
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
    let path = root.join(rel);
    let meta = std::fs::symlink_metadata(&path).unwrap();
    let kind = if meta.file_type().is_symlink() {
        format!("symlink:{}", std::fs::read_link(&path).unwrap().display())
    } else if meta.is_dir() {
        for name in names(&path) {
            walk(root, &rel.join(name), out);
        }
        "dir".to_string()
    } else {
        format!("file:{}", std::fs::read_to_string(&path).unwrap())
    };
    out.insert(rel.display().to_string(), kind);
}

#[tokio::test]
async fn layers_unpack_for_overlayfs() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    // With a network: a container of the image runs at the end.
    let daemon = Daemon::start_with(DaemonOptions {
        config_toml: registry.config_toml(),
        network: true,
        ..Default::default()
    });
    let mut images = daemon.images().await;
    let reference = registry.image("crius/layers:latest");

    // Two pulls at once share the work and agree.
    let (a, b) = tokio::join!(
        async { pull(&mut daemon.images().await, &reference).await },
        async { pull(&mut daemon.images().await, &reference).await },
    );
    assert_eq!(a.expect("first pull"), b.expect("second pull"));

    let response = status(&mut images, &reference).await;
    let info: serde_json::Value = serde_json::from_str(&response.info["info"]).unwrap();
    let layer_dirs: Vec<PathBuf> = info["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| PathBuf::from(l.as_str().unwrap()))
        .collect();
    assert_eq!(
        layer_dirs.len(),
        3,
        "busybox base and two layers: {layer_dirs:?}"
    );
    for dir in &layer_dirs {
        assert!(
            dir.starts_with(daemon.root.join("images/layers")),
            "{}",
            dir.display()
        );
    }
    assert!(
        names(&daemon.root.join("images/tmp")).is_empty(),
        "no half layer left"
    );

    // The whiteouts in overlayfs form in the upper layer.
    let upper = layer_dirs.last().unwrap();
    let whiteout = std::fs::symlink_metadata(upper.join("data/removed.txt")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &whiteout.file_type()
    ));
    assert_eq!(whiteout.rdev(), 0);
    // A directory whited out and re-created by the same layer, with the
    // whiteout before or after it in the tar: opaque, holding only its own.
    for dir in ["data/recreated-before", "data/recreated-after"] {
        let path = upper.join(dir);
        assert!(std::fs::symlink_metadata(&path).unwrap().is_dir(), "{dir}");
        assert_eq!(
            xattr(&path, "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..]),
            "{dir}"
        );
        assert_eq!(names(&path), ["newfile"], "{dir}");
    }

    // Stacked read-only, the layers show exactly the documented tree.
    let merged = daemon.dir.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let lowerdir: Vec<String> = layer_dirs
        .iter()
        .rev()
        .map(|d| d.display().to_string())
        .collect();
    nix::mount::mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        nix::mount::MsFlags::MS_RDONLY,
        Some(format!("lowerdir={}", lowerdir.join(":")).as_str()),
    )
    .expect("overlay mount of the layers");
    let mut tree = BTreeMap::new();
    walk(&merged, Path::new("data"), &mut tree);
    let hard = std::fs::metadata(merged.join("data/links/hardlink.txt")).unwrap();
    let original = std::fs::metadata(merged.join("data/links/original.txt")).unwrap();
    let busybox_there = merged.join("bin/busybox").exists();
    nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();

    let expected: BTreeMap<String, String> = expected_data_tree()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(tree, expected);
    assert_eq!(hard.ino(), original.ino(), "the hard link shares the inode");
    assert!(busybox_there, "the base layer lies below");

    // And from inside a running container of the image.
    let mut rt = daemon.runtime().await;
    let logs = daemon.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let pod = pod_config("layers", &logs);
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let config = container_config("layers", &reference, &["sleep", "600"]);
    let container = run_container(&mut rt, &pod_id, &pod, config).await;
    let seen = exec(
        &mut rt,
        &container,
        &[
            "sh",
            "-c",
            "ls -A /data/recreated-before; echo --; ls -A /data/recreated-after",
        ],
        10,
    )
    .await
    .expect("ExecSync");
    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert_eq!(seen.exit_code, 0, "{seen:?}");
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        "newfile\n--\nnewfile\n",
        "only the re-created file, in either tar order"
    );
}

/// An image of more layers than the page of overlay mount options holds by
/// absolute path (issue 9, item 5): each of the 124 layers over busybox in
/// `crius/many-layers` (hack/test-images) adds `/layers/<i>` and writes
/// `/layers/top`.
#[tokio::test]
async fn a_container_of_125_layers_sees_every_layer_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    let daemon = Daemon::start_with(DaemonOptions {
        config_toml: registry.config_toml(),
        network: true,
        ..Default::default()
    });
    let reference = registry.image("crius/many-layers:latest");
    let mut images = daemon.images().await;
    pull(&mut images, &reference).await.expect("PullImage");
    let info: serde_json::Value =
        serde_json::from_str(&status(&mut images, &reference).await.info["info"]).unwrap();
    assert_eq!(info["layers"].as_array().unwrap().len(), 125);

    let mut rt = daemon.runtime().await;
    let logs = daemon.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let pod = pod_config("many-layers", &logs);
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let config = container_config("many-layers", &reference, &["sleep", "600"]);
    let container = run_container(&mut rt, &pod_id, &pod, config).await;
    let container_dir = daemon.root.join("containers").join(&container);
    let recorded = std::fs::read_to_string(container_dir.join("layers")).unwrap();
    let links_left = container_dir.join("l").exists();
    let seen = exec(
        &mut rt,
        &container,
        &[
            "sh",
            "-c",
            "grep ^root: /etc/passwd | cut -d: -f1,3; \
             cat /layers/1 /layers/62 /layers/124 /layers/top; ls /layers | wc -l",
        ],
        10,
    )
    .await
    .expect("ExecSync");
    rt.stop_container(cri::StopContainerRequest {
        container_id: container.clone(),
        timeout: 0,
    })
    .await
    .expect("StopContainer");
    rt.remove_container(cri::RemoveContainerRequest {
        container_id: container,
    })
    .await
    .expect("RemoveContainer");
    let container_dir_left = container_dir.exists();
    let rootfs_mounts = mounts_under(&daemon.state.join("c"));
    stop_and_remove_pod(&mut rt, &pod_id).await;

    assert_eq!(recorded.lines().count(), 125);
    assert!(!links_left, "the layer links outlived the mount");
    assert_eq!(seen.exit_code, 0, "{seen:?}");
    // The base layer's passwd, the first, a middle and the last own layer's
    // files, the top layer's `top`, and every layer's file (124 and `top`).
    assert_eq!(
        String::from_utf8_lossy(&seen.stdout),
        "root:0\nlayer 1\nlayer 62\nlayer 124\nlayer 124\n125\n"
    );
    assert!(!container_dir_left, "the container's dir outlived it");
    assert_eq!(rootfs_mounts, Vec::<PathBuf>::new());
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut value = [0u8; 64];
    // SAFETY: valid NUL-terminated strings and a 64-byte buffer.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    (n >= 0).then(|| value[..n as usize].to_vec())
}

#[tokio::test]
async fn bad_and_absent_references() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    let daemon = start(registry);
    let mut images = daemon.images().await;

    let err = pull(&mut images, "Bad/Reference:x").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("image.image") && err.message().contains("Bad/Reference:x"),
        "{}",
        err.message()
    );
    let err = pull(&mut images, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    for absent in [
        registry.image("crius/absent:latest"),
        registry.image("crius/busybox:no-such-tag"),
    ] {
        let err = pull(&mut images, &absent).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{absent}: {err:?}");
        assert!(
            err.message().contains(&absent) && err.message().contains("MANIFEST_UNKNOWN")
                || err.message().contains("manifest unknown"),
            "{}",
            err.message()
        );
    }
    // Through a mirror, each endpoint tried is named with what it answered
    // (registry.k8s.io itself is out of reach here).
    let err = pull(&mut images, "registry.k8s.io/crius/absent:1")
        .await
        .unwrap_err();
    let mirror = format!("http://{}", registry.addr);
    assert!(
        err.message().contains(&mirror) && err.message().contains("https://registry.k8s.io"),
        "{}",
        err.message()
    );
    assert!(status(&mut images, "crius/absent").await.image.is_none());
    remove(&mut images, "never-pulled").await;
}

/// A client that gives up does not stop the pull: it finishes in its own
/// task, and the image shows up with nothing half-written left behind.
#[tokio::test]
async fn a_pull_outlives_its_cancelled_client() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    let daemon = start(registry);
    let mut images = daemon.images().await;
    let reference = registry.image("crius/httpd:latest");

    let mut request = tonic::Request::new(cri::PullImageRequest {
        image: spec(&reference),
        ..Default::default()
    });
    // Long enough for the request to reach criusd, far too short for the pull.
    request.set_timeout(std::time::Duration::from_millis(100));
    let err = images.pull_image(request).await.unwrap_err();
    // tonic's client reports its own timeout as Cancelled.
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while status(&mut images, &reference).await.image.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned pull never completed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(names(&daemon.root.join("images/tmp")).is_empty());
}
