//! An OCI runtime binary (runc, crun, or another with runc's command line) as an
//! [`OciRuntime`]: a Kubernetes runtime handler.
//!
//! Each verb is one run of the binary, as containerd's runc shim runs it:
//! `<path> --root <root> --log <file> --log-format json create --bundle B --pid-file F
//! [--console-socket S] ID`, `start ID`, `kill [--all] ID SIGNAL`, `delete [--force] ID`,
//! `exec --detach --pid-file F --process P.json [--tty --console-socket S] ID`,
//! `update --resources R.json ID` and `state ID`.
//! The container's stdio is the binary's own (runc's and crun's pass-through mode); a
//! terminal's master comes back over the console socket. The binary forks init (or the exec'd
//! process) and exits, so the process is re-parented to the caller, a child subreaper, and its
//! pid is read from the pid file. Each call gets a private directory under `root` for its
//! log, pid file, process.json and console socket, removed when it returns.

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxResources, Process, Spec};
use tempfile::TempDir;

use crate::console::ConsoleSocket;
use crate::error::{RuntimeError, Step};
use crate::oci::OciRuntime;
use crate::stdio::Stdio;

/// Where a hybrid host mounts its cgroup2 hierarchy beside the v1 ones.
const UNIFIED_CGROUP: &std::ffi::CStr = c"/sys/fs/cgroup/unified";

/// An OCI runtime binary at `path` keeping its state under `root`.
#[derive(Debug, Clone)]
pub struct BinaryRuntime {
    path: PathBuf,
    root: PathBuf,
    hide_unified_cgroup: bool,
}

impl BinaryRuntime {
    /// The binary at `path` (absolute), its state under `root` (absolute, created on first
    /// use; keep it short, as `<root>/.call-XXXXXX/console.sock` is a unix socket path).
    pub fn new(path: impl Into<PathBuf>, root: impl Into<PathBuf>) -> BinaryRuntime {
        BinaryRuntime {
            path: path.into(),
            root: root.into(),
            hide_unified_cgroup: false,
        }
    }

    /// The same runtime, run (when `hide` is true) in a private mount namespace without a
    /// hybrid host's cgroup2 mount (`/sys/fs/cgroup/unified`), so that it manages the v1
    /// hierarchies alone: crun refuses a hybrid host whose cgroup2 mount holds a controller
    /// ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"). The mount
    /// is made a slave first, so the host keeps it; a host without it is left as it is.
    pub fn hiding_unified_cgroup(mut self, hide: bool) -> BinaryRuntime {
        self.hide_unified_cgroup = hide;
        self
    }

    /// A command running the binary with the global options, `verb` and its log in `call`.
    fn command(&self, call: &Call, verb: &str) -> Command {
        let mut command = Command::new(&self.path);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(call.log())
            .args(["--log-format", "json", verb]);
        if self.hide_unified_cgroup {
            // SAFETY: between fork and exec the child only makes raw syscalls.
            unsafe { command.pre_exec(hide_unified_cgroup) };
        }
        command
    }

    /// Runs `command` to its end; a failure carries what the binary logged as errors (its
    /// stderr when it logged none). Without `stdio` the binary's stdin and stdout are
    /// /dev/null and its stderr is read; with it, the three are the container process's.
    fn run(
        &self,
        id: &str,
        step: Step,
        call: &Call,
        mut command: Command,
        stdio: Option<Stdio>,
    ) -> Result<(), RuntimeError> {
        match stdio {
            Some(stdio) => {
                let stdio = stdio
                    .into_container_stdio()
                    .map_err(|e| RuntimeError::io(id, step, "prepare stdio", e))?;
                command
                    .stdin(stdio.stdin)
                    .stdout(stdio.stdout)
                    .stderr(stdio.stderr);
            }
            None => {
                command
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
            }
        }
        let output: Output = command
            .output()
            .map_err(|e| RuntimeError::io(id, step, "run the runtime binary", e))?;
        // The command held the stdio fds: dropped here, so the caller's pipes see EOF once the
        // container process is gone.
        drop(command);
        if output.status.success() {
            return Ok(());
        }
        Err(RuntimeError::Binary {
            id: id.to_owned(),
            step,
            runtime: self.path.clone(),
            status: output.status,
            message: failure_message(&call.log(), &output.stderr),
        })
    }

