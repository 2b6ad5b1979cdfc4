//! The pod's sysctls, checked against the namespaces that isolate them: a
//! sysctl the container would set in a host namespace is refused here, with
//! the field named, rather than by the runtime at start.

use std::collections::HashMap;

use crius_proto::cri::PodSandboxConfig;

use super::{SandboxNamespaces, SpecError};

const FIELD_SYSCTLS: &str = "sandbox_config.linux.sysctls";

/// The IPC namespace's sysctls (besides `fs.mqueue.*`), as runc lists them.
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

pub(super) fn sysctls(
    sandbox: &PodSandboxConfig,
    namespaces: &SandboxNamespaces,
) -> Result<Option<HashMap<String, String>>, SpecError> {
    let Some(sysctls) = sandbox
        .linux
        .as_ref()
        .map(|l| &l.sysctls)
        .filter(|s| !s.is_empty())
    else {
        return Ok(None);
    };
    for key in sysctls.keys() {
        let name = key.replace('/', ".");
        let (isolated, namespace) =
            if IPC_SYSCTLS.contains(&name.as_str()) || name.starts_with("fs.mqueue.") {
                (namespaces.ipc.is_some(), "IPC")
            } else if name.starts_with("net.") {
                (namespaces.network.is_some(), "network")
            } else if name == "kernel.domainname" {
                (namespaces.uts.is_some(), "UTS")
            } else if name == "kernel.hostname" {
                return Err(SpecError::invalid(
                    FIELD_SYSCTLS,
                    format!("{key}: set the pod's hostname instead"),
                ));
            } else {
                return Err(SpecError::invalid(
                    FIELD_SYSCTLS,
                    format!("{key} is not isolated by any namespace of the pod"),
                ));
            };
        if !isolated {
            return Err(SpecError::invalid(
                FIELD_SYSCTLS,
                format!(
                    "{key} would change the host: the pod uses the host's {namespace} namespace"
                ),
            ));
        }
    }
    Ok(Some(
        sysctls
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crius_proto::cri::LinuxPodSandboxConfig;

    fn pod(sysctls: &[(&str, &str)]) -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                sysctls: sysctls
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn own() -> SandboxNamespaces {
        SandboxNamespaces {
            network: Some("/n".into()),
            ipc: Some("/i".into()),
            uts: Some("/u".into()),
            pid: None,
            user: None,
        }
    }

    #[test]
    fn namespaced_sysctls_pass_through() {
        let p = pod(&[
            ("kernel.shm_rmid_forced", "1"),
            ("fs.mqueue.msg_max", "20"),
            ("net.ipv4.ip_forward", "1"),
            ("net/ipv4/ping_group_range", "0 1"),
            ("kernel.domainname", "example"),
        ]);
        let s = sysctls(&p, &own()).unwrap().unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s["net/ipv4/ping_group_range"], "0 1");
        assert_eq!(sysctls(&pod(&[]), &own()).unwrap(), None);
    }

    #[test]
    fn sysctls_of_host_namespaces_are_refused() {
        let host_net = SandboxNamespaces {
            network: None,
            ..own()
        };
        let err = sysctls(&pod(&[("net.ipv4.ip_forward", "1")]), &host_net).unwrap_err();
        assert!(
            matches!(
                err,
                SpecError::InvalidArgument {
                    field: FIELD_SYSCTLS,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("network"), "{err}");
        let host_ipc = SandboxNamespaces { ipc: None, ..own() };
        assert!(sysctls(&pod(&[("kernel.shmmax", "1")]), &host_ipc).is_err());
        for key in ["kernel.hostname", "vm.swappiness"] {
            assert!(sysctls(&pod(&[(key, "1")]), &own()).is_err(), "{key}");
        }
    }
}
