//! Registry configuration as containerd nodes have it (issue 13): a
//! registry over HTTPS with a test CA and basic auth (Debian's
//! docker-registry serving the shared test registry's images), reached
//! through containerd's `hosts.toml` layout under `[registry] config_path`
//! with the CRI `AuthConfig` of each pull.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use crius_proto::cri;
use crius_proto::cri::image_service_client::ImageServiceClient;
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, short_tempdir, Daemon, DaemonOptions};
use tonic::transport::Channel;
use tonic::Code;

const USER: &str = "crius";
const PASSWORD: &str = "s3cret:pass";

/// docker-registry on 127.0.0.1 over HTTPS (a server certificate for
/// 127.0.0.1 signed by a CA made here) asking for basic auth, serving the
/// shared test registry's storage read-only. Stopped by PID when dropped.
struct SecureRegistry {
    /// `127.0.0.1:PORT`
    addr: String,
    /// The CA's certificate (PEM).
    ca: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl SecureRegistry {
    fn start(data: &Path) -> SecureRegistry {
        let dir = short_tempdir();
        let d = dir.path();
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            d,
            &[
                &["req", "-x509", "-nodes"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=crius test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            d,
            &[
                &["req", "-nodes"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=127.0.0.1",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        std::fs::write(d.join("htpasswd"), format!("{USER}:{hash}\n")).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        std::fs::write(
            d.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {data}\n  maintenance:\n    \
                 uploadpurging:\n      enabled: false\n    readonly:\n      enabled: true\n\
                 http:\n  addr: {addr}\n  secret: crius-secure-test-registry\n  tls:\n    \
                 certificate: {d}/server.pem\n    key: {d}/server.key\n\
                 auth:\n  htpasswd:\n    realm: crius-test\n    path: {d}/htpasswd\n",
                data = data.display(),
                d = d.display(),
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("registry.log")).unwrap())
            .spawn()
            .expect("starting docker-registry");
        let registry = SecureRegistry {
            addr,
            ca: d.join("ca.pem"),
            child,
            _dir: dir,
        };
        // Up when /v2/ answers over TLS with the CA (401: it wants auth).
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
                .arg(&registry.ca)
                .arg(format!("https://{}/v2/", registry.addr))
                .output()
                .expect("running curl");
            if out.stdout == b"401" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the TLS registry did not answer: {}",
                std::fs::read_to_string(registry._dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }
}

impl Drop for SecureRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `config_path` root with one directory per registry host holding its
/// `hosts.toml`, and a daemon reading it.
fn daemon_with_hosts(hosts: &[(&str, String)]) -> (Daemon, tempfile::TempDir) {
    let root = short_tempdir();
    for (host, toml) in hosts {
        let dir = root.path().join(host);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts.toml"), toml).unwrap();
    }
    let daemon = Daemon::start_with(DaemonOptions {
        config_toml: format!("[registry]\nconfig_path = \"{}\"\n", root.path().display()),
        ..Default::default()
    });
    (daemon, root)
}

async fn pull(
    images: &mut ImageServiceClient<Channel>,
    image: &str,
    auth: Option<cri::AuthConfig>,
) -> Result<String, tonic::Status> {
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            auth,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
}

fn credentials(password: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig {
        username: USER.into(),
        password: password.into(),
        ..Default::default()
    })
}

#[tokio::test]
async fn pulls_over_tls_with_the_hosts_toml_ca_and_the_pull_s_credentials() {
    if !require_root() {
        return;
    }
    let shared = TestRegistry::shared();
    let secure = SecureRegistry::start(&shared.data_dir());
    let ca = secure.ca.display().to_string();
    let (daemon, _root) = daemon_with_hosts(&[(
        "secure.crius.test",
        format!("server = \"https://{}\"\nca = \"{ca}\"\n", secure.addr),
    )]);
    let mut images = daemon.images().await;
    let image = "secure.crius.test/crius/busybox:latest";

    // The same image as the plain-HTTP test registry serves.
    let mut plain = Daemon::start_with(DaemonOptions::default());
    let expected = pull(
        &mut plain.images().await,
        &shared.image("crius/busybox:latest"),
        None,
    )
    .await
    .expect("pull from the plain test registry");
    plain.terminate();

    let id = pull(&mut images, image, credentials(PASSWORD))
        .await
        .expect("pull with username and password");
    assert_eq!(id, expected);
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.image.expect("pulled").id, expected);

    // docker's base64 `user:password` form works the same.
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let by_auth = pull(
        &mut images,
        image,
        Some(cri::AuthConfig {
            auth: encoded,
            ..Default::default()
        }),
    )
    .await
    .expect("pull with auth");
    assert_eq!(by_auth, expected);
}

#[tokio::test]
async fn missing_or_wrong_credentials_are_unauthenticated_naming_the_registry() {
    if !require_root() {
        return;
    }
    let secure = SecureRegistry::start(&TestRegistry::shared().data_dir());
    let ca = secure.ca.display().to_string();
    let (daemon, _root) = daemon_with_hosts(&[(
        "secure.crius.test",
        format!("server = \"https://{}\"\nca = \"{ca}\"\n", secure.addr),
    )]);
    let mut images = daemon.images().await;
    let image = "secure.crius.test/crius/busybox:latest";
    for auth in [None, credentials("wrong")] {
        let err = pull(&mut images, image, auth.clone())
            .await
            .expect_err("the registry wants valid credentials");
        assert_eq!(err.code(), Code::Unauthenticated, "{auth:?}: {err:?}");
        assert!(
            err.message()
                .contains("registry secure.crius.test refused the credentials")
                && err.message().contains(&format!("https://{}", secure.addr)),
            "{}",
            err.message()
        );
    }
    assert!(!daemon.log_text().contains(PASSWORD));
}

#[tokio::test]
async fn without_the_ca_the_registry_s_certificate_is_refused() {
    if !require_root() {
        return;
    }
    let secure = SecureRegistry::start(&TestRegistry::shared().data_dir());
    let (daemon, _root) = daemon_with_hosts(&[(
        "noca.crius.test",
        format!("server = \"https://{}\"\n", secure.addr),
    )]);
    let mut images = daemon.images().await;
    let err = pull(
        &mut images,
        "noca.crius.test/crius/busybox:latest",
        credentials(PASSWORD),
    )
    .await
    .expect_err("an unknown issuer is not trusted");
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(
        err.message().contains(&format!("https://{}", secure.addr))
            && err
                .message()
                .contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_hosts_toml_mirror_serves_when_the_upstream_is_unreachable() {
    if !require_root() {
        return;
    }
    let secure = SecureRegistry::start(&TestRegistry::shared().data_dir());
    let ca = secure.ca.display().to_string();
    // `.test` names never resolve (RFC 6761): only the mirror can answer.
    // The mirror first resolves tags, but a pull-only host before it is
    // skipped for a tag and the server itself comes last.
    let (daemon, _root) = daemon_with_hosts(&[(
        "upstream.crius.test",
        format!(
            "server = \"https://upstream.crius.test\"\n\
             [host.\"https://pull-only.crius.test\"]\n  capabilities = [\"pull\"]\n\
             [host.\"https://{addr}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = \"{ca}\"\n",
            addr = secure.addr
        ),
    )]);
    let mut images = daemon.images().await;
    let id = pull(
        &mut images,
        "upstream.crius.test/crius/busybox:latest",
        credentials(PASSWORD),
    )
    .await
    .expect("pull through the hosts.toml mirror");
    assert!(id.starts_with("sha256:"), "{id}");

    // An image neither has: every endpoint tried is named, the
    // unreachable upstream too, and not the pull-only host.
    let err = pull(
        &mut images,
        "upstream.crius.test/crius/absent:1",
        credentials(PASSWORD),
    )
    .await
    .expect_err("no such image");
    let message = err.message();
    assert!(
        message.contains(&format!("https://{}", secure.addr))
            && message.contains("https://upstream.crius.test")
            && !message.contains("pull-only"),
        "{message}"
    );
}
