//! Harness for end-to-end tests: starts a private `criusd` (temp socket, root
//! and state dirs), connects CRI clients, and tears everything down on drop,
//! even when the test failed.

pub mod cri;
pub mod registry;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crius_proto::cri::image_service_client::ImageServiceClient;
use crius_proto::cri::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
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
    /// Install a bridge network of the daemon's own in its CNI conf dir.
    pub network: bool,
}

/// A bridge network private to one daemon: its own bridge, subnet and IPAM
/// data dir, so that daemons of parallel tests never share addresses.
pub struct TestNetwork {
    pub bridge: String,
    pub subnet: String,
}

static NETWORKS: AtomicU32 = AtomicU32::new(0);

impl TestNetwork {
    fn new() -> TestNetwork {
        let n = (std::process::id() * 16 + NETWORKS.fetch_add(1, Ordering::SeqCst)) % 250;
        TestNetwork {
            bridge: format!("crt{}", std::process::id() % 100_000 * 100 + n % 100),
            subnet: format!("10.199.{n}.0/24"),
        }
    }

    fn conflist(&self, ipam_dir: &Path) -> String {
        format!(
            r#"{{"cniVersion":"1.0.0","name":"{b}","plugins":[{{"type":"bridge","bridge":"{b}","isGateway":true,"ipMasq":false,"ipam":{{"type":"host-local","dataDir":"{d}","ranges":[[{{"subnet":"{s}"}}]],"routes":[{{"dst":"0.0.0.0/0"}}]}}}},{{"type":"portmap","capabilities":{{"portMappings":true}}}}]}}"#,
            b = self.bridge,
            s = self.subnet,
            d = ipam_dir.display()
        )
    }
}

pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub log: PathBuf,
    /// The cgroup under which this daemon's pods live (relative to each hierarchy).
    pub cgroup_parent: String,
    pub network: Option<TestNetwork>,
}

impl Daemon {
    /// Starts criusd with an empty CNI conf dir and waits until it serves.
    pub fn start() -> Daemon {
        Daemon::start_with(DaemonOptions::default())
    }

