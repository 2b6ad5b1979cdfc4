//! The assembled spec: each rule seen from the outside, through `container_spec`.

use std::collections::HashMap;
use std::path::Path;

use crius_proto::cri::{
    Capability as CriCapability, ContainerConfig, ContainerMetadata, Int64Value, KeyValue,
    LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
    LinuxPodSandboxConfig, LinuxSandboxSecurityContext, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata,
};
use oci_spec::runtime::{Capability, LinuxNamespaceType, Spec};

use super::*;

pub(super) const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n";
pub(super) const GROUP: &str =
    "root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n";

pub(super) fn rootfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
    std::fs::write(dir.path().join("etc/group"), GROUP).unwrap();
    dir
}

pub(super) fn host() -> HostCapabilities {
    HostCapabilities {
        cgroup_v2: false,
        hugetlb: false,
        memory_swap: true,
        min_oom_score_adj: 0,
        apparmor: false,
        own_capabilities: (1 << 41) - 1,
        mount_setattr: true,
        idmapped_layers: true,
    }
}

pub(super) fn pod_config(privileged: bool) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web-pod".into(),
        linux: Some(LinuxPodSandboxConfig {
            sysctls: [("kernel.shm_rmid_forced".to_string(), "1".to_string())].into(),
            security_context: Some(LinuxSandboxSecurityContext {
                privileged,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(super) fn container_config(sc: LinuxContainerSecurityContext) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "app".into(),
            attempt: 0,
        }),
        envs: vec![KeyValue {
            key: "MODE".into(),
            value: "test".into(),
        }],
        annotations: [("team".to_string(), "a".to_string())].into(),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 256,
                memory_limit_in_bytes: 32 << 20,
                oom_score_adj: 100,
                ..Default::default()
            }),
            security_context: Some(sc),
        }),
        ..Default::default()
    }
}

pub(super) fn image() -> ImageConfigView {
    ImageConfigView {
        user: "1000".into(),
        env: vec!["PATH=/bin".into()],
        entrypoint: vec!["/bin/busybox".into()],
        cmd: vec!["sleep".into(), "1".into()],
        working_dir: "/home".into(),
        stop_signal: "SIGTERM".into(),
    }
}

fn pinned() -> SandboxNamespaces {
    SandboxNamespaces {
        network: Some("/run/crius/ns/p/net".into()),
        ipc: Some("/run/crius/ns/p/ipc".into()),
        uts: Some("/run/crius/ns/p/uts".into()),
        pid: None,
        user: None,
    }
}

struct Fixture {
    rootfs: tempfile::TempDir,
    config: ContainerConfig,
    sandbox: PodSandboxConfig,
    image: ImageConfigView,
    namespaces: SandboxNamespaces,
    user_mappings: Option<crate::state::sandbox::UserMappings>,
    host: HostCapabilities,
}

impl Fixture {
    fn new(sc: LinuxContainerSecurityContext) -> Fixture {
        Fixture {
            rootfs: rootfs(),
            config: container_config(sc),
            sandbox: pod_config(false),
            image: image(),
            namespaces: pinned(),
            user_mappings: None,
            host: host(),
        }
    }

    fn build(&self) -> Result<Spec, SpecError> {
        container_spec(&ContainerSpecInput {
            container_id: "c1",
            sandbox_id: "p1",
            image_name: "registry.k8s.io/busybox:1",
            config: &self.config,
            sandbox: &self.sandbox,
            image: &self.image,
            rootfs: self.rootfs.path(),
            namespaces: &self.namespaces,
            user_mappings: self.user_mappings.as_ref(),
            target_pid_namespace: None,
            cgroups_path: "/crius/pod-p1/c1".into(),
            hostname: "web-pod",
            resolv_conf: Some(Path::new("/run/crius/p1/resolv.conf")),
            hosts_file: Some(Path::new("/run/crius/p1/hosts")),
            hostname_file: Some(Path::new("/run/crius/p1/hostname")),
            shm_path: Some(Path::new("/run/crius/p1/shm")),
            host: &self.host,
            protected_host_dirs: &[],
            image_volumes: &Default::default(),
        })
    }
}

