//! Root only: containers built from these specs run under runc (the reference
//! OCI runtime) and under libcontainer through crius-runtime (the runtime
//! crius uses), so that anything a runtime would reject or get wrong shows up
//! here rather than as a failing CreateContainer.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crius_proto::cri::{
    ContainerConfig, Int64Value, LinuxContainerSecurityContext, Mount as CriMount,
    MountPropagation, NamespaceMode, NamespaceOption, SecurityProfile,
};

use super::tests::{container_config, pod_config, GROUP, PASSWD};
use super::*;

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/bin/busybox";

/// How the parent hands a bundle to [`libcontainer_child`].
const CHILD_BUNDLE_ENV: &str = "CRIUS_SPEC_TEST_BUNDLE";
const CHILD_ID_ENV: &str = "CRIUS_SPEC_TEST_ID";

/// The pod a test container belongs to.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pod {
    /// Its own network, IPC and UTS namespaces.
    Own,
    /// The same, privileged.
    Privileged,
    /// The host's network, IPC and UTS namespaces, and a PID namespace shared
    /// by the pod.
    HostWithSharedPid,
}

#[derive(Debug, Clone, Copy)]
enum Runner {
    Runc,
    Libcontainer,
}

fn skip_reason(runner: Runner) -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root");
    }
    if !Path::new(BUSYBOX).exists() {
        return Some("needs /bin/busybox");
    }
    if matches!(runner, Runner::Runc) && !Path::new(RUNC).exists() {
        return Some("needs /usr/sbin/runc");
    }
    None
}

