//! criusd's configuration: built-in defaults, overlaid by a TOML file, overlaid
//! by command-line flags. Unknown keys are errors so that a typo never silently
//! falls back to a default.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/crius/crius.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: &'static str, message: String },
    /// A `[runtimes.<name>]` table is wrong: `key` is within it, or empty
    /// for the table itself.
    #[error("config key runtimes.{name}{}{key}: {message}", if key.is_empty() { "" } else { "." })]
    InvalidHandler {
        name: String,
        key: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "error" => Ok(LogLevel::Error),
            "warn" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            other => Err(format!(
                "unknown log level {other:?} (expected error, warn, info, debug or trace)"
            )),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The CRI socket.
    pub socket: PathBuf,
    /// Persistent data: the state store, images, container layers.
    pub root: PathBuf,
    /// Volatile state: bundles, shim sockets, pinned namespaces.
    pub state: PathBuf,
    pub log_level: LogLevel,
    pub cgroup_driver: CgroupDriver,
    /// The cgroup (relative to each hierarchy's root) under which pod cgroups live.
    pub cgroup_parent: String,
    pub cni: CniConfig,
    pub streaming: StreamingConfig,
    /// Where images and writable layers live: `[storage]`.
    pub storage: StorageConfig,
    pub registry: RegistryConfig,
    /// How images are pulled: `[image]`.
    pub image: ImagePullConfig,
    /// Images that kubelet's image garbage collection never removes
    /// (reported with `Image.pinned`): image references, normalized
    /// (`busybox` is `docker.io/library/busybox:latest`), `repo@sha256:…`
    /// manifest digests, or image IDs (`sha256:…`). As CRI-O's and
    /// containerd's `pinned_images`; crius takes exact names, no patterns.
    pub pinned_images: Vec<String>,
    /// Runtime handlers (Kubernetes RuntimeClass `handler`) besides the
    /// default one, `""`, which is crius' in-process runtime: each runs its
    /// containers through an OCI runtime binary. None by default.
    pub runtimes: BTreeMap<String, RuntimeHandlerConfig>,
}

/// `[storage]`: the image filesystem and the container filesystem, which
/// may be apart (KEP-4191, split image filesystem). Each is under `root` by
/// default; `Config::image_dir` and `Config::container_dir` resolve them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Images' content and unpacked layers (`blobs/`, `layers/`, `tmp/`);
    /// `<root>/images` by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_dir: Option<PathBuf>,
    /// Containers' writable layers (one dir a container with its overlay
    /// upper and work dirs); `<root>/containers` by default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_dir: Option<PathBuf>,
}

/// A `[runtimes.<name>]` table: the runtime handler `<name>`, an OCI
/// runtime binary with runc's command line (runc, crun).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeHandlerConfig {
    /// The binary; by default the handler's name looked up in `$PATH` (as
    /// CRI-O's `runtime_path`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// The binary's state dir (its `--root`); by default
    /// `<state>/runtimes/<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Run the binary without a hybrid host's cgroup2 mount
    /// (`/sys/fs/cgroup/unified`), in a mount namespace of its own: crun
    /// refuses a hybrid host whose cgroup2 mount holds a controller. The
    /// host's mount stays; a host without one is unaffected.
    pub hide_unified_cgroup: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CniConfig {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    pub address: IpAddr,
    /// 0 picks a free port.
    pub port: u16,
    /// PEM certificate chain: with `tls_key_file`, the server speaks HTTPS
    /// and its URLs say so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Registry host → ordered endpoint URLs tried before the host itself.
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// `host[:port]` names reached over plain HTTP only. A loopback host
    /// needs no entry: it is tried over HTTPS, then plain HTTP (containerd's
    /// rule; `image::pull::host_endpoint`).
    pub insecure: Vec<String>,
    /// containerd's `config_path`: directories (`:`-separated) holding one
    /// directory per registry host (`docker.io`, `127.0.0.1_5000_` or
    /// `127.0.0.1:5000`, `_default` for the rest) with a `hosts.toml`,
    /// read at each pull (`image::hosts`). A host's directory replaces its
    /// `mirrors` and `insecure` entries; `_default` serves only hosts that
    /// have none.
    pub config_path: Option<String>,
}