fn mount_options<'s>(spec: &'s Spec, dest: &str) -> &'s [String] {
    spec.mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new(dest))
        .unwrap_or_else(|| panic!("no mount at {dest}"))
        .options()
        .as_deref()
        .unwrap()
}

#[test]
fn a_plain_container() {
    let spec = Fixture::new(LinuxContainerSecurityContext::default())
        .build()
        .unwrap();
    let process = spec.process().as_ref().unwrap();
    assert_eq!(
        process.args().as_deref().unwrap(),
        ["/bin/busybox", "sleep", "1"]
    );
    assert_eq!(
        process.env().as_deref().unwrap(),
        [
            "PATH=/bin",
            "HOSTNAME=web-pod",
            "MODE=test",
            "HOME=/home/default-user"
        ]
    );
    assert_eq!(process.cwd(), Path::new("/home"));
    assert_eq!(process.user().uid(), 1000);
    assert_eq!(process.user().gid(), 1000);
    assert_eq!(
        process.user().additional_gids().as_deref(),
        Some(&[1000, 50000][..])
    );
    assert_eq!(process.terminal(), Some(false));
    assert!(process.console_size().is_none());
    assert_eq!(process.no_new_privileges(), None, "absent, not false");
    assert_eq!(process.oom_score_adj(), Some(100));
    assert!(process.rlimits().is_none());
    assert!(process.apparmor_profile().is_none());
    let caps = process.capabilities().as_ref().unwrap();
    assert_eq!(caps.effective().as_ref().unwrap().len(), 14);

    let root = spec.root().as_ref().unwrap();
    assert_eq!(root.path(), rootfs_path(&spec));
    assert_eq!(root.readonly(), Some(false));
    assert_eq!(spec.hostname().as_deref(), Some("web-pod"));

    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_deref(),
        Some(Path::new("/crius/pod-p1/c1"))
    );
    assert_eq!(
        linux.masked_paths().as_ref().unwrap().len(),
        security::DEFAULT_MASKED_PATHS.len()
    );
    assert_eq!(
        linux.readonly_paths().as_ref().unwrap().len(),
        security::DEFAULT_READONLY_PATHS.len()
    );
    assert_eq!(
        linux.sysctl().as_ref().unwrap()["kernel.shm_rmid_forced"],
        "1"
    );
    assert!(linux.seccomp().is_none());
    let types: Vec<LinuxNamespaceType> = linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.typ())
        .collect();
    assert_eq!(
        types,
        [
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Pid
        ]
    );
    let resources = linux.resources().as_ref().unwrap();
    assert_eq!(resources.cpu().as_ref().unwrap().shares(), Some(256));
    assert_eq!(resources.memory().as_ref().unwrap().limit(), Some(32 << 20));

    assert_eq!(
        mount_options(&spec, "/etc/hosts"),
        ["rbind", "rprivate", "rw"]
    );
    assert_eq!(
        mount_options(&spec, "/dev/shm"),
        ["rbind", "rprivate", "rw"]
    );

    let a = spec.annotations().as_ref().unwrap();
    assert_eq!(a["team"], "a");
    assert_eq!(a["io.kubernetes.cri.container-type"], "container");
    assert_eq!(a["io.kubernetes.cri.sandbox-id"], "p1");
    assert_eq!(a["io.kubernetes.cri.sandbox-name"], "web");
    assert_eq!(a["io.kubernetes.cri.sandbox-namespace"], "default");
    assert_eq!(a["io.kubernetes.cri.sandbox-uid"], "uid-1");
    assert_eq!(a["io.kubernetes.cri.container-name"], "app");
    assert_eq!(
        a["io.kubernetes.cri.image-name"],
        "registry.k8s.io/busybox:1"
    );
}

