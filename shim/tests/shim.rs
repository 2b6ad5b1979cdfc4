//! The built `crius-shim` binary, driven as criusd drives it: spawned with a
//! readiness pipe, then over its socket through a real busybox container.

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crius_proto::exit_file;
use crius_proto::ready::{self, Readiness};
use crius_proto::shim::v1::shim_client::ShimClient;
use crius_proto::shim::v1::{
    io_input, io_output, AttachStart, CloseStdin, CreateRequest, DeleteRequest, ExecStart,
    ExecSyncRequest, ExecSyncResponse, IoInput, IoOutput, KillRequest, ReopenLogRequest, Resize,
    ShutdownRequest, StartRequest, StateRequest, Status, UpdateRequest, WaitRequest,
};
use crius_runtime::oci_spec::runtime::{
    get_default_mounts, BoxBuilder, LinuxBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxResourcesBuilder, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
};
use hyper_util::rt::TokioIo;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use nix::unistd::{getpid, pipe2, Pid};
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

const SHIM: &str = env!("CARGO_BIN_EXE_crius-shim");
const TEST_CGROUP_PARENT: &str = "crius-test";
const RSS_CEILING_KIB: u64 = 20 * 1024;
const RSS_GROWTH_LIMIT_KIB: u64 = 4 * 1024;

macro_rules! require_root {
    () => {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIPPED: this test needs root (namespaces, mounts, cgroups)");
            return;
        }
    };
}

/// Paths of one shim under test; everything lives in one temporary dir.
struct ShimPaths {
    dir: tempfile::TempDir,
}

impl ShimPaths {
    fn new() -> ShimPaths {
        ShimPaths {
            dir: tempfile::Builder::new()
                .prefix("crius-shim-")
                .tempdir()
                .unwrap(),
        }
    }
    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }
    fn socket(&self) -> PathBuf {
        self.dir.path().join("shim.sock")
    }
    fn exit_file(&self) -> PathBuf {
        self.dir.path().join("exit")
    }
    fn runtime_root(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn log(&self) -> PathBuf {
        self.dir.path().join("logs/pod/c/0.log")
    }
}

/// Starts the shim as criusd does and returns what it reported on the
/// readiness pipe, after its first process has exited.
fn spawn_shim(id: &str, paths: &ShimPaths) -> Readiness {
    let (ready_reader, ready_writer) = pipe2(OFlag::O_CLOEXEC).unwrap();
    let ready_fd = ready_writer.as_raw_fd();
    let mut command = Command::new(SHIM);
    command
        .arg("--id")
        .arg(id)
        .arg("--bundle")
        .arg(paths.bundle())
        .arg("--socket")
        .arg(paths.socket())
        .arg("--runtime-root")
        .arg(paths.runtime_root())
        .arg("--exit-file")
        .arg(paths.exit_file())
        .arg("--log-path")
        .arg(paths.log())
        .args(["--log-level", "debug"])
        .arg("--ready-fd")
        .arg(ready_fd.to_string());
    // SAFETY: only fcntl between fork and exec. The fd stays close-on-exec in
    // this process, so children of concurrent tests do not inherit it.
    unsafe {
        command.pre_exec(move || {
            fcntl(ready_fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            Ok(())
        });
    }
    let status = command.status().unwrap();
    assert!(
        status.success(),
        "the shim's first process exited with {status}"
    );
    drop(ready_writer);
    let mut report = Vec::new();
    File::from(ready_reader).read_to_end(&mut report).unwrap();
    ready::parse(&report)
}

async fn connect(socket: &Path) -> ShimClient<Channel> {
    let socket = socket.to_owned();
    let channel = Endpoint::try_from("http://shim.invalid")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .unwrap();
    ShimClient::new(channel)
}

/// The pid of the process serving `socket`.
fn server_pid(socket: &Path) -> Pid {
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    Pid::from_raw(getsockopt(&stream, PeerCredentials).unwrap().pid())
}

fn status_field(pid: Pid, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
}

fn rss_kib(pid: Pid) -> u64 {
    let rss = status_field(pid, "VmRSS").unwrap();
    rss.trim_end_matches(" kB").parse().unwrap()
}

/// Whether `pid` runs (a zombie does not).
fn running(pid: Pid) -> bool {
    status_field(pid, "State").is_some_and(|state| !state.starts_with('Z'))
}

/// Field `index` after the command name in /proc/<pid>/stat.
fn stat_field(pid: Pid, index: usize) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(index)
        .unwrap()
        .parse()
        .unwrap()
}

fn cgroup_dir(controller: &str, cgroup_name: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(TEST_CGROUP_PARENT)
        .join(cgroup_name)
}

