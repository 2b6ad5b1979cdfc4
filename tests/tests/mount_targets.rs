//! Mount targets behind the image's symlinks (issue 9, item 1): an image whose
//! `/etc/localtime`, `/etc/resolv.conf`, `/data` and `/opt/app/logs` are
//! symlinks to missing targets (absolute, relative, climbing above `/`) gets
//! its mounts where runc puts them: on the targets, resolved and made inside
//! the rootfs, never on the host.

use std::path::{Path, PathBuf};

use crius_proto::cri;
use crius_tests::cri::{
    container_config, exec, pod_config, pull, run_container, run_pod, stop_and_remove_pod,
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

/// The container's rootfs on the host, from its verbose status.
async fn rootfs(rt: &mut crius_tests::cri::Runtime, id: &str) -> PathBuf {
    let info = rt
        .container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: true,
        })
        .await
        .expect("ContainerStatus")
        .into_inner()
        .info;
    let info: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    PathBuf::from(info["rootfs"].as_str().expect("rootfs in the verbose info"))
}

#[tokio::test(flavor = "multi_thread")]
async fn mounts_land_on_symlink_targets_made_inside_the_rootfs() {
    if !require_root() {
        return;
    }
    // Where the mounts would land if a symlink led them out of the rootfs.
    let escapes = [
        "/usr/share/zoneinfo/Nowhere",
        "/run/systemd/resolve/stub-resolv.conf",
        "/missing",
        "/crius-app-logs",
    ];
    let absent: Vec<&str> = escapes
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();

    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let image = TestRegistry::shared().image("crius/symlinks:latest");
    pull(&mut daemon.images().await, &image).await;
    let mut pod = pod_config("symlinks", &daemon.dir.path().join("logs"));
    pod.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.9.8.7".into()],
        ..Default::default()
    });
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");

    let localtime = daemon.dir.path().join("localtime");
    std::fs::write(&localtime, "TZif host zone\n").unwrap();
    let data = daemon.dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("f"), "host data\n").unwrap();
    let logs = daemon.dir.path().join("logs-volume");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("g"), "host logs\n").unwrap();
    let bind = |container_path: &str, host: &Path, readonly: bool| cri::Mount {
        container_path: container_path.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    };
    let mut config = container_config("symlinks", &image, &["sleep", "600"]);
    config.mounts = vec![
        bind("/etc/localtime", &localtime, true),
        bind("/data", &data, false),
        bind("/opt/app/logs", &logs, false),
    ];
    let id = run_container(&mut rt, &pod_id, &pod, config).await;

    // Seen through the image's symlinks, which stay as they are.
    assert_eq!(
        sh(&mut rt, &id, "cat /etc/localtime /data/f /opt/app/logs/g").await,
        "TZif host zone\nhost data\nhost logs"
    );
    assert_eq!(
        // BusyBox's readlink takes one file.
        sh(
            &mut rt,
            &id,
            "for l in /etc/localtime /data /opt/app/logs; do readlink $l; done"
        )
        .await,
        "/usr/share/zoneinfo/Nowhere\n/missing\n../../../../../../crius-app-logs"
    );
    assert!(
        sh(&mut rt, &id, "cat /etc/resolv.conf")
            .await
            .contains("nameserver 10.9.8.7"),
        "the pod's resolv.conf through ../run/systemd/resolve/stub-resolv.conf"
    );
    // Mounted on the resolved targets; the read-only one read-only.
    let mounts = sh(&mut rt, &id, "cat /proc/mounts").await;
    let options = |target: &str| {
        mounts
            .lines()
            .find_map(|l| {
                let fields: Vec<&str> = l.split(' ').collect();
                (fields[1] == target).then(|| fields[3].to_string())
            })
            .unwrap_or_else(|| panic!("no mount at {target} in\n{mounts}"))
    };
    assert!(options("/usr/share/zoneinfo/Nowhere").starts_with("ro,"));
    assert!(options("/missing").starts_with("rw,"));
    assert!(options("/crius-app-logs").starts_with("rw,"));
    options("/run/systemd/resolve/stub-resolv.conf");
    sh(&mut rt, &id, "echo written > /data/new").await;
    assert_eq!(
        std::fs::read_to_string(data.join("new")).unwrap(),
        "written\n"
    );

    // The mount points were made in the rootfs (a file for a file's bind) ...
    let rootfs = rootfs(&mut rt, &id).await;
    assert!(rootfs.join("usr/share/zoneinfo/Nowhere").is_file());
    assert!(rootfs
        .join("run/systemd/resolve/stub-resolv.conf")
        .is_file());
    assert!(rootfs.join("missing").is_dir());
    assert!(rootfs.join("crius-app-logs").is_dir());
    // ... and nothing outside it.
    for path in &absent {
        assert!(!Path::new(path).exists(), "{path} was made on the host");
    }

    stop_and_remove_pod(&mut rt, &pod_id).await;
    for path in &absent {
        assert!(!Path::new(path).exists(), "{path} was made on the host");
    }
}
