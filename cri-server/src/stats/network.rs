//! A pod's network counters, read from `/proc/net/dev` inside its pinned
//! network namespace, as cAdvisor and CRI-O report them.

use std::path::Path;

use anyhow::Context;

/// The interface kubelet and CNI plugins give a pod: reported as
/// PodSandboxStats' `default_interface` (containerd's `defaultIfName`).
pub const DEFAULT_INTERFACE: &str = "eth0";

/// One interface's counters since it was created.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InterfaceStats {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of `/proc/net/dev` text except loopback, which cAdvisor
/// leaves out (traffic to itself is no traffic of the pod's). Errors: a line
/// that is not the kernel's format, quoted.
pub fn parse_net_dev(text: &str) -> anyhow::Result<Vec<InterfaceStats>> {
    // Two header lines, then `name: 8 receive counters 8 transmit counters`.
    text.lines()
        .skip(2)
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (name, counters) = line
                .split_once(':')
                .with_context(|| format!("/proc/net/dev line {line:?}"))?;
            let counters = counters
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<Vec<u64>, _>>()
                .ok()
                .filter(|c| c.len() >= 16)
                .with_context(|| format!("/proc/net/dev line {line:?}"))?;
            Ok(InterfaceStats {
                name: name.trim().to_string(),
                rx_bytes: counters[0],
                rx_packets: counters[1],
                rx_errors: counters[2],
                rx_dropped: counters[3],
                tx_bytes: counters[8],
                tx_packets: counters[9],
                tx_errors: counters[10],
                tx_dropped: counters[11],
            })
        })
        .filter(|stats| !matches!(stats, Ok(s) if s.name == "lo"))
        .collect()
}

/// The counters of the network namespace pinned at `netns`. Errors: the
/// pin cannot be joined or the file read, naming which.
pub fn read_netns(netns: &Path) -> anyhow::Result<Vec<InterfaceStats>> {
    // /proc/net follows the process's first thread; thread-self follows the
    // thread that joined the namespace.
    let text = crate::namespaces::in_netns(netns, || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })
    .with_context(|| format!("joining network namespace {}", netns.display()))?
    .with_context(|| format!("reading /proc/net/dev in {}", netns.display()))?;
    parse_net_dev(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NET_DEV: &str = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0:    1500      12    1    2    0     0          0         0      980       9    3    4    0     0       0          0
";

    #[test]
    fn parses_the_kernels_table_without_loopback() {
        assert_eq!(
            parse_net_dev(NET_DEV).unwrap(),
            vec![InterfaceStats {
                name: "eth0".into(),
                rx_bytes: 1500,
                rx_packets: 12,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 980,
                tx_packets: 9,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
    }

    #[test]
    fn a_mangled_line_is_an_error_quoting_it() {
        let text = format!("{NET_DEV}  eth1: 1 2 3\n");
        let err = parse_net_dev(&text).unwrap_err().to_string();
        assert!(err.contains("eth1: 1 2 3"), "{err}");
    }
}
