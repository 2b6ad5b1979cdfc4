//! Exec, Attach and PortForward against a real criusd, through real
//! protocol clients: crictl (client-go's SPDY and WebSocket executors and
//! dialers), over both transports.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crius_proto::cri;
use crius_tests::cri::{
    container_config, exec, pod_config, pull, run_container, run_pod, wait_for,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{processes, require_root, short_tempdir, Daemon, DaemonOptions};
use sha2::{Digest, Sha256};
use tonic::Code;

const TRANSPORTS: [&str; 2] = ["spdy", "websocket"];

/// Runs `crictl <args>` with `stdin` to completion.
fn crictl(daemon: &Daemon, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = daemon
        .crictl()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crictl");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Pod {
    daemon: Daemon,
    pod_id: String,
    pod: cri::PodSandboxConfig,
    busybox: String,
}

async fn pod(name: &str) -> Pod {
    let daemon = Daemon::start_networked();
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config(name, &daemon.dir.path().join("logs"));
    let pod_id = run_pod(&mut daemon.runtime().await, &pod)
        .await
        .expect("RunPodSandbox");
    Pod {
        daemon,
        pod_id,
        pod,
        busybox,
    }
}

impl Pod {
    async fn container(
        &self,
        name: &str,
        command: &[&str],
        adjust: impl FnOnce(&mut cri::ContainerConfig),
    ) -> String {
        let mut config = container_config(name, &self.busybox, command);
        adjust(&mut config);
        run_container(
            &mut self.daemon.runtime().await,
            &self.pod_id,
            &self.pod,
            config,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_streams_stdin_output_and_the_exit_code() {
    if !require_root() {
        return;
    }
    let pod = pod("exec").await;
    let id = pod.container("sleeper", &["sleep", "3600"], |_| {}).await;
    for transport in TRANSPORTS {
        let args = [
            "exec",
            "--transport",
            transport,
            &id,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 7",
        ];
        let output = crictl(&pod.daemon, &args, b"");
        // crictl fails with client-go's error for the exit code it was told.
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{transport}");
        assert!(
            stderr.contains("command terminated with exit code 7"),
            "{transport}: {stderr}"
        );
        assert_eq!(text(&output.stdout), "out\n", "{transport}");
        assert!(stderr.starts_with("err\n"), "{transport}: {stderr}");

        let args = [
            "exec",
            "-i",
            "--transport",
            transport,
            &id,
            "sh",
            "-c",
            "read x; echo got-$x; cat",
        ];
        let output = crictl(&pod.daemon, &args, b"hi\nrest of stdin\n");
        assert!(
            output.status.success(),
            "{transport}: {}",
            text(&output.stderr)
        );
        assert_eq!(
            text(&output.stdout),
            "got-hi\nrest of stdin\n",
            "{transport}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_on_a_terminal_gets_its_size_and_resizes() {
    if !require_root() {
        return;
    }
    let pod = pod("exec-tty").await;
    let id = pod.container("sleeper", &["sleep", "3600"], |_| {}).await;
    for transport in TRANSPORTS {
        let command = format!("exec -it --transport {transport} {id} sh -c 'tty; stty size'");
        let output = pod.daemon.crictl_on_a_terminal(30, 100, &command, b"");
        assert!(output.contains("/dev/pts/"), "{transport}: {output:?}");
        assert!(output.contains("30 100"), "{transport}: {output:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn attach_reaches_plain_and_terminal_containers() {
    if !require_root() {
        return;
    }
    let pod = pod("attach").await;
    for transport in TRANSPORTS {
        // stdin_once: the attacher's end of stdin is the container's.
        let name = format!("cat-{transport}");
        let id = pod
            .container(
                &name,
                &[
                    "sh",
                    "-c",
                    "while read line; do echo got-$line; done; echo bye",
                ],
                |c| {
                    c.stdin = true;
                    c.stdin_once = true;
                },
            )
            .await;
        let output = crictl(
            &pod.daemon,
            &["attach", "-i", "--transport", transport, &id],
            b"hello\n",
        );
        assert!(
            output.status.success(),
            "{transport}: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stdout), "got-hello\nbye\n", "{transport}");

        let name = format!("shell-{transport}");
        let id = pod
            .container(&name, &["sh"], |c| {
                c.stdin = true;
                c.tty = true;
            })
            .await;
        let command = format!("attach -it --transport {transport} {id}");
        let output = pod.daemon.crictl_on_a_terminal(
            40,
            120,
            &command,
            b"stty size; echo attached-$((6*7))\n",
        );
        assert!(output.contains("attached-42"), "{transport}: {output:?}");
        assert!(output.contains("40 120"), "{transport}: {output:?}");
    }
}

/// Starts `crictl port-forward <pod> 0:<port>`: the child and the local port.
fn port_forward(daemon: &Daemon, pod_id: &str, port: u16, transport: &str) -> (Child, u16) {
    let mut child = daemon
        .crictl()
        .args([
            "port-forward",
            "--transport",
            transport,
            pod_id,
            &format!("0:{port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crictl port-forward");
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    // "Forwarding from 127.0.0.1:<local> -> <port>"
    while !text(&seen).contains(" -> ") || !seen.ends_with(b"\n") {
        match stdout.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => panic!("port-forward ended before forwarding: {}", text(&seen)),
        }
    }
    let line = text(&seen);
    // crictl says "Handling connection" for each: a closed pipe would kill it.
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let local = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("no local port in {line:?}"));
    (child, local)
}

/// GETs `path` over HTTP/1.0 from localhost:`port`: the body.
fn http_get(port: u16, path: &str) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(conn, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response)?;
    let start = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP response: {:?}", text(&response))))?;
    Ok(response[start + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread")]
async fn port_forward_carries_http_and_100_mb_intact() {
    if !require_root() {
        return;
    }
    let pod = pod("forward").await;
    let serve =
        "head -c 100000000 /dev/urandom > /tmp/big && echo crius-forwarded > /tmp/index.html \
                 && touch /tmp/ready && exec httpd -f -p 80 -h /tmp";
    let id = pod.container("httpd", &["sh", "-c", serve], |_| {}).await;
    let mut rt = pod.daemon.runtime().await;
    let mut ready = false;
    for _ in 0..300 {
        if exec(&mut rt, &id, &["test", "-e", "/tmp/ready"], 5)
            .await
            .unwrap()
            .exit_code
            == 0
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the container did not write its files");
    let digest = exec(&mut rt, &id, &["sha256sum", "/tmp/big"], 60)
        .await
        .unwrap();
    let expected = text(&digest.stdout).split(' ').next().unwrap().to_owned();
    for transport in TRANSPORTS {
        let (mut child, local) = port_forward(&pod.daemon, &pod.pod_id, 80, transport);
        let mut body = Err(std::io::Error::other("not tried"));
        // httpd may not listen yet right after the files are written.
        for _ in 0..50 {
            body = http_get(local, "/index.html");
            if body.as_ref().is_ok_and(|b| !b.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let body = match body {
            Ok(body) => body,
            Err(err) => {
                child.kill().unwrap();
                let output = child.wait_with_output().unwrap();
                panic!(
                    "{transport}: GET through port-forward: {err}; crictl said: {}",
                    text(&output.stderr)
                );
            }
        };
        assert_eq!(text(&body), "crius-forwarded\n", "{transport}");
        let started = Instant::now();
        let big = http_get(local, "/big").unwrap();
        let took = started.elapsed();
        assert_eq!(big.len(), 100_000_000, "{transport}");
        assert_eq!(hex::encode(Sha256::digest(&big)), expected, "{transport}");
        eprintln!("{transport}: 100 MB through port-forward in {took:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_httpd_image_a_refused_port_and_host_network_pods() {
    if !require_root() {
        return;
    }
    let pod = pod("refused").await;
    let httpd = TestRegistry::shared().image("crius/httpd:latest");
    pull(&mut pod.daemon.images().await, &httpd).await;
    let config = container_config("httpd", &httpd, &[]);
    run_container(
        &mut pod.daemon.runtime().await,
        &pod.pod_id,
        &pod.pod,
        config,
    )
    .await;
    for transport in TRANSPORTS {
        let (mut child, local) = port_forward(&pod.daemon, &pod.pod_id, 80, transport);
        let mut body = Vec::new();
        for _ in 0..50 {
            body = http_get(local, "/").unwrap_or_default();
            if !body.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(text(&body), "crius-httpd-ok\n", "{transport}");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // Nothing listens on 81: crictl is told why.
    let (mut child, local) = port_forward(&pod.daemon, &pod.pod_id, 81, "spdy");
    assert!(http_get(local, "/").map_or(true, |body| body.is_empty()));
    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert!(stderr.contains("error forwarding port 81"), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");

    // A host-network pod forwards to the host's own localhost.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = [0u8; 1024];
        let _ = conn.read(&mut request).unwrap();
        conn.write_all(b"HTTP/1.0 200 OK\r\n\r\nfrom-the-host\n")
            .unwrap();
    });
    let mut host_pod = pod_config("host-net", &pod.daemon.dir.path().join("logs"));
    host_pod
        .linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
        .namespace_options
        .get_or_insert_with(Default::default)
        .network = cri::NamespaceMode::Node as i32;
    let host_pod_id = run_pod(&mut pod.daemon.runtime().await, &host_pod)
        .await
        .unwrap();
    for transport in TRANSPORTS {
        let (mut child, local) = port_forward(&pod.daemon, &host_pod_id, port, transport);
        if transport == "spdy" {
            assert_eq!(text(&http_get(local, "/").unwrap()), "from-the-host\n");
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    server.join().unwrap();
}

/// The fds a process holds.
fn fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_client_leaves_no_process_fd_or_pty() {
    if !require_root() {
        return;
    }
    let pod = pod("dropped").await;
    let id = pod.container("sleeper", &["sleep", "3600"], |_| {}).await;
    let shim = pod.daemon.shim_pids()[0];
    let criusd = pod.daemon.pid() as i32;
    for (transport, tty) in [
        ("spdy", false),
        ("websocket", false),
        ("spdy", true),
        ("websocket", true),
    ] {
        let (shim_fds, criusd_fds) = (fds(shim), fds(criusd));
        eprintln!("dropping a {transport} exec client, tty {tty}");
        let marker = format!("sleep 4{}", u8::from(tty));
        // busybox runs sleep inside the shell (a NOFORK applet).
        let exec_process = format!("sh -c {marker}");
        let running = || {
            processes()
                .iter()
                .any(|(_, cmd)| *cmd == exec_process || *cmd == marker)
        };
        // crictl -t wants a terminal: `script` gives it one; the whole
        // session (script and crictl) is killed as one process group.
        let mut line = vec![pod.daemon.crictl_line()];
        line.extend(["exec", "--transport", transport].map(String::from));
        if tty {
            // crictl asks for both: a terminal without stdin is refused.
            line.push("-it".into());
        }
        line.extend([id.clone(), "sh".into(), "-c".into(), format!("'{marker}'")]);
        let client = std::process::Command::new("script")
            .args(["-qec", &line.join(" "), "/dev/null"])
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for("the exec's process", running);
        let group = nix::unistd::Pid::from_raw(client.id() as i32);
        nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL).unwrap();
        client.wait_with_output().unwrap();
        wait_for("the exec's process to be killed", || !running());
        wait_for("the shim's and criusd's fds to be closed", || {
            fds(shim) <= shim_fds && fds(criusd) <= criusd_fds
        });
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_execs_all_return() {
    if !require_root() {
        return;
    }
    let pod = pod("concurrent").await;
    let id = pod.container("sleeper", &["sleep", "3600"], |_| {}).await;
    let clients: Vec<Child> = (0..20)
        .map(|n| {
            let transport = TRANSPORTS[n % 2];
            pod.daemon
                .crictl()
                .args([
                    "exec",
                    "--transport",
                    transport,
                    &id,
                    "sh",
                    "-c",
                    &format!("sleep 0.2; echo exec-{n}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (n, client) in clients.into_iter().enumerate() {
        let output = client.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "exec {n}: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stdout), format!("exec-{n}\n"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rpcs_check_first_and_a_url_serves_once() {
    if !require_root() {
        return;
    }
    let pod = pod("rpcs").await;
    let id = pod.container("sleeper", &["sleep", "3600"], |_| {}).await;
    let mut rt = pod.daemon.runtime().await;
    let request = |container_id: &str, tty: bool, stderr: bool, cmd: &[&str]| cri::ExecRequest {
        container_id: container_id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        tty,
        stdin: false,
        stdout: true,
        stderr,
    };
    let err = rt
        .exec(request("nosuch", false, true, &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = rt
        .exec(request(&id, true, true, &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("tty and stderr"), "{err:?}");
    let err = rt.exec(request(&id, false, true, &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .attach(cri::AttachRequest {
            container_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = rt
        .port_forward(cri::PortForwardRequest {
            pod_sandbox_id: "nosuch".into(),
            port: vec![80],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // A URL is taken by its first connection, upgraded or not.
    let url = rt
        .exec(request(&id, false, true, &["true"]))
        .await
        .unwrap()
        .into_inner()
        .url;
    let address = url.strip_prefix("http://").unwrap();
    let (host, path) = address.split_at(address.find('/').unwrap());
    assert!(host.starts_with("127.0.0.1:"), "{url}");
    let status = |path: &str| {
        let mut conn = TcpStream::connect(host).unwrap();
        write!(
            conn,
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut response = [0u8; 12];
        conn.read_exact(&mut response).unwrap();
        text(&response)
    };
    assert_eq!(status(path), "HTTP/1.1 400");
    assert_eq!(status(path), "HTTP/1.1 404");
    assert_eq!(status("/exec/unknown-token"), "HTTP/1.1 404");

    // Stopped: nothing to exec into.
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 0,
    })
    .await
    .unwrap();
    let err = rt
        .exec(request(&id, false, true, &["true"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_streaming_server_speaks_https_with_a_given_certificate() {
    if !require_root() {
        return;
    }
    let certs = short_tempdir();
    let (cert, key) = (
        certs.path().join("stream.crt"),
        certs.path().join("stream.key"),
    );
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "{}", text(&made.stderr));
    let daemon = Daemon::start_with(DaemonOptions {
        config_toml: format!(
            "{}[streaming]\ntls_cert_file = {:?}\ntls_key_file = {:?}\n",
            TestRegistry::shared().config_toml(),
            cert,
            key
        ),
        network: true,
        ..Default::default()
    });
    let busybox = TestRegistry::shared().image("crius/busybox:latest");
    pull(&mut daemon.images().await, &busybox).await;
    let pod = pod_config("https", &daemon.dir.path().join("logs"));
    let mut rt = daemon.runtime().await;
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let config = container_config("sleeper", &busybox, &["sleep", "3600"]);
    let id = run_container(&mut rt, &pod_id, &pod, config).await;
    let url = rt
        .exec(cri::ExecRequest {
            container_id: id.clone(),
            cmd: vec!["true".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for transport in TRANSPORTS {
        // crictl insists on a client certificate; the server asks for none.
        let mut args = vec![
            "exec",
            "--tls-ca",
            cert,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ];
        args.extend(["--transport", transport, &id, "echo", "over-tls"]);
        let output = crictl(&daemon, &args, b"");
        assert!(
            output.status.success(),
            "{transport}: {}",
            text(&output.stderr)
        );
        assert_eq!(text(&output.stdout), "over-tls\n", "{transport}");
    }
}
