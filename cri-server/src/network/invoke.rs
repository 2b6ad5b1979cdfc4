//! One CNI plugin run: its environment, its stdin, the process, and its error
//! reply, as the CNI spec (0.4.0, 1.0.0) defines them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::io::AsyncWriteExt;

use super::cni::{CniError, PodNetwork, IFNAME};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    Add,
    Del,
    Check,
}

impl Command {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        }
    }
}

/// The CNI_* variables of one run. `netns` may be empty for DEL, when the
/// pod's namespace is already gone.
pub(crate) fn plugin_env(
    command: Command,
    pod: &PodNetwork,
    netns: &str,
    bin_dirs: &[PathBuf],
) -> Vec<(&'static str, String)> {
    let cni_path = bin_dirs
        .iter()
        .map(|d| d.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let cni_args = format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
        pod.namespace, pod.name, pod.id, pod.uid
    );
    vec![
        ("CNI_COMMAND", command.as_str().to_string()),
        ("CNI_CONTAINERID", pod.id.clone()),
        ("CNI_NETNS", netns.to_string()),
        ("CNI_IFNAME", IFNAME.to_string()),
        ("CNI_PATH", cni_path),
        ("CNI_ARGS", cni_args),
    ]
}

/// One plugin's stdin: its own config from the list, plus the list's `name`
/// and `cniVersion`, the previous result, and the runtime values it declared
/// a capability for.
pub(crate) fn plugin_stdin(
    plugin: &Value,
    list_name: &str,
    cni_version: &str,
    prev_result: Option<&Value>,
    pod: &PodNetwork,
) -> Value {
    let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("name".into(), json!(list_name));
    conf.insert("cniVersion".into(), json!(cni_version));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev.clone());
    }
    let wants_port_mappings = plugin
        .pointer("/capabilities/portMappings")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    // A CRI port without a host port is informational: nothing to forward.
    let mappings: Vec<Value> = pod
        .port_mappings
        .iter()
        .filter(|m| m.host_port > 0)
        .map(|m| {
            json!({
                "hostPort": m.host_port,
                "containerPort": m.container_port,
                "protocol": m.protocol.as_str(),
                "hostIP": m.host_ip,
            })
        })
        .collect();
    if wants_port_mappings && !mappings.is_empty() {
        let runtime = conf
            .entry("runtimeConfig")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(runtime) = runtime {
            runtime.insert("portMappings".into(), Value::Array(mappings));
        }
    }
    Value::Object(conf)
}

