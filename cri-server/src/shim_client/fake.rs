//! A [`ShimLauncher`] for unit tests: no process, no socket; a log of every
//! call by container id, which shims are still up, and a failure to inject.
//! Its streamed Exec and Attach echo stdin to stdout and exit with a set
//! code at CloseStdin.

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crius_proto::shim::v1 as pb;
use tonic::Status;

use super::{ProcessIo, ShimApi, ShimError, ShimFuture, ShimLauncher, ShimPaths, ShimRuntime};

/// A call of [`FakeShims`] that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeShimStep {
    Spawn,
    Create,
    Start,
    Kill,
    Delete,
    Shutdown,
    Exec,
    Attach,
    Update,
}

#[derive(Debug, Default)]
struct State {
    fail: Option<FakeShimStep>,
    /// (container id, call) in order: "Spawn", "Connect", "Create", ….
    calls: Vec<(String, &'static str)>,
    /// Spawned and not shut down.
    up: HashSet<String>,
    /// Killed: their wait returns.
    exited: HashSet<String>,
    /// (container id, signal) of every Kill, in order.
    signals: Vec<(String, i32)>,
    /// Their containers survive every signal but SIGKILL.
    ignore_sigterm: bool,
    /// (container id, first message) of every streamed Exec and Attach.
    io_starts: Vec<(String, pb::io_input::Kind)>,
    /// (container id, width, height) of every Resize sent to them, in order.
    resizes: Vec<(String, u32, u32)>,
    /// What their `exit` carries.
    io_exit_code: i32,
    /// (container id, runtime) of every Spawn, in order.
    runtimes: Vec<(String, ShimRuntime)>,
    /// (container id, `linux.resources`) of every Update, in order.
    updates: Vec<(String, serde_json::Value)>,
}

#[derive(Debug, Default, Clone)]
pub struct FakeShims {
    state: Arc<Mutex<State>>,
    exits: Arc<tokio::sync::Notify>,
}

impl FakeShims {
    /// Makes every later call of `step` fail (`None`: none fails).
    pub fn fail_at(&self, step: Option<FakeShimStep>) {
        self.state.lock().unwrap().fail = step;
    }

    /// The calls made on container `id`'s shim, in order (`Spawn` and
    /// `Connect` included).
    pub fn calls(&self, id: &str) -> Vec<&'static str> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, c)| *c)
            .collect()
    }

    /// Makes the containers ignore every signal but SIGKILL (`false`: any
    /// signal ends them).
    pub fn ignore_sigterm(&self, ignore: bool) {
        self.state.lock().unwrap().ignore_sigterm = ignore;
    }

