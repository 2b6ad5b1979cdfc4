//! A split image filesystem (KEP-4191) against a real criusd: `[storage]
//! image_dir` and `container_dir` on two tmpfs mounts of their own, an image
//! pulled and a container run, its layers and writable layer each on its own
//! filesystem and ImageFsInfo reporting both; a dir that cannot be made
//! stops start-up naming its key.

use std::path::{Path, PathBuf};

use crius_proto::cri;
use crius_tests::cri::{container_config, pod_config, pull, run_container, run_pod};
use crius_tests::cri::{exec, stop_and_remove_pod};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, run_criusd, short_tempdir, Daemon, DaemonOptions};

/// tmpfs mounts made for one test, unmounted when it ends (also on a
/// failure: declared before the daemon, dropped after it).
struct Tmpfs(Vec<PathBuf>);

impl Tmpfs {
    fn mount(dirs: &[&Path]) -> Tmpfs {
        let mut mounted = Tmpfs(Vec::new());
        for dir in dirs {
            std::fs::create_dir_all(dir).unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                *dir,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some("size=256m"),
            )
            .unwrap_or_else(|e| panic!("mounting a tmpfs at {}: {e}", dir.display()));
            mounted.0.push(dir.to_path_buf());
        }
        mounted
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn mountpoint(fs: &cri::FilesystemUsage) -> &str {
    &fs.fs_id.as_ref().expect("fs_id").mountpoint
}

#[tokio::test(flavor = "multi_thread")]
async fn image_and_container_dirs_on_two_filesystems_are_reported_apart() {
    if !require_root() {
        return;
    }
    let disks = short_tempdir();
    let image_dir = disks.path().join("images");
    let container_dir = disks.path().join("containers");
    let _mounts = Tmpfs::mount(&[&image_dir, &container_dir]);
    let registry = TestRegistry::shared();
    let daemon = Daemon::start_with(DaemonOptions {
        config_toml: format!(
            "{}[storage]\nimage_dir = \"{}\"\ncontainer_dir = \"{}\"\n",
            registry.config_toml(),
            image_dir.display(),
            container_dir.display()
        ),
        network: true,
        ..Default::default()
    });
    let mut images = daemon.images().await;
    let mut rt = daemon.runtime().await;

    let image = registry.image("crius/busybox:latest");
    pull(&mut images, &image).await;
    assert!(
        !names(&image_dir.join("layers")).is_empty(),
        "layers under image_dir: {:?}",
        names(&image_dir)
    );
    assert!(!names(&image_dir.join("blobs/sha256")).is_empty());
    assert!(
        !daemon.root.join("images").exists(),
        "nothing of the image under root: {:?}",
        names(&daemon.root)
    );

    let pod = pod_config("split", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let id = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("writer", &image, &["sleep", "3600"]),
    )
    .await;
    let wrote = exec(&mut rt, &id, &["sh", "-c", "echo split > /written"], 10)
        .await
        .expect("ExecSync");
    assert_eq!(wrote.exit_code, 0, "{wrote:?}");
    let written = container_dir.join(&id).join("upper/written");
    assert_eq!(
        std::fs::read_to_string(&written).unwrap_or_default(),
        "split\n",
        "the writable layer under container_dir: {}",
        written.display()
    );
    assert!(!daemon.root.join("containers").exists());

    let fs_info = images
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    assert_eq!(fs_info.image_filesystems.len(), 1, "{fs_info:?}");
    assert_eq!(fs_info.container_filesystems.len(), 1, "{fs_info:?}");
    let (image_fs, container_fs) = (
        &fs_info.image_filesystems[0],
        &fs_info.container_filesystems[0],
    );
    assert_eq!(mountpoint(image_fs), image_dir.to_str().unwrap());
    assert_eq!(mountpoint(container_fs), container_dir.to_str().unwrap());
    let image_size = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.clone(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .expect("pulled")
        .size;
    let used = |fs: &cri::FilesystemUsage| {
        (
            fs.used_bytes.as_ref().unwrap().value,
            fs.inodes_used.as_ref().unwrap().value,
        )
    };
    let (image_bytes, image_inodes) = used(image_fs);
    assert!(
        image_bytes >= image_size && image_inodes > 10,
        "{image_fs:?} for an image of {image_size} bytes"
    );
    let (container_bytes, container_inodes) = used(container_fs);
    assert!(
        container_bytes > 0 && container_bytes < image_bytes,
        "one small file written: {container_fs:?}"
    );
    assert!(
        (4..image_inodes).contains(&container_inodes),
        "the container's dir, upper, work and /written at least: {container_fs:?}"
    );

    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert_eq!(
        names(&container_dir),
        Vec::<String>::new(),
        "the writable layer goes with the container"
    );
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_both_filesystems_are_one() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let fs_info = daemon
        .images()
        .await
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("ImageFsInfo")
        .into_inner();
    assert_eq!(
        mountpoint(&fs_info.image_filesystems[0]),
        mountpoint(&fs_info.container_filesystems[0]),
        "kubelet takes two mount points for a split filesystem: {fs_info:?}"
    );
}

#[test]
fn a_storage_dir_that_cannot_be_made_stops_startup_naming_its_key() {
    let dir = short_tempdir();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    for key in ["image_dir", "container_dir"] {
        let config = dir.path().join("crius.toml");
        std::fs::write(
            &config,
            format!("[storage]\n{key} = \"{}\"\n", file.join("below").display()),
        )
        .unwrap();
        let out = run_criusd(&[
            "--config",
            config.to_str().unwrap(),
            "--socket",
            dir.path().join("crius.sock").to_str().unwrap(),
            "--root",
            dir.path().join("root").to_str().unwrap(),
            "--state",
            dir.path().join("state").to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{key}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("config key storage.{key}: creating ")),
            "{stderr}"
        );
    }
}
