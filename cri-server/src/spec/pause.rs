//! The OCI spec of a pod's pause process: PID 1 of the pod's shared PID
//! namespace (see crius-shim's `pause` mode).
//!
//! As the Kubernetes pause image runs it under containerd and CRI-O (their
//! sandbox specs: containerd internal/cri/server/podsandbox/
//! sandbox_run_linux.go, CRI-O server/sandbox_run_linux.go): user
//! 65535:65535, no capabilities, no new privileges, the runtime's default
//! seccomp profile, an OOM score adjustment of -998, the pod's network, IPC
//! and UTS namespaces joined and a new PID and mount namespace; unlike them,
//! no image and no binary: its read-only rootfs is an empty dir with a small
//! tmpfs at `/dev` (libcontainer puts its default device nodes there), and
//! the annotation `io.kubernetes.cri.container-type: sandbox` (containerd's
//! own marker of a sandbox spec) makes crius-runtime run its built-in pause
//! workload in the init instead of an exec.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, MountBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::{
    HostCapabilities, SandboxNamespaces, SpecError, ANNOTATION_CONTAINER_TYPE,
    ANNOTATION_SANDBOX_ID,
};

/// The pause process's command, as `ps` shows it; nothing is executed.
const PAUSE_ARGS: &str = "pause";
/// The container type annotation's value for a pod sandbox.
const SANDBOX: &str = "sandbox";
/// Its uid and gid: the pause image's `USER 65535:65535`.
const PAUSE_ID: u32 = 65535;
/// containerd's `defaultSandboxOOMAdj`: the pause process is the last a
/// pod's OOM kill should pick (never below the daemon's own score, as for
/// containers: [`HostCapabilities::min_oom_score_adj`]).
const PAUSE_OOM_SCORE_ADJ: i32 = -998;

/// What the pause process's spec is made of.
pub struct PauseSpecInput<'a> {
    /// The empty dir it runs in (absolute); the spec makes it read-only.
    pub rootfs: &'a Path,
    /// The pod's id, for the annotations containerd sets on a sandbox.
    pub sandbox_id: &'a str,
    /// The pod's pinned network, IPC, UTS and user namespaces (`pid` is
    /// ignored: the pause process makes the pod's PID namespace, owned by
    /// the pod's user namespace when it has one).
    pub namespaces: &'a SandboxNamespaces,
    /// Its OCI `linux.cgroupsPath`, in the pod's cgroup.
    pub cgroups_path: String,
    pub host: &'a HostCapabilities,
}

