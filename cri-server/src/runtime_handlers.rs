//! Runtime handlers (Kubernetes RuntimeClass): the name a pod's
//! `RunPodSandboxRequest.runtime_handler` gives, and how its containers'
//! shims run them. The default handler `""` is crius' in-process runtime
//! (libcontainer); each `[runtimes.<name>]` table of the config adds one that
//! runs an OCI runtime binary (runc, crun) through the same shim. `Status`
//! lists each with its features.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, ConfigError, RuntimeHandlerConfig};
use crate::error::CriError;
use crate::shim_client::ShimRuntime;
use crate::spec::HostCapabilities;

/// How long a binary may take to answer `features` at start-up.
const FEATURES_TIMEOUT: Duration = Duration::from_secs(5);

/// What a handler can do, as CRI's `RuntimeHandlerFeatures` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HandlerFeatures {
    /// Binds may be read-only recursively (KEP-3857, OCI's `rro`).
    pub recursive_read_only_mounts: bool,
    /// Pods may have user namespaces (KEP-127).
    pub user_namespaces: bool,
}

/// One runtime handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeHandler {
    /// `""` for the default.
    pub name: String,
    /// How its containers' shims run them.
    pub runtime: ShimRuntime,
    pub features: HandlerFeatures,
}

/// Every handler of the daemon, by name; the default `""` is always one.
#[derive(Debug, Clone)]
pub struct RuntimeHandlers {
    handlers: BTreeMap<String, RuntimeHandler>,
}

impl RuntimeHandlers {
    /// The default handler alone: the in-process runtime keeping its state
    /// under `root`, with the features `host` allows.
    pub fn in_process(root: PathBuf, host: &HostCapabilities) -> RuntimeHandlers {
        let default = RuntimeHandler {
            name: String::new(),
            runtime: ShimRuntime::InProcess { root },
            features: HandlerFeatures {
                // libcontainer applies OCI's "rro" with mount_setattr.
                recursive_read_only_mounts: host.mount_setattr,
                // A pod's user namespace owns its pinned namespaces; its
                // containers' layers and binds are idmapped mounts.
                user_namespaces: host.idmapped_layers,
            },
        };
        RuntimeHandlers {
            handlers: BTreeMap::from([(String::new(), default)]),
        }
    }

    /// The default handler (state under `<state>/runtime`) and each of the
    /// config's `[runtimes.<name>]` (validated by [`Config::validate`]):
    /// its binary found (the name in `$PATH` by default) and asked for its
    /// `features`. Errors name the table's key: a binary that is missing or
    /// not executable.
    pub fn from_config(
        config: &Config,
        host: &HostCapabilities,
    ) -> Result<RuntimeHandlers, ConfigError> {
        let mut handlers = RuntimeHandlers::in_process(config.state.join("runtime"), host);
        for (name, table) in &config.runtimes {
            let handler = binary_handler(name, table, &config.state, host.mount_setattr)?;
            handlers.handlers.insert(name.clone(), handler);
        }
        Ok(handlers)
    }

    /// The same handlers and `handler` (a test's).
    pub fn with(mut self, handler: RuntimeHandler) -> RuntimeHandlers {
        self.handlers.insert(handler.name.clone(), handler);
        self
    }

    /// The handler a RunPodSandbox names (`""`: the default). Errors:
    /// InvalidArgument naming `runtime_handler` and the unknown name.
    pub fn get(&self, name: &str) -> Result<&RuntimeHandler, CriError> {
        self.handlers.get(name).ok_or_else(|| {
            let known: Vec<String> = self.handlers.keys().map(|n| format!("{n:?}")).collect();
            CriError::invalid(
                "runtime_handler",
                format!(
                    "unknown runtime handler {name:?} (configured: {})",
                    known.join(", ")
                ),
            )
        })
    }

    /// The default handler, `""`.
    pub fn default_handler(&self) -> &RuntimeHandler {
        &self.handlers[""]
    }

    /// Every handler, the default first, then by name.
    pub fn iter(&self) -> impl Iterator<Item = &RuntimeHandler> {
        self.handlers.values()
    }
}

fn binary_handler(
    name: &str,
    table: &RuntimeHandlerConfig,
    state: &Path,
    mount_setattr: bool,
) -> Result<RuntimeHandler, ConfigError> {
    let invalid = |key, message: String| ConfigError::InvalidHandler {
        name: name.to_owned(),
        key,
        message,
    };
    let path = match &table.path {
        Some(path) => path.clone(),
        None => find_in_path(name)
            .ok_or_else(|| invalid("path", format!("not given, and no {name:?} in $PATH")))?,
    };
    let executable = std::fs::metadata(&path)
        .map_err(|e| invalid("path", format!("{}: {e}", path.display())))?;
    if !executable.is_file() || executable.permissions().mode() & 0o111 == 0 {
        return Err(invalid(
            "path",
            format!("{} is not an executable file", path.display()),
        ));
    }
    let mount_options = advertised_mount_options(&path);
    Ok(RuntimeHandler {
        name: name.to_owned(),
        features: HandlerFeatures {
            // The kernel's mount_setattr and a binary that says it applies "rro".
            recursive_read_only_mounts: mount_setattr && mount_options.iter().any(|o| o == "rro"),
            // crius makes no user namespace for a binary's containers.
            user_namespaces: false,
        },
        runtime: ShimRuntime::Binary {
            path,
            root: table
                .root
                .clone()
                .unwrap_or_else(|| state.join("runtimes").join(name)),
            hide_unified_cgroup: table.hide_unified_cgroup,
        },
    })
}

/// The first executable `name` in `$PATH`.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|file| {
            file.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The mount options the binary's `features` output lists (the OCI
