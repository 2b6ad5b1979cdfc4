//! Mount destinations behind the rootfs's symlinks (issue 9, item 1), in a real container
//! (root only): the mount lands on the symlink's target, made inside the rootfs.

mod common;

use std::fs;
use std::os::unix::fs::symlink;

use common::*;
use crius_runtime::oci_spec::runtime::{MountBuilder, Spec};
use crius_runtime::{Runtime, Stdio};
use nix::sys::wait::WaitStatus;

#[test]
fn binds_land_on_symlink_targets_made_inside_the_rootfs() {
    require_root!();
    let _serial = serial();
    let state = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(state.path());
    let id = unique_id("mounts");
    let bundle = Bundle::isolated(
        &id,
        &["cat", "/etc/localtime", "/data/f", "/opt/app/logs/g"],
    );
    let _cleanup = DeleteOnDrop {
        runtime: &runtime,
        id: id.clone(),
    };
    let rootfs = bundle.path().join("rootfs");
    fs::create_dir_all(rootfs.join("etc")).unwrap();
    fs::create_dir_all(rootfs.join("opt/app")).unwrap();
    symlink("/usr/share/zoneinfo/Nowhere", rootfs.join("etc/localtime")).unwrap();
    symlink("/missing", rootfs.join("data")).unwrap();
    symlink(
        "../../../../../../crius-app-logs",
        rootfs.join("opt/app/logs"),
    )
    .unwrap();
    let host = tempfile::tempdir().unwrap();
    let localtime = host.path().join("localtime");
    fs::write(&localtime, "TZif host zone\n").unwrap();
    let data = host.path().join("data");
    fs::create_dir(&data).unwrap();
    fs::write(data.join("f"), "host data\n").unwrap();
    let logs = host.path().join("logs");
    fs::create_dir(&logs).unwrap();
    fs::write(logs.join("g"), "host logs\n").unwrap();

    let config = bundle.path().join("config.json");
    let mut spec = Spec::load(&config).unwrap();
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for (destination, source, access) in [
        ("/etc/localtime", &localtime, "ro"),
        ("/data", &data, "rw"),
        ("/opt/app/logs", &logs, "rw"),
    ] {
        mounts.push(
            MountBuilder::default()
                .destination(destination)
                .typ("bind")
                .source(source)
                .options(vec!["rbind".into(), "rprivate".into(), access.into()])
                .build()
                .unwrap(),
        );
    }
    spec.set_mounts(Some(mounts));
    spec.save(&config).unwrap();

    let (stdout, stdout_writer) = pipe();
    let pid = runtime
        .create(
            &id,
            bundle.path(),
            Stdio {
                stdout: Some(stdout_writer),
                ..Stdio::null()
            },
        )
        .unwrap();
    runtime.start(&id).unwrap();
    assert_eq!(
        read_to_end(stdout),
        "TZif host zone\nhost data\nhost logs\n"
    );
    assert_eq!(wait(pid), WaitStatus::Exited(pid, 0));

    // Made inside the rootfs, nothing outside it; the caller's config.json as written.
    assert!(rootfs.join("usr/share/zoneinfo/Nowhere").is_file());
    assert!(rootfs.join("missing").is_dir());
    assert!(rootfs.join("crius-app-logs").is_dir());
    for escape in ["/usr/share/zoneinfo/Nowhere", "/missing", "/crius-app-logs"] {
        assert!(
            !std::path::Path::new(escape).exists(),
            "{escape} made on the host"
        );
    }
    assert_eq!(Spec::load(&config).unwrap(), spec);
}