/// The `[image]` table: how layers are transferred. Both keys are
/// containerd's (its transfer service's `max_concurrent_downloads`, its CRI
/// images plugin's `image_pull_progress_timeout`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagePullConfig {
    /// Layers one pull downloads (and unpacks) at a time; at least 1.
    pub max_concurrent_downloads: usize,
    /// A pull whose layer receives no byte for this long is cancelled; a
    /// Go duration as containerd writes it (`"5m0s"`, `"30s"`, `"1m30s"`),
    /// `"0"` for no limit.
    #[serde(with = "go_duration")]
    pub image_pull_progress_timeout: Duration,
}

impl Default for ImagePullConfig {
    fn default() -> Self {
        ImagePullConfig {
            max_concurrent_downloads: 3,
            image_pull_progress_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// Durations as Go's `time.Duration` strings (what containerd's config
/// takes): a sequence of numbers with units (`h`, `m`, `s`, `ms`, …), or
/// `"0"`; written back in seconds (`"300s"`), which Go reads too.
mod go_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if d.is_zero() {
            return s.serialize_str("0");
        }
        s.serialize_str(&format!("{}s", d.as_secs_f64()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        super::parse_go_duration(&text).map_err(serde::de::Error::custom)
    }
}

/// A Go duration as containerd reads its config's (`time.ParseDuration`):
/// decimal numbers with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, e.g.
/// `500ms`, `1m30s`.
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration such as \"5s\" or \"1m30s\"");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs_f64(total))
}

impl Default for Config {
    fn default() -> Self {
        Config {
            socket: PathBuf::from("/run/crius/crius.sock"),
            root: PathBuf::from("/var/lib/crius"),
            state: PathBuf::from("/run/crius"),
            log_level: LogLevel::Info,
            cgroup_driver: CgroupDriver::Cgroupfs,
            cgroup_parent: "crius".to_string(),
            cni: CniConfig::default(),
            streaming: StreamingConfig::default(),
            storage: StorageConfig::default(),
            registry: RegistryConfig::default(),
            image: ImagePullConfig::default(),
            pinned_images: Vec::new(),
            runtimes: BTreeMap::new(),
        }
    }
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
        }
    }
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig {
            address: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            tls_cert_file: None,
            tls_key_file: None,
        }
    }
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub socket: Option<PathBuf>,
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub log_level: Option<LogLevel>,
}

impl Config {
    /// Parses a TOML document; every key not given keeps its default.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Loads the config file. The default path may be absent; an explicit one must exist.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml(&text, &path),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    pub fn apply(&mut self, o: Overrides) {
        if let Some(v) = o.socket {
            self.socket = v;
        }
        if let Some(v) = o.root {
            self.root = v;
        }
        if let Some(v) = o.state {
            self.state = v;
        }
        if let Some(v) = o.log_level {
            self.log_level = v;
        }
    }

    /// Where images' content and unpacked layers live: `[storage] image_dir`,
    /// by default `<root>/images`.
    pub fn image_dir(&self) -> PathBuf {
        (self.storage.image_dir.clone()).unwrap_or_else(|| self.root.join("images"))
    }

    /// Where containers' writable layers live: `[storage] container_dir`, by
    /// default `<root>/containers`.
    pub fn container_dir(&self) -> PathBuf {
        (self.storage.container_dir.clone()).unwrap_or_else(|| self.root.join("containers"))
    }

    /// Rules that the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cgroup_driver == CgroupDriver::Systemd {
            return Err(ConfigError::Invalid {
                key: "cgroup_driver",
                message: "\"systemd\" is not supported yet; use \"cgroupfs\"".into(),
            });
        }
        for (key, p) in [
            ("socket", &self.socket),
            ("root", &self.root),
            ("state", &self.state),
            ("cni.conf_dir", &self.cni.conf_dir),
            ("storage.image_dir", &self.image_dir()),
            ("storage.container_dir", &self.container_dir()),
        ] {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("{} is not an absolute path", p.display()),
                });
            }
        }
        if self.streaming.tls_cert_file.is_some() != self.streaming.tls_key_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "streaming.tls_cert_file",
                message: "TLS needs both tls_cert_file and tls_key_file".into(),
            });
        }
        if self.cgroup_parent.is_empty() || self.cgroup_parent.contains("..") {
            return Err(ConfigError::Invalid {
                key: "cgroup_parent",
                message: format!("{:?} is not a valid cgroup name", self.cgroup_parent),
            });
        }
        for (host, endpoints) in &self.registry.mirrors {
            for e in endpoints {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(ConfigError::Invalid {
                        key: "registry.mirrors",
                        message: format!(
                            "endpoint {e:?} for {host:?} must start with http:// or https://"
                        ),
                    });
                }
            }
        }
        if self.image.max_concurrent_downloads == 0 {
            return Err(ConfigError::Invalid {
                key: "image.max_concurrent_downloads",
                message: "0 would download nothing: it must be at least 1".into(),
            });
        }
        for (name, handler) in &self.runtimes {
            validate_handler(name, handler)?;
        }
        Ok(())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