/// The error a plugin prints on stdout when it fails.
#[derive(Debug, Deserialize)]
struct ErrorReply {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// Turns a failed run's output into an error naming the plugin: the CNI error
/// JSON when there is one, else whatever the plugin printed.
pub(crate) fn plugin_error(
    plugin: &str,
    command: Command,
    status: &str,
    stdout: &[u8],
    stderr: &[u8],
) -> CniError {
    if let Ok(reply) = serde_json::from_slice::<ErrorReply>(stdout) {
        return CniError::Plugin {
            plugin: plugin.to_string(),
            command: command.as_str(),
            code: Some(reply.code),
            msg: reply.msg,
            details: reply.details,
        };
    }
    let printed = [stderr, stdout]
        .iter()
        .map(|b| String::from_utf8_lossy(b).trim().to_string())
        .find(|s| !s.is_empty())
        .unwrap_or_default();
    CniError::Plugin {
        plugin: plugin.to_string(),
        command: command.as_str(),
        code: None,
        msg: status.to_string(),
        details: printed,
    }
}

/// Finds a plugin binary in the first bin dir that has it.
pub(crate) fn find_plugin(plugin: &str, bin_dirs: &[PathBuf]) -> Result<PathBuf, CniError> {
    // A type is a file name, never a path out of the bin dirs.
    if !plugin.contains('/') && !plugin.is_empty() && plugin != "." && plugin != ".." {
        for dir in bin_dirs {
            let path = dir.join(plugin);
            if path.is_file() {
                return Ok(path);
            }
        }
    }
    Err(CniError::PluginNotFound {
        plugin: plugin.to_string(),
        dirs: bin_dirs.to_vec(),
    })
}

/// How long one plugin run may take. The pod's creation runs in its own task,
/// past any client deadline, so a hung plugin must not hold it forever.
const PLUGIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs one plugin and returns its stdout (the result; empty for DEL and CHECK).
pub(crate) async fn run_plugin(
    binary: &Path,
    plugin: &str,
    command: Command,
    env: &[(&'static str, String)],
    stdin: &Value,
) -> Result<Vec<u8>, CniError> {
    run_plugin_within(PLUGIN_TIMEOUT, binary, plugin, command, env, stdin).await
}

async fn run_plugin_within(
    timeout: Duration,
    binary: &Path,
    plugin: &str,
    command: Command,
    env: &[(&'static str, String)],
    stdin: &Value,
) -> Result<Vec<u8>, CniError> {
    let spawn_err = |source| CniError::Spawn {
        plugin: plugin.to_string(),
        source,
    };
    let mut child = tokio::process::Command::new(binary)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropped at the timeout: the plugin is killed (and reaped by tokio).
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    let input = serde_json::to_vec(stdin).expect("a JSON value serializes");
    let run = async {
        if let Some(mut pipe) = child.stdin.take() {
            // A plugin that exits without reading (a usage error) closes the pipe;
            // its exit status then tells what went wrong.
            let _ = pipe.write_all(&input).await;
        }
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| CniError::Timeout {
            plugin: plugin.to_string(),
            command: command.as_str(),
            after: timeout,
        })?
        .map_err(spawn_err)?;
    if output.status.success() {
        Ok(output.stdout)
    } else {
        Err(plugin_error(
            plugin,
            command,
            &output.status.to_string(),
            &output.stdout,
            &output.stderr,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hung_plugin_is_killed_at_the_timeout() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("hang");
        let pid_file = dir.path().join("pid");
        std::fs::write(
            &plugin,
            format!(
                "#!/bin/sh\necho $$ > {}\nexec sleep 30\n",
                pid_file.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A script just written can be busy (ETXTBSY) while another test
        // thread forks with the write fd still open: try again then.
        let (started, err) = loop {
            let started = std::time::Instant::now();
            let err = run_plugin_within(
                Duration::from_millis(300),
                &plugin,
                "hang",
                Command::Add,
                &[],
                &Value::Null,
            )
            .await
            .unwrap_err();
            match &err {
                CniError::Spawn { source, .. } if source.raw_os_error() == Some(libc::ETXTBSY) => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => break (started, err),
            }
        };
        assert!(matches!(err, CniError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("hang ADD"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !gone() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(gone(), "the hung plugin {pid} still runs");
    }
    use crate::network::cni::{PortMapping, Protocol};

    fn pod() -> PodNetwork {
        PodNetwork {
            id: "abc123".into(),
            name: "web".into(),
            namespace: "default".into(),
            uid: "u-1".into(),
            netns: "/run/crius/ns/abc123/net".into(),
            port_mappings: vec![
                PortMapping {
                    container_port: 80,
                    host_port: 8080,
                    protocol: Protocol::Tcp,
                    host_ip: String::new(),
                },
                PortMapping {
                    container_port: 53,
                    host_port: 0,
                    protocol: Protocol::Udp,
                    host_ip: String::new(),
                },
            ],
        }
    }

    #[test]
    fn env_names_the_pod_for_kubernetes_aware_plugins() {
        let env = plugin_env(
            Command::Add,
            &pod(),
            "/run/crius/ns/abc123/net",
            &["/opt/cni/bin".into(), "/usr/lib/cni".into()],
        );
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1.as_str();
        assert_eq!(get("CNI_COMMAND"), "ADD");
        assert_eq!(get("CNI_CONTAINERID"), "abc123");
        assert_eq!(get("CNI_NETNS"), "/run/crius/ns/abc123/net");
        assert_eq!(get("CNI_IFNAME"), "eth0");
        assert_eq!(get("CNI_PATH"), "/opt/cni/bin:/usr/lib/cni");
        assert_eq!(
            get("CNI_ARGS"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1"
        );
    }

    #[test]
    fn stdin_carries_name_version_prev_result_and_declared_capabilities() {
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let prev = json!({"cniVersion": "1.0.0", "ips": []});
        let conf = plugin_stdin(&portmap, "crius", "1.0.0", Some(&prev), &pod());
        assert_eq!(conf["name"], "crius");
        assert_eq!(conf["cniVersion"], "1.0.0");
        assert_eq!(conf["type"], "portmap");
        assert_eq!(conf["prevResult"], prev);
        // Only the port with a host port is forwarded.
        assert_eq!(
            conf["runtimeConfig"]["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}])
        );

        let bridge = json!({"type": "bridge", "bridge": "cni0"});
        let conf = plugin_stdin(&bridge, "crius", "0.4.0", None, &pod());
        assert!(conf.get("prevResult").is_none());
        assert!(conf.get("runtimeConfig").is_none());
        assert_eq!(conf["bridge"], "cni0");
        assert_eq!(conf["cniVersion"], "0.4.0");
    }

    #[test]
    fn error_reply_is_parsed_with_the_plugin_name() {
        let out =
            br#"{"cniVersion":"1.0.0","code":7,"msg":"failed to allocate","details":"range full"}"#;
        let err = plugin_error("host-local", Command::Add, "exit status: 1", out, b"");
        match &err {
            CniError::Plugin {
                plugin, code, msg, ..
            } => {
                assert_eq!(plugin, "host-local");
                assert_eq!(*code, Some(7));
                assert_eq!(msg, "failed to allocate");
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("host-local") && text.contains("range full"),
            "{text}"
        );
    }

    #[test]
    fn unstructured_failure_keeps_what_the_plugin_printed() {
        let err = plugin_error(
            "bridge",
            Command::Del,
            "exit status: 2",
            b"",
            b"panic: boom\n",
        );
        let text = err.to_string();
        assert!(text.contains("bridge") && text.contains("DEL"), "{text}");
        assert!(
            text.contains("panic: boom") && text.contains("exit status: 2"),
            "{text}"
        );
    }

    #[test]
    fn plugin_type_is_looked_up_across_bin_dirs_and_never_as_a_path() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::write(b.path().join("bridge"), "").unwrap();
        let dirs = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(
            find_plugin("bridge", &dirs).unwrap(),
            b.path().join("bridge")
        );
        assert!(matches!(
            find_plugin("../bridge", &dirs),
            Err(CniError::PluginNotFound { .. })
        ));
        assert!(find_plugin("nope", &dirs).is_err());
    }
}