    /// A daemon that pulls from this test binary's registry
    /// ([`registry::TestRegistry::shared`]) and has a bridge network of its
    /// own: what most end-to-end tests need.
    pub fn start_networked() -> Daemon {
        Daemon::start_with(DaemonOptions {
            config_toml: registry::TestRegistry::shared().config_toml(),
            network: true,
            ..Default::default()
        })
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
        let network = opts.network.then(TestNetwork::new);
        if let Some(net) = &network {
            let conf = net.conflist(&dir.path().join("ipam"));
            std::fs::write(cni_conf_dir.join("10-test.conflist"), conf).unwrap();
        }
        let cgroup_parent = format!(
            "crius-test-{}",
            dir.path().file_name().unwrap().to_string_lossy()
        );
        let config_path = dir.path().join("crius.toml");
        let config = format!(
            "cgroup_parent = \"{cgroup_parent}\"\n{}\n[cni]\nconf_dir = \"{}\"\n",
            opts.config_toml,
            cni_conf_dir.display()
        );
        std::fs::write(&config_path, config).unwrap();
        let log = dir.path().join("criusd.log");
        let mut daemon = Daemon {
            child: None,
            dir,
            socket,
            root,
            state,
            cni_conf_dir,
            log,
            cgroup_parent,
            network,
        };
        daemon.spawn();
        daemon.wait_for_socket();
        daemon
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(criusd_path())
            .arg("--config")
            .arg(self.dir.path().join("crius.toml"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--root")
            .arg(&self.root)
            .arg("--state")
            .arg(&self.state)
            .arg("--log-level")
            .arg("debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning criusd");
        self.child = Some(child);
    }

    /// Stops criusd (its containers and shims live on) and starts it again
    /// on the same socket, root and state.
    pub fn restart(&mut self) {
        let status = self.terminate();
        assert!(status.success(), "criusd exited with {status}");
        self.spawn();
        self.wait_for_socket();
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

    /// `crictl` (installed by `hack/install-test-tools` into `hack/bin`)
    /// pointed at this daemon, quiet about its missing config file.
    pub fn crictl(&self) -> Command {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/bin/crictl");
        assert!(
            path.exists(),
            "{} is missing: run hack/install-test-tools",
            path.display()
        );
        let endpoint = format!("unix://{}", self.socket.display());
        let mut crictl = Command::new(path);
        crictl
            .args([
                "--runtime-endpoint",
                &endpoint,
                "--image-endpoint",
                &endpoint,
            ])
            .args(["--timeout", "30s"])
            // No config file: crictl only warns, but into every stderr.
            .env("CRI_CONFIG_FILE", "/dev/null");
        crictl
    }

    /// [`Daemon::crictl`] as one shell command line (for `script -c`),
    /// to be followed by crictl's own arguments.
    pub fn crictl_line(&self) -> String {
        let crictl = self.crictl();
        let mut line = vec![
            "CRI_CONFIG_FILE=/dev/null".to_string(),
            crictl.get_program().to_string_lossy().into_owned(),
        ];
        line.extend(crictl.get_args().map(|a| a.to_string_lossy().into_owned()));
        line.join(" ")
    }

    /// Runs `crictl <args>` under a pseudo-terminal of `rows` x `cols`
    /// (util-linux `script`), as a user's shell would, typing `stdin` into
    /// it: its output, the terminal's CRs included.
    pub fn crictl_on_a_terminal(&self, rows: u16, cols: u16, args: &str, stdin: &[u8]) -> String {
        let line = format!(
            "stty rows {rows} cols {cols}; {} {args}",
            self.crictl_line()
        );
        let mut child = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn script");
        let mut input = child.stdin.take().unwrap();
        std::io::Write::write_all(&mut input, stdin).unwrap();
        // script ends the session when its stdin ends: give the command time.
        std::thread::sleep(Duration::from_secs(3));
        drop(input);
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
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

impl Daemon {
    /// What this daemon's objects left on the host: mounts under its dirs,
    /// shim processes, cgroups under its parent, veths on its bridge and
    /// pinned namespaces. Empty when everything was cleaned up.
    pub fn leaks(&self) -> Vec<String> {
        let mut leaks: Vec<String> = mounts_under(self.dir.path())
            .into_iter()
            .map(|m| format!("mount {}", m.display()))
            .collect();
        leaks.extend(self.shim_pids().iter().map(|p| format!("shim process {p}")));
        leaks.extend((self.pause_shim_pids().iter()).map(|p| format!("pause process shim {p}")));
        leaks.extend(
            cgroup_dirs(&self.cgroup_parent)
                .into_iter()
                .filter(|d| {
                    d.read_dir()
                        .map(|mut r| r.any(|e| e.map(|e| e.path().is_dir()).unwrap_or(false)))
                        .unwrap_or(false)
                })
                .map(|d| format!("cgroup {}", d.display())),
        );
        if let Some(net) = &self.network {
            let brif = Path::new("/sys/class/net").join(&net.bridge).join("brif");
            if let Ok(ports) = std::fs::read_dir(brif) {
                leaks.extend(ports.flatten().map(|p| format!("veth {:?}", p.file_name())));
            }
        }
        let pods = self.state.join("pods");
        if let Ok(entries) = std::fs::read_dir(&pods) {
            leaks.extend(
                entries
                    .flatten()
                    .map(|e| format!("pod dir {}", e.path().display())),
            );
        }
        leaks
    }

    /// The shims serving containers of this daemon (their bundles are under
    /// its state dir's `c/`).
    pub fn shim_pids(&self) -> Vec<i32> {
        self.shims_under("c")
    }

    /// The shims serving pods' pause processes (bundles under `p/`).
    pub fn pause_shim_pids(&self) -> Vec<i32> {
        self.shims_under("p")
    }

    fn shims_under(&self, bundles: &str) -> Vec<i32> {
        let needle = format!("--bundle {}/", self.state.join(bundles).display());
        processes()
            .into_iter()
            .filter(|(_, cmdline)| cmdline.contains("crius-shim") && cmdline.contains(&needle))
            .map(|(pid, _)| pid)
            .collect()
    }

    /// Kills what a failed test left: shims, container processes, mounts,
    /// cgroups and the bridge.
    fn clean_up(&self) {
        use nix::sys::signal::{kill, Signal};
        for pid in self.shim_pids().into_iter().chain(self.pause_shim_pids()) {
            let _ = kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        for dir in cgroup_dirs(&self.cgroup_parent) {
            kill_cgroup_tree(&dir);
        }
        let mut mounts = mounts_under(self.dir.path());
        mounts.reverse();
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
        for dir in cgroup_dirs(&self.cgroup_parent) {
            remove_cgroup_tree(&dir);
        }
        if let Some(net) = &self.network {
            let _ = Command::new("ip")
                .args(["link", "del", &net.bridge])
                .output();
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
        self.clean_up();
    }
}

/// Mount points under `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Every process as (pid, cmdline with spaces).
pub fn processes() -> Vec<(i32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            Some((pid, cmdline.trim_end().to_string()))
        })
        .collect()
}

/// The dirs of `cgroup` in every v1 hierarchy (and a v2 root).
pub fn cgroup_dirs(cgroup: &str) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut dirs = vec![root.join(cgroup)];
    if let Ok(entries) = std::fs::read_dir(root) {
        dirs.extend(entries.flatten().map(|e| e.path().join(cgroup)));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

fn kill_cgroup_tree(dir: &Path) {
    if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            kill_cgroup_tree(&e.path());
        }
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            remove_cgroup_tree(&e.path());
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
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