    fn ensure_root(&self, id: &str, step: Step) -> Result<(), RuntimeError> {
        fs::create_dir_all(&self.root)
            .map_err(|e| RuntimeError::io(id, step, "create the runtime's root", e))
    }

    /// The container exists in the binary's state (runc and crun keep `<root>/<id>/`).
    fn exists(&self, id: &str, step: Step) -> Result<bool, RuntimeError> {
        // An id naming another path (`..`, `a/b`) is no container of ours.
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(RuntimeError::io(
                id,
                step,
                "check the container id",
                io::Error::new(io::ErrorKind::InvalidInput, "not a container id"),
            ));
        }
        Ok(self.root.join(id).is_dir())
    }

    fn create_container(
        &self,
        id: &str,
        bundle: &Path,
        stdio: Option<Stdio>,
    ) -> Result<(Pid, Option<OwnedFd>), RuntimeError> {
        let step = Step::Create;
        self.ensure_root(id, step)?;
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| {
            RuntimeError::io(
                id,
                step,
                "read the bundle's config.json",
                crate::runtime::io_error(e),
            )
        })?;
        if crate::pause::is_sandbox(&spec) {
            return Err(RuntimeError::io(
                id,
                step,
                "run the pause workload",
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "only the in-process runtime has the built-in pause workload",
                ),
            ));
        }
        // The same lookup as the in-process runtime's, so that a process that cannot be
        // exec'd fails StartContainer on every handler (the binary would fail create instead).
        let prepared = crate::bundle::prepare(id, bundle, spec)?;
        if let Some(reason) = crate::executable::unexecutable(&prepared.spec, &prepared.rootfs) {
            return Err(RuntimeError::NotExecutable {
                id: id.to_owned(),
                step,
                reason,
            });
        }
        let call = Call::new(&self.root, id, step)?;
        let mut command = self.command(&call, "create");
        command
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(call.pid_file());
        let console = match stdio {
            Some(_) => None,
            None => Some(call.console(id, step)?),
        };
        if let Some(console) = &console {
            command.arg("--console-socket").arg(console.path());
        }
        command.arg(id);
        // Without stdio the terminal is init's: the binary's own stdio stays off it.
        self.run(id, step, &call, command, Some(stdio.unwrap_or_default()))?;
        let pid = call.pid(id, step)?;
        let master = console
            .map(|console| crate::runtime::receive_master(id, step, &console, None))
            .transpose()?;
        Ok((pid, master))
    }

    fn exec_process(
        &self,
        id: &str,
        process: &Process,
        stdio: Option<Stdio>,
    ) -> Result<(Pid, Option<OwnedFd>), RuntimeError> {
        let step = Step::Exec;
        if !self.exists(id, step)? {
            return Err(not_found(id, step));
        }
        let call = Call::new(&self.root, id, step)?;
        let process_json = call.dir.path().join("process.json");
        fs::File::create(&process_json)
            .and_then(|mut file| {
                serde_json::to_writer(&mut file, process)?;
                file.flush()
            })
            .map_err(|e| RuntimeError::io(id, step, "write process.json", e))?;
        let mut command = self.command(&call, "exec");
        command
            .arg("--detach")
            .arg("--pid-file")
            .arg(call.pid_file())
            .arg("--process")
            .arg(&process_json);
        let console = match stdio {
            Some(_) => None,
            None => Some(call.console(id, step)?),
        };
        if let Some(console) = &console {
            command
                .arg("--tty")
                .arg("--console-socket")
                .arg(console.path());
        }
        command.arg(id);
        self.run(id, step, &call, command, Some(stdio.unwrap_or_default()))?;
        let pid = call.pid(id, step)?;
        let master = console
            .map(|console| crate::runtime::receive_master(id, step, &console, None))
            .transpose()?;
        Ok((pid, master))
    }

    /// The container's status as the binary reports it (`created`, `running`, `stopped`, …).
    fn status(&self, id: &str, step: Step) -> Result<String, RuntimeError> {
        let call = Call::new(&self.root, id, step)?;
        let mut command = self.command(&call, "state");
        command
            .arg(id)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let output = command
            .output()
            .map_err(|e| RuntimeError::io(id, step, "run the runtime binary", e))?;
        let state: serde_json::Value = serde_json::from_slice(&output.stdout)
            .map_err(|e| RuntimeError::io(id, step, "read the container's state", e.into()))?;
        Ok(state["status"].as_str().unwrap_or_default().to_owned())
    }
}

