//! UpdateContainerResources against a real criusd (kubelet's in-place
//! resize, `crictl update`): the new limits land in the running container's
//! cgroup files and in ContainerStatus.resources, what an update leaves out
//! stays, a memory limit below the usage is refused naming the value with
//! the old limit kept, the record survives a daemon restart, and a container
//! on the runc handler is updated through `runc update`.

use std::path::PathBuf;

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_info, container_status, pod_config, pull, run_container, run_pod,
    stop_and_remove_pod, Runtime,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon, DaemonOptions};

const RUNC: &str = "/usr/sbin/runc";

/// The v1 cgroup dir of `controller` holding the container's init.
async fn cgroup_dir(rt: &mut Runtime, id: &str, controller: &str) -> PathBuf {
    let info = container_info(rt, id).await;
    let pid = info["pid"].as_u64().expect("the container's pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    // Lines are `<id>:<controllers>:<path>`.
    let path = (cgroups.lines())
        .filter_map(|l| l.split_once(':').and_then(|(_, rest)| rest.split_once(':')))
        .find(|(controllers, _)| controllers.split(',').any(|c| c == controller))
        .map(|(_, path)| path.trim_start_matches('/').to_owned())
        .unwrap_or_else(|| panic!("no {controller} cgroup in {cgroups}"));
    let mount = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| (p.file_name().unwrap().to_string_lossy().split(',')).any(|c| c == controller))
        .unwrap_or_else(|| panic!("no {controller} hierarchy"));
    mount.join(path)
}

fn read(dir: &std::path::Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_owned()
}

/// `crictl update <args> <id>`: its exit status and stderr.
fn crictl_update(daemon: &Daemon, args: &[&str], id: &str) -> (bool, String) {
    let output = daemon
        .crictl()
        .arg("update")
        .args(args)
        .arg(id)
        .output()
        .expect("crictl");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn applied(rt: &mut Runtime, id: &str) -> cri::LinuxContainerResources {
    let status = container_status(rt, id).await;
    status.resources.and_then(|r| r.linux).expect("resources")
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_changes_a_running_containers_limits_live() {
    if !require_root() {
        return;
    }
    let mut daemon = Daemon::start_with(DaemonOptions {
        config_toml: format!(
            "{}\n[runtimes.runc]\npath = \"{RUNC}\"\n",
            TestRegistry::shared().config_toml()
        ),
        network: true,
        ..Default::default()
    });
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let logs = daemon.dir.path().join("logs");
    let pod = pod_config("resize", &logs);
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let mut config = container_config("app", &busybox, &["sleep", "600"]);
    config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }),
        security_context: None,
    });
    let app = run_container(&mut rt, &pod_id, &pod, config).await;
    let memory = cgroup_dir(&mut rt, &app, "memory").await;
    let cpu = cgroup_dir(&mut rt, &app, "cpu").await;
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        (64 << 20).to_string()
    );

    // kubelet's resize: every field sent, two of them changed.
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: app.clone(),
        linux: Some(cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 150_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .expect("UpdateContainerResources");
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        (128 << 20).to_string()
    );
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "150000");
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    let now = applied(&mut rt, &app).await;
    assert_eq!(
        (
            now.memory_limit_in_bytes,
            now.cpu_quota,
            now.cpu_period,
            now.cpu_shares
        ),
        (128 << 20, 150_000, 100_000, 512)
    );

    // crictl's: only what it is given changes.
    let (ok, stderr) = crictl_update(&daemon, &["--cpu-share", "256"], &app);
    assert!(ok, "{stderr}");
    assert_eq!(read(&cpu, "cpu.shares"), "256");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "150000");
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        (128 << 20).to_string()
    );

    // Below what the container uses: refused naming the value; the limit
    // in force stays, in the cgroup and in the status.
    let (ok, stderr) = crictl_update(&daemon, &["--memory", "4096"], &app);
    assert!(!ok);
    assert!(stderr.contains("4096"), "{stderr}");
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        (128 << 20).to_string()
    );
    assert_eq!(
        applied(&mut rt, &app).await.memory_limit_in_bytes,
        128 << 20
    );

    // What is in force survives a restart of the daemon.
    daemon.restart();
    let mut rt = daemon.runtime().await;
    let kept = applied(&mut rt, &app).await;
    assert_eq!((kept.cpu_shares, kept.cpu_quota), (256, 150_000));

    // A container on the runc handler is updated by `runc update`.
    let mut request = cri::RunPodSandboxRequest {
        config: Some(pod_config("resize-runc", &logs)),
        runtime_handler: "runc".into(),
    };
    let runc_pod_id = rt
        .run_pod_sandbox(request.clone())
        .await
        .expect("RunPodSandbox on runc")
        .into_inner()
        .pod_sandbox_id;
    let runc_pod = request.config.take().unwrap();
    let on_runc = run_container(
        &mut rt,
        &runc_pod_id,
        &runc_pod,
        container_config("app", &busybox, &["sleep", "600"]),
    )
    .await;
    let (ok, stderr) = crictl_update(&daemon, &["--memory", "100000000"], &on_runc);
    assert!(ok, "{stderr}");
    let memory = cgroup_dir(&mut rt, &on_runc, "memory").await;
    assert_eq!(read(&memory, "memory.limit_in_bytes"), "99999744");
    assert_eq!(
        applied(&mut rt, &on_runc).await.memory_limit_in_bytes,
        100_000_000
    );

    stop_and_remove_pod(&mut rt, &runc_pod_id).await;
    stop_and_remove_pod(&mut rt, &pod_id).await;
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
