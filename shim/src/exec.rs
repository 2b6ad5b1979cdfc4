//! Exec processes: their process spec (ExecSync's and the streamed
//! Exec's), and supervising an ExecSync: collecting its output, enforcing the
//! timeout, and its exit code.

use std::pin::pin;
use std::time::Duration;

use crius_runtime::oci_spec::runtime::Process;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout, Instant};

use crate::error::ShimError;
use crate::reaper::Exit;

/// The most bytes kept of each of stdout and stderr; the rest is read and dropped.
pub const OUTPUT_CAP: usize = 16 * 1024 * 1024;

/// How long output is still read after the exec's process has exited. A
/// background child (`sleep 365d &`) can hold the pipes open forever; we stop
/// reading then rather than hang (containerd #7802).
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit status, or 128+N when killed by signal N.
    pub exit_code: i32,
    pub timed_out: bool,
}

/// A streamed exec's process given as an OCI `process` object in JSON: args
/// must be given; `terminal` may be true.
pub fn process_from_json(json: &[u8]) -> Result<Process, ShimError> {
    let process: Process = serde_json::from_slice(json)
        .map_err(|e| ShimError::InvalidArgument(format!("exec process JSON: {e}")))?;
    if process.args().as_ref().is_none_or(Vec::is_empty) {
        return Err(ShimError::InvalidArgument("exec args are empty".into()));
    }
    Ok(process)
}

/// An ExecSync's process, as [`process_from_json`] but `terminal` must be
/// false: its output is collected, and no one could type into a terminal.
pub fn sync_process_from_json(json: &[u8]) -> Result<Process, ShimError> {
    let process = process_from_json(json)?;
    if process.terminal() == Some(true) {
        return Err(ShimError::InvalidArgument(
            "ExecSync cannot run a terminal".into(),
        ));
    }
    Ok(process)
}

/// Supervises a started exec process that leads its own process group
/// `pgid`: collects stdout and stderr until it has exited (plus
/// [`DRAIN_GRACE`]), and kills the whole group with SIGKILL at `deadline`.
/// If this future is dropped before the process exited (the caller went
/// away), the group is killed too.
pub async fn supervise(
    pgid: Pid,
    exited: oneshot::Receiver<Exit>,
    stdout: pipe::Receiver,
    stderr: pipe::Receiver,
    deadline: Option<Instant>,
) -> Result<ExecOutput, ShimError> {
    let mut group = KillOnDrop::new(pgid);
    let (mut stdout_kept, mut stderr_kept) = (Vec::new(), Vec::new());
    let mut timed_out = false;
    let exit = {
        let mut drain = pin!(async {
            tokio::join!(
                read_capped(stdout, &mut stdout_kept),
                read_capped(stderr, &mut stderr_kept)
            )
        });
        let mut exited = pin!(exited);
        let mut drained = false;
        let exit = loop {
            tokio::select! {
                exit = &mut exited => break exit,
                _ = &mut drain, if !drained => drained = true,
                _ = sleep_until_some(deadline), if !timed_out => {
                    group.kill();
                    timed_out = true;
                }
            }
        };
        group.disarm();
        if !drained && timeout(DRAIN_GRACE, &mut drain).await.is_err() {
            tracing::debug!(%pgid, "exec output still open after the process exited; stopped reading");
        }
        exit
    };
    let exit = exit.map_err(|_| anyhow::anyhow!("the reaper dropped exec process {pgid}"))?;
    Ok(ExecOutput {
        stdout: stdout_kept,
        stderr: stderr_kept,
        exit_code: exit.code,
        timed_out,
    })
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Reads `stream` to EOF, keeping the first [`OUTPUT_CAP`] bytes in `kept`.
async fn read_capped(mut stream: pipe::Receiver, kept: &mut Vec<u8>) {
    let mut chunk = vec![0; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => return,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
            Err(err) => {
                tracing::warn!(%err, "reading exec output failed");
                return;
            }
        }
    }
}

/// SIGKILLs a process group unless disarmed; disarm once its leader is reaped.
pub struct KillOnDrop(Option<Pid>);

