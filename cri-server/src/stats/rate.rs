//! CPU usage as a rate (nano cores): the cumulative CPU time of a cgroup
//! against its previous sample, as containerd computes usage_nano_cores.

use std::collections::HashMap;
use std::sync::Mutex;

/// A sample older than this is dropped: its cgroup is likely gone, and a
/// rate over so long a window says little anyway.
const STALE_AFTER_NANOS: i64 = 10 * 60 * 1_000_000_000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: i64,
    cpu_nanos: u64,
}

/// The previous CPU sample of each cgroup, in memory only.
#[derive(Debug, Default)]
pub struct CpuRates {
    previous: Mutex<HashMap<String, Sample>>,
}

impl CpuRates {
    /// Records `cpu_nanos` of `cgroup` at `at` (unix nanoseconds) and returns
    /// the usage in nano cores since the previous sample: 0 on the first
    /// sample, a clock that did not advance, or a counter that went back
    /// (a new cgroup of the same name).
    pub fn nano_cores(&self, cgroup: &str, at: i64, cpu_nanos: u64) -> u64 {
        let mut previous = self.previous.lock().expect("cpu samples lock");
        let rate = match previous.get(cgroup) {
            Some(p) if at > p.at && cpu_nanos >= p.cpu_nanos => {
                let used = (cpu_nanos - p.cpu_nanos) as u128;
                (used * 1_000_000_000 / (at - p.at) as u128) as u64
            }
            _ => 0,
        };
        previous.retain(|_, s| at - s.at < STALE_AFTER_NANOS);
        previous.insert(cgroup.to_string(), Sample { at, cpu_nanos });
        rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000_000;

    #[test]
    fn first_sample_is_zero_then_a_rate() {
        let rates = CpuRates::default();
        assert_eq!(rates.nano_cores("/a", 10 * SECOND, 5_000_000_000), 0);
        // Half a core over two seconds.
        assert_eq!(
            rates.nano_cores("/a", 12 * SECOND, 6_000_000_000),
            500_000_000
        );
        // Two full cores over one second.
        assert_eq!(
            rates.nano_cores("/a", 13 * SECOND, 8_000_000_000),
            2_000_000_000
        );
        // Each cgroup has its own previous sample.
        assert_eq!(rates.nano_cores("/b", 13 * SECOND, 1), 0);
    }

    #[test]
    fn no_rate_without_time_or_with_a_reset_counter() {
        let rates = CpuRates::default();
        rates.nano_cores("/a", SECOND, 1_000);
        assert_eq!(rates.nano_cores("/a", SECOND, 2_000), 0);
        assert_eq!(rates.nano_cores("/a", 2 * SECOND, 10), 0);
        assert_eq!(
            rates.nano_cores("/a", 3 * SECOND, 1_000_000_010),
            SECOND as u64
        );
    }

    #[test]
    fn stale_samples_are_forgotten() {
        let rates = CpuRates::default();
        rates.nano_cores("/gone", 0, 1);
        rates.nano_cores("/a", STALE_AFTER_NANOS + 1, 1);
        assert!(!rates.previous.lock().unwrap().contains_key("/gone"));
        assert!(rates.previous.lock().unwrap().contains_key("/a"));
    }
}