fn cgroup_pids(cgroup_name: &str) -> Vec<Pid> {
    fs::read_to_string(cgroup_dir("pids", cgroup_name).join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .map(|pid| Pid::from_raw(pid.parse().unwrap()))
        .collect()
}

/// Kills what a failed test left running: the container's processes and the shim.
struct Cleanup {
    cgroup_name: String,
    shim: Option<Pid>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for pid in cgroup_pids(&self.cgroup_name).into_iter().chain(self.shim) {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

fn write_bundle(bundle: &Path, cgroup_name: &str, args: &[&str]) {
    let rootfs = bundle.join("rootfs");
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in ["sh", "echo", "sleep", "true", "cat", "dd", "tty", "stty"] {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    let ldd = Command::new("ldd").arg("/bin/busybox").output().unwrap();
    assert!(ldd.status.success(), "ldd /bin/busybox failed");
    for lib in String::from_utf8(ldd.stdout)
        .unwrap()
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
    {
        let target = rootfs.join(lib.trim_start_matches('/'));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(lib, &target).unwrap();
    }

    let process = ProcessBuilder::default()
        .args(args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_owned()])
        .cwd("/")
        .build()
        .unwrap();
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build().unwrap())
    .collect::<Vec<_>>();
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(format!(
            "/{TEST_CGROUP_PARENT}/{cgroup_name}"
        )))
        .build()
        .unwrap();
    let mounts = get_default_mounts()
        .into_iter()
        .filter(|mount| mount.destination() != Path::new("/sys/fs/cgroup"))
        .collect::<Vec<_>>();
    let spec: Spec = SpecBuilder::default()
        .version("1.0.2")
        .root(RootBuilder::default().path("rootfs").build().unwrap())
        .hostname("crius-shim-test")
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .unwrap();
    spec.save(bundle.join("config.json")).unwrap();
}

/// An ExecSync of `args` with the container's env and cwd, as criusd sends
/// it: the whole OCI process as JSON.
fn exec_request(args: &[&str], timeout_ms: u64) -> ExecSyncRequest {
    let process = ProcessBuilder::default()
        .args(args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_owned()])
        .cwd("/")
        .terminal(false)
        .build()
        .unwrap();
    ExecSyncRequest {
        process_json: serde_json::to_vec(&process).unwrap(),
        timeout_ms,
    }
}

