//! A pod's network through the node's CNI config list: ADD runs the list's
//! plugins in order, chaining each result into the next; DEL runs them in
//! reverse from what the ADD cached, so it works after a restart, a config
//! change, or once the pod's namespace is gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::cache::{self, CacheRecord, CachedNetwork};
use super::conf::{self, CniConfError};
use super::invoke::{self, Command};
use super::result::pod_ips;
use crate::config::Config;
use crate::error::CriError;

/// The pod-side interface every pod gets.
pub const IFNAME: &str = "eth0";

/// What CNI needs to know of a pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodNetwork {
    /// The pod sandbox id: CNI's container id.
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// The pinned network namespace.
    pub netns: PathBuf,
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: i32,
    /// 0 when the port is not published on the host.
    pub host_port: i32,
    pub protocol: Protocol,
    /// Empty for all host addresses.
    pub host_ip: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// The pod's addresses, as PodSandboxStatus reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkStatus {
    /// The first IPv4 address, or the first IPv6 one if the pod has no IPv4.
    pub ip: String,
    pub additional_ips: Vec<String>,
    pub interface: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error(transparent)]
    Conf(#[from] CniConfError),
    #[error("CNI plugin {plugin:?} not found in {}", join_paths(.dirs))]
    PluginNotFound { plugin: String, dirs: Vec<PathBuf> },
    #[error("running CNI plugin {plugin}: {source}")]
    Spawn {
        plugin: String,
        source: std::io::Error,
    },
    #[error("CNI plugin {plugin} {command} failed{}: {msg}{}", code_note(.code), details_note(.details))]
    Plugin {
        plugin: String,
        command: &'static str,
        /// The CNI error code; `None` when the plugin printed no error JSON.
        code: Option<u32>,
        msg: String,
        details: String,
    },
    #[error("CNI plugin {plugin} {command} did not finish within {after:?}; killed")]
    Timeout {
        plugin: String,
        command: &'static str,
        after: std::time::Duration,
    },
    #[error("CNI plugin {plugin} returned a bad result: {message}")]
    BadResult { plugin: String, message: String },
    #[error("CNI cache {path}: {source}")]
    Cache {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("CNI cache {path} is corrupt: {message}")]
    CacheCorrupt { path: PathBuf, message: String },
    #[error("pod id {0:?} is not a plain name")]
    InvalidPodId(String),
    #[error("pod {0} has no network set up")]
    NotAdded(String),
    #[error("{add}; undoing the partial ADD failed too: {del}")]
    RollbackFailed {
        add: Box<CniError>,
        del: Box<CniError>,
    },
    #[error("CNI cache task: {0}")]
    Task(String),
    /// A failure a test injected through `fake::FakeNetworking`.
    #[cfg(test)]
    #[error("injected failure at {0}")]
    Injected(String),
}

/// The one mapping of CNI errors to CRI codes:
/// - no network config in the conf dir yet → FailedPrecondition (the node's
///   pod network is not ready, as Status' NetworkReady reports);
/// - CHECK of a pod whose network was never added → FailedPrecondition;
/// - everything else (a plugin missing or failing or too slow, a bad
///   result, the cache, a failed undo) → Internal with the cause chain,
///   naming the plugin or the path.
impl From<CniError> for CriError {
    fn from(e: CniError) -> CriError {
        match e {
            CniError::Conf(CniConfError::NoConfig(_)) => {
                CriError::FailedPrecondition(format!("the pod network is not ready: {e}"))
            }
            CniError::NotAdded(_) => CriError::FailedPrecondition(e.to_string()),
            other => CriError::Internal(anyhow::Error::new(other)),
        }
    }
}

fn join_paths(dirs: &[PathBuf]) -> String {
    let dirs: Vec<_> = dirs.iter().map(|d| d.display().to_string()).collect();
    dirs.join(":")
}

fn code_note(code: &Option<u32>) -> String {
    code.map(|c| format!(" (code {c})")).unwrap_or_default()
}

fn details_note(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(": {details}")
    }
}

/// The node's CNI setup: where the config, the plugins and our cache are.
#[derive(Debug, Clone)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
}

impl Cni {
    pub fn new(conf_dir: PathBuf, bin_dirs: Vec<PathBuf>, cache_dir: PathBuf) -> Cni {
        Cni {
            conf_dir,
            bin_dirs,
            cache_dir,
        }
    }

    /// The config's conf and bin dirs; the cache under `<root>/cni-cache`.
    pub fn from_config(config: &Config) -> Cni {
        Cni::new(
            config.cni.conf_dir.clone(),
            config.cni.bin_dirs.clone(),
            config.root.join("cni-cache"),
        )
    }

