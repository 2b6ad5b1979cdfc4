//! Containers and execs on a pseudo-terminal (root only).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

use common::*;
use crius_runtime::oci_spec::runtime::{BoxBuilder, ProcessBuilder, Spec};
use crius_runtime::{Runtime, Stdio};
use nix::sys::wait::{waitpid, WaitStatus};

/// Everything the process wrote to its terminal, until it closed its side.
fn read_until_hangup(master: &mut File) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A pty master reads EIO once every slave fd is closed.
            Err(err) if err.raw_os_error() == Some(nix::libc::EIO) => break,
            Err(err) => panic!("read pty master: {err}"),
        }
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn init_on_a_terminal() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("tty");
    let bundle = Bundle::isolated(&id, &["sh", "-c", "tty; read line; echo got $line"]);
    let config = bundle.path().join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    spec.process_mut()
        .as_mut()
        .unwrap()
        .set_terminal(Some(true));
    spec.save(&config).unwrap();
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };

    let (pid, master) = runtime.create_with_terminal(&id, bundle.path()).unwrap();
    runtime.start(&id).unwrap();
    let mut master = File::from(master);
    master.write_all(b"ping\n").unwrap();

    let out = read_until_hangup(&mut master);
    // The line discipline turns \n into \r\n and echoes our input.
    assert!(out.contains("/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains("got ping\r\n"), "{out:?}");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    runtime.delete(&id, false).unwrap();
}

#[test]
fn init_gets_the_console_size() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("ttysize");
    let bundle = Bundle::isolated(&id, &["stty", "size"]);
    let config = bundle.path().join("config.json");
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
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };

    let (pid, master) = runtime.create_with_terminal(&id, bundle.path()).unwrap();
    runtime.start(&id).unwrap();
    let out = read_until_hangup(&mut File::from(master));
    // stty prints rows then columns.
    assert_eq!(out, "24 80\r\n");
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));
    runtime.delete(&id, false).unwrap();
}

#[test]
fn exec_on_a_terminal() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("exectty");
    let bundle = Bundle::isolated(&id, &["sleep", "100"]);
    let init = runtime.create(&id, bundle.path(), Stdio::null()).unwrap();
    runtime.start(&id).unwrap();
    let process = ProcessBuilder::default()
        .terminal(true)
        .args(vec![
            "sh".to_string(),
            "-c".to_string(),
            "tty; test -t 0 && test -t 1 && echo all-tty".to_string(),
        ])
        .env(vec!["PATH=/bin".to_string()])
        .cwd("/")
        .build()
        .unwrap();

    let result = runtime.exec_with_terminal(&id, &process);
    let outcome = result.map(|(pid, master): (_, OwnedFd)| {
        let out = read_until_hangup(&mut File::from(master));
        (wait(pid), pid, out)
    });
    runtime.delete(&id, true).unwrap();
    while waitpid(None, None).is_ok() {}
    let _ = init;

    let (status, pid, out) = outcome.unwrap();
    assert!(out.contains("/dev/pts/"), "{out:?}");
    assert!(out.contains("all-tty\r\n"), "{out:?}");
    assert_eq!(status, WaitStatus::Exited(pid, 0));
}