async fn wait_for_log(log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let content = fs::read_to_string(log).unwrap_or_default();
        if content.contains(needle) || Instant::now() > deadline {
            return content;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn unix_nanos_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// A shim started for a new busybox container running `args`, and a client.
async fn start_shim(
    name: &str,
    paths: &ShimPaths,
    args: &[&str],
) -> (String, Pid, ShimClient<Channel>, Cleanup) {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let id = format!("{name}-{}-{nanos}", std::process::id());
    write_bundle(&paths.bundle(), &id, args);
    let mut cleanup = Cleanup {
        cgroup_name: id.clone(),
        shim: None,
    };
    assert_eq!(spawn_shim(&id, paths), Readiness::Ready);
    let shim = server_pid(&paths.socket());
    cleanup.shim = Some(shim);
    let client = connect(&paths.socket()).await;
    (id, shim, client, cleanup)
}

#[tokio::test(flavor = "current_thread")]
async fn a_container_through_its_whole_life() {
    require_root!();
    let paths = ShimPaths::new();
    let (id, shim, mut client, mut cleanup) =
        start_shim("shim", &paths, &["sh", "-c", "echo hello; sleep 600"]).await;

    // A detached daemon in its own session.
    assert_ne!(stat_field(shim, 1), getpid().as_raw(), "not reparented");
    assert_eq!(stat_field(shim, 3), shim.as_raw(), "not a session leader");

    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.status(), Status::Unspecified);
    assert_eq!(state.id, id);

    let before_create = unix_nanos_now();
    let init = client
        .create(CreateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .pid;
    let init = Pid::from_raw(init as i32);
    assert_eq!(
        stat_field(init, 1),
        shim.as_raw(),
        "init is not the shim's child"
    );
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.status(), Status::Created);
    assert_eq!(state.pid, init.as_raw() as u32);
    assert!(state.created_at >= before_create);

    client.start(StartRequest {}).await.unwrap();
    let log = wait_for_log(&paths.log(), " stdout F hello\n").await;
    assert!(log.ends_with(" stdout F hello\n"), "CRI log: {log:?}");
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.status(), Status::Running);
    assert!(state.started_at >= state.created_at);
    // None of the shim's fds (socket, ready pipe, its log) leak into the container.
    let mut init_fds: Vec<String> = fs::read_dir(format!("/proc/{init}/fd"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    init_fds.sort();
    assert_eq!(init_fds, ["0", "1", "2"]);

    // criusd's session going away must not take the shim along.
    kill(shim, Signal::SIGHUP).unwrap();
    let rss_after_start = rss_kib(shim);

    let output = client
        .exec_sync(exec_request(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            5000,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        output,
        ExecSyncResponse {
            stdout: b"out\n".to_vec(),
            stderr: b"err\n".to_vec(),
            exit_code: 3,
            timed_out: false,
        }
    );

    // The timeout: learn the exec's host pid from the container's cgroup.
    let before_exec = cgroup_pids(&id);
    let mut exec_client = client.clone();
    let started = Instant::now();
    let exec = tokio::spawn(async move {
        exec_client
            .exec_sync(exec_request(&["sleep", "10"], 1000))
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let exec_pids: Vec<Pid> = cgroup_pids(&id)
        .into_iter()
        .filter(|pid| !before_exec.contains(pid))
        .collect();
    assert_eq!(exec_pids.len(), 1, "exec processes: {exec_pids:?}");
    let output = exec.await.unwrap().unwrap().into_inner();
    let took = started.elapsed();
    assert!(output.timed_out);
    assert_eq!(output.exit_code, 137);
    eprintln!(
        "ExecSync `sleep 10` with a 1000 ms timeout returned after {took:?} (overshoot {:?})",
        took.saturating_sub(Duration::from_millis(1000))
    );
    assert!(took < Duration::from_millis(1100), "took {took:?}");
    assert!(!running(exec_pids[0]), "the timed-out exec still runs");
    assert!(
        !Path::new(&format!("/proc/{}", exec_pids[0])).exists(),
        "the timed-out exec was not reaped"
    );

    for round in 0..200 {
        let output = client
            .exec_sync(exec_request(&["echo", "x"], 5000))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(output.stdout, b"x\n", "round {round}");
    }
    let rss_after_execs = rss_kib(shim);
    eprintln!(
        "shim VmRSS: {rss_after_start} KiB after start, {rss_after_execs} KiB after 200 ExecSyncs"
    );
    assert!(rss_after_execs < RSS_CEILING_KIB);
    assert!(rss_after_execs < rss_after_start + RSS_GROWTH_LIMIT_KIB);

    // Refused while the container runs.
    let err = client.delete(DeleteRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let err = client.shutdown(ShutdownRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let mut wait_client = client.clone();
    let wait = tokio::spawn(async move { wait_client.wait(WaitRequest {}).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!wait.is_finished(), "Wait returned while init runs");
    client
        .kill(KillRequest {
            signal: Signal::SIGKILL as u32,
            all: false,
        })
        .await
        .unwrap();
    let exited = wait.await.unwrap().unwrap().into_inner();
    assert_eq!(exited.exit_code, 137);
    assert!(!exited.oom_killed, "a SIGKILL is no OOM kill");
    let record = exit_file::read(&paths.exit_file()).unwrap().unwrap();
    assert_eq!(record.exit_code, 137);
    assert!(!record.oom_killed);
    assert_eq!(record.finished_at_unix_nanos, exited.finished_at);
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.status(), Status::Stopped);
    assert_eq!(state.exit_code, 137);
    assert_eq!(state.finished_at, exited.finished_at);
    assert!(
        !Path::new(&format!("/proc/{init}")).exists(),
        "init not reaped"
    );
    // Signalling a stopped container is no error (StopContainer is idempotent).
    client
        .kill(KillRequest {
            signal: Signal::SIGTERM as u32,
            all: false,
        })
        .await
        .unwrap();

    client.delete(DeleteRequest {}).await.unwrap();
    client.delete(DeleteRequest {}).await.unwrap();
    assert!(!paths.runtime_root().join(&id).exists());
    assert!(!cgroup_dir("pids", &id).exists());
    assert!(
        client
            .state(StateRequest {})
            .await
            .unwrap()
            .into_inner()
            .deleted
    );

    client.shutdown(ShutdownRequest {}).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while running(shim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!running(shim), "the shim still runs after Shutdown");
    assert!(!paths.socket().exists(), "the socket was not removed");
    let shim_log = fs::read_to_string(paths.bundle().join("shim.log")).unwrap();
    assert!(shim_log.contains("exiting"), "shim.log: {shim_log}");
    cleanup.shim = None;
}

#[tokio::test(flavor = "current_thread")]
async fn the_log_holds_the_last_words_when_wait_returns() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = start_shim(
        "lastwords",
        &paths,
        &[
            "sh",
            "-c",
            "echo first; echo oops >&2; echo -n partial; exit 5",
        ],
    )
    .await;
    client.create(CreateRequest::default()).await.unwrap();
    client.start(StartRequest {}).await.unwrap();
    let exited = client.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(exited.exit_code, 5);
    // Read at once, no polling: the shim drained the output first.
    let log = fs::read_to_string(paths.log()).unwrap();
    let records: Vec<&str> = log
        .lines()
        .map(|line| line.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(records.len(), 3, "CRI log: {log:?}");
    assert!(records.contains(&"stdout F first"), "CRI log: {log:?}");
    assert!(records.contains(&"stderr F oops"), "CRI log: {log:?}");
    assert!(records.contains(&"stdout P partial"), "CRI log: {log:?}");

    client.delete(DeleteRequest {}).await.unwrap();
    client.shutdown(ShutdownRequest {}).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while running(shim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!running(shim), "the shim still runs after Shutdown");
    cleanup.shim = None;
}

/// A container on a terminal: its pty is its stdin, stdout and stderr, all
/// logged as stdout without the terminal's `\r`; its exit is recorded with
/// the log complete (the master reads EIO once the container is gone).
#[tokio::test(flavor = "current_thread")]
async fn a_terminal_containers_output_is_logged_as_stdout() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = start_shim(
        "tty",
        &paths,
        &[
            "sh",
            "-c",
            "tty; test -t 0 && echo stdin-is-a-tty; echo oops >&2; stty size; exit 3",
        ],
    )
    .await;
    let config = paths.bundle().join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    let process = spec.process_mut().as_mut().unwrap();
    process.set_terminal(Some(true));
    process.set_console_size(Some(
        BoxBuilder::default()
            .height(24u64)
            .width(80u64)
            .build()
            .unwrap(),
    ));
    spec.save(&config).unwrap();

    client
        .create(CreateRequest {
            stdin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    client.start(StartRequest {}).await.unwrap();
    let exited = client.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(exited.exit_code, 3);
    // Read at once, no polling: the shim drained the terminal first.
    let log = fs::read_to_string(paths.log()).unwrap();
    let records: Vec<&str> = log
        .split_terminator('\n')
        .map(|line| line.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(
        records,
        [
            "stdout F /dev/pts/0",
            "stdout F stdin-is-a-tty",
            "stdout F oops",
            "stdout F 24 80",
        ],
        "CRI log: {log:?}"
    );
    delete_and_shut_down(&mut client, shim, &mut cleanup).await;
}

/// A terminal container that waits on its stdin keeps running (the shim
/// holds the pty open) until killed; the kill is recorded at once.
#[tokio::test(flavor = "current_thread")]
async fn a_terminal_containers_stdin_stays_open_until_it_is_killed() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = start_shim(
        "ttystdin",
        &paths,
        &["sh", "-c", "echo waiting; read line; echo read-returned"],
    )
    .await;
    run_on_a_terminal(&paths);

    client
        .create(CreateRequest {
            stdin: true,
            ..Default::default()
        })
        .await
        .unwrap();
    client.start(StartRequest {}).await.unwrap();
    wait_for_log(&paths.log(), "stdout F waiting\n").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.status, Status::Running as i32);

    let killed = Instant::now();
    client
        .kill(KillRequest {
            signal: Signal::SIGKILL as u32,
            all: false,
        })
        .await
        .unwrap();
    let exited = client.wait(WaitRequest {}).await.unwrap().into_inner();
    // Held up by nothing: not the drain's 1 s grace for an open output.
    assert!(
        killed.elapsed() < Duration::from_millis(900),
        "the kill took {:?} to be recorded",
        killed.elapsed()
    );
    assert_eq!(exited.exit_code, 128 + Signal::SIGKILL as i32);
    delete_and_shut_down(&mut client, shim, &mut cleanup).await;
    let log = fs::read_to_string(paths.log()).unwrap();
    assert!(!log.contains("read-returned"), "CRI log: {log:?}");
}

#[test]
fn a_start_up_failure_is_reported_on_the_ready_pipe() {
    let paths = ShimPaths::new();
    // No bundle dir: the shim cannot open its own log there.
    match spawn_shim("broken", &paths) {
        Readiness::Failed(message) => assert!(
            message.contains("shim.log"),
            "unexpected message: {message}"
        ),
        other => panic!("expected a failure report, got {other:?}"),
    }
    assert!(!paths.socket().exists());
}

/// Calls before Create say what is wrong before anything starts; no
/// container (nor root) is needed to ask.
#[tokio::test(flavor = "current_thread")]
async fn calls_before_create_say_what_is_wrong() {
    let paths = ShimPaths::new();
    fs::create_dir_all(paths.bundle()).unwrap();
    assert_eq!(spawn_shim("reserved", &paths), Readiness::Ready);
    let shim = server_pid(&paths.socket());
    let mut cleanup = Cleanup {
        cgroup_name: "reserved-none".into(),
        shim: Some(shim),
    };
    let mut client = connect(&paths.socket()).await;

    let err = (client.update(UpdateRequest {
        resources_json: b"{}".to_vec(),
    }))
    .await
    .expect_err("Update without a container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(err.message(), "the container was not created");
    let err = (client.update(UpdateRequest {
        resources_json: br#"{"memory":5}"#.to_vec(),
    }))
    .await
    .expect_err("Update with a number for an object");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .starts_with("resources_json is not an OCI linux.resources: "),
        "{err:?}"
    );
    // Streamed calls say what is wrong before anything starts.
    let start = exec_start(&["true"], false, false);
    let err = open_io(&mut client, io_input::Kind::Exec(start.clone()))
        .await
        .expect_err("Exec without a container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(err.message(), "the container was not created");
    let err = open_io(&mut client, io_input::Kind::Stdin(b"x".to_vec()))
        .await
        .map(drop)
        .expect_err("a call that begins with stdin");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(err.message(), "the first message of an Exec must be `exec`");

    // The shim serves on after them.
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert_eq!(state.status(), Status::Unspecified);

    client.shutdown(ShutdownRequest {}).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while running(shim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!running(shim), "the shim still runs after Shutdown");
    cleanup.shim = None;
}

/// Stops the container, deletes it and shuts the shim down.
async fn finish(client: &mut ShimClient<Channel>, shim: Pid, cleanup: &mut Cleanup) {
    client
        .kill(KillRequest {
            signal: Signal::SIGKILL as u32,
            all: true,
        })
        .await
        .unwrap();
    client.wait(WaitRequest {}).await.unwrap();
    delete_and_shut_down(client, shim, cleanup).await;
}

/// Deletes the exited container and shuts the shim down.
async fn delete_and_shut_down(client: &mut ShimClient<Channel>, shim: Pid, cleanup: &mut Cleanup) {
    client.delete(DeleteRequest {}).await.unwrap();
    client.shutdown(ShutdownRequest {}).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while running(shim) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!running(shim), "the shim still runs after Shutdown");
    cleanup.shim = None;
}

/// The numbers `n` of the `stdout F line n` records of a CRI log.
fn line_numbers(log: &str) -> Vec<u64> {
    log.lines()
        .map(|record| {
            let (_, content) = record.split_once(" stdout F line ").unwrap();
            content.parse().unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn reopen_log_moves_the_output_to_a_new_file_after_rotation() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = start_shim(
        "reopen",
        &paths,
        &[
            "sh",
            "-c",
            "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.05; done",
        ],
    )
    .await;
    client.create(CreateRequest::default()).await.unwrap();
    let err = client.reopen_log(ReopenLogRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    client.start(StartRequest {}).await.unwrap();
    wait_for_log(&paths.log(), " stdout F line 2\n").await;

    // kubelet's rotation: rename, then reopen.
    let rotated = paths.log().with_extension("log.1");
    fs::rename(paths.log(), &rotated).unwrap();
    let started = Instant::now();
    client.reopen_log(ReopenLogRequest {}).await.unwrap();
    eprintln!("ReopenLog took {:?}", started.elapsed());
    assert!(paths.log().exists(), "no new log file at the path");
    let new_log = wait_for_log(&paths.log(), " stdout F line ").await;
    // Nothing lost or doubled across the two files.
    let old_lines = line_numbers(&fs::read_to_string(&rotated).unwrap());
    let new_lines = line_numbers(&new_log);
    assert!(!new_lines.is_empty(), "new log: {new_log:?}");
    let all: Vec<u64> = old_lines.iter().chain(&new_lines).copied().collect();
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>());

    finish(&mut client, shim, &mut cleanup).await;
}

#[tokio::test(flavor = "current_thread")]
async fn reopen_log_is_refused_once_init_exited() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = start_shim("reopen-exited", &paths, &["true"]).await;
    client.create(CreateRequest::default()).await.unwrap();
    client.start(StartRequest {}).await.unwrap();
    client.wait(WaitRequest {}).await.unwrap();
    let err = client.reopen_log(ReopenLogRequest {}).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert_eq!(err.message(), "the container is not running");
    finish(&mut client, shim, &mut cleanup).await;
}

/// Update writes the new limits into the running container's cgroup and
/// keeps what it leaves out; a memory limit below the usage is refused
/// naming the value, and the limit in force stays; after init exits it is
/// refused.
#[tokio::test(flavor = "current_thread")]
async fn update_changes_the_running_containers_cgroup() {
    require_root!();
    let paths = ShimPaths::new();
    let (id, shim, mut client, mut cleanup) = running_container(
        "update",
        &paths,
        &["sleep", "600"],
        CreateRequest::default(),
    )
    .await;
    let read = |controller: &str, file: &str| {
        fs::read_to_string(cgroup_dir(controller, &id).join(file))
            .unwrap()
            .trim()
            .to_owned()
    };
    let update = |json: &str| UpdateRequest {
        resources_json: json.as_bytes().to_vec(),
    };
    client
        .update(update(
            r#"{"memory":{"limit":268435456},"cpu":{"quota":50000,"period":100000,"shares":512}}"#,
        ))
        .await
        .unwrap();
    assert_eq!(read("memory", "memory.limit_in_bytes"), "268435456");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.shares"), "512");
    client
        .update(update(r#"{"memory":{"limit":134217728}}"#))
        .await
        .unwrap();
    assert_eq!(read("memory", "memory.limit_in_bytes"), "134217728");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");

    // Below what the container uses: the kernel says EBUSY.
    let err = (client.update(update(r#"{"memory":{"limit":4096}}"#)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Internal, "{err:?}");
    assert!(err.message().contains("4096"), "{err:?}");
    assert_eq!(read("memory", "memory.limit_in_bytes"), "134217728");

    client
        .kill(KillRequest {
            signal: Signal::SIGKILL as u32,
            all: false,
        })
        .await
        .unwrap();
    client.wait(WaitRequest {}).await.unwrap();
    let err = (client.update(update(r#"{"memory":{"limit":268435456}}"#)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert_eq!(err.message(), "the container is not running");
    finish(&mut client, shim, &mut cleanup).await;
}

#[tokio::test(flavor = "current_thread")]
async fn an_oom_kill_is_reported_in_wait_state_and_the_exit_file() {
    require_root!();
    let paths = ShimPaths::new();
    // A buffer larger than the limit: dd is killed by the OOM killer.
    let (_id, shim, mut client, mut cleanup) = start_shim(
        "oom",
        &paths,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    )
    .await;
    let config = paths.bundle().join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    let memory = LinuxMemoryBuilder::default()
        .limit(16 * 1024 * 1024)
        .build()
        .unwrap();
    let resources = LinuxResourcesBuilder::default()
        .memory(memory)
        .build()
        .unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    spec.save(&config).unwrap();

    client.create(CreateRequest::default()).await.unwrap();
    client.start(StartRequest {}).await.unwrap();
    let exited = client.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(exited.exit_code, 137);
    assert!(exited.oom_killed);
    let state = client.state(StateRequest {}).await.unwrap().into_inner();
    assert!(state.oom_killed);
    let record = exit_file::read(&paths.exit_file()).unwrap().unwrap();
    assert!(record.oom_killed);
    assert_eq!(record.exit_code, 137);
    finish(&mut client, shim, &mut cleanup).await;
}

/// A streamed Exec's first message for `args` (the container's env and cwd,
/// as criusd sends them), on a terminal or not, with stdin or not; it always
/// asks for stdout and stderr.
fn exec_start(args: &[&str], terminal: bool, stdin: bool) -> ExecStart {
    let process = ProcessBuilder::default()
        .args(args.iter().map(|arg| arg.to_string()).collect::<Vec<_>>())
        .env(vec!["PATH=/bin".to_owned()])
        .cwd("/")
        .terminal(terminal)
        .build()
        .unwrap();
    ExecStart {
        process_json: serde_json::to_vec(&process).unwrap(),
        stdin,
        stdout: true,
        stderr: !terminal,
    }
}

/// Opens a streamed Exec or Attach with `first`: its input and output.
async fn open_io(
    client: &mut ShimClient<Channel>,
    first: io_input::Kind,
) -> Result<
    (
        tokio::sync::mpsc::Sender<IoInput>,
        tonic::Streaming<IoOutput>,
    ),
    tonic::Status,
> {
    let (input, inputs) = tokio::sync::mpsc::channel(16);
    let attach = matches!(first, io_input::Kind::Attach(_));
    input.send(IoInput { kind: Some(first) }).await.unwrap();
    let inputs = tokio_stream::wrappers::ReceiverStream::new(inputs);
    let output = if attach {
        client.attach(inputs).await?
    } else {
        client.exec(inputs).await?
    };
    Ok((input, output.into_inner()))
}

async fn send(input: &tokio::sync::mpsc::Sender<IoInput>, kind: io_input::Kind) {
    input.send(IoInput { kind: Some(kind) }).await.unwrap();
}

/// What a streamed call sent: stdout, stderr and the exit code (None when
/// it ended without `exit`).
#[derive(Debug, Default)]
struct Received {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    exit_code: Option<i32>,
}

/// Reads `output` to its end (at most 10 s).
async fn receive_all(output: &mut tonic::Streaming<IoOutput>) -> Received {
    let mut received = Received::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Some(message) = tokio::time::timeout_at(deadline, output.message())
        .await
        .expect("the call did not end in time")
        .unwrap()
    {
        assert_eq!(received.exit_code, None, "a message after `exit`");
        match message.kind.unwrap() {
            io_output::Kind::Stdout(data) => received.stdout.extend(data),
            io_output::Kind::Stderr(data) => received.stderr.extend(data),
            io_output::Kind::Exit(exit) => received.exit_code = Some(exit.exit_code),
        }
    }
    received
}

/// Reads `output` until its stdout holds `needle` (at most 10 s); returns it.
async fn receive_until(output: &mut tonic::Streaming<IoOutput>, needle: &str) -> String {
    let mut stdout = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&stdout).contains(needle) {
        let message = tokio::time::timeout_at(deadline, output.message())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&stdout)))
            .unwrap()
            .expect("the call ended");
        if let Some(io_output::Kind::Stdout(data)) = message.kind {
            stdout.extend(data);
        }
    }
    String::from_utf8(stdout).unwrap()
}

/// A started container running `args`, with stdin as asked.
async fn running_container(
    name: &str,
    paths: &ShimPaths,
    args: &[&str],
    create: CreateRequest,
) -> (String, Pid, ShimClient<Channel>, Cleanup) {
    let (id, shim, mut client, cleanup) = start_shim(name, paths, args).await;
    client.create(create).await.unwrap();
    client.start(StartRequest {}).await.unwrap();
    (id, shim, client, cleanup)
}

/// A streamed exec gets its stdin and EOF, sends its output and exit code;
/// several run at once; a bad process or a stopped container is refused by
/// the call itself.
#[tokio::test(flavor = "current_thread")]
async fn streamed_execs_take_stdin_and_return_output_and_exit_code() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = running_container(
        "execio",
        &paths,
        &["sleep", "600"],
        CreateRequest::default(),
    )
    .await;

    let start = exec_start(
        &["sh", "-c", "read x; echo got-$x; echo err >&2; exit 7"],
        false,
        true,
    );
    let (input, mut output) = open_io(&mut client, io_input::Kind::Exec(start))
        .await
        .unwrap();
    send(&input, io_input::Kind::Stdin(b"hi\n".to_vec())).await;
    send(&input, io_input::Kind::CloseStdin(CloseStdin {})).await;
    let received = receive_all(&mut output).await;
    assert_eq!(received.stdout, b"got-hi\n");
    assert_eq!(received.stderr, b"err\n");
    assert_eq!(received.exit_code, Some(7));

    // CloseStdin is the process's EOF.
    let start = exec_start(&["cat"], false, true);
    let (input, mut output) = open_io(&mut client, io_input::Kind::Exec(start))
        .await
        .unwrap();
    send(&input, io_input::Kind::Stdin(b"a\nb".to_vec())).await;
    send(&input, io_input::Kind::CloseStdin(CloseStdin {})).await;
    let received = receive_all(&mut output).await;
    assert_eq!(
        (received.stdout, received.exit_code),
        (b"a\nb".to_vec(), Some(0))
    );

    // 20 at once, each with its own output.
    let execs = (0..20).map(|n| {
        let mut client = client.clone();
        tokio::spawn(async move {
            let script = format!("sleep 0.2; echo exec-{n}; exit {n}");
            let start = exec_start(&["sh", "-c", &script], false, false);
            let (_input, mut output) = open_io(&mut client, io_input::Kind::Exec(start))
                .await
                .unwrap();
            receive_all(&mut output).await
        })
    });
    let execs: Vec<_> = execs.collect();
    for (n, exec) in execs.into_iter().enumerate() {
        let received = exec.await.unwrap();
        assert_eq!(received.stdout, format!("exec-{n}\n").into_bytes());
        assert_eq!(received.exit_code, Some(n as i32));
    }

    let err = open_io(
        &mut client,
        io_input::Kind::Exec(ExecStart {
            process_json: b"{".to_vec(),
            ..exec_start(&["true"], false, false)
        }),
    )
    .await
    .map(drop)
    .expect_err("an exec of bad JSON");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("exec process JSON: "), "{err:?}");

    finish(&mut client, shim, &mut cleanup).await;
}

/// An exec on a terminal: its output comes as stdout, Resize reaches its pty.
#[tokio::test(flavor = "current_thread")]
async fn a_streamed_exec_on_a_terminal_is_resized() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = running_container(
        "exectty",
        &paths,
        &["sleep", "600"],
        CreateRequest::default(),
    )
    .await;
    let start = exec_start(&["sh", "-c", "read x; tty; stty size; exit 5"], true, true);
    let (input, mut output) = open_io(&mut client, io_input::Kind::Exec(start))
        .await
        .unwrap();
    send(
        &input,
        io_input::Kind::Resize(Resize {
            width: 100,
            height: 30,
        }),
    )
    .await;
    send(&input, io_input::Kind::Stdin(b"go\r".to_vec())).await;
    let received = receive_all(&mut output).await;
    let stdout = String::from_utf8(received.stdout).unwrap();
    // The terminal echoes what was typed, and ends lines with \r\n.
    assert!(
        stdout.ends_with("go\r\n/dev/pts/0\r\n30 100\r\n"),
        "stdout: {stdout:?}"
    );
    assert_eq!(received.exit_code, Some(5));
    finish(&mut client, shim, &mut cleanup).await;
}

/// An exec whose caller goes away mid-run is killed with its whole group:
/// nothing but init is left in the container's cgroup.
#[tokio::test(flavor = "current_thread")]
async fn a_dropped_exec_call_leaves_no_process() {
    require_root!();
    let paths = ShimPaths::new();
    let (id, shim, mut client, mut cleanup) = running_container(
        "execdrop",
        &paths,
        &["sleep", "600"],
        CreateRequest::default(),
    )
    .await;
    let before = cgroup_pids(&id);
    for terminal in [false, true] {
        let start = exec_start(
            &["sh", "-c", "sleep 600 & echo started; wait"],
            terminal,
            true,
        );
        let (input, mut output) = open_io(&mut client, io_input::Kind::Exec(start))
            .await
            .unwrap();
        receive_until(&mut output, "started").await;
        assert_eq!(
            cgroup_pids(&id).len(),
            before.len() + 2,
            "terminal: {terminal}"
        );
        drop((input, output));
        let deadline = Instant::now() + Duration::from_secs(5);
        while cgroup_pids(&id) != before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(cgroup_pids(&id), before, "terminal: {terminal}");
    }
    // Reaped as well: the shim has no child but init.
    let children = fs::read_to_string(format!("/proc/{shim}/task/{shim}/children")).unwrap();
    assert_eq!(
        children.split_whitespace().count(),
        1,
        "children: {children}"
    );
    finish(&mut client, shim, &mut cleanup).await;
}

/// Attachers get the container's output from now on and feed its stdin;
/// with stdin_once the first attacher's EOF closes the container's stdin,
/// and every attacher gets the rest of the output and init's exit.
#[tokio::test(flavor = "current_thread")]
async fn attachers_share_the_output_and_stdin_once_ends_the_container() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = running_container(
        "attach",
        &paths,
        &["sh", "-c", "echo before; cat; echo cat-ended; exit 4"],
        CreateRequest {
            stdin: true,
            stdin_once: true,
        },
    )
    .await;
    wait_for_log(&paths.log(), "stdout F before\n").await;
    let attach = |stdin| AttachStart {
        stdin,
        stdout: true,
        stderr: true,
    };
    let (input, mut first) = open_io(&mut client, io_input::Kind::Attach(attach(true)))
        .await
        .unwrap();
    let (_watcher_input, mut watcher) = open_io(&mut client, io_input::Kind::Attach(attach(false)))
        .await
        .unwrap();
    send(&input, io_input::Kind::Stdin(b"ping\n".to_vec())).await;
    // Both get cat's echo, neither the output from before they attached.
    assert_eq!(receive_until(&mut first, "ping\n").await, "ping\n");
    assert_eq!(receive_until(&mut watcher, "ping\n").await, "ping\n");

    send(&input, io_input::Kind::CloseStdin(CloseStdin {})).await;
    for output in [&mut first, &mut watcher] {
        let received = receive_all(output).await;
        assert_eq!(received.stdout, b"cat-ended\n");
        assert_eq!(received.exit_code, Some(4));
    }
    let exited = client.wait(WaitRequest {}).await.unwrap().into_inner();
    assert_eq!(exited.exit_code, 4);
    let log = fs::read_to_string(paths.log()).unwrap();
    assert!(log.contains("stdout F ping\n"), "CRI log: {log:?}");

    let err = open_io(&mut client, io_input::Kind::Attach(attach(false)))
        .await
        .map(drop)
        .expect_err("an attach to a stopped container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    let err = open_io(
        &mut client,
        io_input::Kind::Exec(exec_start(&["true"], false, false)),
    )
    .await
    .map(drop)
    .expect_err("an exec in a stopped container");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    delete_and_shut_down(&mut client, shim, &mut cleanup).await;
}

/// An attacher of a terminal container types into its pty and resizes it.
#[tokio::test(flavor = "current_thread")]
async fn an_attacher_types_into_a_terminal_container_and_resizes_it() {
    require_root!();
    let paths = ShimPaths::new();
    let (_id, shim, mut client, mut cleanup) = start_shim(
        "attachtty",
        &paths,
        &["sh", "-c", "echo ready; read x; stty size; exit 6"],
    )
    .await;
    run_on_a_terminal(&paths);
    client
        .create(CreateRequest {
            stdin: true,
            stdin_once: true,
        })
        .await
        .unwrap();
    client.start(StartRequest {}).await.unwrap();
    wait_for_log(&paths.log(), "stdout F ready\n").await;
    let start = AttachStart {
        stdin: true,
        stdout: true,
        stderr: false,
    };
    let (input, mut output) = open_io(&mut client, io_input::Kind::Attach(start))
        .await
        .unwrap();
    send(
        &input,
        io_input::Kind::Resize(Resize {
            width: 120,
            height: 40,
        }),
    )
    .await;
    send(&input, io_input::Kind::Stdin(b"go\r".to_vec())).await;
    let received = receive_all(&mut output).await;
    assert_eq!(
        String::from_utf8(received.stdout).unwrap(),
        "go\r\n40 120\r\n"
    );
    assert_eq!(received.exit_code, Some(6));
    client.wait(WaitRequest {}).await.unwrap();
    delete_and_shut_down(&mut client, shim, &mut cleanup).await;
}

/// Makes the bundle's process run on a terminal (`process.terminal`).
fn run_on_a_terminal(paths: &ShimPaths) {
    let config = paths.bundle().join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    spec.process_mut()
        .as_mut()
        .unwrap()
        .set_terminal(Some(true));
    spec.save(&config).unwrap();
}
