//! The foundation against a real criusd: Version, Status, RuntimeConfig over the
//! socket; start-up errors; the single-instance lock; graceful shutdown.

use crius_proto::cri;
use crius_tests::{run_criusd, short_tempdir, Daemon, DaemonOptions};

#[tokio::test(flavor = "multi_thread")]
async fn version_over_the_socket() {
    let daemon = Daemon::start();
    let v = daemon
        .runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.runtime_name, "crius");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(!v.runtime_version.is_empty());
}

fn network_ready(s: &cri::StatusResponse) -> &cri::RuntimeCondition {
    s.status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .expect("NetworkReady condition")
}

#[tokio::test(flavor = "multi_thread")]
async fn status_network_ready_follows_cni_conf() {
    let daemon = Daemon::start();
    let mut rt = daemon.runtime().await;
    let s = rt
        .status(cri::StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let runtime_ready = s
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady");
    assert!(runtime_ready.unwrap().status);
    assert!(!network_ready(&s).status);
    assert_eq!(network_ready(&s).reason, "NetworkPluginNotReady");
    let config: serde_json::Value = serde_json::from_str(&s.info["config"]).unwrap();
    assert_eq!(config["socket"], daemon.socket.display().to_string());

    std::fs::write(
        daemon.cni_conf_dir.join("10-test.conflist"),
        r#"{"cniVersion":"1.0.0","name":"test","plugins":[{"type":"bridge","bridge":"x0"}]}"#,
    )
    .unwrap();
    let s = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(network_ready(&s).status);
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_config_reports_cgroupfs() {
    let daemon = Daemon::start();
    let c = daemon
        .runtime()
        .await
        .runtime_config(cri::RuntimeConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        c.linux.unwrap().cgroup_driver,
        cri::CgroupDriver::Cgroupfs as i32
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rpcs_not_built_yet_are_unimplemented_by_name() {
    let daemon = Daemon::start();
    let err = daemon
        .runtime()
        .await
        .checkpoint_container(cri::CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
}

#[test]
fn unknown_config_key_fails_startup_naming_it() {
    let dir = short_tempdir();
    let config = dir.path().join("crius.toml");
    std::fs::write(&config, "[cni]\nconfdir = \"/x\"\n").unwrap();
    let out = run_criusd(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("confdir"), "{stderr}");
}

#[test]
fn missing_config_file_is_named() {
    let out = run_criusd(&["--config", "/nonexistent/crius.toml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/crius.toml"));
}

#[test]
fn systemd_cgroup_driver_is_refused() {
    let dir = short_tempdir();
    let config = dir.path().join("crius.toml");
    std::fs::write(&config, "cgroup_driver = \"systemd\"\n").unwrap();
    let out = run_criusd(&["--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cgroup_driver"));
}

#[test]
fn config_subcommand_prints_effective_config() {
    let out = run_criusd(&["--config", "/dev/null", "--socket", "/tmp/x.sock", "config"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("socket = \"/tmp/x.sock\""), "{text}");
    assert!(text.contains("conf_dir = \"/etc/cni/net.d\""), "{text}");
}

#[test]
fn second_daemon_on_the_same_socket_refuses() {
    let first = Daemon::start();
    let other = short_tempdir();
    let out = run_criusd(&[
        "--config",
        "/dev/null",
        "--socket",
        first.socket.to_str().unwrap(),
        "--root",
        other.path().join("root").to_str().unwrap(),
        "--state",
        other.path().join("state").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already serving"), "{stderr}");
    assert!(
        first.socket.exists(),
        "the live daemon's socket is left alone"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_run_side_by_side() {
    let a = Daemon::start();
    let b = Daemon::start_with(DaemonOptions::default());
    for d in [&a, &b] {
        d.runtime()
            .await
            .version(cri::VersionRequest::default())
            .await
            .unwrap();
    }
}

// Multi-threaded so that the client's connection task answers the server's
// GOAWAY while the test thread blocks on the exit.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_cleanly_and_removes_the_socket() {
    let mut daemon = Daemon::start();
    daemon
        .runtime()
        .await
        .version(cri::VersionRequest::default())
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let status = daemon.terminate();
    assert!(status.success(), "criusd exited with {status}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "idle connection delayed exit"
    );
    assert!(!daemon.socket.exists());
}

#[test]
fn stale_socket_file_is_replaced() {
    let dir = short_tempdir();
    let socket = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    let opts = DaemonOptions {
        socket: Some(socket.clone()),
        ..Default::default()
    };
    let daemon = Daemon::start_with(opts);
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_ok());
    drop(daemon);
}