    /// Sets the pod's network up with the first config list of the conf dir.
    /// All or nothing: on error, what was added is deleted again; if that
    /// fails too, the cache record stays so that a later `del` can finish it.
    pub async fn add(&self, pod: &PodNetwork) -> Result<NetworkStatus, CniError> {
        let path = cache::record_path(&self.cache_dir, &pod.id)?;
        if read_record(&path).await?.is_some() {
            // A leftover of an earlier attempt: start clean.
            self.del(pod).await?;
        }
        let conf = conf::load_default(&self.conf_dir)?;
        let mut record = CacheRecord {
            pod: pod.clone(),
            network: CachedNetwork::from(&conf),
            result: None,
        };
        // Recorded before any plugin runs, so a crash mid-ADD can still be deleted.
        write_record(&path, &record).await?;
        let failure = match self.add_all(&record).await {
            Ok((result, status)) => {
                record.result = Some(result);
                match write_record(&path, &record).await {
                    Ok(()) => return Ok(status),
                    Err(error) => AddFailure {
                        error,
                        attempted: record.network.plugins.len(),
                        prev_result: record.result.take(),
                    },
                }
            }
            Err(failure) => failure,
        };
        let attempted = &record.network.plugins[..failure.attempted];
        let undo = self
            .del_plugins(
                &record.pod,
                &record.network,
                attempted,
                failure.prev_result.as_ref(),
            )
            .await
            .and(remove_record(&path).await);
        match undo {
            Ok(()) => Err(failure.error),
            Err(del) => Err(CniError::RollbackFailed {
                add: Box::new(failure.error),
                del: Box::new(del),
            }),
        }
    }

    async fn add_all(&self, record: &CacheRecord) -> Result<(Value, NetworkStatus), AddFailure> {
        let netns = record.pod.netns.to_string_lossy();
        let mut prev: Option<Value> = None;
        let mut last_type = String::new();
        for (i, plugin) in record.network.plugins.iter().enumerate() {
            last_type = plugin_type(plugin).to_string();
            let run = self.run(Command::Add, plugin, record, &netns, prev.as_ref());
            let stdout = match run.await {
                Ok(out) => out,
                Err(error) => {
                    // The failing plugin may have done part of its job: undo it too.
                    return Err(AddFailure {
                        error,
                        attempted: i + 1,
                        prev_result: prev,
                    });
                }
            };
            match serde_json::from_slice::<Value>(&stdout) {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    return Err(AddFailure {
                        error: CniError::BadResult {
                            plugin: last_type,
                            message: format!("not JSON: {e}"),
                        },
                        attempted: i + 1,
                        prev_result: prev,
                    });
                }
            }
        }
        let result = prev.expect("a config list has plugins");
        let status = pod_ips(&result, IFNAME)
            .and_then(|ips| {
                let mut ips = ips.into_iter().map(|ip| ip.to_string());
                let ip = ips.next().ok_or(format!("no IP address on {IFNAME}"))?;
                Ok(NetworkStatus {
                    ip,
                    additional_ips: ips.collect(),
                    interface: IFNAME.to_string(),
                })
            })
            .map_err(|message| CniError::BadResult {
                plugin: last_type,
                message,
            });
        match status {
            Ok(status) => Ok((result, status)),
            Err(error) => Err(AddFailure {
                error,
                attempted: record.network.plugins.len(),
                prev_result: Some(result),
            }),
        }
    }

    /// Tears the pod's network down as it was set up. Idempotent: a pod with no
    /// cache record has nothing set up (the record is written before ADD starts).
    /// Every plugin gets its DEL even when one fails, so a failing plugin does
    /// not keep the others' addresses or rules; the first error is returned and
    /// the record kept for a retry.
    pub async fn del(&self, pod: &PodNetwork) -> Result<(), CniError> {
        let path = cache::record_path(&self.cache_dir, &pod.id)?;
        let Some(record) = read_record(&path).await? else {
            return Ok(());
        };
        self.del_plugins(
            &record.pod,
            &record.network,
            &record.network.plugins,
            record.result.as_ref(),
        )
        .await?;
        remove_record(&path).await
    }

    async fn del_plugins(
        &self,
        pod: &PodNetwork,
        network: &CachedNetwork,
        plugins: &[Value],
        result: Option<&Value>,
    ) -> Result<(), CniError> {
        // An unpinned namespace is no namespace: plugins then only release
        // what lives outside it (addresses, host rules).
        let netns = if is_namespace(&pod.netns) {
            pod.netns.to_string_lossy().into_owned()
        } else {
            String::new()
        };
        // CNI before 0.4.0 knows no prevResult on DEL.
        let prev = result.filter(|_| version_at_least_0_4(&network.cni_version));
        let record = CacheRecord {
            pod: pod.clone(),
            network: network.clone(),
            result: None,
        };
        let mut first_error = None;
        for plugin in plugins.iter().rev() {
            if let Err(e) = self.run(Command::Del, plugin, &record, &netns, prev).await {
                tracing::warn!(pod = %pod.id, error = %e, "CNI DEL");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The result the pod's completed ADD cached (`None`: nothing cached,
    /// or an ADD under way). Errors: the cache's (an invalid pod id, I/O, a
    /// corrupt record).
    pub async fn cached_result(&self, pod_id: &str) -> Result<Option<Value>, CniError> {
        let path = cache::record_path(&self.cache_dir, pod_id)?;
        Ok(read_record(&path).await?.and_then(|r| r.result))
    }

    /// Asks each plugin whether the pod's network is still as ADD left it.
    /// Config lists older than 0.4.0 have no CHECK; they pass.
    pub async fn check(&self, pod: &PodNetwork) -> Result<(), CniError> {
        let path = cache::record_path(&self.cache_dir, &pod.id)?;
        let record = read_record(&path).await?;
        let Some(
            record @ CacheRecord {
                result: Some(_), ..
            },
        ) = record
        else {
            return Err(CniError::NotAdded(pod.id.clone()));
        };
        if !version_at_least_0_4(&record.network.cni_version) {
            return Ok(());
        }
        let netns = record.pod.netns.to_string_lossy();
        for plugin in &record.network.plugins {
            self.run(
                Command::Check,
                plugin,
                &record,
                &netns,
                record.result.as_ref(),
            )
            .await?;
        }
        Ok(())
    }

    async fn run(
        &self,
        command: Command,
        plugin: &Value,
        record: &CacheRecord,
        netns: &str,
        prev_result: Option<&Value>,
    ) -> Result<Vec<u8>, CniError> {
        let kind = plugin_type(plugin);
        let binary = invoke::find_plugin(kind, &self.bin_dirs)?;
        let env = invoke::plugin_env(command, &record.pod, netns, &self.bin_dirs);
        let stdin = invoke::plugin_stdin(
            plugin,
            &record.network.name,
            &record.network.cni_version,
            prev_result,
            &record.pod,
        );
        invoke::run_plugin(&binary, kind, command, &env, &stdin).await
    }
}

/// Why an ADD stopped, and what to undo: the first `attempted` plugins.
struct AddFailure {
    error: CniError,
    attempted: usize,
    prev_result: Option<Value>,
}

fn plugin_type(plugin: &Value) -> &str {
    // conf.rs admits only plugins with a type.
    plugin.get("type").and_then(Value::as_str).unwrap_or("")
}

fn version_at_least_0_4(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (0, 4)
}

fn is_namespace(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CniError> + Send + 'static,
) -> Result<T, CniError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CniError::Task(e.to_string()))?
}

