//! Which namespaces a container gets: the pod's pinned network, IPC, UTS and
//! user namespaces (or the host's), a PID namespace of its own, the pod's,
//! another container's or the host's, and always a mount namespace of its own.

use std::path::Path;

use crius_proto::cri::{LinuxContainerSecurityContext, NamespaceMode};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};

use super::{HostCapabilities, SandboxNamespaces, SpecError};

const FIELD_PID: &str = "config.linux.security_context.namespace_options.pid";
const FIELD_TARGET: &str = "config.linux.security_context.namespace_options.target_id";
const FIELD_USERNS: &str = "config.linux.security_context.namespace_options.userns_options";

pub(super) fn namespaces(
    sc: Option<&LinuxContainerSecurityContext>,
    pod: &SandboxNamespaces,
    target_pid_namespace: Option<&Path>,
    host: &HostCapabilities,
    privileged: bool,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let options = sc.and_then(|sc| sc.namespace_options.as_ref());
    let mut out = vec![fresh(LinuxNamespaceType::Mount)?];

    // None: the pod uses the host's namespace, so the container joins none.
    for (typ, path) in [
        (LinuxNamespaceType::Network, &pod.network),
        (LinuxNamespaceType::Ipc, &pod.ipc),
        (LinuxNamespaceType::Uts, &pod.uts),
    ] {
        if let Some(path) = path {
            out.push(joined(typ, path)?);
        }
    }

    let pid_mode = options.map_or(Ok(NamespaceMode::Pod), |o| {
        NamespaceMode::try_from(o.pid)
            .map_err(|_| SpecError::invalid(FIELD_PID, format!("unknown mode {}", o.pid)))
    })?;
    match pid_mode {
        NamespaceMode::Node => {}
        NamespaceMode::Container => out.push(fresh(LinuxNamespaceType::Pid)?),
        // A pod without a shared PID namespace gives each container its own.
        NamespaceMode::Pod => match &pod.pid {
            Some(path) => out.push(joined(LinuxNamespaceType::Pid, path)?),
            None => out.push(fresh(LinuxNamespaceType::Pid)?),
        },
        NamespaceMode::Target => match target_pid_namespace {
            Some(path) => out.push(joined(LinuxNamespaceType::Pid, path)?),
            None => {
                return Err(SpecError::invalid(
                    FIELD_TARGET,
                    "the target container's PID namespace is unknown",
                ))
            }
        },
    }

    // The pod's user namespace, whatever the container's options say, as
    // kubelet sends the pod's; options that contradict the pod are refused.
    let userns_mode = options
        .and_then(|o| o.userns_options.as_ref())
        .map(|u| u.mode);
    match (userns_mode, &pod.user) {
        (None, _) => {}
        (Some(m), None) if m == NamespaceMode::Node as i32 => {}
        (Some(m), Some(_)) if m == NamespaceMode::Pod as i32 => {}
        (Some(m), pod_user) => {
            let pods = if pod_user.is_some() { "POD" } else { "NODE" };
            return Err(SpecError::invalid(
                FIELD_USERNS,
                format!(
                    "mode {} differs from the pod's user namespace mode {pods}",
                    NamespaceMode::try_from(m)
                        .map_or_else(|_| m.to_string(), |m| m.as_str_name().to_string())
                ),
            ));
        }
    }
    if let Some(path) = &pod.user {
        out.push(joined(LinuxNamespaceType::User, path)?);
    }

    // A cgroup namespace hides the host's cgroup tree; on v1 (and hybrid) hosts
    // containers share the host's, for compatibility (as containerd does).
    if host.cgroup_v2 && !privileged {
        out.push(fresh(LinuxNamespaceType::Cgroup)?);
    }
    Ok(out)
}

fn fresh(typ: LinuxNamespaceType) -> Result<LinuxNamespace, SpecError> {
    Ok(LinuxNamespaceBuilder::default().typ(typ).build()?)
}