fn rootfs_path(spec: &Spec) -> &Path {
    spec.root().as_ref().unwrap().path()
}

#[test]
fn host_network_pod_has_no_hostname_of_its_own() {
    let mut f = Fixture::new(LinuxContainerSecurityContext::default());
    f.namespaces = SandboxNamespaces::default();
    // The fixture pod's IPC sysctl cannot be set in the host's IPC namespace.
    assert!(matches!(
        f.build(),
        Err(SpecError::InvalidArgument {
            field: "sandbox_config.linux.sysctls",
            ..
        })
    ));
    f.sandbox.linux.as_mut().unwrap().sysctls.clear();
    let spec = f.build().unwrap();
    assert_eq!(spec.hostname(), &None);
    let ns = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap();
    assert!(ns.iter().all(|n| n.path().is_none()), "{ns:?}");
    let shm = spec
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.destination() == Path::new("/dev/shm"))
        .unwrap();
    assert_eq!(shm.source().as_deref(), Some(Path::new("/dev/shm")));
}

#[test]
fn security_context_settings() {
    let sc = LinuxContainerSecurityContext {
        run_as_user: Some(Int64Value { value: 0 }),
        readonly_rootfs: true,
        no_new_privs: true,
        capabilities: Some(CriCapability {
            add_capabilities: vec!["SYS_ADMIN".into()],
            drop_capabilities: vec!["NET_RAW".into()],
            add_ambient_capabilities: vec![],
        }),
        masked_paths: vec!["/bin/ls".into()],
        seccomp: Some(crius_proto::cri::SecurityProfile::default()),
        ..Default::default()
    };
    let mut f = Fixture::new(sc);
    f.config.tty = true;
    let spec = f.build().unwrap();
    let process = spec.process().as_ref().unwrap();
    assert_eq!(process.user().uid(), 0);
    assert_eq!(process.no_new_privileges(), Some(true));
    assert_eq!(process.terminal(), Some(true));
    let size = process.console_size().expect("a tty has a console size");
    assert_eq!((size.height(), size.width()), (24, 80));
    assert!(process
        .env()
        .as_ref()
        .unwrap()
        .contains(&"TERM=xterm".to_string()));
    let caps = process
        .capabilities()
        .as_ref()
        .unwrap()
        .effective()
        .clone()
        .unwrap();
    assert!(caps.contains(&Capability::SysAdmin) && !caps.contains(&Capability::NetRaw));
    assert_eq!(spec.root().as_ref().unwrap().readonly(), Some(true));
    assert_eq!(
        mount_options(&spec, "/etc/resolv.conf"),
        ["rbind", "rprivate", "ro"]
    );
    // SYS_ADMIN lifts the default profile's mount denial.
    let seccomp = spec.linux().as_ref().unwrap().seccomp().clone().unwrap();
    assert!(!seccomp
        .syscalls()
        .as_ref()
        .unwrap()
        .iter()
        .any(|r| r.names().contains(&"mount".to_string())));
    assert_eq!(
        spec.linux().as_ref().unwrap().masked_paths().as_deref(),
        Some(&["/bin/ls".to_string()][..])
    );
}

#[test]
fn privileged_needs_a_privileged_pod() {
    let sc = LinuxContainerSecurityContext {
        privileged: true,
        ..Default::default()
    };
    let mut f = Fixture::new(sc);
    let err = f.build().unwrap_err();
    assert!(
        matches!(
            err,
            SpecError::InvalidArgument {
                field: "config.linux.security_context.privileged",
                ..
            }
        ),
        "{err}"
    );
    f.sandbox = pod_config(true);
    let spec = f.build().unwrap();
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    assert_eq!(caps.effective().as_ref().unwrap().len(), 41);
    let linux = spec.linux().as_ref().unwrap();
    assert!(linux.masked_paths().as_ref().unwrap().is_empty());
    assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
    assert!(linux
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .as_ref()
        .unwrap()[0]
        .allow());
    assert!(!mount_options(&spec, "/sys").contains(&"ro".to_string()));
}

