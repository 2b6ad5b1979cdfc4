//! Security of mounts and stops (issue 11), checked from inside the
//! containers: recursive read-only binds (KEP-3857), bind mount options
//! (`Mount.mount_options`: noexec, nodev, nosuid) and a container's own
//! stop signal (KEP-4960).

use std::path::{Path, PathBuf};

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_status, create_container, exec, pod_config, pull, run_container,
    run_pod, stop_and_remove_pod,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon};

/// A tmpfs mounted on the host for the test's length: the sub-mount of a
/// bind. Unmounted (lazily) when dropped, also when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            at,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("mounting a tmpfs on {}: {e}", at.display()));
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH) {
            eprintln!("unmounting {}: {e}", self.0.display());
        }
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

fn bind(container_path: &str, host_path: &Path) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        host_path: host_path.display().to_string(),
        ..Default::default()
    }
}

/// Stops and removes the pod, then checks that nothing of it is left.
async fn remove_pod(daemon: &Daemon, rt: &mut crius_tests::cri::Runtime, pod_id: String) {
    stop_and_remove_pod(rt, &pod_id).await;
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recursive_read_only_bind_is_read_only_in_its_sub_mounts() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let status = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let default = status
        .runtime_handlers
        .iter()
        .find(|h| h.name.is_empty())
        .and_then(|h| h.features)
        .expect("the default handler's features");
    // This host's kernel (6.x) has mount_setattr.
    assert!(default.recursive_read_only_mounts, "{status:?}");
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("rro", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    let volume = daemon.dir.path().join("rro-volume");
    let tmpfs = Tmpfs::mount(&volume.join("sub"));
    let mut config = container_config("rro", &busybox, &["sleep", "600"]);
    let mut rro = bind("/mnt/rro", &volume);
    rro.readonly = true;
    rro.recursive_read_only = true;
    let mut ro = bind("/mnt/ro", &volume);
    ro.readonly = true;
    config.mounts = vec![rro, ro];
    let id = run_container(&mut rt, &pod_id, &pod, config).await;

    // Under the recursive read-only bind, its sub-mount too: EROFS.
    for path in ["/mnt/rro/f", "/mnt/rro/sub/f"] {
        let (code, out) = sh(&mut rt, &id, &format!("touch {path}")).await;
        assert_ne!(code, 0, "{path}: {out}");
        assert!(out.contains("Read-only file system"), "{path}: {out}");
    }
    // A plain read-only bind leaves its sub-mounts as they are.
    let (code, out) = sh(&mut rt, &id, "touch /mnt/ro/sub/f && echo made").await;
    assert_eq!((code, out.as_str()), (0, "made"));
    assert!(volume.join("sub/f").exists());
    let (code, out) = sh(&mut rt, &id, "touch /mnt/ro/f").await;
    assert!(code != 0 && out.contains("Read-only file system"), "{out}");

    // Refused with a writable bind, naming the field.
    let mut writable = bind("/mnt/rro", &volume);
    writable.recursive_read_only = true;
    let mut config = container_config("rro-rw", &busybox, &["sleep", "600"]);
    config.mounts = vec![writable];
    let err = create_container(&mut rt, &pod_id, &pod, config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("mounts[0].recursive_read_only"),
        "{err:?}"
    );

    drop(tmpfs);
    remove_pod(&daemon, &mut rt, pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_mount_options_noexec_nodev_nosuid_apply() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let status = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    assert!(status.features.expect("features").mount_options);
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("mount-options", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    // The host's busybox: it runs in the busybox image, which has its libc.
    let volume = daemon.dir.path().join("bin-volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::copy("/bin/busybox", volume.join("busybox")).unwrap();
    let mut noexec = bind("/mnt/noexec", &volume);
    noexec.mount_options = vec!["noexec".into(), "nodev".into(), "nosuid".into()];
    let mut config = container_config("options", &busybox, &["sleep", "600"]);
    config.mounts = vec![noexec, bind("/mnt/exec", &volume)];
    let id = run_container(&mut rt, &pod_id, &pod, config).await;

    let (code, out) = sh(&mut rt, &id, "/mnt/noexec/busybox echo ran").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    let (code, out) = sh(&mut rt, &id, "/mnt/exec/busybox echo ran").await;
    assert_eq!((code, out.as_str()), (0, "ran"));
    // The bind's own flags, as the container's mount table shows them.
    let (code, out) = sh(
        &mut rt,
        &id,
        "while read -r _ _ _ _ at flags _; do [ \"$at\" = /mnt/noexec ] && echo \"$flags\"; done \
         < /proc/self/mountinfo; true",
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let flags: Vec<&str> = out.split(',').collect();
    for flag in ["noexec", "nodev", "nosuid"] {
        assert!(flags.contains(&flag), "{flag} not in {out}");
    }

    // Anything else: refused, naming the value.
    let mut exec_option = bind("/mnt/x", &volume);
    exec_option.mount_options = vec!["exec".into()];
    let mut config = container_config("bad-option", &busybox, &["sleep", "600"]);
    config.mounts = vec![exec_option];
    let err = create_container(&mut rt, &pod_id, &pod, config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("mounts[0].mount_options: \"exec\""),
        "{err:?}"
    );

    remove_pod(&daemon, &mut rt, pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_container_sends_the_containers_stop_signal() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("stop-signal", &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let volume = daemon.dir.path().join("signals");
    std::fs::create_dir(&volume).unwrap();

    // The trap runs once the foreground sleep ends: within a second.
    let script = "trap 'echo got-usr1 > /out/seen; exit 0' USR1; \
                  trap 'echo got-term > /out/seen; exit 3' TERM; \
                  while true; do sleep 1; done";
    let mut config = container_config("usr1", &busybox, &["sh", "-c", script]);
    config.stop_signal = cri::Signal::Sigusr1 as i32;
    config.mounts.push(bind("/out", &volume));
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    assert_eq!(
        container_status(&mut rt, &id).await.stop_signal,
        cri::Signal::Sigusr1 as i32
    );
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 20,
    })
    .await
    .expect("StopContainer");
    let status = container_status(&mut rt, &id).await;
    assert_eq!(
        std::fs::read_to_string(volume.join("seen")).unwrap(),
        "got-usr1\n"
    );
    // The trap's own exit, not a SIGKILL after the grace period.
    assert_eq!(status.exit_code, 0);
    assert_eq!(status.stop_signal, cri::Signal::Sigusr1 as i32);

    // Without one: the image names none, so SIGTERM, reported as such.
    let config = container_config("default", &busybox, &["sleep", "600"]);
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    assert_eq!(
        container_status(&mut rt, &id).await.stop_signal,
        cri::Signal::Sigterm as i32
    );

    // A value that is no Signal: refused, naming the field.
    let mut config = container_config("bad-signal", &busybox, &["sleep", "600"]);
    config.stop_signal = 66;
    let err = create_container(&mut rt, &pod_id, &pod, config)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("config.stop_signal"), "{err:?}");

    remove_pod(&daemon, &mut rt, pod_id).await;
}