/// runtime-spec's features document, `mountOptions`: runc since 1.1);
/// empty when it has no `features` (crun 1.8), fails, or does not answer
/// within [`FEATURES_TIMEOUT`].
fn advertised_mount_options(binary: &Path) -> Vec<String> {
    let run = || -> std::io::Result<Vec<u8>> {
        let mut child = Command::new(binary)
            .arg("features")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if started.elapsed() > FEATURES_TIMEOUT {
                let _ = child.kill();
                child.wait()?;
                return Err(std::io::Error::other("timed out"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            stdout.read_to_end(&mut out)?;
        }
        if !status.success() {
            return Err(std::io::Error::other(format!("{status}")));
        }
        Ok(out)
    };
    let features: serde_json::Value = match run().and_then(|out| Ok(serde_json::from_slice(&out)?))
    {
        Ok(features) => features,
        Err(err) => {
            tracing::info!(binary = %binary.display(), %err, "no features from the runtime binary: its optional features are not reported");
            return Vec::new();
        }
    };
    features["mountOptions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o.as_str().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with mount_setattr and idmapped layers, or with neither.
    fn host(new_kernel: bool) -> HostCapabilities {
        HostCapabilities {
            mount_setattr: new_kernel,
            idmapped_layers: new_kernel,
            ..HostCapabilities::bare()
        }
    }

    /// A fake runtime binary whose `features` prints `features` (nothing: it
    /// fails, as crun 1.8's does).
    fn fake_binary(dir: &Path, features: Option<&str>) -> PathBuf {
        let path = dir.join("fake-runc");
        let body = match features {
            Some(json) => format!("[ \"$1\" = features ] && echo '{json}'"),
            None => "echo 'unknown command features' >&2; exit 1".into(),
        };
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn config(tables: &[(&str, RuntimeHandlerConfig)]) -> Config {
        Config {
            state: "/run/crius-test".into(),
            runtimes: tables
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_default_handler_is_the_in_process_runtime() {
        let handlers = RuntimeHandlers::from_config(&config(&[]), &host(true)).unwrap();
        let names: Vec<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, [""]);
        assert_eq!(
            handlers.get("").unwrap(),
            &RuntimeHandler {
                name: String::new(),
                runtime: ShimRuntime::InProcess {
                    root: "/run/crius-test/runtime".into()
                },
                features: HandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: true,
                },
            }
        );
        let without = RuntimeHandlers::from_config(&config(&[]), &host(false)).unwrap();
        assert_eq!(
            without.default_handler().features,
            HandlerFeatures {
                recursive_read_only_mounts: false,
                user_namespaces: false,
            }
        );
    }

    #[test]
    fn a_binary_handler_reports_rro_only_when_its_features_list_it() {
        let dir = tempfile::tempdir().unwrap();
        let with_rro = fake_binary(dir.path(), Some(r#"{"mountOptions":["ro","rro"]}"#));
        let table = RuntimeHandlerConfig {
            path: Some(with_rro.clone()),
            ..Default::default()
        };
        let handlers =
            RuntimeHandlers::from_config(&config(&[("runc", table.clone())]), &host(true)).unwrap();
        assert_eq!(
            handlers.get("runc").unwrap(),
            &RuntimeHandler {
                name: "runc".into(),
                runtime: ShimRuntime::Binary {
                    path: with_rro,
                    root: "/run/crius-test/runtimes/runc".into(),
                    hide_unified_cgroup: false,
                },
                features: HandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: false,
                },
            }
        );
        // Not without the kernel's mount_setattr.
        let handlers =
            RuntimeHandlers::from_config(&config(&[("runc", table)]), &host(false)).unwrap();
        assert!(
            !handlers
                .get("runc")
                .unwrap()
                .features
                .recursive_read_only_mounts
        );

        let other = tempfile::tempdir().unwrap();
        let without = fake_binary(other.path(), Some(r#"{"mountOptions":["ro"]}"#));
        let no_features = fake_binary(dir.path(), None);
        for path in [without, no_features] {
            let table = RuntimeHandlerConfig {
                path: Some(path),
                root: Some("/run/crun".into()),
                hide_unified_cgroup: true,
            };
            let handlers =
                RuntimeHandlers::from_config(&config(&[("crun", table)]), &host(true)).unwrap();
            let crun = handlers.get("crun").unwrap();
            assert!(!crun.features.recursive_read_only_mounts);
            assert!(matches!(
                &crun.runtime,
                ShimRuntime::Binary { root, hide_unified_cgroup: true, .. } if root == Path::new("/run/crun")
            ));
        }
    }

    #[test]
    fn a_missing_or_unexecutable_binary_is_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nosuch");
        let table = RuntimeHandlerConfig {
            path: Some(missing.clone()),
            ..Default::default()
        };
        let err =
            RuntimeHandlers::from_config(&config(&[("runc", table)]), &host(true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "config key runtimes.runc.path: {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
        let table = RuntimeHandlerConfig {
            path: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let err =
            RuntimeHandlers::from_config(&config(&[("runc", table)]), &host(true)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "config key runtimes.runc.path: {} is not an executable file",
                dir.path().display()
            )
        );
        let err = RuntimeHandlers::from_config(
            &config(&[("no-such-runtime-anywhere", RuntimeHandlerConfig::default())]),
            &host(true),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "config key runtimes.no-such-runtime-anywhere.path: not given, and no \"no-such-runtime-anywhere\" in $PATH"
        );
    }

    #[test]
    fn an_unknown_handler_is_invalid_argument_naming_it() {
        let handlers = RuntimeHandlers::in_process("/r".into(), &host(true));
        let err = handlers.get("kata").unwrap_err();
        let status = tonic::Status::from(err);
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            status.message(),
            "runtime_handler: unknown runtime handler \"kata\" (configured: \"\")"
        );
    }
}
