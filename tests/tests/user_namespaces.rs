//! User namespaces for pods (KEP-127, issue 11) against a real criusd,
//! checked from inside the containers: a POD-mode pod's containers see its
//! ID map, the image's files and a hostPath volume's keep their on-disk
//! owners inside (idmapped mounts), a shared-PID pod's pause process runs in the pod's user
//! namespace, NODE mode keeps the host's map, the refused modes and maps
//! are InvalidArgument, and nothing is left after removal.

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_info, exec, pod_config, pull, run_container, run_pod,
    with_pid_mode, with_userns, Runtime,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{mounts_under, require_root, Daemon};

/// Host IDs no user of this host has: container ID n is host ID HOST_ID + n.
const HOST_ID: u32 = 200000;
const LENGTH: u32 = 65536;

/// The output of `cmd` run in container `id` (it must succeed).
async fn output(rt: &mut Runtime, id: &str, cmd: &[&str]) -> String {
    let reply = exec(rt, id, cmd, 10).await.expect("ExecSync");
    assert_eq!(reply.exit_code, 0, "{cmd:?}: {reply:?}");
    String::from_utf8_lossy(&reply.stdout).to_string()
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// Stops and removes the pod, then checks that nothing of it is left (its
/// pinned user namespace among the mounts).
async fn remove_pod(daemon: &Daemon, rt: &mut Runtime, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: id.into(),
    })
    .await
    .expect("RemovePodSandbox");
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_user_namespace_maps_the_containers_ids() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    // A volume holding a file of uid 5, gid 7 on disk.
    let volume = daemon.dir.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("owned"), "x").unwrap();
    std::os::unix::fs::chown(volume.join("owned"), Some(5), Some(7)).unwrap();

    // Each container with a PID namespace of its own, as kubelet's default.
    let pod = with_userns(
        with_pid_mode(
            pod_config("userns", &daemon.dir.path().join("logs")),
            cri::NamespaceMode::Container,
        ),
        cri::NamespaceMode::Pod,
        HOST_ID,
        LENGTH,
    );
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let mut config = container_config("web", &busybox, &["sleep", "600"]);
    config.mounts = vec![cri::Mount {
        container_path: "/volume".into(),
        host_path: volume.display().to_string(),
        ..Default::default()
    }];
    let web = run_container(&mut rt, &pod_id, &pod, config).await;

    let uid_map = output(&mut rt, &web, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(words(&uid_map), ["0", "200000", "65536"], "{uid_map}");
    let gid_map = output(&mut rt, &web, &["cat", "/proc/self/gid_map"]).await;
    assert_eq!(words(&gid_map), ["0", "200000", "65536"], "{gid_map}");
    // Root inside; its own PID namespace, made in the user namespace.
    let own = output(&mut rt, &web, &["cat", "/proc/self/status"]).await;
    assert!(own.contains("Uid:\t0\t0\t0\t0"), "{own}");
    let init = output(&mut rt, &web, &["cat", "/proc/1/comm"]).await;
    assert_eq!(init.trim(), "sleep");
    // The image's files are root's inside (not the overflow uid 65534) and
    // root may write its rootfs.
    let owner = output(
        &mut rt,
        &web,
        &["stat", "-c", "%u:%g", "/bin/busybox", "/etc"],
    )
    .await;
    assert_eq!(words(&owner), ["0:0", "0:0"], "{owner}");
    output(&mut rt, &web, &["touch", "/etc/written"]).await;
    // The volume is idmapped too: its file keeps its on-disk owner inside,
    // and what the container's root writes there is on-disk root's.
    let owner = output(&mut rt, &web, &["stat", "-c", "%u:%g", "/volume/owned"]).await;
    assert_eq!(words(&owner), ["5:7"], "{owner}");
    output(&mut rt, &web, &["touch", "/volume/new"]).await;
    let new = std::fs::metadata(volume.join("new")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((new.uid(), new.gid()), (0, 0));
    // The container's process is host uid 200000 and sits in the pinned
    // user namespace, which owns its network namespace.
    let info = container_info(&mut rt, &web).await;
    let pid = info["pid"].as_u64().expect("the container's pid");
    let host_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(host_status.contains("Uid:\t200000\t"), "{host_status}");
    let pin = daemon.state.join("pods").join(&pod_id).join("ns/user");
    let ino = |p: &std::path::Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(std::path::Path::new(&format!("/proc/{pid}/ns/user"))),
        ino(&pin)
    );
    // CNI ADD ran in the pod's network namespace inside the user namespace.
    let ip = output(&mut rt, &web, &["ip", "-4", "-o", "addr", "show", "eth0"]).await;
    assert!(ip.contains("inet "), "{ip}");

    // An exec joins the user namespace too, as the container's user with its
    // groups and capabilities (libcontainer's tenant left the namespace out).
    let mut config = container_config("user", &busybox, &["sleep", "600"]);
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            run_as_group: Some(cri::Int64Value { value: 3000 }),
            supplemental_groups: vec![4000],
            ..Default::default()
        }),
        ..Default::default()
    });
    let user = run_container(&mut rt, &pod_id, &pod, config).await;
    let ids = output(&mut rt, &user, &["id"]).await;
    assert!(ids.starts_with("uid=1000 gid=3000 groups="), "{ids}");
    assert!(ids.contains("4000"), "{ids}");
    let fields = |status: &str, names: &[&str]| -> Vec<String> {
        (status.lines())
            .filter(|l| names.iter().any(|n| l.starts_with(&format!("{n}:"))))
            .map(str::to_owned)
            .collect()
    };
    let caps = [
        "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "Uid", "Gid", "Groups",
    ];
    let exec_status = output(&mut rt, &user, &["cat", "/proc/self/status"]).await;
    let init_status = output(&mut rt, &user, &["cat", "/proc/1/status"]).await;
    assert_eq!(fields(&exec_status, &caps), fields(&init_status, &caps));
    let exec_map = output(&mut rt, &user, &["cat", "/proc/self/uid_map"]).await;
    assert_eq!(words(&exec_map), ["0", "200000", "65536"], "{exec_map}");
    // A file the exec makes in the rootfs is the mapped user's on disk too.
    output(&mut rt, &user, &["touch", "/tmp/by-exec"]).await;
    let made = output(&mut rt, &user, &["stat", "-c", "%u:%g", "/tmp/by-exec"]).await;
    assert_eq!(words(&made), ["1000:3000"], "{made}");

    remove_pod(&daemon, &mut rt, &pod_id).await;
    assert!(mounts_under(&daemon.state).is_empty());
}

