//! CRI container config + image config → OCI runtime spec (`config.json`).
//!
//! Rules taken from containerd's CRI plugin and CRI-O. The only I/O: reading
//! the image's /etc/passwd and /etc/group (user resolution), looking at the
//! request's host paths (and creating a missing bind source, as containerd
//! does), devices and seccomp profile file, and listing the host's /dev for a
//! privileged container. What the host can enforce is
//! measured once, by [`HostCapabilities::detect`], and passed in.

mod devices;
mod error;
mod host;
mod mounts;
mod namespaces;
mod pause;
mod process;
mod resources;
#[cfg(test)]
mod runtime_tests;
mod seccomp;
mod security;
mod sysctls;
#[cfg(test)]
mod tests;
mod user;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::state::sandbox::{IdMapping, UserMappings};
use crius_proto::cri::{ContainerConfig, PodSandboxConfig};
use oci_spec::runtime::{
    LinuxBuilder, LinuxIdMappingBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use serde::{Deserialize, Serialize};

pub use error::SpecError;
pub use host::HostCapabilities;
pub use mounts::{image_volumes, ImageVolumeRequest};
pub use pause::{pause_spec, PauseSpecInput};
pub use process::exec_process;
pub use resources::{applied_resources, updated_resources};
pub use seccomp::default_profile as default_seccomp_profile;

/// The parts of an image's config that shape its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfigView {
    /// `user`, `uid`, `user:group` or `uid:gid`; empty for root.
    pub user: String,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub working_dir: String,
    /// e.g. `SIGTERM`; empty when the image names none.
    pub stop_signal: String,
}

/// The pod's pinned namespaces. For network, IPC, UTS and user, `None` means
/// the pod uses the host's. `pid` is the pod's shared PID namespace, when it
/// has one. A pod's user namespace owns its other namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    pub pid: Option<PathBuf>,
    pub user: Option<PathBuf>,
}

pub struct ContainerSpecInput<'a> {
    /// Names the container in log lines.
    pub container_id: &'a str,
    pub sandbox_id: &'a str,
    /// The image as the user named it (kubelet's `user_specified_image`, else
    /// the request's image), for the `io.kubernetes.cri.image-name`
    /// annotation, as containerd 2.x sets it (container_create.go).
    pub image_name: &'a str,
    pub config: &'a ContainerConfig,
    pub sandbox: &'a PodSandboxConfig,
    pub image: &'a ImageConfigView,
    /// The mounted rootfs (absolute).
    pub rootfs: &'a Path,
    pub namespaces: &'a SandboxNamespaces,
    /// The ID maps of the pod's user namespace (`namespaces.user`), given
    /// in the spec too: the runtime makes mount points in a rootfs seen
    /// through them as the namespace's root.
    pub user_mappings: Option<&'a UserMappings>,
    /// The PID namespace of the container named by `namespace_options.target_id`,
    /// when the request asks for mode TARGET.
    pub target_pid_namespace: Option<&'a Path>,
    /// e.g. `/crius/pod-<podid>/<ctrid>` (cgroupfs driver).
    pub cgroups_path: String,
    /// The pod's hostname: HOSTNAME in the environment, and the UTS hostname
    /// when the pod has its own UTS namespace. For a pod in the host's UTS
    /// namespace, pass the node's hostname.
    pub hostname: &'a str,
    /// Files the pod provides, bind-mounted unless the request mounts over them.
    pub resolv_conf: Option<&'a Path>,
    pub hosts_file: Option<&'a Path>,
    pub hostname_file: Option<&'a Path>,
    /// The pod's /dev/shm; ignored when the pod uses the host's IPC namespace
    /// (the host's /dev/shm is bound then). `None`: a private tmpfs.
    pub shm_path: Option<&'a Path>,
    pub host: &'a HostCapabilities,
    /// Host dirs under which a missing bind `host_path` is never created (the
    /// daemon's root and state dirs); /proc, /sys and /dev are always such.
    pub protected_host_dirs: &'a [PathBuf],
    /// The host path each image volume binds (the image's read-only view,
    /// or the path `image_sub_path` names in it), by the index of its mount
    /// in `config.mounts`: one for each mount [`image_volumes`] lists.
    pub image_volumes: &'a BTreeMap<usize, PathBuf>,
}

const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
const ANNOTATION_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
const ANNOTATION_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
const ANNOTATION_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";

