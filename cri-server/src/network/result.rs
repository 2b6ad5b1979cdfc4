//! Reading the pod's addresses out of a CNI result (0.3.x, 0.4.0 and 1.0.0
//! share the `interfaces` + `ips` shape; 0.4.0 adds a `version` per IP, which
//! is not needed).

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
struct CniResult {
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<IpConfig>,
}

#[derive(Debug, Deserialize)]
struct Interface {
    #[serde(default)]
    name: String,
    /// The netns path for an interface inside the pod; empty or absent on the host.
    #[serde(default)]
    sandbox: String,
}

#[derive(Debug, Deserialize)]
struct IpConfig {
    /// CIDR notation: "10.1.2.3/24".
    address: String,
    /// Index into `interfaces`.
    interface: Option<usize>,
}

/// The pod's addresses on `ifname`, IPv4 first. An IP names its interface by
/// index; one whose interface is on the host side (a bridge's gateway) is not
/// the pod's. When no IP names an interface, all IPs are the pod's.
pub(crate) fn pod_ips(result: &Value, ifname: &str) -> Result<Vec<IpAddr>, String> {
    let result: CniResult =
        serde_json::from_value(result.clone()).map_err(|e| format!("not a CNI result: {e}"))?;
    let any_indexed = result.ips.iter().any(|ip| ip.interface.is_some());
    let mut ips = Vec::new();
    for ip in &result.ips {
        if any_indexed {
            let Some(iface) = ip.interface.and_then(|i| result.interfaces.get(i)) else {
                continue;
            };
            if iface.sandbox.is_empty() || iface.name != ifname {
                continue;
            }
        }
        let addr = ip.address.split('/').next().unwrap_or_default();
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| format!("address {:?}: {e}", ip.address))?;
        ips.push(addr);
    }
    // Stable: keeps the plugin's order within each family.
    ips.sort_by_key(|ip| ip.is_ipv6());
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bridge_result_1_0_0_gives_the_pod_side_address() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/crius/ns/x/net"}
            ],
            "ips": [
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
                {"address": "10.234.1.5/24", "gateway": "10.234.1.1", "interface": 2},
                {"address": "10.234.1.1/24", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let ips = pod_ips(&result, "eth0").unwrap();
        assert_eq!(
            ips,
            [
                "10.234.1.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn result_0_4_0_with_versions_parses() {
        let result = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "address": "10.0.0.7/16", "gateway": "10.0.0.1", "interface": 0}]
        });
        assert_eq!(
            pod_ips(&result, "eth0").unwrap(),
            ["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn ips_without_interface_index_all_count() {
        let result = json!({"cniVersion": "1.0.0", "ips": [{"address": "192.168.0.9/24"}]});
        assert_eq!(
            pod_ips(&result, "eth0").unwrap(),
            ["192.168.0.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn bad_results_are_errors() {
        assert!(pod_ips(&json!({"ips": [{"address": "nonsense"}]}), "eth0").is_err());
        assert!(pod_ips(&json!({"ips": "x"}), "eth0").is_err());
        assert!(pod_ips(&json!({}), "eth0").unwrap().is_empty());
    }
}
