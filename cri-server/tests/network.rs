//! Pinned pod namespaces wired up by the real CNI plugins (bridge, host-local,
//! portmap from /usr/lib/cni): two pods get distinct addresses, reach each
//! other, and DEL + unpin leave no address, veth, rule or mount behind.
//! Needs root; skips otherwise.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius::namespaces::{self, NamespaceKinds};
use crius::network::{Cni, PodNetwork, PortMapping, Protocol};

const PLUGINS: &str = "/usr/lib/cni";

/// A bridge and subnet of this test run's own, so that parallel runs and other
/// tests never share one; the bridge is deleted on drop, even after a failure.
struct TestNetwork {
    bridge: String,
    subnet_octet: u32,
    tmp: tempfile::TempDir,
}

impl TestNetwork {
    fn new() -> TestNetwork {
        let pid = std::process::id();
        TestNetwork {
            bridge: format!("cnt-{pid}"),
            subnet_octet: pid % 250 + 1,
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn network_name(&self) -> String {
        format!("crius-test-{}", self.bridge)
    }

    fn write_conflist(&self) {
        let conf = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": self.network_name(),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": format!("10.234.{}.0/24", self.subnet_octet)}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": self.path("ipam"),
                    }
                },
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        std::fs::create_dir_all(self.path("conf")).unwrap();
        std::fs::write(
            self.path("conf").join("10-test.conflist"),
            serde_json::to_vec_pretty(&conf).unwrap(),
        )
        .unwrap();
    }

    fn cni(&self) -> Cni {
        Cni::new(
            self.path("conf"),
            vec![PathBuf::from(PLUGINS)],
            self.path("cni-cache"),
        )
    }

    fn bridge_ports(&self) -> Vec<String> {
        match std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge)) {
            Ok(dir) => dir
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => vec![],
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for pod in ["pod-a", "pod-b"] {
            let _ = namespaces::unpin(&self.path("ns").join(pod));
        }
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn pod(id: &str, netns: &Path, port_mappings: Vec<PortMapping>) -> PodNetwork {
    PodNetwork {
        id: id.to_string(),
        name: format!("{id}-name"),
        namespace: "crius-test".to_string(),
        uid: format!("{id}-uid"),
        netns: netns.to_path_buf(),
        port_mappings,
    }
}

fn nat_rules() -> String {
    let out = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap().to_string())
        .filter(|m| Path::new(m).starts_with(dir))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_get_addresses_reach_each_other_and_leave_nothing_behind() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: pod networking needs root");
        return;
    }
    let net = TestNetwork::new();
    net.write_conflist();
    let cni = net.cni();
    let host_port = 20000 + (std::process::id() % 10000) as i32;

    let mut pods = Vec::new();
    for (id, ports) in [
        (
            "pod-a",
            vec![PortMapping {
                container_port: 8080,
                host_port,
                protocol: Protocol::Tcp,
                host_ip: String::new(),
            }],
        ),
        ("pod-b", vec![]),
    ] {
        let started = Instant::now();
        let dir = net.path("ns").join(id);
        let pinned = namespaces::pin(&dir, NamespaceKinds::ALL, Some(id), None).unwrap();
        let pinned_in = started.elapsed();
        let pod = pod(id, pinned.net.as_deref().unwrap(), ports);
        let status = cni.add(&pod).await.unwrap();
        eprintln!(
            "{id}: pin {:?}, pin + ADD {:?}, ip {}",
            pinned_in,
            started.elapsed(),
            status.ip
        );
        assert_eq!(status.interface, "eth0");
        assert!(status.additional_ips.is_empty(), "{status:?}");
        let ip: IpAddr = status.ip.parse().unwrap();
        assert!(
            status
                .ip
                .starts_with(&format!("10.234.{}.", net.subnet_octet)),
            "{status:?}"
        );
        pods.push((pod, dir, ip));
    }
    let (ip_a, ip_b) = (pods[0].2, pods[1].2);
    assert_ne!(ip_a, ip_b);

    // Pod A reaches a listener in pod B over the bridge.
    let listener = namespaces::in_netns(&pods[1].0.netns, || {
        TcpListener::bind(SocketAddr::new(ip_b, 0))
    })
    .unwrap()
    .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        conn.write_all(b"hello from b").unwrap();
        peer.ip()
    });
    let mut reply = String::new();
    let mut conn = namespaces::in_netns(&pods[0].0.netns, || {
        TcpStream::connect_timeout(&SocketAddr::new(ip_b, port), Duration::from_secs(5))
    })
    .unwrap()
    .unwrap();
    conn.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "hello from b");
    assert_eq!(server.join().unwrap(), ip_a);

    // What must be gone afterwards is there now.
    let ipam_dir = net.path("ipam").join(net.network_name());
    for (_, _, ip) in &pods {
        assert!(ipam_dir.join(ip.to_string()).exists(), "no lease for {ip}");
    }
    let veths = net.bridge_ports();
    assert_eq!(veths.len(), 2, "{veths:?}");
    assert!(
        nat_rules().contains("pod-a"),
        "portmap made no rule for pod-a"
    );

    // Pod A the usual way: DEL, then unpin.
    let started = Instant::now();
    cni.del(&pods[0].0).await.unwrap();
    namespaces::unpin(&pods[0].1).unwrap();
    eprintln!("pod-a: DEL + unpin {:?}", started.elapsed());
    // Pod B as after a reboot: its namespace gone, the config gone, a new
    // criusd; DEL works from the cache alone.
    namespaces::unpin(&pods[1].1).unwrap();
    std::fs::remove_file(net.path("conf").join("10-test.conflist")).unwrap();
    let started = Instant::now();
    let restarted = net.cni();
    restarted.del(&pods[1].0).await.unwrap();
    eprintln!(
        "pod-b: DEL from the cache, netns gone {:?}",
        started.elapsed()
    );
    // Both again: nothing left to do.
    for (pod, _, _) in &pods {
        restarted.del(pod).await.unwrap();
    }

    // A dropped namespace takes its veth end along, but the kernel does that
    // in the background: give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !net.bridge_ports().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for (_, _, ip) in &pods {
        assert!(!ipam_dir.join(ip.to_string()).exists(), "{ip} still leased");
    }
    assert!(net.bridge_ports().is_empty(), "{:?}", net.bridge_ports());
    for veth in &veths {
        assert!(
            !Path::new("/sys/class/net").join(veth).exists(),
            "{veth} left"
        );
    }
    assert!(!nat_rules().contains("pod-a"), "portmap rule left");
    assert!(mounts_under(net.tmp.path()).is_empty());
    assert_eq!(
        std::fs::read_dir(net.path("cni-cache")).unwrap().count(),
        0,
        "cache records left"
    );
}
