//! Runtime handlers (RuntimeClass) against a real criusd: Debian's runc
//! and crun as `[runtimes.<name>]` handlers beside the default in-process
//! runtime, their pods side by side, each container run by its pod's
//! handler (its state in that runtime's root), exec'd into, stopped and
//! removed with nothing left; an unknown handler refused.

use std::path::Path;
use std::time::{Duration, Instant};

use crius_proto::cri;
use crius_tests::cri::{
    container_config, container_status, exec, pod_config, pull, run_container, stop_and_remove_pod,
    wait_for,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon, DaemonOptions};

const RUNC: &str = "/usr/sbin/runc";
const CRUN: &str = "/usr/bin/crun";

/// A daemon with the test registry and the runc and crun handlers. crun
/// runs without this hybrid host's cgroup2 mount, whose hugetlb controller
/// it refuses.
fn daemon() -> Daemon {
    for binary in [RUNC, CRUN] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: apt-get install runc crun"
        );
    }
    Daemon::start_with(DaemonOptions {
        config_toml: format!(
            "{}\n[runtimes.runc]\npath = \"{RUNC}\"\n[runtimes.crun]\npath = \"{CRUN}\"\nhide_unified_cgroup = true\n",
            TestRegistry::shared().config_toml()
        ),
        network: true,
        ..Default::default()
    })
}

/// The CRI log's complete records as `<stream> <tag> <content>`.
fn records(log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let complete = text.rfind('\n').map_or(0, |end| end + 1);
    text[..complete]
        .split_terminator('\n')
        .filter_map(|line| line.split_once(' ').map(|(_, record)| record.to_owned()))
        .collect()
}

/// Runs `crictl <args>` against `daemon` with `stdin`; with a `terminal`
/// of (rows, cols), under a pseudo-terminal of that size. Its stdout.
fn crictl(daemon: &Daemon, args: &str, stdin: &[u8], terminal: Option<(u16, u16)>) -> String {
    if let Some((rows, cols)) = terminal {
        return daemon.crictl_on_a_terminal(rows, cols, args, stdin);
    }
    let mut child = std::process::Command::new("sh")
        .args(["-c", &format!("{} {args}", daemon.crictl_line())])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn crictl");
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, stdin).unwrap();
    drop(input);
    let output = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Where the handler's runtime keeps container `id`'s state.