    /// The signals sent to container `id`, in order.
    pub fn signals(&self, id: &str) -> Vec<i32> {
        let state = self.state.lock().unwrap();
        state
            .signals
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, s)| *s)
            .collect()
    }

    /// Makes streamed Exec and Attach calls end with `code` at CloseStdin.
    pub fn io_exit_code(&self, code: i32) {
        self.state.lock().unwrap().io_exit_code = code;
    }

    /// The first messages (`exec` or `attach`) of the streamed calls on
    /// container `id`'s shim, in order.
    pub fn io_starts(&self, id: &str) -> Vec<pb::io_input::Kind> {
        let state = self.state.lock().unwrap();
        state
            .io_starts
            .iter()
            .filter(|(i, _)| i == id)
            .map(|(_, start)| start.clone())
            .collect()
    }

    /// The (width, height) of every Resize sent to container `id`'s
    /// streamed calls, in order.
    pub fn resizes(&self, id: &str) -> Vec<(u32, u32)> {
        let state = self.state.lock().unwrap();
        state
            .resizes
            .iter()
            .filter(|(i, _, _)| i == id)
            .map(|(_, width, height)| (*width, *height))
            .collect()
    }

    /// Container `id`'s side of a streamed call that began with `start`:
    /// echoes stdin to stdout, records resizes, and sends `exit` with the set
    /// code at CloseStdin; ends without `exit` when the input does.
    fn process_io(&self, id: &str, start: pb::io_input::Kind) -> ProcessIo {
        self.state
            .lock()
            .unwrap()
            .io_starts
            .push((id.to_string(), start));
        let (input, mut inputs) = tokio::sync::mpsc::channel::<pb::IoInput>(16);
        let (outputs, output) = tokio::sync::mpsc::channel(16);
        let (fakes, id) = (self.clone(), id.to_string());
        tokio::spawn(async move {
            use pb::io_input::Kind;
            use pb::io_output::Kind as Out;
            while let Some(pb::IoInput { kind: Some(kind) }) = inputs.recv().await {
                let out = match kind {
                    Kind::Stdin(data) => Out::Stdout(data),
                    Kind::CloseStdin(_) => Out::Exit(pb::Exit {
                        exit_code: fakes.state.lock().unwrap().io_exit_code,
                    }),
                    Kind::Resize(size) => {
                        let resize = (id.clone(), size.width, size.height);
                        fakes.state.lock().unwrap().resizes.push(resize);
                        continue;
                    }
                    Kind::Exec(_) | Kind::Attach(_) => continue,
                };
                let exit = matches!(out, Out::Exit(_));
                let sent = outputs.send(Ok(pb::IoOutput { kind: Some(out) })).await;
                if exit || sent.is_err() {
                    return;
                }
            }
        });
        ProcessIo {
            input,
            output: Box::pin(tokio_stream::wrappers::ReceiverStream::new(output)),
        }
    }

    /// Ends container `id`'s process by itself (its wait returns 137).
    pub fn end(&self, id: &str) {
        self.state.lock().unwrap().exited.insert(id.to_string());
        self.exits.notify_waiters();
    }

    /// Takes container `id`'s shim down, as a SIGKILL of the shim would: its
    /// calls fail as unreachable, a pending wait too.
    pub fn lose(&self, id: &str) {
        self.state.lock().unwrap().up.remove(id);
        self.exits.notify_waiters();
    }

    /// The ids of every container a shim was spawned for, in order.
    pub fn spawned(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .calls
            .iter()
            .filter(|(_, c)| *c == "Spawn")
            .map(|(i, _)| i.clone())
            .collect()
    }

    /// The runtime each shim was spawned with: (container id, runtime), in order.
    pub fn spawned_runtimes(&self) -> Vec<(String, ShimRuntime)> {
        self.state.lock().unwrap().runtimes.clone()
    }

    /// The `linux.resources` of every Update the container's shim took.
    pub fn updates(&self, id: &str) -> Vec<serde_json::Value> {
        let state = self.state.lock().unwrap();
        (state.updates.iter())
            .filter(|(i, _)| i == id)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The ids whose shims are up (spawned, not shut down).
    pub fn up(&self) -> HashSet<String> {
        self.state.lock().unwrap().up.clone()
    }

    fn shim(&self, id: &str) -> Arc<dyn ShimApi> {
        Arc::new(FakeShim {
            id: id.to_string(),
            fakes: self.clone(),
        })
    }

    /// Logs `call` on `id`'s shim, then fails it if injected or the shim is down.
    fn call(
        &self,
        id: &str,
        call: &'static str,
        step: Option<FakeShimStep>,
    ) -> Result<(), ShimError> {
        let mut state = self.state.lock().unwrap();
        state.calls.push((id.to_string(), call));
        if step.is_some() && state.fail == step {
            return Err(ShimError::Call {
                id: id.to_string(),
                call,
                status: Status::internal("injected failure"),
            });
        }
        if !state.up.contains(id) {
            return Err(unreachable(id, call));
        }
        Ok(())
    }
}

fn unreachable(id: &str, call: &'static str) -> ShimError {
    ShimError::Call {
        id: id.to_string(),
        call,
        status: Status::unavailable("no fake shim serves"),
    }
}

impl ShimLauncher for FakeShims {
    fn spawn<'a>(
        &'a self,
        id: &'a str,
        _paths: &'a ShimPaths,
        runtime: &'a ShimRuntime,
        _log_path: Option<&'a Path>,
    ) -> ShimFuture<'a, Arc<dyn ShimApi>> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            state.calls.push((id.to_string(), "Spawn"));
            state.runtimes.push((id.to_string(), runtime.clone()));
            if state.fail == Some(FakeShimStep::Spawn) {
                return Err(ShimError::Spawn {
                    id: id.to_string(),
                    bin: "fake-shim".into(),
                    source: std::io::Error::other("injected failure"),
                });
            }
            state.up.insert(id.to_string());
            drop(state);
            Ok(self.shim(id))
        })
    }

    fn connect<'a>(&'a self, id: &'a str, _socket: &'a Path) -> ShimFuture<'a, Arc<dyn ShimApi>> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            state.calls.push((id.to_string(), "Connect"));
            if !state.up.contains(id) {
                return Err(unreachable(id, "Connect"));
            }
            drop(state);
            Ok(self.shim(id))
        })
    }
}

struct FakeShim {
    id: String,
    fakes: FakeShims,
}