impl OciRuntime for BinaryRuntime {
    fn create(&self, id: &str, bundle: &Path, stdio: Stdio) -> Result<Pid, RuntimeError> {
        self.create_container(id, bundle, Some(stdio))
            .map(|(pid, _)| pid)
    }

    fn create_with_terminal(
        &self,
        id: &str,
        bundle: &Path,
    ) -> Result<(Pid, OwnedFd), RuntimeError> {
        let (pid, master) = self.create_container(id, bundle, None)?;
        Ok((pid, master.expect("a terminal create receives the master")))
    }

    fn start(&self, id: &str) -> Result<(), RuntimeError> {
        let step = Step::Start;
        if !self.exists(id, step)? {
            return Err(not_found(id, step));
        }
        let call = Call::new(&self.root, id, step)?;
        let mut command = self.command(&call, "start");
        command.arg(id);
        self.run(id, step, &call, command, None)
    }

    fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<(), RuntimeError> {
        let step = Step::Kill;
        if !self.exists(id, step)? {
            return Err(not_found(id, step));
        }
        let call = Call::new(&self.root, id, step)?;
        let mut command = self.command(&call, "kill");
        if all {
            command.arg("--all");
        }
        command.arg(id).arg((signal as i32).to_string());
        match self.run(id, step, &call, command, None) {
            // runc and crun refuse to signal a stopped init ("container not running").
            Err(_) if !all && self.status(id, step)? == "stopped" => Ok(()),
            result => result,
        }
    }

    fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let step = Step::Delete;
        if !self.exists(id, step)? {
            return Ok(());
        }
        let call = Call::new(&self.root, id, step)?;
        let mut command = self.command(&call, "delete");
        if force {
            command.arg("--force");
        }
        command.arg(id);
        self.run(id, step, &call, command, None)
    }

    fn exec(&self, id: &str, process: &Process, stdio: Stdio) -> Result<Pid, RuntimeError> {
        self.exec_process(id, process, Some(stdio))
            .map(|(pid, _)| pid)
    }

    fn exec_with_terminal(
        &self,
        id: &str,
        process: &Process,
    ) -> Result<(Pid, OwnedFd), RuntimeError> {
        let (pid, master) = self.exec_process(id, process, None)?;
        Ok((pid, master.expect("a terminal exec receives the master")))
    }

    fn update(&self, id: &str, resources: &LinuxResources) -> Result<(), RuntimeError> {
        let step = Step::Update;
        if !self.exists(id, step)? {
            return Err(not_found(id, step));
        }
        let call = Call::new(&self.root, id, step)?;
        let resources_json = call.dir.path().join("resources.json");
        fs::File::create(&resources_json)
            .and_then(|mut file| {
                serde_json::to_writer(&mut file, resources)?;
                file.flush()
            })
            .map_err(|e| RuntimeError::io(id, step, "write resources.json", e))?;
        let mut command = self.command(&call, "update");
        command.arg("--resources").arg(&resources_json).arg(id);
        self.run(id, step, &call, command, None)
    }
}

/// One run's private directory under the runtime's root: its log, pid file, process.json and
/// console socket; removed on drop.
struct Call {
    dir: TempDir,
}

