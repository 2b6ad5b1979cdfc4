//! Root only: runc, the reference OCI runtime, creates and runs containers from
//! specs built here, so that anything a runtime would reject shows up as a
//! failing test rather than a failing CreateContainer.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_cri::v1::{
    ContainerConfig, LinuxContainerSecurityContext, Mount as CriMount, NamespaceMode,
    NamespaceOption,
};

use super::tests::{container_config, pod_config, GROUP, PASSWD};
use super::*;

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";
const CGROUP_PARENT: &str = "crius-spec-test";

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root");
    }
    if !Path::new(RUNC).exists() {
        return Some("needs /usr/sbin/runc");
    }
    if !Path::new(BUSYBOX).exists() {
        return Some("needs /bin/busybox");
    }
    None
}

/// A rootfs with the host's dynamic busybox, the libraries `ldd` names for it,
/// and the user database the other tests use.
fn busybox_rootfs(rootfs: &Path) {
    let copy_in = |host_path: &Path| {
        let dest = rootfs.join(host_path.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(host_path, &dest).unwrap();
    };
    copy_in(Path::new(BUSYBOX));
    let ldd = Command::new("ldd").arg(BUSYBOX).output().unwrap();
    assert!(ldd.status.success(), "ldd {BUSYBOX} failed");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let library = match line.split_once("=>") {
            Some((_, after)) => after.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(lib) = library.filter(|l| l.starts_with('/')) {
            copy_in(Path::new(lib));
        }
    }
    for dir in ["etc", "home"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    // Applets as hard links, as in the test images.
    for applet in ["sh", "id", "hostname", "cat", "touch", "grep", "pwd"] {
        std::fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
}

/// What the test created outside its tempdir, undone on drop: the container,
/// the namespace-pinning process and the cgroup parent.
struct Cleanup {
    runc_root: PathBuf,
    id: String,
    pinner: Child,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = runc(&self.runc_root, &["delete", "--force", &self.id]);
        let _ = self.pinner.kill();
        let _ = self.pinner.wait();
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                let _ = std::fs::remove_dir(h.path().join(CGROUP_PARENT));
            }
        }
    }
}

fn runc(root: &Path, args: &[&str]) -> std::io::Result<std::process::Output> {
    Command::new(RUNC)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
}

