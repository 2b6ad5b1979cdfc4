//! Harness for end-to-end tests: starts a private `criusd` (temp socket, root
//! and state dirs), connects CRI clients, and tears everything down on drop,
//! even when the test failed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Tests that need root call this first; CI runs as root, where a skip would
/// hide a failure, so `CRIUS_REQUIRE_ROOT=1` turns the skip into a panic.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CRIUS_REQUIRE_ROOT").is_some() {
        panic!("this test needs root and CRIUS_REQUIRE_ROOT is set");
    }
    eprintln!("skipping: this test needs root");
    false
}

/// The directory holding the workspace's built binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

pub fn criusd_path() -> PathBuf {
    let path = bin_dir().join("criusd");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build --workspace`",
        path.display()
    );
    path
}

/// Short temp dirs: unix socket paths are limited to 107 bytes.
pub fn short_tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ct")
        .tempdir_in("/tmp")
        .expect("tempdir")
}

#[derive(Default)]
pub struct DaemonOptions {
    /// TOML written to the config file passed with --config.
    pub config_toml: String,
    /// Socket path instead of one in the daemon's temp dir.
    pub socket: Option<PathBuf>,
}

pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts criusd with an empty CNI conf dir and waits until it serves.
    pub fn start() -> Daemon {
        Daemon::start_with(DaemonOptions::default())
    }

    pub fn start_with(opts: DaemonOptions) -> Daemon {
        let dir = short_tempdir();
        let socket = opts
            .socket
            .clone()
            .unwrap_or_else(|| dir.path().join("crius.sock"));
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let cni_conf_dir = dir.path().join("net.d");
        std::fs::create_dir_all(&cni_conf_dir).unwrap();
        let config_path = dir.path().join("crius.toml");
        let config = format!(
            "{}\n[cni]\nconf_dir = \"{}\"\n",
            opts.config_toml,
            cni_conf_dir.display()
        );
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("criusd.log");
        let child = Command::new(criusd_path())
            .arg("--config")
            .arg(&config_path)
            .arg("--socket")
            .arg(&socket)
            .arg("--root")
            .arg(&root)
            .arg("--state")
            .arg(&state)
            .arg("--log-level")
            .arg("debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawning criusd");
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            socket,
            root,
            state,
            cni_conf_dir,
            log,
        };
        daemon.wait_for_socket();
        daemon
    }

    fn wait_for_socket(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "criusd exited with {status} before serving:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("criusd did not serve within 20 s:\n{}", self.log_text());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn channel(&self) -> Channel {
        connect(&self.socket).await
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate();
        }
        if std::thread::panicking() {
            eprintln!("--- criusd log ---\n{}", self.log_text());
        }
    }
}

pub async fn connect(socket: &Path) -> Channel {
    let socket = socket.to_path_buf();
    Endpoint::try_from("http://[::]:50051")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connecting to criusd")
}

/// Runs criusd to completion with the given args (for start-up failures).
pub fn run_criusd(args: &[&str]) -> std::process::Output {
    Command::new(criusd_path())
        .args(args)
        .output()
        .expect("running criusd")
}