pub fn container_spec(input: &ContainerSpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    let sc = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref());
    let resources_req = config.linux.as_ref().and_then(|l| l.resources.as_ref());
    let privileged = sc.is_some_and(|sc| sc.privileged);
    let sandbox_privileged = input
        .sandbox
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .is_some_and(|sc| sc.privileged);
    if privileged && !sandbox_privileged {
        return Err(SpecError::invalid(
            "config.linux.security_context.privileged",
            "a privileged container needs a privileged pod",
        ));
    }
    let readonly_rootfs = sc.is_some_and(|sc| sc.readonly_rootfs);

    let user = user::resolve(input.rootfs, sc, &input.image.user)?;
    let capabilities = security::capabilities(sc, privileged, input.host.own_capabilities)?;
    let seccomp = seccomp::seccomp(
        sc,
        privileged,
        capabilities
            .bounding()
            .as_ref()
            .unwrap_or(&Default::default()),
    )?;
    let process = ProcessBuilder::default()
        .terminal(config.tty)
        .args(process::args(config, input.image)?)
        .env(process::env(
            config,
            input.image,
            input.hostname,
            &user.home,
        )?)
        .cwd(process::cwd(config, input.image)?)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids)
                .build()?,
        )
        .capabilities(capabilities);
    let apparmor = security::apparmor_profile(sc, privileged, input.host.apparmor)?;
    let process = match apparmor {
        Some(profile) => process.apparmor_profile(profile),
        None => process,
    };
    let mut process = match resources::oom_score_adj(resources_req, input.host)? {
        Some(adj) => process.oom_score_adj(adj),
        None => process,
    }
    .build()?;
    process.set_console_size(process::console_size(config.tty)?);
    // No rlimits: the process inherits the runtime's, as with containerd
    // (oci-spec's default would cap open files at 1024).
    process.set_rlimits(None);
    // Absent rather than false (same meaning in OCI): libcontainer 0.7 loads a
    // seccomp filter too late, after dropping CAP_SYS_ADMIN, on an explicit false.
    let no_new_privs = sc.is_some_and(|sc| sc.no_new_privs);
    process.set_no_new_privileges(no_new_privs.then_some(true));

    let mounts = mounts::mounts(
        config,
        &mounts::PodFiles {
            hostname: input.hostname_file,
            hosts: input.hosts_file,
            resolv_conf: input.resolv_conf,
            shm: input.shm_path,
        },
        input.namespaces.ipc.is_none(),
        privileged,
        readonly_rootfs,
        input.host.mount_setattr,
        &mounts::BindSources {
            protected: input.protected_host_dirs,
            image_volumes: input.image_volumes,
        },
    )?;

    let devices = devices::devices(config, privileged, Path::new("/dev"))?;
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces::namespaces(
            sc,
            input.namespaces,
            input.target_pid_namespace,
            input.host,
            privileged,
        )?)
        .cgroups_path(PathBuf::from(&input.cgroups_path))
        .devices(devices.nodes)
        .resources(resources::resources(
            resources_req,
            input.host,
            privileged,
            devices.rules,
        )?)
        .masked_paths(security::masked_paths(sc, privileged))
        .readonly_paths(security::readonly_paths(sc, privileged));
    let seccomp_kind = if seccomp.is_some() {
        "filtered"
    } else {
        "unconfined"
    };
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }
    if let Some(p) = mounts.rootfs_propagation {
        linux = linux.rootfs_propagation(p);
    }
    if let Some(sysctls) = sysctls::sysctls(input.sandbox, input.namespaces)? {
        linux = linux.sysctl(sysctls);
    }
    if let (Some(maps), Some(_)) = (input.user_mappings, &input.namespaces.user) {
        let oci = |m: &IdMapping| {
            LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.length)
                .build()
        };
        linux = linux
            .uid_mappings(vec![oci(&maps.uids)?])
            .gid_mappings(vec![oci(&maps.gids)?]);
    }

    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path(input.rootfs)
                .readonly(readonly_rootfs)
                .build()?,
        )
        .process(process)
        .mounts(mounts.mounts)
        .linux(linux.build()?)
        .annotations(annotations(input))
        .build()?;
    // Only a UTS namespace of the pod's own carries the pod's hostname (and
    // the builder's default, "youki", must go). runc sets it even in a joined
    // namespace, libcontainer only in one it creates: the pod's pinned UTS
    // namespace must carry it already.
    let own_uts = input.namespaces.uts.is_some() && !input.hostname.is_empty();
    spec.set_hostname(own_uts.then(|| input.hostname.to_string()));
    tracing::debug!(
        container = input.container_id,
        uid = user.uid,
        gid = user.gid,
        privileged,
        seccomp = seccomp_kind,
        "built the OCI spec"
    );
    Ok(spec)
}

/// The request's annotations, then the ones containerd sets for a container
/// (which win).
fn annotations(input: &ContainerSpecInput) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = input
        .config
        .annotations
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let pod = input.sandbox.metadata.clone().unwrap_or_default();
    let container_name = input
        .config
        .metadata
        .as_ref()
        .map(|m| m.name.clone())
        .unwrap_or_default();
    for (k, v) in [
        (ANNOTATION_CONTAINER_TYPE, "container".to_string()),
        (ANNOTATION_SANDBOX_ID, input.sandbox_id.to_string()),
        (ANNOTATION_SANDBOX_NAMESPACE, pod.namespace),
        (ANNOTATION_SANDBOX_UID, pod.uid),
        (ANNOTATION_SANDBOX_NAME, pod.name),
        (ANNOTATION_CONTAINER_NAME, container_name),
        (ANNOTATION_IMAGE_NAME, input.image_name.to_string()),
    ] {
        out.insert(k.to_string(), v);
    }
    out
}