/// A shared-PID pod's pause process makes the pod's PID namespace inside
/// the pod's user namespace, so its containers may join it.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_pid_pod_with_a_user_namespace_runs() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = with_userns(
        with_pid_mode(
            pod_config("shared", &daemon.dir.path().join("logs")),
            cri::NamespaceMode::Pod,
        ),
        cri::NamespaceMode::Pod,
        HOST_ID,
        LENGTH,
    );
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let web = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("web", &busybox, &["sleep", "600"]),
    )
    .await;
    let ps = output(&mut rt, &web, &["ps", "-o", "pid,user,comm"]).await;
    let pid1 = ps
        .lines()
        .find(|l| l.split_whitespace().next() == Some("1"));
    assert_eq!(
        pid1.map(words),
        Some(vec!["1".into(), "65535".into(), "pause".into()]),
        "{ps}"
    );
    remove_pod(&daemon, &mut rt, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_mode_keeps_the_hosts_id_map() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = with_userns(
        pod_config("node", &daemon.dir.path().join("logs")),
        cri::NamespaceMode::Node,
        0,
        0,
    );
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let web = run_container(
        &mut rt,
        &pod_id,
        &pod,
        container_config("web", &busybox, &["sleep", "600"]),
    )
    .await;
    // Status offers user namespaces on the default handler (this kernel
    // idmaps overlayfs layers), not with the host network.
    let status = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let default = &status.runtime_handlers[0];
    assert_eq!(default.name, "");
    assert!(
        default.features.as_ref().unwrap().user_namespaces,
        "{status:?}"
    );
    assert!(
        !status
            .features
            .as_ref()
            .unwrap()
            .user_namespaces_host_network
    );
    let uid_map = output(&mut rt, &web, &["cat", "/proc/self/uid_map"]).await;
    let host = std::fs::read_to_string("/proc/self/uid_map").unwrap();
    assert_eq!(words(&uid_map), words(&host));
    assert!(!daemon
        .state
        .join("pods")
        .join(&pod_id)
        .join("ns/user")
        .exists());
    remove_pod(&daemon, &mut rt, &pod_id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_modes_and_maps_are_invalid_argument_and_leave_nothing() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_networked();
    let mut rt = daemon.runtime().await;
    let logs = daemon.dir.path().join("logs");
    let pod = |mode| with_userns(pod_config("refused", &logs), mode, HOST_ID, LENGTH);
    let two_maps = {
        let mut p = pod(cri::NamespaceMode::Pod);
        let u = (p.linux.as_mut().unwrap().security_context.as_mut().unwrap())
            .namespace_options
            .as_mut()
            .unwrap()
            .userns_options
            .as_mut()
            .unwrap();
        u.uids.push(cri::IdMapping {
            container_id: 0,
            host_id: 2000,
            length: 10,
        });
        p
    };
    let zero_unmapped = {
        let mut p = pod(cri::NamespaceMode::Pod);
        let u = (p.linux.as_mut().unwrap().security_context.as_mut().unwrap())
            .namespace_options
            .as_mut()
            .unwrap()
            .userns_options
            .as_mut()
            .unwrap();
        u.uids[0].container_id = 1;
        u.gids[0].container_id = 1;
        p
    };
    let host_network = {
        let mut p = pod(cri::NamespaceMode::Pod);
        let ns = (p.linux.as_mut().unwrap().security_context.as_mut().unwrap())
            .namespace_options
            .as_mut()
            .unwrap();
        ns.network = cri::NamespaceMode::Node as i32;
        p
    };
    for (config, field) in [
        (host_network, "namespace_options.network"),
        (two_maps, "userns_options.uids"),
        (zero_unmapped, "userns_options.uids"),
        (pod(cri::NamespaceMode::Container), "userns_options.mode"),
        (pod(cri::NamespaceMode::Target), "userns_options.mode"),
    ] {
        let status = run_pod(&mut rt, &config).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