fn joined(typ: LinuxNamespaceType, path: &Path) -> Result<LinuxNamespace, SpecError> {
    Ok(LinuxNamespaceBuilder::default()
        .typ(typ)
        .path(path.to_path_buf())
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::cri::{NamespaceOption, UserNamespace};
    use std::path::PathBuf;

    fn host(cgroup_v2: bool) -> HostCapabilities {
        HostCapabilities {
            cgroup_v2,
            hugetlb: false,
            memory_swap: false,
            min_oom_score_adj: 0,
            apparmor: false,
            own_capabilities: (1 << 41) - 1,
            mount_setattr: true,
            idmapped_layers: true,
        }
    }

    fn pinned(pid: bool) -> SandboxNamespaces {
        SandboxNamespaces {
            network: Some("/run/crius/ns/p/net".into()),
            ipc: Some("/run/crius/ns/p/ipc".into()),
            uts: Some("/run/crius/ns/p/uts".into()),
            pid: pid.then(|| PathBuf::from("/proc/42/ns/pid")),
            user: None,
        }
    }

    fn sc_pid(mode: NamespaceMode) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                pid: mode as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn summary(ns: &[LinuxNamespace]) -> Vec<(String, Option<PathBuf>)> {
        ns.iter()
            .map(|n| (n.typ().to_string(), n.path().clone()))
            .collect()
    }

    fn entry(typ: &str, path: Option<&str>) -> (String, Option<PathBuf>) {
        (typ.to_string(), path.map(PathBuf::from))
    }

    #[test]
    fn pod_namespaces_are_joined() {
        let ns = namespaces(
            Some(&sc_pid(NamespaceMode::Container)),
            &pinned(false),
            None,
            &host(false),
            false,
        )
        .unwrap();
        assert_eq!(
            summary(&ns),
            [
                entry("mnt", None),
                entry("net", Some("/run/crius/ns/p/net")),
                entry("ipc", Some("/run/crius/ns/p/ipc")),
                entry("uts", Some("/run/crius/ns/p/uts")),
                entry("pid", None),
            ]
        );
    }

    #[test]
    fn host_namespaces_are_left_out() {
        let pod = SandboxNamespaces::default();
        let ns = namespaces(
            Some(&sc_pid(NamespaceMode::Node)),
            &pod,
            None,
            &host(false),
            false,
        )
        .unwrap();
        assert_eq!(summary(&ns), [entry("mnt", None)]);
    }

    #[test]
    fn pid_modes() {
        let ns = namespaces(
            Some(&sc_pid(NamespaceMode::Pod)),
            &pinned(true),
            None,
            &host(false),
            false,
        )
        .unwrap();
        assert_eq!(
            summary(&ns).last().unwrap(),
            &entry("pid", Some("/proc/42/ns/pid"))
        );
        // No sandbox-wide PID namespace: a fresh one.
        let ns = namespaces(None, &pinned(false), None, &host(false), false).unwrap();
        assert_eq!(summary(&ns).last().unwrap(), &entry("pid", None));
        let target = Path::new("/proc/77/ns/pid");
        let ns = namespaces(
            Some(&sc_pid(NamespaceMode::Target)),
            &pinned(true),
            Some(target),
            &host(false),
            false,
        )
        .unwrap();
        assert_eq!(
            summary(&ns).last().unwrap(),
            &entry("pid", Some("/proc/77/ns/pid"))
        );
        let err = namespaces(
            Some(&sc_pid(NamespaceMode::Target)),
            &pinned(true),
            None,
            &host(false),
            false,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            SpecError::InvalidArgument {
                field: FIELD_TARGET,
                ..
            }
        ));
    }

    #[test]
    fn cgroup_namespace_only_on_v2_unprivileged() {
        let has_cgroup = |v2, privileged| {
            namespaces(None, &pinned(false), None, &host(v2), privileged)
                .unwrap()
                .iter()
                .any(|n| n.typ() == LinuxNamespaceType::Cgroup)
        };
        assert!(has_cgroup(true, false));
        assert!(!has_cgroup(true, true));
        assert!(!has_cgroup(false, false));
    }

    fn sc_userns(mode: NamespaceMode) -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext {
            namespace_options: Some(NamespaceOption {
                userns_options: Some(UserNamespace {
                    mode: mode as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_pods_user_namespace_is_joined() {
        let mut pod = pinned(false);
        pod.user = Some("/run/crius/ns/p/user".into());
        for sc in [None, Some(sc_userns(NamespaceMode::Pod))] {
            let ns = namespaces(sc.as_ref(), &pod, None, &host(false), false).unwrap();
            assert!(
                summary(&ns).contains(&entry("user", Some("/run/crius/ns/p/user"))),
                "{ns:?}"
            );
        }
        let ns = namespaces(
            Some(&sc_userns(NamespaceMode::Node)),
            &pinned(false),
            None,
            &host(false),
            false,
        )
        .unwrap();
        assert!(!summary(&ns).iter().any(|(t, _)| t == "user"));
    }

    #[test]
    fn user_namespace_modes_other_than_the_pods_are_refused() {
        let mut pod_user = pinned(false);
        pod_user.user = Some("/run/crius/ns/p/user".into());
        for (mode, pod) in [
            (NamespaceMode::Pod, pinned(false)),
            (NamespaceMode::Node, pod_user.clone()),
            (NamespaceMode::Container, pod_user.clone()),
            (NamespaceMode::Target, pinned(false)),
        ] {
            let err =
                namespaces(Some(&sc_userns(mode)), &pod, None, &host(false), false).unwrap_err();
            assert!(
                matches!(
                    err,
                    SpecError::InvalidArgument {
                        field: FIELD_USERNS,
                        ..
                    }
                ),
                "{mode:?}: {err}"
            );
            assert!(err.to_string().contains(mode.as_str_name()), "{err}");
        }
    }
}