/// The pause process's spec. Errors: SpecError when oci-spec refuses a
/// field (none of them comes from a request).
pub fn pause_spec(input: &PauseSpecInput) -> Result<Spec, SpecError> {
    let no_capabilities = Capabilities::new();
    let process = ProcessBuilder::default()
        .args(vec![PAUSE_ARGS.to_string()])
        .env(Vec::<String>::new())
        .cwd("/")
        .user(UserBuilder::default().uid(PAUSE_ID).gid(PAUSE_ID).build()?)
        .capabilities(
            LinuxCapabilitiesBuilder::default()
                .bounding(no_capabilities.clone())
                .effective(no_capabilities.clone())
                .inheritable(no_capabilities.clone())
                .permitted(no_capabilities.clone())
                .ambient(no_capabilities.clone())
                .build()?,
        )
        .no_new_privileges(true)
        .oom_score_adj(PAUSE_OOM_SCORE_ADJ.max(input.host.min_oom_score_adj))
        .build()?;
    // The runtime's own limits, as for containers.
    let mut process = process;
    process.set_rlimits(None);

    let mut namespaces = vec![
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Mount)
            .build()?,
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Pid)
            .build()?,
    ];
    for (typ, path) in [
        (LinuxNamespaceType::Network, &input.namespaces.network),
        (LinuxNamespaceType::Ipc, &input.namespaces.ipc),
        (LinuxNamespaceType::Uts, &input.namespaces.uts),
        (LinuxNamespaceType::User, &input.namespaces.user),
    ] {
        if let Some(path) = path {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(typ)
                    .path(path.clone())
                    .build()?,
            );
        }
    }
    if input.host.cgroup_v2 {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Cgroup)
                .build()?,
        );
    }
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .seccomp(super::default_seccomp_profile(&no_capabilities)?)
        .masked_paths(Vec::<String>::new())
        .readonly_paths(Vec::<String>::new())
        .build()?;
    // libcontainer makes its default devices and /dev links there.
    let dev = MountBuilder::default()
        .destination("/dev")
        .typ("tmpfs")
        .source("tmpfs")
        .options(vec![
            "nosuid".to_string(),
            "noexec".to_string(),
            "strictatime".to_string(),
            "mode=755".to_string(),
            "size=64k".to_string(),
        ])
        .build()?;
    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(true)
                .build()?,
        )
        .process(process)
        .mounts(vec![dev])
        .linux(linux)
        .annotations(HashMap::from([
            (ANNOTATION_CONTAINER_TYPE.to_string(), SANDBOX.to_string()),
            (
                ANNOTATION_SANDBOX_ID.to_string(),
                input.sandbox_id.to_string(),
            ),
        ]))
        .build()?;
    // The builder's default hostname ("youki") must go: the pause process
    // keeps the pod's UTS namespace as RunPodSandbox set it.
    spec.set_hostname(None);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(
        namespaces: &'a SandboxNamespaces,
        host: &'a HostCapabilities,
    ) -> PauseSpecInput<'a> {
        PauseSpecInput {
            rootfs: Path::new("/run/crius/c/p1/rootfs"),
            sandbox_id: "p1",
            namespaces,
            cgroups_path: "/crius/pod-p1/p1".into(),
            host,
        }
    }

    fn pinned() -> SandboxNamespaces {
        SandboxNamespaces {
            network: Some("/run/crius/pods/p1/ns/net".into()),
            ipc: Some("/run/crius/pods/p1/ns/ipc".into()),
            uts: Some("/run/crius/pods/p1/ns/uts".into()),
            pid: Some("/ignored".into()),
            user: None,
        }
    }

    #[test]
    fn runs_the_built_in_workload_unprivileged_on_a_read_only_empty_root() {
        let host = HostCapabilities {
            min_oom_score_adj: -1000,
            ..super::super::tests::host()
        };
        let ns = pinned();
        let spec = pause_spec(&input(&ns, &host)).unwrap();
        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/run/crius/c/p1/rootfs"));
        assert_eq!(root.readonly(), Some(true));
        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_deref(), Some(&["pause".to_string()][..]));
        let annotations = spec.annotations().as_ref().unwrap();
        assert_eq!(annotations["io.kubernetes.cri.container-type"], "sandbox");
        assert_eq!(annotations["io.kubernetes.cri.sandbox-id"], "p1");
        assert_eq!(process.user().uid(), 65535);
        assert_eq!(process.user().gid(), 65535);
        assert_eq!(process.no_new_privileges(), Some(true));
        assert_eq!(process.oom_score_adj(), Some(-998));
        let caps = process.capabilities().as_ref().unwrap();
        for set in [
            caps.bounding(),
            caps.effective(),
            caps.permitted(),
            caps.inheritable(),
            caps.ambient(),
        ] {
            assert_eq!(set.as_ref().map(|s| s.len()), Some(0));
        }
        let mounts = spec.mounts().as_ref().unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].destination(), Path::new("/dev"));
        assert_eq!(mounts[0].typ().as_deref(), Some("tmpfs"));
        assert_eq!(spec.hostname(), &None);
        // A daemon that may not go below 0 gives the pause process 0.
        let restricted = super::super::tests::host();
        let spec_restricted = pause_spec(&input(&ns, &restricted)).unwrap();
        let process_restricted = spec_restricted.process().as_ref().unwrap();
        assert_eq!(process_restricted.oom_score_adj(), Some(0));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_some(), "the default profile applies");
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/crius/pod-p1/p1"))
        );
    }

    fn namespaces(spec: &Spec) -> Vec<(String, Option<PathBuf>)> {
        let linux = spec.linux().as_ref().unwrap();
        linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| (n.typ().to_string(), n.path().clone()))
            .collect()
    }

    #[test]
    fn joins_the_pods_namespaces_and_makes_its_pid_and_mount_ones() {
        let host = super::super::tests::host();
        let ns = pinned();
        let got = namespaces(&pause_spec(&input(&ns, &host)).unwrap());
        let want = |t: &str, p: Option<&str>| (t.to_string(), p.map(PathBuf::from));
        assert_eq!(
            got,
            [
                want("mnt", None),
                want("pid", None),
                want("net", Some("/run/crius/pods/p1/ns/net")),
                want("ipc", Some("/run/crius/pods/p1/ns/ipc")),
                want("uts", Some("/run/crius/pods/p1/ns/uts")),
            ]
        );
        // A host-network pod's pause process stays in the node's network and
        // UTS namespaces; on cgroup v2 it gets a cgroup namespace.
        let host_net = SandboxNamespaces {
            network: None,
            uts: None,
            ..pinned()
        };
        let v2 = HostCapabilities {
            cgroup_v2: true,
            ..super::super::tests::host()
        };
        let got = namespaces(&pause_spec(&input(&host_net, &v2)).unwrap());
        assert_eq!(
            got,
            [
                want("mnt", None),
                want("pid", None),
                want("ipc", Some("/run/crius/pods/p1/ns/ipc")),
                want("cgroup", None),
            ]
        );
    }
}
