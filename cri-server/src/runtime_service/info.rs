//! Version, Status, RuntimeConfig, UpdateRuntimeConfig.

use std::collections::HashMap;

use anyhow::Context;
use crius_proto::cri;

use super::Reply;
use crate::config::CgroupDriver;
use crate::error::CriError;
use crate::instrument::rpc;
use crate::network;
use crate::Crius;

pub const RUNTIME_NAME: &str = "crius";
pub const CRI_API_VERSION: &str = "v1";

/// Version: the runtime's name and version. Never fails.
pub async fn version(_req: cri::VersionRequest) -> Reply<cri::VersionResponse> {
    rpc("Version", "", async { Ok(version_response()) }).await
}

/// Status: the runtime's and the network's readiness; with `verbose`, the
/// config and pod CIDR in `info`. Errors: Internal if they do not encode.
pub async fn status(crius: &Crius, req: cri::StatusRequest) -> Reply<cri::StatusResponse> {
    rpc("Status", "", async { status_response(crius, req.verbose) }).await
}

/// RuntimeConfig: the cgroup driver. Never fails.
pub async fn runtime_config(
    crius: &Crius,
    _req: cri::RuntimeConfigRequest,
) -> Reply<cri::RuntimeConfigResponse> {
    rpc("RuntimeConfig", "", async {
        Ok(runtime_config_response(crius))
    })
    .await
}

/// UpdateRuntimeConfig: keeps the pod CIDR kubelet sends. Idempotent.
pub async fn update_runtime_config(
    crius: &Crius,
    req: cri::UpdateRuntimeConfigRequest,
) -> Reply<cri::UpdateRuntimeConfigResponse> {
    rpc("UpdateRuntimeConfig", "", async {
        Ok(apply_runtime_config(crius, req))
    })
    .await
}

fn version_response() -> cri::VersionResponse {
    cri::VersionResponse {
        // The version of the kubelet runtime API, not of crius (as containerd and CRI-O answer).
        version: "0.1.0".into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: CRI_API_VERSION.into(),
    }
}

fn status_response(crius: &Crius, verbose: bool) -> Result<cri::StatusResponse, CriError> {
    let runtime_ready = cri::RuntimeCondition {
        r#type: "RuntimeReady".into(),
        status: true,
        reason: String::new(),
        message: String::new(),
    };
    let network_ready = match network::conf::load_default(&crius.config.cni.conf_dir) {
        Ok(_) => cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        },
        Err(e) => cri::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: format!("Network plugin returns error: cni config uninitialized: {e}"),
        },
    };
    let mut info = HashMap::new();
    if verbose {
        let config = serde_json::to_string(&crius.config).context("encoding the config")?;
        info.insert("config".to_string(), config);
        info.insert(
            "podCIDR".to_string(),
            serde_json::to_string(&crius.pod_cidr()).context("encoding the pod CIDR")?,
        );
    }
    Ok(cri::StatusResponse {
        status: Some(cri::RuntimeStatus {
            conditions: vec![runtime_ready, network_ready],
        }),
        info,
        // The default handler first: kubelet takes the features of the one
        // named "" as the defaults.
        runtime_handlers: crius
            .handlers
            .iter()
            .map(|handler| cri::RuntimeHandler {
                name: handler.name.clone(),
                features: Some(cri::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: handler.features.recursive_read_only_mounts,
                    user_namespaces: handler.features.user_namespaces,
                }),
            })
            .collect(),
        // The spec builder applies Merge and Strict, and ContainerStatus
        // reports the resolved user. Mount.mount_options (noexec, nodev,
        // nosuid) become the bind's OCI options. User namespaces with the
        // host network are refused (a pod's user namespace owns its network
        // namespace).
        features: Some(cri::RuntimeFeatures {
            supplemental_groups_policy: true,
            user_namespaces_host_network: false,
            mount_options: true,
        }),
    })
}

fn runtime_config_response(crius: &Crius) -> cri::RuntimeConfigResponse {
    // The proto's zero value is SYSTEMD, so the driver is always set explicitly.
    let driver = match crius.config.cgroup_driver {
        CgroupDriver::Cgroupfs => cri::CgroupDriver::Cgroupfs,
        CgroupDriver::Systemd => cri::CgroupDriver::Systemd,
    };
    cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: driver as i32,
        }),
    }
}