impl ShimApi for FakeShim {
    fn create(&self, _stdin: bool, _stdin_once: bool) -> ShimFuture<'_, u32> {
        Box::pin(async move {
            self.fakes
                .call(&self.id, "Create", Some(FakeShimStep::Create))?;
            Ok(4242)
        })
    }

    fn start(&self) -> ShimFuture<'_, ()> {
        Box::pin(async move {
            self.fakes
                .call(&self.id, "Start", Some(FakeShimStep::Start))
        })
    }

    fn kill(&self, signal: i32, _all: bool) -> ShimFuture<'_, ()> {
        Box::pin(async move {
            self.fakes
                .call(&self.id, "Kill", Some(FakeShimStep::Kill))?;
            let mut state = self.fakes.state.lock().unwrap();
            state.signals.push((self.id.clone(), signal));
            if state.ignore_sigterm && signal != libc::SIGKILL {
                return Ok(());
            }
            state.exited.insert(self.id.clone());
            drop(state);
            self.fakes.exits.notify_waiters();
            Ok(())
        })
    }

    fn wait(&self) -> ShimFuture<'_, pb::WaitResponse> {
        Box::pin(async move {
            self.fakes.call(&self.id, "Wait", None)?;
            loop {
                let exited = self.fakes.exits.notified();
                let (ended, up) = {
                    let state = self.fakes.state.lock().unwrap();
                    (state.exited.contains(&self.id), state.up.contains(&self.id))
                };
                if ended {
                    return Ok(pb::WaitResponse {
                        exit_code: 137,
                        ..Default::default()
                    });
                }
                if !up {
                    return Err(unreachable(&self.id, "Wait"));
                }
                exited.await;
            }
        })
    }

    fn exec_sync(
        &self,
        _process_json: Vec<u8>,
        _timeout: Duration,
    ) -> ShimFuture<'_, pb::ExecSyncResponse> {
        Box::pin(async move {
            self.fakes.call(&self.id, "ExecSync", None)?;
            Ok(pb::ExecSyncResponse::default())
        })
    }

    fn exec(&self, start: pb::ExecStart) -> ShimFuture<'_, ProcessIo> {
        Box::pin(async move {
            self.fakes
                .call(&self.id, "Exec", Some(FakeShimStep::Exec))?;
            Ok(self
                .fakes
                .process_io(&self.id, pb::io_input::Kind::Exec(start)))
        })
    }

    fn attach(&self, start: pb::AttachStart) -> ShimFuture<'_, ProcessIo> {
        Box::pin(async move {
            self.fakes
                .call(&self.id, "Attach", Some(FakeShimStep::Attach))?;
            Ok(self
                .fakes
                .process_io(&self.id, pb::io_input::Kind::Attach(start)))
        })
    }

    fn delete(&self) -> ShimFuture<'_, ()> {
        Box::pin(async move {
            self.fakes
                .call(&self.id, "Delete", Some(FakeShimStep::Delete))
        })
    }

    fn reopen_log(&self) -> ShimFuture<'_, ()> {
        Box::pin(async move { self.fakes.call(&self.id, "ReopenLog", None) })
    }

    fn update(&self, resources_json: Vec<u8>) -> ShimFuture<'_, ()> {
        Box::pin(async move {
            self.fakes
                .call(&self.id, "Update", Some(FakeShimStep::Update))?;
            let resources = serde_json::from_slice(&resources_json).expect("resources JSON");
            let mut state = self.fakes.state.lock().unwrap();
            state.updates.push((self.id.clone(), resources));
            Ok(())
        })
    }

    fn shutdown(&self) -> ShimFuture<'_, ()> {
        Box::pin(async move {
            self.fakes
                .call(&self.id, "Shutdown", Some(FakeShimStep::Shutdown))?;
            self.fakes.state.lock().unwrap().up.remove(&self.id);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_streamed_call_echoes_stdin_and_exits_with_the_set_code() {
        let fakes = FakeShims::default();
        fakes.io_exit_code(7);
        let paths = ShimPaths::in_bundle(Path::new("/nonexistent/c1"));
        let shim = fakes
            .spawn(
                "c1",
                &paths,
                &ShimRuntime::InProcess { root: "/r".into() },
                None,
            )
            .await
            .unwrap();
        let start = pb::ExecStart {
            stdin: true,
            ..Default::default()
        };
        let mut io = shim.exec(start.clone()).await.unwrap();
        for kind in [
            pb::io_input::Kind::Stdin(b"hi".to_vec()),
            pb::io_input::Kind::Resize(pb::Resize {
                width: 80,
                height: 24,
            }),
            pb::io_input::Kind::CloseStdin(pb::CloseStdin {}),
        ] {
            io.input
                .send(pb::IoInput { kind: Some(kind) })
                .await
                .unwrap();
        }
        let mut outputs = Vec::new();
        while let Some(output) = io.output.next().await {
            outputs.push(output.unwrap().kind.unwrap());
        }
        assert_eq!(
            outputs,
            [
                pb::io_output::Kind::Stdout(b"hi".to_vec()),
                pb::io_output::Kind::Exit(pb::Exit { exit_code: 7 }),
            ]
        );
        assert_eq!(fakes.resizes("c1"), [(80, 24)]);
        assert_eq!(fakes.io_starts("c1"), [pb::io_input::Kind::Exec(start)]);
        assert_eq!(fakes.calls("c1"), ["Spawn", "Exec"]);
    }
}