/// A handler's name is what a RuntimeClass's `handler` may be (a DNS label:
/// lowercase letters, digits and `-`, at most 63, Kubernetes' rule), and the
/// default `""` is not configurable; its paths are absolute.
fn validate_handler(name: &str, handler: &RuntimeHandlerConfig) -> Result<(), ConfigError> {
    let invalid = |key, message: String| ConfigError::InvalidHandler {
        name: name.to_owned(),
        key,
        message,
    };
    if name.is_empty() {
        return Err(invalid(
            "",
            "the default handler \"\" is crius' in-process runtime and takes no table".into(),
        ));
    }
    let label = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !label {
        return Err(invalid(
            "",
            format!("{name:?} is not a RuntimeClass handler name (a DNS label: a-z, 0-9 and -, at most 63)"),
        ));
    }
    for (key, path) in [("path", &handler.path), ("root", &handler.root)] {
        if let Some(path) = path.as_ref().filter(|p| !p.is_absolute()) {
            return Err(invalid(
                key,
                format!("{} is not an absolute path", path.display()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        for (text, ms) in [
            ("5s", 5000),
            ("1m30s", 90_000),
            ("250ms", 250),
            ("1.5h", 5_400_000),
        ] {
            assert_eq!(
                parse_go_duration(text).unwrap(),
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for text in ["", "5", "s", "5d", "-1s"] {
            assert!(parse_go_duration(text).is_err(), "{text}");
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/t.toml"))
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = parse("sokcet = \"/x\"").unwrap_err().to_string();
        assert!(err.contains("sokcet"), "{err}");
        let err = parse("[registry]\nmirror = {}").unwrap_err().to_string();
        assert!(err.contains("mirror"), "{err}");
    }

    #[test]
    fn mirrors_and_insecure_parse() {
        let c = parse(
            r#"
            [registry]
            insecure = ["127.0.0.1:5000"]
            config_path = "/etc/containerd/certs.d:/etc/docker/certs.d"
            [registry.mirrors]
            "registry.k8s.io" = ["http://127.0.0.1:5000"]
            "#,
        )
        .unwrap();
        assert_eq!(c.registry.insecure, vec!["127.0.0.1:5000"]);
        assert_eq!(
            c.registry.config_path.as_deref(),
            Some("/etc/containerd/certs.d:/etc/docker/certs.d")
        );
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        assert_eq!(Config::default().registry.config_path, None);
        assert_eq!(
            c.registry.mirrors["registry.k8s.io"],
            vec!["http://127.0.0.1:5000"]
        );
        c.validate().unwrap();
    }

    #[test]
    fn pinned_images_parse() {
        let c = parse("pinned_images = [\"registry.k8s.io/pause:3.10\", \"busybox\"]").unwrap();
        assert_eq!(c.pinned_images, ["registry.k8s.io/pause:3.10", "busybox"]);
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        assert!(Config::default().pinned_images.is_empty());
    }

    #[test]
    fn systemd_driver_is_refused_with_key() {
        let c = parse("cgroup_driver = \"systemd\"").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cgroup_driver"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = parse("log_level = \"loud\"").unwrap_err().to_string();
        assert!(err.contains("loud") || err.contains("log_level"), "{err}");
        let c = parse("root = \"relative\"").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("root"));
    }

    #[test]
    fn overrides_win() {
        let mut c = parse("socket = \"/a.sock\"").unwrap();
        c.apply(Overrides {
            socket: Some("/b.sock".into()),
            ..Default::default()
        });
        assert_eq!(c.socket, PathBuf::from("/b.sock"));
    }

    #[test]
    fn streaming_tls_needs_a_certificate_and_its_key() {
        let c = parse("[streaming]\ntls_cert_file = \"/etc/crius/stream.crt\"").unwrap();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("streaming.tls_cert_file"), "{err}");
        let c = parse(
            "[streaming]\nport = 10010\ntls_cert_file = \"/c.pem\"\ntls_key_file = \"/k.pem\"",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.streaming.port, 10010);
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn runtime_handlers_parse_with_defaults() {
        let c = parse(
            r#"
            [runtimes.runc]
            path = "/usr/sbin/runc"
            [runtimes.crun]
            root = "/run/crun-crius"
            hide_unified_cgroup = true
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(
            c.runtimes["runc"],
            RuntimeHandlerConfig {
                path: Some("/usr/sbin/runc".into()),
                root: None,
                hide_unified_cgroup: false,
            }
        );
        assert_eq!(
            c.runtimes["crun"],
            RuntimeHandlerConfig {
                path: None,
                root: Some("/run/crun-crius".into()),
                hide_unified_cgroup: true,
            }
        );
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        assert!(Config::default().runtimes.is_empty());
    }

    #[test]
    fn a_runtime_handlers_unknown_key_is_named() {
        let err = parse(
            "[runtimes.runc]
binary = \"/usr/sbin/runc\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("binary"), "{err}");
    }

    #[test]
    fn bad_runtime_handlers_are_refused_naming_the_key() {
        for (toml, expected) in [
            (
                "[runtimes.\"\"]",
                "config key runtimes.: the default handler \"\" is crius' in-process runtime and takes no table",
            ),
            (
                "[runtimes.Runc]",
                "config key runtimes.Runc: \"Runc\" is not a RuntimeClass handler name (a DNS label: a-z, 0-9 and -, at most 63)",
            ),
            (
                "[runtimes.runc]\npath = \"runc\"",
                "config key runtimes.runc.path: runc is not an absolute path",
            ),
            (
                "[runtimes.runc]\nroot = \"state/runc\"",
                "config key runtimes.runc.root: state/runc is not an absolute path",
            ),
        ] {
            let err = parse(toml).unwrap().validate().unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
    }

    #[test]
    fn image_pull_settings_parse_as_containerd_writes_them() {
        let c = Config::default();
        assert_eq!(c.image.max_concurrent_downloads, 3);
        assert_eq!(
            c.image.image_pull_progress_timeout,
            Duration::from_secs(300)
        );
        for (text, expected) in [
            ("5m0s", Duration::from_secs(300)),
            ("1m30s", Duration::from_secs(90)),
            ("2s", Duration::from_secs(2)),
            ("1500ms", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
        ] {
            let c = parse(&format!(
                "[image]\nmax_concurrent_downloads = 8\nimage_pull_progress_timeout = \"{text}\"\n"
            ))
            .unwrap();
            assert_eq!(c.image.image_pull_progress_timeout, expected, "{text}");
            assert_eq!(c.image.max_concurrent_downloads, 8);
            assert_eq!(parse(&c.to_toml()).unwrap(), c, "{text} round-trips");
        }
        let err = parse("[image]\nimage_pull_progress_timeout = \"soon\"\n").unwrap_err();
        assert!(
            err.to_string().contains("image_pull_progress_timeout")
                && err.to_string().contains("soon"),
            "{err}"
        );
        let err = parse("[image]\nmax_concurrent_downloads = 0\n")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config key image.max_concurrent_downloads: "),
            "{err}"
        );
    }

    #[test]
    fn storage_dirs_default_under_root_and_can_be_apart() {
        let c = parse("root = \"/data/crius\"").unwrap();
        assert_eq!(c.image_dir(), PathBuf::from("/data/crius/images"));
        assert_eq!(c.container_dir(), PathBuf::from("/data/crius/containers"));
        let c = parse(
            "[storage]\nimage_dir = \"/mnt/images\"\ncontainer_dir = \"/mnt/rw/containers\"\n",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.image_dir(), PathBuf::from("/mnt/images"));
        assert_eq!(c.container_dir(), PathBuf::from("/mnt/rw/containers"));
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
        for (toml, key) in [
            ("[storage]\nimage_dir = \"images\"", "storage.image_dir"),
            ("[storage]\ncontainer_dir = \"rw\"", "storage.container_dir"),
        ] {
            let err = parse(toml).unwrap().validate().unwrap_err().to_string();
            assert!(err.starts_with(&format!("config key {key}: ")), "{err}");
        }
    }

    #[test]
    fn round_trips_through_toml() {
        let c = Config::default();
        assert_eq!(parse(&c.to_toml()).unwrap(), c);
    }
}