impl Call {
    fn new(root: &Path, id: &str, step: Step) -> Result<Call, RuntimeError> {
        let dir = tempfile::Builder::new()
            // A dot: no container id starts with one, and runc and crun skip it in `list`.
            .prefix(".call-")
            .tempdir_in(root)
            .map_err(|e| RuntimeError::io(id, step, "create the call's directory", e))?;
        Ok(Call { dir })
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("log.json")
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("pid")
    }

    fn console(&self, id: &str, step: Step) -> Result<ConsoleSocket, RuntimeError> {
        ConsoleSocket::bind(self.dir.path())
            .map_err(|e| RuntimeError::io(id, step, "bind the console socket", e))
    }

    /// The pid the binary wrote.
    fn pid(&self, id: &str, step: Step) -> Result<Pid, RuntimeError> {
        let text = fs::read_to_string(self.pid_file())
            .map_err(|e| RuntimeError::io(id, step, "read the pid file", e))?;
        text.trim()
            .parse()
            .map(Pid::from_raw)
            .map_err(|e| RuntimeError::io(id, step, "read the pid file", io::Error::other(e)))
    }
}

/// What a failed run of the binary says: the messages its JSON log holds at level error or
/// fatal (runc's and crun's `{"level":"error","msg":…}`), else its stderr, else that it said
/// nothing.
fn failure_message(log: &Path, stderr: &[u8]) -> String {
    let logged: Vec<String> = fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| matches!(entry["level"].as_str(), Some("error" | "fatal")))
        .filter_map(|entry| entry["msg"].as_str().map(str::to_owned))
        .collect();
    if !logged.is_empty() {
        return logged.join("; ");
    }
    let stderr = String::from_utf8_lossy(stderr).trim().to_owned();
    if stderr.is_empty() {
        "it logged no error".to_owned()
    } else {
        stderr
    }
}

/// In the forked child before exec: a private mount namespace without the unified cgroup
/// mount (see [`BinaryRuntime::hiding_unified_cgroup`]).
fn hide_unified_cgroup() -> io::Result<()> {
    // SAFETY: plain syscalls on a constant path; nothing is allocated.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(io::Error::last_os_error());
        }
        // A slave copy: unmounting it here does not propagate to the host's.
        if libc::mount(
            std::ptr::null(),
            UNIFIED_CGROUP.as_ptr(),
            std::ptr::null(),
            libc::MS_SLAVE,
            std::ptr::null(),
        ) != 0
        {
            let err = io::Error::last_os_error();
            // Not a mount point, or absent: not a hybrid host, nothing to hide.
            return match err.raw_os_error() {
                Some(libc::EINVAL | libc::ENOENT) => Ok(()),
                _ => Err(err),
            };
        }
        if libc::umount2(UNIFIED_CGROUP.as_ptr(), libc::MNT_DETACH) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn not_found(id: &str, step: Step) -> RuntimeError {
    RuntimeError::NotFound {
        id: id.to_owned(),
        step,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A fake runtime binary in a temp dir: it records its argv (one argument a line) and the
    /// process.json it is given, writes pid 4242 to a `--pid-file`, and otherwise runs `body`
    /// (a shell snippet that sees the verb in `$verb`).
    struct Fake {
        dir: tempfile::TempDir,
    }

    impl Fake {
        fn new(body: &str) -> Fake {
            let dir = tempfile::tempdir().unwrap();
            let script = format!(
                r#"#!/bin/sh
d={dir}
printf '%s\n' "$@" >> "$d/argv"
echo --- >> "$d/argv"
verb=
while [ $# -gt 0 ]; do
  case "$1" in
    --root|--log-format|--bundle|--console-socket) shift ;;
    --log) log=$2; shift ;;
    --pid-file) echo 4242 > "$2"; shift ;;
    --process) cp "$2" "$d/process.json"; shift ;;
    -*) ;;
    *) [ -z "$verb" ] && verb=$1 ;;
  esac
  shift
