//! Paths a container needs that do not exist yet (issue 9, items 2 and 3): a
//! working directory missing from the image is made inside the container's
//! root, as runc does; a bind mount's missing host path is made on the host,
//! as containerd does, except under a file or where crius must not create.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_status, create_container, exec, pod_config, pull, run_container,
    run_pod, stop_and_remove_pod, with_pid_mode,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon};

async fn sh(rt: &mut crius_tests::cri::Runtime, id: &str, script: &str) -> String {
    let out = exec(rt, id, &["sh", "-c", script], 10)
        .await
        .expect("ExecSync");
    assert_eq!(
        out.exit_code,
        0,
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_working_directory_is_made_and_the_process_starts_there() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let mut images = daemon.images().await;
    let workdir_image = TestRegistry::shared().image("crius/workdir:latest");
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut images, &workdir_image).await;
    pull(&mut images, &busybox).await;
    // Each container's process is PID 1 of its own namespace: /proc/1 is it.
    let pod = with_pid_mode(
        pod_config("workdir", &daemon.dir.path().join("logs")),
        cri::NamespaceMode::Container,
    );
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    // The image's WorkingDir (/app/work), in none of its layers.
    let id = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("image-wd", &workdir_image, &["sleep", "600"]),
    )
    .await;
    assert_eq!(sh(&mut rt, &id, "readlink /proc/1/cwd").await, "/app/work");
    assert_eq!(
        sh(&mut rt, &id, "stat -c '%a %u:%g' /app /app/work").await,
        "755 0:0\n755 0:0"
    );

    // The request's working_dir, for a process that is not root: the
    // directory is root's, 0755, so it can enter it.
    let mut config = container_config("cri-wd", &busybox, &["sleep", "600"]);
    config.working_dir = "/srv/made/../made/here".into();
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    assert_eq!(
        sh(&mut rt, &id, "readlink /proc/1/cwd; id -u").await,
        "/srv/made/here\n1000"
    );
    assert_eq!(
        sh(&mut rt, &id, "stat -c '%a %u:%g' /srv/made/here").await,
        "755 0:0"
    );

    // Under a volume: made in the volume, where the container sees it.
    let volume = daemon.dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    let mut config = container_config("volume-wd", &busybox, &["sleep", "600"]);
    config.working_dir = "/data/sub".into();
    config.mounts.push(cri::Mount {
        container_path: "/data".into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    });
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    assert_eq!(sh(&mut rt, &id, "readlink /proc/1/cwd").await, "/data/sub");
    assert!(volume.join("sub").is_dir());
    assert_eq!(mode(&volume.join("sub")), 0o755);

    stop_and_remove_pod(&mut rt, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_host_path_is_made_unless_under_a_file_or_a_protected_dir() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("hostpath", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let bind = |host: &Path| cri::Mount {
        container_path: "/mnt/vol".into(),
        host_path: host.display().to_string(),
        ..Default::default()
    };

    // Missing, two levels deep: made (mkdir -p, 0755) and bound read-write.
    let host = daemon.dir.path().join("hostpath/a/b");
    let mut config = container_config("made", &busybox, &["sleep", "600"]);
    config.mounts.push(bind(&host));
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    assert!(host.is_dir());
    assert_eq!(mode(&host), 0o755);
    assert_eq!(mode(host.parent().unwrap()), 0o755);
    sh(&mut rt, &id, "echo hi > /mnt/vol/f").await;
    assert_eq!(std::fs::read_to_string(host.join("f")).unwrap(), "hi\n");

    // Under a file: refused, naming the mount and the parent.
    let file = daemon.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut config = container_config("under-file", &busybox, &["sleep", "600"]);
    config.mounts.push(bind(&file.join("sub/dir")));
    let err = create_container(&mut rt, &pod_id, &pod, config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("mounts[0].host_path")
            && err
                .message()
                .contains(&format!("its parent {} is not a directory", file.display())),
        "{}",
        err.message()
    );

    // Under crius' own state and root dirs, or /sys: refused, naming which.
    for (host, under) in [
        (
            daemon.state.join("crius-test-missing"),
            daemon.state.clone(),
        ),
        (
            daemon.root.join("containers/crius-test-missing"),
            daemon.root.clone(),
        ),
        ("/sys/crius-test-missing".into(), "/sys".into()),
    ] {
        let mut config = container_config("protected", &busybox, &["sleep", "600"]);
        config.mounts.push(bind(&host));
        let err = create_container(&mut rt, &pod_id, &pod, config)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(
            err.message().contains("mounts[0].host_path")
                && err
                    .message()
                    .contains(&format!("it lies under {},", under.display())),
            "{}",
            err.message()
        );
        assert!(!host.exists(), "{}", host.display());
    }

    stop_and_remove_pod(&mut rt, &pod_id).await;
    // As with containerd, a directory made for a volume stays with the host.
    assert!(host.is_dir());
}

/// A create that fails inside libcontainer's init (issue 9, item 9): the
/// CRI error names the step, the mount and the errno, not only "failed to
/// prepare rootfs"; the rollback leaves nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_mount_names_the_step_the_path_and_the_errno() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("badmount", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    // A host file bound onto a directory of the image: mount(2) fails.
    let file = daemon.dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let mut config = container_config("bad-mount", &busybox, &["sleep", "600"]);
    config.mounts.push(cri::Mount {
        container_path: "/etc".into(),
        host_path: file.display().to_string(),
        ..Default::default()
    });
    let err = create_container(&mut rt, &pod_id, &pod, config)
        .await
        .unwrap_err();
    // The step, both paths and the errno, which libcontainer's own error
    // ("failed to prepare rootfs") leaves out.
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    let message = err.message();
    let source = format!("source: Some({:?})", file.display().to_string());
    for part in [
        "failed to prepare rootfs; libcontainer logged: failed to mount",
        r#"destination: "/etc""#,
        &source,
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    // The kernel's errno for a file bound onto a directory, with its text.
    assert!(
        ["EINVAL (Invalid argument)", "ENOTDIR (Not a directory)"]
            .iter()
            .any(|errno| message.contains(errno)),
        "{message}"
    );

    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

/// A process that cannot be exec'd (issue 9, item 10): as with containerd
/// and runc, CreateContainer succeeds, StartContainer fails naming the file
/// in runc's words, and the container is then EXITED with code 128, reason
/// StartError and that message, removable with nothing left.
#[tokio::test(flavor = "multi_thread")]
async fn a_process_that_cannot_be_execd_fails_at_start_naming_the_file() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("noexec", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    let cases = [
        (
            "nosuch",
            r#"exec: "nosuch": executable file not found in $PATH"#,
        ),
        (
            "/bin/nosuch",
            r#"exec: "/bin/nosuch": stat /bin/nosuch: no such file or directory"#,
        ),
        ("/etc", r#"exec: "/etc": is a directory"#),
        ("/etc/passwd", r#"exec: "/etc/passwd": permission denied"#),
    ];
    for (i, (command, words)) in cases.into_iter().enumerate() {
        let config = container_config(&format!("noexec-{i}"), &busybox, &[command]);
        let id = create_container(&mut rt, &pod_id, &pod, config)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer of {command}: {e:?}"));
        let status = container_status(&mut rt, &id).await;
        assert_eq!(status.state(), cri::ContainerState::ContainerCreated);

        let err = rt
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert!(err.message().contains(words), "{command}: {err:?}");

        let status = container_status(&mut rt, &id).await;
        assert_eq!(status.state(), cri::ContainerState::ContainerExited);
        assert_eq!(
            (status.exit_code, status.reason.as_str()),
            (128, "StartError"),
            "{command}"
        );
        assert_eq!(status.message, err.message(), "{command}");
        assert!(
            status.finished_at > 0 && status.started_at == 0,
            "{status:?}"
        );

        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("RemoveContainer");
    }

    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