async fn read_record(path: &Path) -> Result<Option<CacheRecord>, CniError> {
    let path = path.to_path_buf();
    blocking(move || cache::read(&path)).await
}

async fn write_record(path: &Path, record: &CacheRecord) -> Result<(), CniError> {
    let (path, record) = (path.to_path_buf(), record.clone());
    blocking(move || cache::write(&path, &record)).await
}

async fn remove_record(path: &Path) -> Result<(), CniError> {
    let path = path.to_path_buf();
    blocking(move || cache::remove(&path)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert!(version_at_least_0_4("1.0.0"));
        assert!(version_at_least_0_4("0.4.0"));
        assert!(!version_at_least_0_4("0.3.1"));
        assert!(!version_at_least_0_4("garbage"));
    }

    #[test]
    fn plugin_error_display_names_plugin_code_and_details() {
        let e = CniError::Plugin {
            plugin: "bridge".into(),
            command: "ADD",
            code: Some(11),
            msg: "failed to set bridge addr".into(),
            details: "permission denied".into(),
        };
        assert_eq!(
            e.to_string(),
            "CNI plugin bridge ADD failed (code 11): failed to set bridge addr: permission denied"
        );
    }

    fn pod(id: &str) -> PodNetwork {
        PodNetwork {
            id: id.into(),
            name: "p".into(),
            namespace: "ns".into(),
            uid: "u".into(),
            netns: "/nonexistent/net".into(),
            port_mappings: vec![],
        }
    }

    /// A fake plugin: a shell script that logs its command and answers as told.
    fn fake_plugin(dir: &Path, name: &str, script: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[tokio::test]
    async fn failed_add_deletes_what_was_added_and_del_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let (conf_dir, bin, cache_dir) = (
            tmp.path().join("conf"),
            tmp.path().join("bin"),
            tmp.path().join("cache"),
        );
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let log = tmp.path().join("log");
        std::fs::write(
            conf_dir.join("10-t.conflist"),
            r#"{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"good"},{"type":"bad"}]}"#,
        )
        .unwrap();
        let log_line = format!("echo \"$0 $CNI_COMMAND\" >> {}", log.display());
        fake_plugin(
            &bin,
            "good",
            &format!(
                "{log_line}\n[ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.9.0.2/24\"}}]}}'\nexit 0"
            ),
        );
        fake_plugin(
            &bin,
            "bad",
            &format!(
                "{log_line}\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\necho '{{\"cniVersion\":\"1.0.0\",\"code\":7,\"msg\":\"no room\"}}'\nexit 1"
            ),
        );
        let cni = Cni::new(conf_dir, vec![bin.clone()], cache_dir.clone());
        let err = cni.add(&pod("p1")).await.unwrap_err();
        assert!(
            err.to_string().contains("bad ADD failed (code 7): no room"),
            "{err}"
        );
        let calls: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| l.rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(calls, ["good ADD", "bad ADD", "bad DEL", "good DEL"]);
        assert!(!cache_dir.join("p1.json").exists());

        // Nothing cached, nothing to do.
        std::fs::remove_file(&log).unwrap();
        cni.del(&pod("p1")).await.unwrap();
        assert!(!log.exists());

        // Once the second plugin behaves, ADD succeeds, is cached, and DEL runs in reverse.
        fake_plugin(
            &bin,
            "bad",
            &format!(
                "{log_line}\n[ \"$CNI_COMMAND\" = ADD ] && echo '{{\"cniVersion\":\"1.0.0\",\"ips\":[{{\"address\":\"10.9.0.3/24\"}}]}}'\nexit 0"
            ),
        );
        let status = cni.add(&pod("p1")).await.unwrap();
        // The last plugin's result is the list's.
        assert_eq!(status.ip, "10.9.0.3");
        assert_eq!(status.interface, "eth0");
        assert!(cache_dir.join("p1.json").exists());
        std::fs::remove_file(&log).unwrap();
        cni.del(&pod("p1")).await.unwrap();
        let calls = std::fs::read_to_string(&log).unwrap();
        assert!(calls.find("bad DEL").unwrap() < calls.find("good DEL").unwrap());
        assert!(!cache_dir.join("p1.json").exists());
        cni.del(&pod("p1")).await.unwrap();
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use tonic::{Code, Status};

    fn status_of(e: CniError) -> Status {
        CriError::from(e).into()
    }

    #[test]
    fn a_node_without_network_config_is_failed_precondition() {
        let s = status_of(CniError::Conf(CniConfError::NoConfig(
            "/etc/cni/net.d".into(),
        )));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("/etc/cni/net.d"), "{}", s.message());
    }

    #[test]
    fn checking_a_pod_never_added_is_failed_precondition() {
        let s = status_of(CniError::NotAdded("p1".into()));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("p1"), "{}", s.message());
    }

    #[test]
    fn plugin_and_cache_faults_are_internal_naming_the_plugin_or_path() {
        let io = || std::io::Error::from_raw_os_error(libc::EACCES);
        let plugin = || CniError::Plugin {
            plugin: "bridge".into(),
            command: "ADD",
            code: Some(7),
            msg: "no IP addresses available".into(),
            details: String::new(),
        };
        for (e, named) in [
            (
                CniError::Conf(CniConfError::ReadDir {
                    dir: "/etc/cni/net.d".into(),
                    source: io(),
                }),
                "/etc/cni/net.d",
            ),
            (
                CniError::PluginNotFound {
                    plugin: "bridge".into(),
                    dirs: vec!["/opt/cni/bin".into()],
                },
                "bridge",
            ),
            (
                CniError::Spawn {
                    plugin: "bridge".into(),
                    source: io(),
                },
                "bridge",
            ),
            (plugin(), "bridge"),
            (
                CniError::Timeout {
                    plugin: "portmap".into(),
                    command: "DEL",
                    after: std::time::Duration::from_secs(60),
                },
                "portmap",
            ),
            (
                CniError::BadResult {
                    plugin: "bridge".into(),
                    message: "no ips".into(),
                },
                "bridge",
            ),
            (
                CniError::Cache {
                    path: "/var/lib/crius/cni-cache/p1.json".into(),
                    source: io(),
                },
                "p1.json",
            ),
            (
                CniError::CacheCorrupt {
                    path: "/var/lib/crius/cni-cache/p1.json".into(),
                    message: "eof".into(),
                },
                "p1.json",
            ),
            (CniError::InvalidPodId("../p".into()), "../p"),
            (
                CniError::RollbackFailed {
                    add: Box::new(plugin()),
                    del: Box::new(CniError::Task("cancelled".into())),
                },
                "undoing",
            ),
            (CniError::Task("cancelled".into()), "cancelled"),
        ] {
            let s = status_of(e);
            assert_eq!(s.code(), Code::Internal);
            assert!(s.message().contains(named), "{}", s.message());
        }
    }
}