fn apply_runtime_config(
    crius: &Crius,
    req: cri::UpdateRuntimeConfigRequest,
) -> cri::UpdateRuntimeConfigResponse {
    if let Some(cidr) = req
        .runtime_config
        .and_then(|c| c.network_config)
        .map(|n| n.pod_cidr)
    {
        if !cidr.is_empty() {
            tracing::info!(%cidr, "pod CIDR updated");
            crius.set_pod_cidr(cidr);
        }
    }
    cri::UpdateRuntimeConfigResponse {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn crius_with_conf_dir(dir: &std::path::Path) -> (tempfile::TempDir, Crius) {
        let tmp = tempfile::tempdir().unwrap();
        let mut config = Config {
            root: tmp.path().join("root"),
            state: tmp.path().join("state"),
            ..Default::default()
        };
        config.cni.conf_dir = dir.to_path_buf();
        (tmp, Crius::open(config).unwrap())
    }

    fn condition<'a>(s: &'a cri::StatusResponse, t: &str) -> &'a cri::RuntimeCondition {
        s.status
            .as_ref()
            .unwrap()
            .conditions
            .iter()
            .find(|c| c.r#type == t)
            .unwrap()
    }

    #[test]
    fn network_ready_follows_the_conf_dir() {
        let confs = tempfile::tempdir().unwrap();
        let (_tmp, crius) = crius_with_conf_dir(confs.path());
        let s = status_response(&crius, false).unwrap();
        assert!(condition(&s, "RuntimeReady").status);
        let net = condition(&s, "NetworkReady");
        assert!(!net.status);
        assert_eq!(net.reason, "NetworkPluginNotReady");
        assert!(net.message.contains(&confs.path().display().to_string()));

        std::fs::write(
            confs.path().join("10-net.conflist"),
            r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}"#,
        )
        .unwrap();
        let s = status_response(&crius, false).unwrap();
        assert!(condition(&s, "NetworkReady").status);
        assert!(s.info.is_empty());
    }

    #[test]
    fn status_lists_every_runtime_handler_with_its_features() {
        let confs = tempfile::tempdir().unwrap();
        let (_tmp, crius) = crius_with_conf_dir(confs.path());
        let runc = crate::runtime_handlers::RuntimeHandler {
            name: "runc".into(),
            runtime: crate::shim_client::ShimRuntime::Binary {
                path: "/usr/sbin/runc".into(),
                root: "/run/runc-crius".into(),
                hide_unified_cgroup: false,
            },
            features: crate::runtime_handlers::HandlerFeatures {
                recursive_read_only_mounts: true,
                user_namespaces: false,
            },
        };
        let crius = Crius {
            handlers: std::sync::Arc::new((*crius.handlers).clone().with(runc)),
            ..crius
        };
        let s = status_response(&crius, false).unwrap();
        assert_eq!(
            s.runtime_handlers,
            [
                cri::RuntimeHandler {
                    name: String::new(),
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: crius.host.mount_setattr,
                        user_namespaces: crius.host.idmapped_layers,
                    }),
                },
                cri::RuntimeHandler {
                    name: "runc".into(),
                    features: Some(cri::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: true,
                        user_namespaces: false,
                    }),
                },
            ]
        );
    }

    #[test]
    fn verbose_status_carries_the_config() {
        let confs = tempfile::tempdir().unwrap();
        let (_tmp, crius) = crius_with_conf_dir(confs.path());
        let s = status_response(&crius, true).unwrap();
        let config: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
        assert_eq!(config["cgroup_driver"], "cgroupfs");
    }

    #[test]
    fn pod_cidr_is_kept() {
        let confs = tempfile::tempdir().unwrap();
        let (_tmp, crius) = crius_with_conf_dir(confs.path());
        apply_runtime_config(
            &crius,
            cri::UpdateRuntimeConfigRequest {
                runtime_config: Some(cri::RuntimeConfig {
                    network_config: Some(cri::NetworkConfig {
                        pod_cidr: "10.244.0.0/24".into(),
                    }),
                }),
            },
        );
        assert_eq!(crius.pod_cidr(), "10.244.0.0/24");
        assert_eq!(
            runtime_config_response(&crius).linux.unwrap().cgroup_driver,
            cri::CgroupDriver::Cgroupfs as i32
        );
    }
}
