//! A pod's user namespace (KEP-127, `userns_options`): which modes and ID
//! maps RunPodSandbox accepts. Mode NODE keeps the host's; POD gets a new
//! one with the given maps, made before and owning the pod's network, IPC
//! and UTS namespaces; CONTAINER and TARGET are refused, as by containerd
//! and CRI-O. Pure.

use crius_proto::cri;

use crate::error::CriError;
use crate::runtime_handlers::RuntimeHandler;
use crate::state::sandbox::{IdMapping, UserMappings};

const FIELD_MODE: &str = "config.linux.security_context.namespace_options.userns_options.mode";
const FIELD_UIDS: &str = "config.linux.security_context.namespace_options.userns_options.uids";
const FIELD_GIDS: &str = "config.linux.security_context.namespace_options.userns_options.gids";
const FIELD_NETWORK: &str = "config.linux.security_context.namespace_options.network";
const FIELD_IPC: &str = "config.linux.security_context.namespace_options.ipc";
const FIELD_PID: &str = "config.linux.security_context.namespace_options.pid";

/// The ID maps of the pod's own user namespace, `None` for the host's.
/// Errors: InvalidArgument naming the field for mode CONTAINER or TARGET
/// (or an unknown one), for maps with mode NODE, and with mode POD for
/// anything but exactly one uid and one gid range that maps container ID 0,
/// is not empty and does not overflow 32 bits, and for a host network, IPC
/// or PID namespace (kubelet refuses those too; `RuntimeFeatures.
/// user_namespaces_host_network` is not offered).
pub fn user_mappings(options: &cri::NamespaceOption) -> Result<Option<UserMappings>, CriError> {
    let Some(userns) = &options.userns_options else {
        return Ok(None);
    };
    match cri::NamespaceMode::try_from(userns.mode) {
        Ok(cri::NamespaceMode::Node) => {
            if !userns.uids.is_empty() || !userns.gids.is_empty() {
                return Err(CriError::invalid(
                    FIELD_UIDS,
                    "ID maps are only for mode POD, not NODE",
                ));
            }
            Ok(None)
        }
        Ok(cri::NamespaceMode::Pod) => {
            for (field, mode) in [
                (FIELD_NETWORK, options.network),
                (FIELD_IPC, options.ipc),
                (FIELD_PID, options.pid),
            ] {
                if mode == cri::NamespaceMode::Node as i32 {
                    return Err(CriError::invalid(
                        field,
                        "the host's namespace cannot be used with a user namespace of the pod",
                    ));
                }
            }
            Ok(Some(UserMappings {
                uids: one_mapping(FIELD_UIDS, &userns.uids)?,
                gids: one_mapping(FIELD_GIDS, &userns.gids)?,
            }))
        }
        Ok(mode @ (cri::NamespaceMode::Container | cri::NamespaceMode::Target)) => {
            Err(CriError::invalid(
                FIELD_MODE,
                format!(
                    "mode {} is not supported: a user namespace is the pod's (POD) or the node's (NODE)",
                    mode.as_str_name()
                ),
            ))
        }
        Err(_) => Err(CriError::invalid(
            FIELD_MODE,
            format!("unknown mode {}", userns.mode),
        )),
    }
}

/// Checks that `handler` can run a pod with a user namespace of its own
/// (`user_mappings`): the handlers whose `Status` features say
/// `user_namespaces` (the default one, where overlayfs takes idmapped
/// layers). Errors: InvalidArgument naming `runtime_handler` otherwise
/// (kubelet asks only handlers that report the feature).
pub fn handler_serves(
    handler: &RuntimeHandler,
    user_mappings: Option<&UserMappings>,
) -> Result<(), CriError> {
    if user_mappings.is_some() && !handler.features.user_namespaces {
        return Err(CriError::invalid(
            "runtime_handler",
            format!(
                "runtime handler {:?} cannot run a pod with a user namespace (userns_options mode POD)",
                handler.name
            ),
        ));
    }
    Ok(())
}

