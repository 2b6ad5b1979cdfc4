//! Two runs side by side: a table for people and a JSON document with the
//! ratios, both built from the same rows.

use crate::RunResult;
use serde::Serialize;
use std::fmt::Write;

/// One compared figure.
#[derive(Debug, Serialize, PartialEq)]
pub struct Row {
    pub what: String,
    pub unit: &'static str,
    pub subject: f64,
    pub baseline: f64,
    /// subject / baseline (null when the baseline is 0).
    pub ratio: Option<f64>,
    /// A throughput: the subject is ahead when the ratio is above 1 (for
    /// every other row, below 1).
    pub higher_is_better: bool,
}

fn row(what: impl Into<String>, unit: &'static str, subject: f64, baseline: f64) -> Row {
    Row {
        what: what.into(),
        unit,
        subject,
        baseline,
        ratio: (baseline != 0.0).then(|| subject / baseline),
        higher_is_better: false,
    }
}

/// A row where more is better (throughput).
fn higher_better_row(what: &str, unit: &'static str, subject: f64, baseline: f64) -> Row {
    Row {
        higher_is_better: true,
        ..row(what, unit, subject, baseline)
    }
}

pub fn rows(subject: &RunResult, baseline: &RunResult) -> Vec<Row> {
    let mut rows = Vec::new();
    let (s, b) = (&subject.lifecycle, &baseline.lifecycle);
    let steps = s.steps.iter().zip(&b.steps);
    for ((name, ss), (_, bs)) in steps.chain([(
        &("total".to_string(), s.total.clone()),
        &("total".to_string(), b.total.clone()),
    )]) {
        rows.push(row(
            format!("lifecycle {name} median"),
            "ms",
            ss.median_ms,
            bs.median_ms,
        ));
        rows.push(row(
            format!("lifecycle {name} p90"),
            "ms",
            ss.p90_ms,
            bs.p90_ms,
        ));
    }
    let (s, b) = (&subject.exec.latency, &baseline.exec.latency);
    rows.push(row("ExecSync true median", "ms", s.median_ms, b.median_ms));
    rows.push(row("ExecSync true p90", "ms", s.p90_ms, b.p90_ms));
    let (s, b) = (
        &subject.exec_timeout.overshoot,
        &baseline.exec_timeout.overshoot,
    );
    rows.push(row(
        "ExecSync 1 s timeout overshoot median",
        "ms",
        s.median_ms,
        b.median_ms,
    ));
    rows.push(row(
        "ExecSync 1 s timeout overshoot max",
        "ms",
        s.max_ms,
        b.max_ms,
    ));
    let (s, b) = (&subject.update.latency, &baseline.update.latency);
    rows.push(row(
        "UpdateContainerResources median",
        "ms",
        s.median_ms,
        b.median_ms,
    ));
    rows.push(row(
        "UpdateContainerResources p90",
        "ms",
        s.p90_ms,
        b.p90_ms,
    ));
    let (s, b) = (
        &subject.streaming.exec.latency,
        &baseline.streaming.exec.latency,
    );
    rows.push(row(
        "exec true round trip over SPDY median",
        "ms",
        s.median_ms,
        b.median_ms,
    ));
    rows.push(row(
        "exec true round trip over SPDY p90",
        "ms",
        s.p90_ms,
        b.p90_ms,
    ));
    let (s, b) = (
        &subject.streaming.port_forward,
        &baseline.streaming.port_forward,
    );
    rows.push(higher_better_row(
        "port-forward throughput median",
        "MiB/s",
        s.median_mib_per_s,
        b.median_mib_per_s,
    ));
    let (s, b) = (&subject.memory, &baseline.memory);
    let mib = |kib: u64| kib as f64 / 1024.0;
    rows.push(row(
        "daemon RSS at start",
        "MiB",
        mib(s.daemon_start.rss_kib),
        mib(b.daemon_start.rss_kib),
    ));
    rows.push(row(
        format!("daemon RSS with {} pods", s.many.pods),
        "MiB",
        mib(s.daemon_with_pods.rss_kib),
        mib(b.daemon_with_pods.rss_kib),
    ));
    rows.push(row(
        "daemon RSS after runs",
        "MiB",
        mib(s.daemon_after_runs.rss_kib),
        mib(b.daemon_after_runs.rss_kib),
    ));
    rows.push(row(
        "shim RSS, 1 container",
        "MiB",
        mib(s.one.shims_rss_kib),
        mib(b.one.shims_rss_kib),
    ));
    rows.push(row(
        "shim PSS, 1 container",
        "MiB",
        mib(s.one.shims_pss_kib),
        mib(b.one.shims_pss_kib),
    ));
    rows.push(row(
        format!("shims RSS sum, {} containers", s.many.pods),
        "MiB",
        mib(s.many.shims_rss_kib),
        mib(b.many.shims_rss_kib),
    ));
    rows.push(row(
        format!("shims PSS sum, {} containers", s.many.pods),
        "MiB",
        mib(s.many.shims_pss_kib),
        mib(b.many.shims_pss_kib),
    ));
    rows.push(row(
        format!("sandbox processes RSS sum, {} pods", s.many.pods),
        "MiB",
        mib(s.many.sandbox_rss_kib),
        mib(b.many.sandbox_rss_kib),
    ));
    rows
}

/// A row's label: what, its unit, and which way is better where that is
/// not "lower".
fn label(r: &Row) -> String {
    if r.higher_is_better {
        format!("{} ({}, higher is better)", r.what, r.unit)
    } else {
        format!("{} ({})", r.what, r.unit)
    }
}

pub fn table(subject_name: &str, baseline_name: &str, rows: &[Row]) -> String {
    let ratio_head = format!("{subject_name}/{baseline_name}");
    let width = rows
        .iter()
        .map(|r| label(r).len())
        .max()
        .unwrap_or(0)
        .max(46);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$} {:>12} {:>12} {:>18}",
        "", subject_name, baseline_name, ratio_head
    );
    for r in rows {
        let ratio = r.ratio.map_or("-".to_string(), |x| format!("{x:.2}"));
        let _ = writeln!(
            out,
            "{:<width$} {:>12.1} {:>12.1} {:>18}",
            label(r),
            r.subject,
            r.baseline,
            ratio
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_subject_over_baseline() {
        assert_eq!(row("x", "ms", 5.0, 20.0).ratio, Some(0.25));
        assert_eq!(row("x", "ms", 5.0, 0.0).ratio, None);
    }

    #[test]
    fn table_has_a_line_per_row() {
        let rows = [row("a", "ms", 1.0, 2.0), row("b", "MiB", 3.0, 0.0)];
        let text = table("crius", "containerd", &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].contains("crius/containerd"));
        assert!(lines[1].starts_with("a (ms)") && lines[1].ends_with("0.50"));
        assert!(lines[2].ends_with('-'));
    }

    #[test]
    fn a_throughput_row_says_higher_is_better_and_widens_the_label_column() {
        let what = "port-forward throughput median";
        let rows = [
            row("a", "ms", 1.0, 2.0),
            higher_better_row(what, "MiB/s", 900.0, 300.0),
        ];
        assert_eq!(rows[1].ratio, Some(3.0));
        let text = table("crius", "containerd", &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with(&format!("{what} (MiB/s, higher is better) ")));
        assert!(lines[2].ends_with("3.00"));
        // The columns stay aligned.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{text}");
    }
}
