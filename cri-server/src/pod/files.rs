//! The files a pod gives its containers: /etc/resolv.conf, /etc/hostname and
//! /etc/hosts, written into the pod's dir and bind-mounted by each container.

use std::fmt::Write as _;
use std::path::Path;

use crius_proto::cri;

use crate::state::sandbox::PodFiles;

/// Where the pod's files are in its dir `dir`. Pure.
pub fn paths(dir: &Path) -> PodFiles {
    PodFiles {
        resolv_conf: dir.join("resolv.conf"),
        hosts: dir.join("hosts"),
        hostname: dir.join("hostname"),
    }
}

/// resolv.conf from the pod's DNS config, or the host's when there is none.
pub fn resolv_conf(dns: Option<&cri::DnsConfig>, host_resolv: &Path) -> std::io::Result<String> {
    let Some(dns) =
        dns.filter(|d| !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()))
    else {
        return match std::fs::read_to_string(host_resolv) {
            Ok(s) => Ok(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        };
    };
    let mut out = String::new();
    if !dns.searches.is_empty() {
        let _ = writeln!(out, "search {}", dns.searches.join(" "));
    }
    for server in &dns.servers {
        let _ = writeln!(out, "nameserver {server}");
    }
    if !dns.options.is_empty() {
        let _ = writeln!(out, "options {}", dns.options.join(" "));
    }
    Ok(out)
}

/// /etc/hosts: localhost and, with both given, `ip` named `hostname`. Pure.
pub fn hosts(hostname: &str, ip: &str) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if !ip.is_empty() && !hostname.is_empty() {
        let _ = writeln!(out, "{ip}\t{hostname}");
    }
    out
}

/// The pod's hostname: the CRI hostname, else the node's (as containerd does;
/// kubelet always sets one, and a pod name may exceed the 64-byte limit).
pub fn hostname(config: &cri::PodSandboxConfig) -> String {
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    node_hostname()
}

/// The hostname the pod's containers get: the pod's ([`hostname`]) when it
/// has a UTS namespace of its own, else the node's.
pub fn containers_hostname(config: &cri::PodSandboxConfig, own_uts: bool) -> String {
    if own_uts {
        hostname(config)
    } else {
        node_hostname()
    }
}

/// The node's hostname; empty when it cannot be read.
pub fn node_hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["ns.svc.cluster.local".into(), "cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        let text = resolv_conf(Some(&dns), Path::new("/nonexistent")).unwrap();
        assert_eq!(
            text,
            "search ns.svc.cluster.local cluster.local\nnameserver 10.0.0.10\noptions ndots:5\n"
        );
    }

    #[test]
    fn resolv_conf_falls_back_to_the_host() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("resolv.conf");
        std::fs::write(&host, "nameserver 1.1.1.1\n").unwrap();
        assert_eq!(resolv_conf(None, &host).unwrap(), "nameserver 1.1.1.1\n");
        assert_eq!(resolv_conf(None, &tmp.path().join("x")).unwrap(), "");
    }

    #[test]
    fn hosts_names_the_pod() {
        let h = hosts("web", "10.1.0.5");
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.ends_with("10.1.0.5\tweb\n"));
        assert!(!hosts("web", "").contains("web"));
    }
}