fn one_mapping(field: &'static str, given: &[cri::IdMapping]) -> Result<IdMapping, CriError> {
    let [m] = given else {
        return Err(CriError::invalid(
            field,
            format!("exactly one mapping is supported, got {}", given.len()),
        ));
    };
    if m.container_id != 0 {
        return Err(CriError::invalid(
            field,
            format!(
                "container ID 0 must be mapped, the mapping starts at {}",
                m.container_id
            ),
        ));
    }
    if m.length == 0 {
        return Err(CriError::invalid(field, "the mapping's length is 0"));
    }
    if m.host_id.checked_add(m.length).is_none() {
        return Err(CriError::invalid(
            field,
            format!("host IDs {}+{} overflow 32 bits", m.host_id, m.length),
        ));
    }
    Ok(IdMapping {
        container_id: m.container_id,
        host_id: m.host_id,
        length: m.length,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    fn map(container_id: u32, host_id: u32, length: u32) -> cri::IdMapping {
        cri::IdMapping {
            container_id,
            host_id,
            length,
        }
    }

    fn options(mode: cri::NamespaceMode, ids: Vec<cri::IdMapping>) -> cri::NamespaceOption {
        cri::NamespaceOption {
            userns_options: Some(cri::UserNamespace {
                mode: mode as i32,
                uids: ids.clone(),
                gids: ids,
            }),
            ..Default::default()
        }
    }

    #[track_caller]
    fn refused(options: &cri::NamespaceOption, field: &str, words: &str) {
        let status = Status::from(user_mappings(options).unwrap_err());
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(field), "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
    }

    #[test]
    fn pod_mode_takes_one_mapping_each() {
        let mut opts = options(cri::NamespaceMode::Pod, vec![map(0, 200000, 65536)]);
        opts.userns_options.as_mut().unwrap().gids = vec![map(0, 300000, 1000)];
        assert_eq!(
            user_mappings(&opts).unwrap(),
            Some(UserMappings {
                uids: IdMapping {
                    container_id: 0,
                    host_id: 200000,
                    length: 65536
                },
                gids: IdMapping {
                    container_id: 0,
                    host_id: 300000,
                    length: 1000
                },
            })
        );
    }

    #[test]
    fn node_mode_and_no_options_keep_the_hosts() {
        assert_eq!(user_mappings(&Default::default()).unwrap(), None);
        assert_eq!(
            user_mappings(&options(cri::NamespaceMode::Node, vec![])).unwrap(),
            None
        );
        refused(
            &options(cri::NamespaceMode::Node, vec![map(0, 1000, 10)]),
            FIELD_UIDS,
            "only for mode POD",
        );
    }

    #[test]
    fn container_and_target_modes_are_refused() {
        for (mode, name) in [
            (cri::NamespaceMode::Container, "CONTAINER"),
            (cri::NamespaceMode::Target, "TARGET"),
        ] {
            refused(&options(mode, vec![]), FIELD_MODE, name);
        }
        let mut unknown = options(cri::NamespaceMode::Pod, vec![map(0, 1, 1)]);
        unknown.userns_options.as_mut().unwrap().mode = 9;
        refused(&unknown, FIELD_MODE, "unknown mode 9");
    }

    #[test]
    fn bad_mappings_are_refused_naming_the_field() {
        let pod = cri::NamespaceMode::Pod;
        refused(&options(pod, vec![]), FIELD_UIDS, "got 0");
        refused(
            &options(pod, vec![map(0, 1000, 100000), map(0, 2000, 100000)]),
            FIELD_UIDS,
            "got 2",
        );
        refused(
            &options(pod, vec![map(1, 1000, 100000)]),
            FIELD_UIDS,
            "container ID 0 must be mapped",
        );
        refused(
            &options(pod, vec![map(0, 1000, 0)]),
            FIELD_UIDS,
            "length is 0",
        );
        refused(
            &options(pod, vec![map(0, u32::MAX - 5, 10)]),
            FIELD_UIDS,
            "overflow",
        );
        let mut gids_only_bad = options(pod, vec![map(0, 1000, 10)]);
        gids_only_bad.userns_options.as_mut().unwrap().gids = vec![];
        refused(&gids_only_bad, FIELD_GIDS, "got 0");
    }

    #[test]
    fn host_namespaces_are_refused_with_a_pod_user_namespace() {
        let node = cri::NamespaceMode::Node as i32;
        for field in [FIELD_NETWORK, FIELD_IPC, FIELD_PID] {
            let mut opts = options(cri::NamespaceMode::Pod, vec![map(0, 1000, 10)]);
            match field {
                FIELD_NETWORK => opts.network = node,
                FIELD_IPC => opts.ipc = node,
                _ => opts.pid = node,
            }
            refused(&opts, field, "host's namespace");
        }
    }
}