/// A rootfs with the host's dynamic busybox, the libraries `ldd` names for it,
/// applets as hard links (as in the test images), and the user database the
/// other tests use.
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
    for applet in [
        "sh", "id", "hostname", "cat", "touch", "grep", "pwd", "sleep", "mkdir", "mount",
    ] {
        std::fs::hard_link(rootfs.join("bin/busybox"), rootfs.join("bin").join(applet)).unwrap();
    }
    for dir in ["etc", "home"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    std::fs::write(rootfs.join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(rootfs.join("etc/group"), GROUP).unwrap();
}

/// A process holding fresh network, IPC and UTS namespaces, the pod's
/// hostname set in the latter, as the pod's pinned ones would be (libcontainer
/// sets `hostname` only in a UTS namespace it creates itself).
fn pin_namespaces() -> (Child, SandboxNamespaces) {
    let child = Command::new("unshare")
        .args(["--net", "--ipc", "--uts", "--", BUSYBOX, "sh", "-c"])
        .arg(format!("{BUSYBOX} hostname web-pod && exec sleep 120"))
        .spawn()
        .unwrap();
    let ns = |kind: &str| PathBuf::from(format!("/proc/{}/ns/{kind}", child.id()));
    // Once the process is `sleep`, the namespaces and the hostname are set.
    let comm = format!("/proc/{}/comm", child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "sleep") {
        assert!(
            Instant::now() < deadline,
            "the namespace pinner did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let namespaces = SandboxNamespaces {
        network: Some(ns("net")),
        ipc: Some(ns("ipc")),
        uts: Some(ns("uts")),
        pid: None,
        user: None,
    };
    (child, namespaces)
}

/// An OCI bundle built by [`container_spec`] from a CRI config; the container
/// writes what it sees to `out/result`. Dropping it ends the pinning process.
struct Bundle {
    dir: tempfile::TempDir,
    id: String,
    out: PathBuf,
    pinner: Child,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = self.pinner.kill();
        let _ = self.pinner.wait();
    }
}

/// A process holding a fresh PID namespace as its init, as a pod's shared
/// PID namespace would be held.
fn pin_pid_namespace() -> (Child, SandboxNamespaces) {
    let child = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--", "sleep", "120"])
        .spawn()
        .unwrap();
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    let init = loop {
        let init = std::fs::read_to_string(&children).unwrap_or_default();
        let comm = format!("/proc/{}/comm", init.trim());
        if !init.trim().is_empty()
            && std::fs::read_to_string(&comm).is_ok_and(|c| c.trim() == "sleep")
        {
            break init.trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the PID namespace pinner did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let namespaces = SandboxNamespaces {
        pid: Some(PathBuf::from(format!("/proc/{init}/ns/pid"))),
        user: None,
        ..Default::default()
    };
    (child, namespaces)
}

fn bundle(name: &str, runner: Runner, mut config: ContainerConfig, pod: Pod) -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let rootfs = dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let out = dir.path().join("out");
    let pod_dir = dir.path().join("pod");
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

    let id = format!("crius-spec-{name}-{runner:?}-{}", std::process::id()).to_lowercase();
    let (pinner, namespaces) = match pod {
        Pod::Own | Pod::Privileged => pin_namespaces(),
        Pod::HostWithSharedPid => pin_pid_namespace(),
    };
    let image = ImageConfigView {
        user: "1000".into(),
        entrypoint: vec![BUSYBOX.into(), "sh".into(), "-c".into()],
        working_dir: "/home".into(),
        ..Default::default()
    };
    let mut sandbox = pod_config(pod == Pod::Privileged);
    if pod == Pod::HostWithSharedPid {
        // The fixture's IPC sysctl would reach the host's IPC namespace.
        sandbox.linux.as_mut().unwrap().sysctls.clear();
    }
    let host = host_capabilities();
    let spec = container_spec(&ContainerSpecInput {
        container_id: &id,
        sandbox_id: "p1",
        image_name: "busybox",
        config: &config,
        sandbox: &sandbox,
        image: &image,
        rootfs: &rootfs,
        namespaces: &namespaces,
        user_mappings: None,
        target_pid_namespace: None,
        // One level, removed with the container.
        cgroups_path: format!("/{id}"),
        hostname: "web-pod",
        resolv_conf: Some(&pod_dir.join("resolv.conf")),
        hosts_file: Some(&pod_dir.join("hosts")),
        hostname_file: Some(&pod_dir.join("hostname")),
        shm_path: Some(&pod_dir.join("shm")),
        host: &host,
        protected_host_dirs: &[],
        image_volumes: &Default::default(),
    })
    .unwrap();
    spec.save(dir.path().join("config.json")).unwrap();
    Bundle {
        dir,
        id,
        out,
        pinner,
    }
}

/// Runs the bundle to completion and returns what the container wrote.
fn run(runner: Runner, b: &Bundle) -> String {
    match runner {
        Runner::Runc => run_runc(b),
        Runner::Libcontainer => run_libcontainer(b),
    }
    std::fs::read_to_string(b.out.join("result"))
        .unwrap_or_else(|e| panic!("{runner:?}: no result from the container: {e}"))
}

fn runc(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(RUNC)
        .arg("--root")
        .arg(root)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn run_runc(b: &Bundle) {
    let root = b.dir.path().join("runc-state");
    struct Delete<'a>(&'a Path, &'a str);
    impl Drop for Delete<'_> {
        fn drop(&mut self) {
            runc(self.0, &["delete", "--force", self.1]);
        }
    }
    let _delete = Delete(&root, &b.id);
    // The container inherits runc's stdio: a file, so that nothing waits on a
    // pipe the container holds open.
    let log = b.dir.path().join("runc.log");
    let status = Command::new(RUNC)
        .arg("--root")
        .arg(&root)
        .args(["create", "--bundle"])
        .arg(b.dir.path())
        .arg(&b.id)
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
    let start = runc(&root, &["start", &b.id]);
    assert!(
        start.status.success(),
        "runc start: {}",
        String::from_utf8_lossy(&start.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = runc(&root, &["state", &b.id]);
        let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap_or_default();
        if state["status"] == "stopped" {
            return;
        }
        assert!(Instant::now() < deadline, "container did not stop: {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// libcontainer must be driven from a single-threaded process, which a test
/// binary running tests in parallel is not: this binary is run again with
/// only [`libcontainer_child`].
fn run_libcontainer(b: &Bundle) {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "spec::runtime_tests::libcontainer_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_BUNDLE_ENV, b.dir.path())
        .env(CHILD_ID_ENV, &b.id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "libcontainer run failed:\n{}\n{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
}

/// The child half of [`run_libcontainer`]; does nothing unless given a bundle.
#[test]
fn libcontainer_child() {
    let (Ok(bundle), Ok(id)) = (std::env::var(CHILD_BUNDLE_ENV), std::env::var(CHILD_ID_ENV))
    else {
        return;
    };
    let bundle = PathBuf::from(bundle);
    let runtime = crius_runtime::Runtime::new(bundle.join("libcontainer-state"));
    let pid = runtime
        .create(&id, &bundle, crius_runtime::Stdio::null())
        .unwrap_or_else(|e| panic!("libcontainer create refused the spec: {}", chain(&e)));
    let started = runtime.start(&id);
    let status = started.as_ref().ok().map(|_| loop {
        match nix::sys::wait::waitpid(pid, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    });
    let deleted = runtime.delete(&id, true);
    started.unwrap_or_else(|e| panic!("libcontainer start: {}", chain(&e)));
    deleted.unwrap_or_else(|e| panic!("libcontainer delete: {}", chain(&e)));
    assert_eq!(
        status.unwrap().unwrap(),
        nix::sys::wait::WaitStatus::Exited(pid, 0),
        "the container's process failed"
    );
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

const PROBE: &str = "{ id; hostname; cat /proc/sys/kernel/shm_rmid_forced; \
    cat /proc/self/oom_score_adj; cat /etc/hosts; pwd; \
    touch /rootfs-write 2>/dev/null && echo rootfs-writable || echo rootfs-readonly; \
    cat /proc/kcore >/dev/null 2>&1 && echo kcore-readable || echo kcore-masked; \
    grep '^Seccomp:' /proc/self/status; \
    } > /out/result 2>&1";

fn restricted_container(runner: Runner) {
    if let Some(why) = skip_reason(runner) {
        eprintln!("skipping the restricted container under {runner:?}: {why}");
        return;
    }
    let sc = LinuxContainerSecurityContext {
        readonly_rootfs: true,
        no_new_privs: true,
        seccomp: Some(SecurityProfile::default()),
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Container as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut config = container_config(sc);
    config.args = vec![PROBE.into()];
    let b = bundle("plain", runner, config, Pod::Own);
    let result = run(runner, &b);
    let lines: Vec<&str> = result.lines().collect();
    let expected = [
        "uid=1000(default-user) gid=1000(default-user) groups=1000(default-user),50000(group-defined-in-image)",
        "web-pod",
        "1", // the pod's sysctl
        "100",
        "127.0.0.1 localhost web-pod",
        "/home",
        "rootfs-readonly",
        "kcore-masked",
        "Seccomp:\t2", // the runtime default filter
    ];
    assert_eq!(lines, expected, "{runner:?}");
}

fn privileged_container(runner: Runner) {
    if let Some(why) = skip_reason(runner) {
        eprintln!("skipping the privileged container under {runner:?}: {why}");
        return;
    }
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        run_as_user: Some(Int64Value { value: 0 }),
        ..Default::default()
    };
    let mut config = container_config(sc);
    config.args = vec![
        "{ grep CapEff /proc/self/status; grep ' /sys ' /proc/self/mounts; \
           [ -c /dev/kmsg ] && echo has-kmsg || echo no-kmsg; } > /out/result 2>&1"
            .into(),
    ];
    let b = bundle("privileged", runner, config, Pod::Privileged);
    let result = run(runner, &b);
    let mut lines = result.lines();
    let own = host_capabilities().own_capabilities;
    let cap_eff = lines.next().unwrap_or_default();
    assert!(
        cap_eff.ends_with(&format!("{own:016x}")),
        "{runner:?}: all of the daemon's capabilities: {result}"
    );
    let sys = lines.next().unwrap_or_default();
    assert!(sys.contains(" rw,"), "{runner:?}: /sys writable: {result}");
    let kmsg = if Path::new("/dev/kmsg").exists() {
        "has-kmsg"
    } else {
        "no-kmsg"
    };
    assert_eq!(
        lines.next(),
        Some(kmsg),
        "{runner:?}: the host's devices: {result}"
    );
}

/// Kubelet's most common case: the default filter without no_new_privs, which
/// the runtime must load while it still holds CAP_SYS_ADMIN.
fn default_seccomp_without_no_new_privs(runner: Runner) {
    if let Some(why) = skip_reason(runner) {
        eprintln!("skipping the seccomp container under {runner:?}: {why}");
        return;
    }
    let sc = LinuxContainerSecurityContext {
        seccomp: Some(SecurityProfile::default()),
        ..Default::default()
    };
    let mut config = container_config(sc);
    config.args =
        vec!["grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status > /out/result 2>&1".into()];
    let b = bundle("seccomp", runner, config, Pod::Own);
    let result = run(runner, &b);
    assert_eq!(result, "NoNewPrivs:\t0\nSeccomp:\t2\n", "{runner:?}");
}

#[test]
fn runc_loads_the_default_seccomp_filter() {
    default_seccomp_without_no_new_privs(Runner::Runc);
}

#[test]
fn libcontainer_loads_the_default_seccomp_filter() {
    default_seccomp_without_no_new_privs(Runner::Libcontainer);
}

/// A host directory made a mount point, shared or private, as the
/// mount-propagation tests of critest make it; unmounted (with what
/// propagated into it) on drop.
struct MountDir {
    dir: tempfile::TempDir,
}

impl MountDir {
    fn new(shared: bool) -> MountDir {
        use nix::mount::{mount, MsFlags};
        let dir = tempfile::tempdir().unwrap();
        let none: Option<&str> = None;
        mount(
            Some(dir.path()),
            dir.path(),
            none,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            none,
        )
        .unwrap();
        let kind = if shared {
            MsFlags::MS_SHARED
        } else {
            MsFlags::MS_PRIVATE
        };
        mount(none, dir.path(), none, kind | MsFlags::MS_REC, none).unwrap();
        MountDir { dir }
    }
}

impl Drop for MountDir {
    fn drop(&mut self) {
        use nix::mount::{umount2, MntFlags};
        for sub in ["from-host", "from-container"] {
            let _ = umount2(&self.dir.path().join(sub), MntFlags::MNT_DETACH);
        }
        let _ = umount2(self.dir.path(), MntFlags::MNT_DETACH);
    }
}

/// Mounts made on either side of a bind with `propagation` of a shared (or
/// private) host directory, after the container started: (seen inside, seen
/// on the host).
fn propagation(runner: Runner, propagation: MountPropagation, shared_source: bool) -> (bool, bool) {
    let source = MountDir::new(shared_source);
    let src = source.dir.path().to_path_buf();
    std::fs::create_dir(src.join("from-host")).unwrap();
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        run_as_user: Some(Int64Value { value: 0 }),
        ..Default::default()
    };
    let mut config = container_config(sc);
    config.mounts.push(CriMount {
        container_path: "/prop".into(),
        host_path: src.display().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    });
    config.args = vec![
        "touch /out/running; i=0; while [ ! -e /prop/from-host/flag ] && [ $i -lt 40 ]; do \
           sleep 0.05; i=$((i+1)); done; \
           [ -e /prop/from-host/flag ] && echo seen > /out/result || echo unseen > /out/result; \
           mkdir /prop/from-container && mount -t tmpfs tmpfs /prop/from-container \
           && touch /prop/from-container/flag"
            .into(),
    ];
    let name = format!("propagation-{}-{shared_source}", propagation as i32);
    let b = bundle(&name, runner, config, Pod::Privileged);
    // The host mounts once the container runs (so after its bind was made),
    // while the container waits for it.
    let host_side = {
        let target = src.join("from-host");
        let running = b.out.join("running");
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !running.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let none: Option<&str> = None;
            nix::mount::mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                none,
            )
            .unwrap();
            std::fs::write(target.join("flag"), "").unwrap();
        })
    };
    let result = run(runner, &b);
    host_side.join().unwrap();
    let seen_inside = result.trim() == "seen";
    let seen_on_host = src.join("from-container/flag").exists();
    (seen_inside, seen_on_host)
}

fn mount_propagation(runner: Runner) {
    if let Some(why) = skip_reason(runner) {
        eprintln!("skipping mount propagation under {runner:?}: {why}");
        return;
    }
    assert_eq!(
        propagation(runner, MountPropagation::PropagationBidirectional, true),
        (true, true),
        "{runner:?} rshared"
    );
    assert_eq!(
        propagation(runner, MountPropagation::PropagationHostToContainer, true),
        (true, false),
        "{runner:?} rslave"
    );
    assert_eq!(
        propagation(runner, MountPropagation::PropagationPrivate, false),
        (false, false),
        "{runner:?} rprivate of a private source"
    );
    // libcontainer 0.7 ignores a bind's own propagation option (its
    // open_tree/move_mount path never applies it), so a private bind of a
    // shared source still receives the host's mounts; runc makes it private.
    if matches!(runner, Runner::Runc) {
        assert_eq!(
            propagation(runner, MountPropagation::PropagationPrivate, true),
            (false, false),
            "{runner:?} rprivate of a shared source"
        );
    }
}

#[test]
fn runc_propagates_mounts_as_asked() {
    mount_propagation(Runner::Runc);
}

#[test]
fn libcontainer_propagates_mounts_as_asked() {
    mount_propagation(Runner::Libcontainer);
}

/// Host network, IPC and UTS, the pod's PID namespace joined, and a device.
fn host_namespaces_and_a_device(runner: Runner) {
    if let Some(why) = skip_reason(runner) {
        eprintln!("skipping host namespaces under {runner:?}: {why}");
        return;
    }
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 0 }),
        namespace_options: Some(NamespaceOption {
            network: NamespaceMode::Node as i32,
            ipc: NamespaceMode::Node as i32,
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut config = container_config(sc);
    config.devices.push(crius_proto::cri::Device {
        container_path: "/dev/mynull".into(),
        host_path: "/dev/null".into(),
        permissions: "rw".into(),
    });
    config.args = vec![
        "{ hostname; cat /proc/1/comm; grep -c ' /dev/shm ' /proc/self/mounts; \
           echo x > /dev/mynull && echo device-writable; } > /out/result 2>&1"
            .into(),
    ];
    let b = bundle("hostns", runner, config, Pod::HostWithSharedPid);
    let result = run(runner, &b);
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let expected = format!("{host}\nsleep\n1\ndevice-writable\n");
    assert_eq!(result, expected, "{runner:?}");
}

#[test]
fn runc_runs_in_host_namespaces_and_a_shared_pid_namespace() {
    host_namespaces_and_a_device(Runner::Runc);
}

#[test]
fn libcontainer_runs_in_host_namespaces_and_a_shared_pid_namespace() {
    host_namespaces_and_a_device(Runner::Libcontainer);
}

#[test]
fn runc_runs_a_restricted_container() {
    restricted_container(Runner::Runc);
}

#[test]
fn libcontainer_runs_a_restricted_container() {
    restricted_container(Runner::Libcontainer);
}

#[test]
fn runc_runs_a_privileged_container() {
    privileged_container(Runner::Runc);
}

#[test]
fn libcontainer_runs_a_privileged_container() {
    privileged_container(Runner::Libcontainer);
}

/// This host's capabilities, cgroup facts from the one detection.
fn host_capabilities() -> HostCapabilities {
    let cgroups = crate::cgroups::CgroupLayout::detect().unwrap().limits();
    HostCapabilities::detect(cgroups).unwrap()
}