fn runtime_state(daemon: &Daemon, handler: &str, id: &str) -> std::path::PathBuf {
    match handler {
        "" => daemon.state.join("runtime").join(id),
        name => daemon.state.join("runtimes").join(name).join(id),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_on_runc_crun_and_the_default_handler_run_side_by_side() {
    if !require_root() {
        return;
    }
    let daemon = daemon();
    let mut rt = daemon.runtime().await;
    let status = rt
        .status(cri::StatusRequest { verbose: false })
        .await
        .expect("Status")
        .into_inner();
    let features = |name: &str| {
        status
            .runtime_handlers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.features)
            .unwrap_or_else(|| panic!("handler {name:?} in {status:?}"))
    };
    let names: Vec<&str> = status
        .runtime_handlers
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(names, ["", "crun", "runc"]);
    // This kernel has mount_setattr and idmapped overlay layers; runc
    // 1.1.5's `features` lists "rro", crun 1.8.1 has no `features` to say
    // so; only the default handler makes a pod's user namespace.
    for (name, rro, userns) in [
        ("", true, true),
        ("runc", true, false),
        ("crun", false, false),
    ] {
        assert_eq!(
            features(name),
            cri::RuntimeHandlerFeatures {
                recursive_read_only_mounts: rro,
                user_namespaces: userns,
            },
            "{name:?}"
        );
    }

    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let logs = daemon.dir.path().join("logs");
    // (handler, pod id, pod config, [(container id, name)]), all running at once.
    let mut pods = Vec::new();
    for handler in ["", "runc", "crun"] {
        let name = if handler.is_empty() {
            "default"
        } else {
            handler
        };
        let pod = pod_config(&format!("on-{name}"), &logs.join(name));
        let pod_id = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(pod.clone()),
                runtime_handler: handler.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox on {handler:?}: {e:?}"))
            .into_inner()
            .pod_sandbox_id;
        let reported = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.clone(),
                verbose: false,
            })
            .await
            .expect("PodSandboxStatus")
            .into_inner()
            .status
            .expect("a status");
        assert_eq!(reported.runtime_handler, handler);

        let app = container_config(
            "app",
            &busybox,
            &["sh", "-c", "echo started; exec sleep 1000"],
        );
        let app_id = run_container(&mut rt, &pod_id, &pod, app).await;
        let mut tty = container_config(
            "tty",
            &busybox,
            &[
                "sh",
                "-c",
                "tty; stty size; echo hello-tty; exec sleep 1000",
            ],
        );
        tty.tty = true;
        let tty_id = run_container(&mut rt, &pod_id, &pod, tty).await;
        pods.push((handler, pod_id, vec![(app_id, "app"), (tty_id, "tty")]));
    }

    for (handler, _, containers) in &pods {
        let name = if handler.is_empty() {
            "default"
        } else {
            handler
        };
        for (id, container) in containers {
            let status = container_status(&mut rt, id).await;
            assert_eq!(
                status.state,
                cri::ContainerState::ContainerRunning as i32,
                "{handler:?} {container}: {status:?}"
            );
            assert!(
                runtime_state(&daemon, handler, id).is_dir(),
                "{handler:?} {container}: no state in its runtime's root"
            );
        }
        let (app, _) = &containers[0];
        wait_for("the app's first line", || {
            records(&logs.join(name).join("app.log")) == ["stdout F started"]
        });
        let out = exec(
            &mut rt,
            app,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            10,
        )
        .await
        .unwrap_or_else(|e| panic!("ExecSync on {handler:?}: {e:?}"));
        assert_eq!(
            (out.stdout.as_slice(), out.stderr.as_slice(), out.exit_code),
            (&b"out\n"[..], &b"err\n"[..], 3),
            "{handler:?}"
        );
        // The timeout kills the exec's process group, wherever the runtime put it.
        let started = Instant::now();
        let timed_out = exec(&mut rt, app, &["sleep", "30"], 1).await;
        assert_eq!(
            timed_out.map_err(|s| s.code()).err(),
            Some(tonic::Code::DeadlineExceeded),
            "{handler:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{handler:?}");
        // Streamed execs: on pipes with stdin, and on a terminal of their own.
        let piped = crictl(
            &daemon,
            &format!("exec -i {app} sh -c 'cat; echo done'"),
            b"hello\n",
            None,
        );
        assert_eq!(piped, "hello\ndone\n", "{handler:?}");
        let on_tty = crictl(
            &daemon,
            &format!("exec -it {app} sh -c 'tty; stty size'"),
            b"",
            Some((30, 100)),
        );
        assert!(
            on_tty.contains("/dev/pts/") && on_tty.contains("30 100"),
            "{handler:?}: {on_tty:?}"
        );
        let (tty, _) = &containers[1];
        let tty_log = logs.join(name).join("tty.log");
        wait_for("the tty container's output", || {
            records(&tty_log).len() >= 3
        });
        assert_eq!(
            records(&tty_log)[..3],
            [
                "stdout F /dev/pts/0",
                "stdout F 24 80",
                "stdout F hello-tty"
            ],
            "{handler:?}"
        );
        let out = exec(&mut rt, tty, &["sh", "-c", "echo in-tty"], 10)
            .await
            .expect("ExecSync");
        assert_eq!(out.stdout, b"in-tty\n", "{handler:?}");
    }

    for (handler, pod_id, containers) in pods {
        for (id, container) in containers {
            rt.stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 5,
            })
            .await
            .expect("StopContainer");
            let status = container_status(&mut rt, &id).await;
            assert_eq!(
                (status.state, status.exit_code),
                (cri::ContainerState::ContainerExited as i32, 143),
                "{handler:?} {container}: sleep ends at SIGTERM: {status:?}"
            );
            rt.remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("RemoveContainer");
            assert!(
                !runtime_state(&daemon, handler, &id).exists(),
                "{handler:?} {container}: its runtime state is left"
            );
        }
        stop_and_remove_pod(&mut rt, &pod_id).await;
    }
    wait_for("shims to exit", || {
        daemon.shim_pids().is_empty() && daemon.pause_shim_pids().is_empty()
    });
    assert_eq!(daemon.leaks(), Vec::<String>::new());
    for handler in ["runc", "crun"] {
        let root = daemon.state.join("runtimes").join(handler);
        let left: Vec<_> = std::fs::read_dir(&root)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "{handler}'s root keeps {left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_handler_is_refused_naming_it_and_leaves_nothing() {
    if !require_root() {
        return;
    }
    let daemon = daemon();
    let mut rt = daemon.runtime().await;
    let logs = daemon.dir.path().join("logs");
    let refused = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("kata", &logs)),
            runtime_handler: "kata".into(),
        })
        .await
        .expect_err("an unknown handler runs no pod");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "runtime_handler: unknown runtime handler \"kata\" (configured: \"\", \"crun\", \"runc\")"
    );
    let pods = rt
        .list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    assert!(pods.is_empty(), "{pods:?}");
    assert_eq!(daemon.leaks(), Vec::<String>::new());
}
