//! A loopback registry holding the test images, started once per test binary
//! with `hack/registry` and filled by `crius-test-images`; stopped by PID when
//! the test binary exits.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::bin_dir;

pub struct TestRegistry {
    /// `127.0.0.1:PORT`
    pub addr: String,
    dir: PathBuf,
}

static REGISTRY: OnceLock<TestRegistry> = OnceLock::new();

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace")
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

extern "C" fn stop_registry_at_exit() {
    if let Some(r) = REGISTRY.get() {
        let _ = Command::new(workspace_root().join("hack/registry"))
            .arg("stop")
            .arg("--dir")
            .arg(&r.dir)
            .output();
        let _ = std::fs::remove_dir_all(&r.dir);
    }
}

impl TestRegistry {
    /// The registry of this test binary, started and filled on first use.
    pub fn shared() -> &'static TestRegistry {
        REGISTRY.get_or_init(|| {
            let dir = crate::short_tempdir().keep();
            let port = free_port();
            let out = Command::new(workspace_root().join("hack/registry"))
                .args(["start", "--port", &port.to_string(), "--dir"])
                .arg(&dir)
                .output()
                .expect("running hack/registry");
            assert!(
                out.status.success(),
                "hack/registry start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(stop_registry_at_exit) };
            let addr = format!("127.0.0.1:{port}");
            let builder = bin_dir().join("crius-test-images");
            assert!(
                builder.exists(),
                "{} is missing: build it first with `cargo build --workspace`",
                builder.display()
            );
            let out = Command::new(&builder)
                .args(["--registry", &addr])
                .args([
                    "--only",
                    "crius/busybox",
                    "--only",
                    "crius/layers",
                    "--only",
                    "crius/httpd",
                    "--only",
                    "crius/workdir",
                    "--only",
                    "crius/symlinks",
                    "crius/many-layers",
                ])
                .output()
                .expect("running crius-test-images");
            assert!(
                out.status.success(),
                "pushing test images failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            TestRegistry { addr, dir }
        })
    }

    /// Where the registry keeps its blobs and repositories: another
    /// registry process (TLS, auth) can serve the same images from it.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `127.0.0.1:PORT/<repo>`
    pub fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.addr)
    }

    /// Config TOML that reaches this registry over plain HTTP, also as a
    /// mirror of `registry.k8s.io`.
    pub fn config_toml(&self) -> String {
        format!(
            "[registry]\ninsecure = [\"{a}\"]\n[registry.mirrors]\n\"registry.k8s.io\" = [\"http://{a}\"]\n",
            a = self.addr
        )
    }
}