impl KillOnDrop {
    /// Arms the kill of process group `pgid`.
    pub fn new(pgid: Pid) -> KillOnDrop {
        KillOnDrop(Some(pgid))
    }

    pub fn kill(&self) {
        if let Some(pgid) = self.0 {
            // ESRCH: the group is already gone, which is what we want.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The process group of the exec'd process `pid`, which holds it and what it
/// starts (see crius_runtime::OciRuntime): `pid` itself under libcontainer and
/// runc, which make it a session leader; crun's exec leads its session from
/// an intermediate process that has exited. Read before the process is
/// reaped. A process already gone, or one left in the shim's own group (which
/// a kill must never reach), is taken as its own group.
pub fn process_group(pid: Pid) -> Pid {
    match nix::unistd::getpgid(Some(pid)) {
        Ok(group) if group != nix::unistd::getpgrp() => group,
        _ => pid,
    }
}

/// The deadline of a timeout in milliseconds; 0 means none.
pub fn deadline_after(timeout_ms: u64) -> Option<Instant> {
    (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(timeout_ms))
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    use std::time::SystemTime;

    use nix::sys::wait::waitpid;

    use super::*;
    use crate::reaper::exit_code;

    /// Starts `sh -c script` as its own process group, as runtime.exec does,
    /// with a waiter thread standing in for the reaper.
    #[expect(
        clippy::zombie_processes,
        reason = "reaped with waitpid by the waiter thread, as the reaper would"
    )]
    fn spawn(script: &str) -> (Pid, oneshot::Receiver<Exit>, pipe::Receiver, pipe::Receiver) {
        let mut child = Command::new("sh")
            .args(["-c", script])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let stdout = pipe::Receiver::from_owned_fd(OwnedFd::from(child.stdout.take().unwrap()));
        let stderr = pipe::Receiver::from_owned_fd(OwnedFd::from(child.stderr.take().unwrap()));
        let (sender, exited) = oneshot::channel();
        std::thread::spawn(move || {
            let (_, code) = exit_code(waitpid(pid, None).unwrap()).unwrap();
            let _ = sender.send(Exit {
                code,
                at: SystemTime::now(),
            });
        });
        (pid, exited, stdout.unwrap(), stderr.unwrap())
    }

    fn alive(pid: Pid) -> bool {
        nix::sys::signal::kill(pid, None).is_ok()
    }

    #[tokio::test]
    async fn collects_both_streams_and_the_exit_code() {
        let (pid, exited, stdout, stderr) = spawn("echo out; echo err >&2; exit 3");
        let output = supervise(pid, exited, stdout, stderr, deadline_after(5000))
            .await
            .unwrap();
        assert_eq!(
            output,
            ExecOutput {
                stdout: b"out\n".to_vec(),
                stderr: b"err\n".to_vec(),
                exit_code: 3,
                timed_out: false,
            }
        );
    }

    #[tokio::test]
    async fn the_timeout_kills_the_whole_group() {
        let (pid, exited, stdout, stderr) = spawn("sleep 10 & echo $!; wait");
        let started = std::time::Instant::now();
        let output = supervise(pid, exited, stdout, stderr, deadline_after(300))
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(output.timed_out);
        assert_eq!(output.exit_code, 137);
        assert!(took < Duration::from_millis(800), "took {took:?}");
        let sleep_pid: i32 = String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SIGKILL is delivered asynchronously: the killed sleep may still show
        // as running for an instant, then is gone or a zombie.
        let dead = || {
            let stat =
                std::fs::read_to_string(format!("/proc/{sleep_pid}/stat")).unwrap_or_default();
            stat.is_empty() || stat.contains(") Z ")
        };
        let killed_at = std::time::Instant::now();
        while !dead() && killed_at.elapsed() < Duration::from_secs(2) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(dead(), "sleep {sleep_pid} survived the group kill");
    }

    #[tokio::test]
    async fn a_background_child_holding_the_pipes_does_not_hang_the_drain() {
        let (pid, exited, stdout, stderr) = spawn("echo hi; sleep 30 & echo $! >&2");
        let started = std::time::Instant::now();
        let output = supervise(pid, exited, stdout, stderr, None).await.unwrap();
        let took = started.elapsed();
        assert_eq!(output.stdout, b"hi\n");
        assert_eq!(output.exit_code, 0);
        assert!(!output.timed_out);
        assert!(
            took >= DRAIN_GRACE && took < DRAIN_GRACE * 3,
            "took {took:?}"
        );
        let sleep_pid = Pid::from_raw(
            String::from_utf8(output.stderr)
                .unwrap()
                .trim()
                .parse()
                .unwrap(),
        );
        assert!(alive(sleep_pid));
        nix::sys::signal::kill(sleep_pid, Signal::SIGKILL).unwrap();
    }

    #[tokio::test]
    async fn output_beyond_the_cap_is_dropped_while_the_process_finishes() {
        let script = format!("head -c {} /dev/zero; echo done >&2", OUTPUT_CAP + 100_000);
        let (pid, exited, stdout, stderr) = spawn(&script);
        let output = supervise(pid, exited, stdout, stderr, deadline_after(10_000))
            .await
            .unwrap();
        assert_eq!(output.stdout.len(), OUTPUT_CAP);
        assert_eq!(output.stderr, b"done\n");
        assert_eq!(output.exit_code, 0);
    }

    #[tokio::test]
    async fn dropping_the_supervision_kills_the_group() {
        let (pid, exited, stdout, stderr) = spawn("sleep 10");
        let supervision = supervise(pid, exited, stdout, stderr, None);
        assert!(timeout(Duration::from_millis(200), supervision)
            .await
            .is_err());
        // SIGKILL is sent on drop; the waiter thread reaps the child soon after.
        for _ in 0..100 {
            if !alive(pid) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("exec process {pid} survived its dropped supervision");
    }

    #[test]
    fn an_execs_group_is_its_own_never_the_shims() {
        use std::io::BufRead;
        // A group leader (as libcontainer's and runc's exec'd process is) and its child (as
        // crun's is: its group's leader has exited).
        let mut leader = Command::new("sh")
            .args(["-c", "sleep 5 & echo $!; wait"])
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let leader_pid = Pid::from_raw(leader.id() as i32);
        let mut line = String::new();
        std::io::BufReader::new(leader.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let child = Pid::from_raw(line.trim().parse().unwrap());
        assert_eq!(process_group(leader_pid), leader_pid);
        assert_eq!(process_group(child), leader_pid);
        // Left in the caller's own group: itself, so a kill never reaches the caller.
        let mut own = Command::new("sleep").arg("5").spawn().unwrap();
        let own_pid = Pid::from_raw(own.id() as i32);
        assert_eq!(process_group(own_pid), own_pid);
        own.kill().unwrap();
        own.wait().unwrap();
        killpg(leader_pid, Signal::SIGKILL).unwrap();
        leader.wait().unwrap();
    }

    const TERMINAL_SH: &[u8] =
        br#"{"terminal":true,"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"}"#;

    #[test]
    fn exec_sync_processes_must_not_ask_for_a_terminal() {
        let process =
            sync_process_from_json(br#"{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/"}"#)
                .unwrap();
        assert_eq!(process.args().as_deref(), Some(&["true".into()][..]));
        let err = sync_process_from_json(TERMINAL_SH).unwrap_err();
        assert!(
            matches!(&err, ShimError::InvalidArgument(m) if m.contains("terminal")),
            "{err}"
        );
        assert!(sync_process_from_json(b"not json").is_err());
    }

    #[test]
    fn streamed_exec_processes_may_ask_for_a_terminal() {
        let process = process_from_json(TERMINAL_SH).unwrap();
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(process.args().as_deref(), Some(&["sh".into()][..]));
        let err = process_from_json(b"not json").unwrap_err();
        assert!(
            matches!(&err, ShimError::InvalidArgument(m) if m.starts_with("exec process JSON: ")),
            "{err}"
        );
    }

    #[test]
    fn json_processes_must_give_args() {
        for json in [
            &br#"{"user":{"uid":0,"gid":0},"cwd":"/"}"#[..],
            br#"{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"}"#,
        ] {
            let err = process_from_json(json).unwrap_err();
            assert!(
                matches!(&err, ShimError::InvalidArgument(m) if m == "exec args are empty"),
                "{err}"
            );
        }
    }
}