done
{body}
"#,
                dir = dir.path().display()
            );
            let path = dir.path().join("runtime");
            fs::write(&path, script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
            fs::create_dir(dir.path().join("root")).unwrap();
            Fake { dir }
        }

        fn runtime(&self) -> BinaryRuntime {
            BinaryRuntime::new(self.dir.path().join("runtime"), self.root())
        }

        fn root(&self) -> PathBuf {
            self.dir.path().join("root")
        }

        /// Each run's argv, with the run's own call dir written as CALL.
        fn runs(&self) -> Vec<Vec<String>> {
            let text = fs::read_to_string(self.dir.path().join("argv")).unwrap_or_default();
            let root = self.root().display().to_string();
            text.split("---\n")
                .filter(|run| !run.is_empty())
                .map(|run| {
                    run.lines()
                        .map(|arg| match arg.strip_prefix(&format!("{root}/.call-")) {
                            Some(rest) => format!("CALL/{}", rest.split_once('/').unwrap().1),
                            None => arg.replace(&root, "ROOT"),
                        })
                        .collect()
                })
                .collect()
        }

        /// A container's state dir, as the binary would have made it.
        fn make_container(&self, id: &str) {
            fs::create_dir(self.root().join(id)).unwrap();
        }

        /// A bundle whose process is `args[0]`, an executable file in its rootfs.
        fn bundle(&self, args: &[&str]) -> PathBuf {
            let bundle = self.dir.path().join("bundle");
            fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
            let sh = bundle.join("rootfs/bin/sh");
            fs::write(&sh, "").unwrap();
            fs::set_permissions(&sh, fs::Permissions::from_mode(0o755)).unwrap();
            let config = serde_json::json!({
                "ociVersion": "1.0.2",
                "root": {"path": "rootfs"},
                "process": {"args": args, "cwd": "/", "user": {"uid": 0, "gid": 0},
                            "env": ["PATH=/bin"]},
            });
            fs::write(bundle.join("config.json"), config.to_string()).unwrap();
            bundle
        }
    }

    fn global(verb: &str) -> Vec<String> {
        [
            "--root",
            "ROOT",
            "--log",
            "CALL/log.json",
            "--log-format",
            "json",
            verb,
        ]
        .map(String::from)
        .to_vec()
    }

    fn args(global_args: Vec<String>, rest: &[&str]) -> Vec<String> {
        let mut all = global_args;
        all.extend(rest.iter().map(|s| s.to_string()));
        all
    }

    #[test]
    fn create_passes_the_bundle_and_pid_file_and_returns_the_pid() {
        let fake = Fake::new("exit 0");
        let bundle = fake.bundle(&["/bin/sh"]);
        let pid = fake.runtime().create("c1", &bundle, Stdio::null()).unwrap();
        assert_eq!(pid, Pid::from_raw(4242));
        let bundle = bundle.display().to_string();
        assert_eq!(
            fake.runs(),
            [args(
                global("create"),
                &["--bundle", &bundle, "--pid-file", "CALL/pid", "c1"]
            )]
        );
        // The call's directory goes with the call.
        assert_eq!(fs::read_dir(fake.root()).unwrap().count(), 0);
    }

    #[test]
    fn a_process_that_cannot_be_execd_fails_before_the_binary_runs() {
        let fake = Fake::new("exit 0");
        let bundle = fake.bundle(&["nosuch"]);
        let err = fake
            .runtime()
            .create("c1", &bundle, Stdio::null())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"container c1: create: exec: "nosuch": executable file not found in $PATH"#
        );
        assert!(fake.runs().is_empty());
    }

    #[test]
    fn a_sandbox_bundle_is_refused() {
        let fake = Fake::new("exit 0");
        let bundle = fake.bundle(&["/bin/sh"]);
        let mut spec = Spec::load(bundle.join("config.json")).unwrap();
        spec.set_annotations(Some(
            [(crate::CONTAINER_TYPE.to_owned(), crate::SANDBOX.to_owned())].into(),
        ));
        spec.save(bundle.join("config.json")).unwrap();
        let err = fake
            .runtime()
            .create("p1", &bundle, Stdio::null())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "container p1: create: run the pause workload"
        );
        assert!(fake.runs().is_empty());
    }

    #[test]
    fn start_kill_and_delete_name_the_container() {
        let fake = Fake::new("exit 0");
        fake.make_container("c1");
        let runtime = fake.runtime();
        runtime.start("c1").unwrap();
        runtime.kill("c1", Signal::SIGTERM, false).unwrap();
        runtime.kill("c1", Signal::SIGKILL, true).unwrap();
        runtime.delete("c1", true).unwrap();
        assert_eq!(
            fake.runs(),
            [
                args(global("start"), &["c1"]),
                args(global("kill"), &["c1", "15"]),
                args(global("kill"), &["--all", "c1", "9"]),
                args(global("delete"), &["--force", "c1"]),
            ]
        );
    }

    #[test]
    fn an_unknown_container_is_not_found_and_its_delete_is_done() {
        let fake = Fake::new("exit 1");
        let runtime = fake.runtime();
        assert!(runtime.start("c1").unwrap_err().is_not_found());
        assert!(runtime
            .kill("c1", Signal::SIGTERM, false)
            .unwrap_err()
            .is_not_found());
        runtime.delete("c1", true).unwrap();
        let process =
            serde_json::from_str(r#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0}}"#).unwrap();
        let err = runtime.exec("c1", &process, Stdio::null()).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(fake.runs().is_empty());
        assert!(runtime.start("../c1").is_err());
    }

    #[test]
    fn exec_hands_over_the_process_and_returns_its_pid() {
        let fake = Fake::new("exit 0");
        fake.make_container("c1");
        let process: Process = serde_json::from_str(
            r#"{"args":["sh","-c","echo hi"],"cwd":"/","user":{"uid":0,"gid":0}}"#,
        )
        .unwrap();
        let pid = fake.runtime().exec("c1", &process, Stdio::null()).unwrap();
        assert_eq!(pid, Pid::from_raw(4242));
        assert_eq!(
            fake.runs(),
            [args(
                global("exec"),
                &[
                    "--detach",
                    "--pid-file",
                    "CALL/pid",
                    "--process",
                    "CALL/process.json",
                    "c1"
                ]
            )]
        );
        let given: Process =
            serde_json::from_slice(&fs::read(fake.dir.path().join("process.json")).unwrap())
                .unwrap();
        assert_eq!(given, process);
    }

    #[test]
    fn a_failure_carries_what_the_binary_logged() {
        let fake = Fake::new(
            r#"echo '{"level":"info","msg":"starting"}' >> "$log"
echo '{"level":"error","msg":"container not running"}' >> "$log"
echo 'also on stderr' >&2
exit 1"#,
        );
        fake.make_container("c1");
        let err = fake.runtime().start("c1").unwrap_err();
        let runtime = fake.dir.path().join("runtime");
        assert_eq!(
            err.to_string(),
            format!(
                "container c1: start: {} exited with exit status: 1: container not running",
                runtime.display()
            )
        );
    }

    #[test]
    fn without_a_logged_error_the_failure_carries_stderr() {
        let fake = Fake::new("echo 'flag provided but not defined' >&2; exit 2");
        fake.make_container("c1");
        let err = fake.runtime().delete("c1", false).unwrap_err();
        assert!(
            err.to_string()
                .ends_with("exited with exit status: 2: flag provided but not defined"),
            "{err}"
        );
    }

    #[test]
    fn signalling_a_stopped_init_is_not_an_error() {
        let fake = Fake::new(
            r#"case $verb in
  state) echo '{"id":"c1","status":"stopped"}' ;;
  *) echo '{"level":"error","msg":"container not running"}' >> "$log"; exit 1 ;;
esac"#,
        );
        fake.make_container("c1");
        fake.runtime().kill("c1", Signal::SIGTERM, false).unwrap();
        let runs = fake.runs();
        assert_eq!(runs[1], args(global("state"), &["c1"]));
        // With `all` the failure stands: processes may be left in the cgroup.
        assert!(fake.runtime().kill("c1", Signal::SIGKILL, true).is_err());
    }
}
