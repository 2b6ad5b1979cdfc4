//! Order statistics of latency samples.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Samples of one measurement, in milliseconds, with their median and p90.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub median_ms: f64,
    pub p90_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

impl Summary {
    /// Summarises `samples` (in the order they were taken). Panics on an
    /// empty set: every measurement takes at least one sample.
    pub fn of(samples: &[Duration]) -> Summary {
        let samples_ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        Summary::of_ms(samples_ms)
    }

    pub fn of_ms(samples_ms: Vec<f64>) -> Summary {
        assert!(!samples_ms.is_empty(), "a summary needs samples");
        let mut sorted = samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        Summary {
            median_ms: median(&sorted),
            p90_ms: nearest_rank(&sorted, 0.9),
            min_ms: sorted[0],
            max_ms: sorted[sorted.len() - 1],
            samples_ms,
        }
    }
}

/// The middle value of sorted samples; the mean of the two middle ones when
/// their count is even.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The nearest-rank percentile: the smallest sample with at least `q` of the
/// samples at or below it (no interpolation, so it is always a measured value).
fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(Summary::of_ms(vec![3.0, 1.0, 2.0]).median_ms, 2.0);
        assert_eq!(Summary::of_ms(vec![4.0, 1.0, 3.0, 2.0]).median_ms, 2.5);
    }

    #[test]
    fn p90_is_the_nearest_rank() {
        let ten: Vec<f64> = (1..=10).rev().map(f64::from).collect();
        assert_eq!(Summary::of_ms(ten).p90_ms, 9.0);
        let twenty: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(Summary::of_ms(twenty).p90_ms, 18.0);
        assert_eq!(Summary::of_ms(vec![7.0]).p90_ms, 7.0);
    }

    #[test]
    fn keeps_samples_in_order_taken() {
        let s = Summary::of(&[Duration::from_millis(5), Duration::from_millis(1)]);
        assert_eq!(s.samples_ms, vec![5.0, 1.0]);
        assert_eq!((s.min_ms, s.max_ms), (1.0, 5.0));
    }
}
