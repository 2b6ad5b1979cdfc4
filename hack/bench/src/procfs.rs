//! What /proc says about processes: parent, name, command line and memory.

use serde::{Deserialize, Serialize};
use std::fs;

/// A process at the time /proc was read.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    /// The arguments joined by spaces.
    pub cmdline: String,
}

/// Every process readable now (one that exits while being read is left out).
pub fn processes() -> Vec<Process> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (comm, ppid) = parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
            let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .trim_end()
                .to_string();
            Some(Process {
                pid,
                ppid,
                comm,
                cmdline,
            })
        })
        .collect()
}

/// (comm, ppid) from /proc/PID/stat. comm is in parentheses and may itself
/// hold spaces and parentheses, so the fields after it are found from the last ')'.
fn parse_stat(stat: &str) -> Option<(String, i32)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

/// The processes other than this one whose command line contains every one
/// of `needles` (this one names them all in its own arguments).
pub fn matching<'a>(all: &'a [Process], needles: &[String]) -> Vec<&'a Process> {
    let me = std::process::id() as i32;
    all.iter()
        .filter(|p| p.pid != me && !p.cmdline.is_empty())
        .filter(|p| needles.iter().all(|n| p.cmdline.contains(n)))
        .collect()
}

/// Every descendant of the `roots` (children, their children, ...).
pub fn descendants<'a>(all: &'a [Process], roots: &[i32]) -> Vec<&'a Process> {
    let mut found: Vec<&Process> = Vec::new();
    let mut frontier: Vec<i32> = roots.to_vec();
    while let Some(parent) = frontier.pop() {
        for child in all.iter().filter(|p| p.ppid == parent) {
            if !found.iter().any(|f| f.pid == child.pid) {
                found.push(child);
                frontier.push(child.pid);
            }
        }
    }
    found
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg gives them.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// A process's memory: resident set (VmRSS) and proportional set size (Pss,
/// which splits pages shared between processes among them, so that sums over
/// many processes of one binary are not inflated by the shared text).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Memory {
    pub pid: i32,
    pub comm: String,
    pub rss_kib: u64,
    pub pss_kib: u64,
}

impl Memory {
    pub fn of(pid: i32, comm: &str) -> std::io::Result<Memory> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
        let missing = |what: &str| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no {what} for pid {pid}"),
            )
        };
        Ok(Memory {
            pid,
            comm: comm.to_string(),
            rss_kib: kib_field(&status, "VmRSS").ok_or_else(|| missing("VmRSS"))?,
            pss_kib: kib_field(&rollup, "Pss").ok_or_else(|| missing("Pss"))?,
        })
    }
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let stat = "4242 (a (b) c) S 17 4242 4242 0 -1 4194560 130 0";
        assert_eq!(parse_stat(stat), Some(("a (b) c".to_string(), 17)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn kib_fields() {
        let status = "Name:\tcriusd\nVmRSS:\t   12345 kB\nRssAnon:\t 100 kB\n";
        assert_eq!(kib_field(status, "VmRSS"), Some(12345));
        assert_eq!(kib_field(status, "VmSwap"), None);
        let rollup =
            "00-ff ---p 0 00:00 0 [rollup]\nRss:  1640 kB\nPss:  210 kB\nPss_Dirty: 116 kB\n";
        assert_eq!(kib_field(rollup, "Pss"), Some(210));
    }

    fn process(pid: i32, ppid: i32, cmdline: &str) -> Process {
        Process {
            pid,
            ppid,
            comm: cmdline.split(' ').next().unwrap_or("").to_string(),
            cmdline: cmdline.to_string(),
        }
    }

    #[test]
    fn matching_needs_every_needle() {
        let all = [
            process(10, 1, "crius-shim --socket /tmp/a/state/x.sock"),
            process(11, 1, "crius-shim --socket /tmp/b/state/y.sock"),
            process(12, 1, ""),
        ];
        let needles = ["crius-shim".to_string(), "/tmp/a/".to_string()];
        let pids: Vec<i32> = matching(&all, &needles).iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![10]);
        assert!(matching(&all, &[]).len() == 2, "kernel threads never match");
        let me = process(
            std::process::id() as i32,
            1,
            "crius-bench --shim-match=crius-shim",
        );
        assert!(
            matching(&[me], &needles[..1]).is_empty(),
            "never this process"
        );
    }

    #[test]
    fn descendants_follow_the_tree() {
        let all = [
            process(10, 1, "shim"),
            process(20, 10, "sh /pause"),
            process(21, 20, "tail -f /dev/null"),
            process(22, 10, "sleep 3600"),
            process(30, 1, "other"),
        ];
        let mut pids: Vec<i32> = descendants(&all, &[10]).iter().map(|p| p.pid).collect();
        pids.sort();
        assert_eq!(pids, vec![20, 21, 22]);
        assert!(descendants(&all, &[30]).is_empty());
    }
}
