//! Lifecycle latency, compared with runc on the same bundle. Ignored by default; run:
//! `cargo test -p crius-runtime --release --test bench -- --ignored --nocapture`

mod common;

use std::process::{Command, Stdio as ProcessStdio};
use std::time::{Duration, Instant};

use common::*;
use crius_runtime::{Runtime, Stdio};
use nix::sys::wait::WaitStatus;

const RUNS: u32 = 20;

#[derive(Default)]
struct Phases {
    create: Duration,
    start: Duration,
    wait: Duration,
    delete: Duration,
}

impl Phases {
    fn total(&self) -> Duration {
        self.create + self.start + self.wait + self.delete
    }
}

fn ms(total: Duration) -> f64 {
    total.as_secs_f64() * 1000.0 / f64::from(RUNS)
}

/// User + system CPU time of this process, or of its reaped children.
fn cpu_time(who: i32) -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage only writes the struct we pass.
    let usage = unsafe {
        assert_eq!(libc::getrusage(who, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
#[ignore = "benchmark; run with --release -- --ignored --nocapture"]
fn create_start_wait_delete_of_true() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    // Runs are sequential, so they can share one bundle and its cgroup path.
    let bundle = Bundle::isolated("bench", &["true"]);
    let run_once = |id: &str, phases: &mut Phases| {
        let t = Instant::now();
        let pid = runtime.create(id, bundle.path(), Stdio::null()).unwrap();
        phases.create += t.elapsed();
        let t = Instant::now();
        runtime.start(id).unwrap();
        phases.start += t.elapsed();
        let t = Instant::now();
        assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
        phases.wait += t.elapsed();
        let t = Instant::now();
        runtime.delete(id, false).unwrap();
        phases.delete += t.elapsed();
    };
    run_once("bench-warmup", &mut Phases::default());

    let mut phases = Phases::default();
    let (self_before, children_before) =
        (cpu_time(libc::RUSAGE_SELF), cpu_time(libc::RUSAGE_CHILDREN));
    for run in 0..RUNS {
        run_once(&format!("bench-{run}"), &mut phases);
    }
    let cpu_self = cpu_time(libc::RUSAGE_SELF) - self_before;
    let cpu_children = cpu_time(libc::RUSAGE_CHILDREN) - children_before;
    println!(
        "crius-runtime create+start+wait+delete of `true`: {:.2} ms average over {RUNS} runs \
         (create {:.2}, start {:.2}, wait {:.2}, delete {:.2})",
        ms(phases.total()),
        ms(phases.create),
        ms(phases.start),
        ms(phases.wait),
        ms(phases.delete),
    );
    println!(
        "  CPU per run: caller {:.2} ms, its children (intermediate, init, `true`) {:.2} ms; \
         load average now {}",
        ms(cpu_self),
        ms(cpu_children),
        std::fs::read_to_string("/proc/loadavg").unwrap().trim(),
    );

    let runc_available = Command::new("runc")
        .arg("--version")
        .stdout(ProcessStdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runc_available {
        println!("runc not found; no comparison");
        return;
    }
    let runc_root = tempfile::tempdir().unwrap();
    let children_before = cpu_time(libc::RUSAGE_CHILDREN);
    let runc_run = |id: &str| {
        // `runc run` = create + start + wait + delete, in one foreground call.
        let status = Command::new("runc")
            .arg("--root")
            .arg(runc_root.path())
            .args(["run", "--bundle"])
            .arg(bundle.path())
            .arg(id)
            .stdin(ProcessStdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "runc run {id}: {status}");
    };
    runc_run("runc-warmup");
    let t = Instant::now();
    for run in 0..RUNS {
        runc_run(&format!("runc-{run}"));
    }
    let elapsed = t.elapsed();
    println!(
        "runc run (create+start+wait+delete) of `true`: {:.2} ms average over {RUNS} runs; \
         CPU per run (runc and its children) {:.2} ms",
        ms(elapsed),
        ms(cpu_time(libc::RUSAGE_CHILDREN) - children_before),
    );
}