#[test]
fn shared_pid_namespace_is_joined() {
    let sc = LinuxContainerSecurityContext {
        namespace_options: Some(NamespaceOption {
            pid: NamespaceMode::Pod as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut f = Fixture::new(sc);
    f.namespaces.pid = Some("/proc/4242/ns/pid".into());
    let spec = f.build().unwrap();
    let ns = spec
        .linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap();
    let pid = ns
        .iter()
        .find(|n| n.typ() == LinuxNamespaceType::Pid)
        .unwrap();
    assert_eq!(pid.path().as_deref(), Some(Path::new("/proc/4242/ns/pid")));
}

#[test]
fn errors_name_their_field() {
    let mut f = Fixture::new(LinuxContainerSecurityContext::default());
    f.image.user = "nobody-here".into();
    assert!(matches!(
        f.build(),
        Err(SpecError::InvalidArgument {
            field: "image config User",
            ..
        })
    ));
    let mut f = Fixture::new(LinuxContainerSecurityContext::default());
    f.image.entrypoint.clear();
    f.image.cmd.clear();
    assert!(matches!(
        f.build(),
        Err(SpecError::InvalidArgument {
            field: "config.command",
            ..
        })
    ));
}

#[test]
fn serializes_to_runtime_spec_json() {
    let spec = Fixture::new(LinuxContainerSecurityContext::default())
        .build()
        .unwrap();
    let json = serde_json::to_value(&spec).unwrap();
    assert_eq!(json["ociVersion"], oci_spec::runtime::VERSION);
    assert_eq!(
        json["process"]["user"]["additionalGids"],
        serde_json::json!([1000, 50000])
    );
    assert_eq!(json["linux"]["cgroupsPath"], "/crius/pod-p1/c1");
    assert_eq!(json["process"]["oomScoreAdj"], 100);
    assert!(json["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap()
        .contains(&"CAP_CHOWN".into()));
    assert!(json["process"]["capabilities"].get("ambient").is_none());
    let back: Spec = serde_json::from_value(json).unwrap();
    assert_eq!(back, spec);
    let _: HashMap<String, String> = back.annotations().clone().unwrap();
}

/// A container of a pod with a user namespace joins it and carries its ID
/// maps (the runtime makes mount points as its root); one without has none.
#[test]
fn the_pods_user_namespace_and_maps() {
    use crate::state::sandbox::{IdMapping, UserMappings};
    let plain = Fixture::new(LinuxContainerSecurityContext::default())
        .build()
        .unwrap();
    let linux = plain.linux().as_ref().unwrap();
    assert!(linux.uid_mappings().is_none() && linux.gid_mappings().is_none());
    let mut f = Fixture::new(LinuxContainerSecurityContext::default());
    f.namespaces.user = Some("/run/crius/ns/p/user".into());
    let ids = |host_id| IdMapping {
        container_id: 0,
        host_id,
        length: 65536,
    };
    f.user_mappings = Some(UserMappings {
        uids: ids(200000),
        gids: ids(300000),
    });
    let spec = f.build().unwrap();
    let linux = spec.linux().as_ref().unwrap();
    let user = (linux.namespaces().iter().flatten())
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::User)
        .unwrap();
    assert_eq!(
        user.path().as_deref(),
        Some(Path::new("/run/crius/ns/p/user"))
    );
    let one = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        let m = &maps.as_ref().unwrap()[..];
        assert_eq!(m.len(), 1);
        (m[0].container_id(), m[0].host_id(), m[0].size())
    };
    assert_eq!(one(linux.uid_mappings()), (0, 200000, 65536));
    assert_eq!(one(linux.gid_mappings()), (0, 300000, 65536));
}