/// A process holding fresh network, IPC and UTS namespaces, as the pod's
/// pinned ones would be.
fn pin_namespaces() -> (Child, SandboxNamespaces) {
    let child = Command::new("unshare")
        .args(["--net", "--ipc", "--uts", "--", "sleep", "60"])
        .spawn()
        .unwrap();
    let ns = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", child.id()));
    let own_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(ns("net")).ok().as_ref() == Some(&own_net)
        || std::fs::read_link(ns("net")).is_err()
    {
        assert!(
            Instant::now() < deadline,
            "unshare did not enter its namespaces"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let namespaces = SandboxNamespaces {
        network: Some(ns("net")),
        ipc: Some(ns("ipc")),
        uts: Some(ns("uts")),
        pid: None,
    };
    (child, namespaces)
}

/// Builds the spec for `config`, runs it to completion under runc and returns
/// what the container wrote to /out/result.
fn run_under_runc(name: &str, mut config: ContainerConfig, privileged_pod: bool) -> String {
    let bundle = tempfile::tempdir().unwrap();
    let rootfs = bundle.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let out = bundle.path().join("out");
    let pod_dir = bundle.path().join("pod");
    for d in [&out, &pod_dir, &pod_dir.join("shm")] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    std::fs::write(pod_dir.join("hosts"), "127.0.0.1 localhost web-pod\n").unwrap();
    std::fs::write(pod_dir.join("resolv.conf"), "nameserver 127.0.0.53\n").unwrap();
    std::fs::write(pod_dir.join("hostname"), "web-pod\n").unwrap();
    config.mounts.push(CriMount {
        container_path: "/out".into(),
        host_path: out.display().to_string(),
        ..Default::default()
    });

    let id = format!("crius-spec-{name}-{}", std::process::id());
    let runc_root = bundle.path().join("runc-state");
    let (pinner, namespaces) = pin_namespaces();
    let _cleanup = Cleanup {
        runc_root: runc_root.clone(),
        id: id.clone(),
        pinner,
    };

    let image = ImageConfigView {
        user: "1000".into(),
        entrypoint: vec![BUSYBOX.into(), "sh".into(), "-c".into()],
        working_dir: "/home".into(),
        ..Default::default()
    };
    let sandbox = pod_config(privileged_pod);
    let host = HostCapabilities::detect().unwrap();
    let spec = container_spec(&ContainerSpecInput {
        container_id: &id,
        sandbox_id: "p1",
        image_name: "busybox",
        config: &config,
        sandbox: &sandbox,
        image: &image,
        rootfs: &rootfs,
        namespaces: &namespaces,
        target_pid_namespace: None,
        cgroups_path: format!("/{CGROUP_PARENT}/{id}"),
        hostname: "web-pod",
        resolv_conf: Some(&pod_dir.join("resolv.conf")),
        hosts_file: Some(&pod_dir.join("hosts")),
        hostname_file: Some(&pod_dir.join("hostname")),
        shm_path: Some(&pod_dir.join("shm")),
        host: &host,
    })
    .unwrap();
    spec.save(bundle.path().join("config.json")).unwrap();

    // The container inherits runc's stdio: files, so nothing waits on a pipe
    // the container holds open.
    let log = bundle.path().join("runc.log");
    let status = Command::new(RUNC)
        .arg("--root")
        .arg(&runc_root)
        .args(["create", "--bundle"])
        .arg(bundle.path())
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(File::create(&log).unwrap())
        .stderr(File::create(&log).unwrap())
        .status()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "runc create refused the spec: {}",
        log_text()
    );
    let start = runc(&runc_root, &["start", &id]).unwrap();
    assert!(
        start.status.success(),
        "runc start: {}",
        String::from_utf8_lossy(&start.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = runc(&runc_root, &["state", &id]).unwrap();
        let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap_or_default();
        if state["status"] == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "container did not stop: {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(out.join("result")).unwrap_or_else(|e| {
        panic!(
            "no result from the container ({e}); runc said: {}",
            log_text()
        )
    })
}

const PROBE: &str = "{ id; hostname; cat /proc/sys/kernel/shm_rmid_forced; \
    cat /proc/self/oom_score_adj; cat /etc/hosts; pwd; \
    touch /rootfs-write 2>/dev/null && echo rootfs-writable || echo rootfs-readonly; \
    cat /proc/kcore >/dev/null 2>&1 && echo kcore-readable || echo kcore-masked; \
    grep '^Seccomp:' /proc/self/status; \
    } > /out/result 2>&1";

#[test]
fn runc_runs_a_restricted_container() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping runc_runs_a_restricted_container: {why}");
        return;
    }
    let sc = LinuxContainerSecurityContext {
        readonly_rootfs: true,
        no_new_privs: true,
        seccomp: Some(k8s_cri::v1::SecurityProfile::default()),
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut config = container_config(sc);
    config.args = vec![PROBE.into()];
    let result = run_under_runc("plain", config, false);
    let lines: Vec<&str> = result.lines().collect();
    assert_eq!(
        lines[0],
        "uid=1000(default-user) gid=1000(default-user) groups=1000(default-user),50000(group-defined-in-image)",
        "{result}"
    );
    assert_eq!(lines[1], "web-pod", "{result}");
    assert_eq!(lines[2], "1", "pod sysctl applied: {result}");
    assert_eq!(lines[3], "100", "{result}");
    assert_eq!(lines[4], "127.0.0.1 localhost web-pod", "{result}");
    assert_eq!(lines[5], "/home", "{result}");
    assert_eq!(lines[6], "rootfs-readonly", "{result}");
    assert_eq!(lines[7], "kcore-masked", "{result}");
    assert_eq!(lines[8], "Seccomp:\t2", "runtime default filter: {result}");
}

#[test]
fn runc_runs_a_privileged_container() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping runc_runs_a_privileged_container: {why}");
        return;
    }
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        run_as_user: Some(k8s_cri::v1::Int64Value { value: 0 }),
        ..Default::default()
    };
    let mut config = container_config(sc);
    config.args = vec![
        "{ grep CapEff /proc/self/status; grep ' /sys ' /proc/self/mounts; \
           [ -c /dev/kmsg ] && echo has-kmsg || echo no-kmsg; } > /out/result 2>&1"
            .into(),
    ];
    let result = run_under_runc("privileged", config, true);
    let mut lines = result.lines();
    let own = HostCapabilities::detect().unwrap().own_capabilities;
    let cap_eff = lines.next().unwrap_or_default();
    assert!(
        cap_eff.ends_with(&format!("{own:016x}")),
        "all of the daemon's capabilities: {result}"
    );
    let sys = lines.next().unwrap_or_default();
    assert!(sys.contains(" rw,"), "/sys writable: {result}");
    let kmsg = if Path::new("/dev/kmsg").exists() {
        "has-kmsg"
    } else {
        "no-kmsg"
    };
    assert_eq!(lines.next(), Some(kmsg), "the host's devices: {result}");
}
