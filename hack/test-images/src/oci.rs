//! OCI image config and manifest blobs, serialised with a fixed key order
//! (structs and BTreeMaps, not serde_json maps, whose order depends on a
//! cargo feature) so that their digests never change.

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::layer::Layer;

pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Every image claims the same creation time: the epoch.
const CREATED: &str = "1970-01-01T00:00:00Z";

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How a container of the image runs: the `config` object of the image config.
#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub user: Option<&'static str>,
    pub env: Vec<&'static str>,
    pub entrypoint: Vec<&'static str>,
    pub cmd: Vec<&'static str>,
    pub working_dir: Option<&'static str>,
    /// `port/proto`, as `80/tcp`.
    pub exposed_ports: Vec<&'static str>,
    pub stop_signal: Option<&'static str>,
    pub labels: Vec<(&'static str, &'static str)>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ConfigJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    exposed_ports: BTreeMap<&'a str, Empty>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    env: &'a [&'a str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    entrypoint: &'a [&'a str],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    cmd: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    working_dir: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<&'a str>,
}

#[derive(Serialize)]
struct RootFs<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    diff_ids: Vec<&'a str>,
}

#[derive(Serialize)]
struct ImageConfigJson<'a> {
    created: &'a str,
    architecture: &'a str,
    os: &'a str,
    config: ConfigJson<'a>,
    rootfs: RootFs<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor<'a> {
    media_type: &'a str,
    digest: &'a str,
    size: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestJson<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: Descriptor<'a>,
    layers: Vec<Descriptor<'a>>,
}

/// An image ready to push: its blobs and its manifest.
#[derive(Debug, Clone)]
pub struct Image {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub config_digest: String,
    pub manifest: Vec<u8>,
    /// The manifest's digest: what a registry and a runtime call the image's digest.
    pub manifest_digest: String,
}

impl Image {
    /// An amd64/linux image of `layers`, bottom first.
    pub fn assemble(layers: Vec<Layer>, run: &RunConfig) -> Self {
        let config = ImageConfigJson {
            created: CREATED,
            architecture: "amd64",
            os: "linux",
            config: ConfigJson {
                user: run.user,
                exposed_ports: run.exposed_ports.iter().map(|p| (*p, Empty {})).collect(),
                env: &run.env,
                entrypoint: &run.entrypoint,
                cmd: &run.cmd,
                working_dir: run.working_dir,
                labels: run.labels.iter().copied().collect(),
                stop_signal: run.stop_signal,
            },
            rootfs: RootFs {
                kind: "layers",
                diff_ids: layers.iter().map(|l| l.diff_id.as_str()).collect(),
            },
        };
        let config = serde_json::to_vec(&config).expect("an image config always serialises");
        let config_digest = sha256_digest(&config);
        let manifest = ManifestJson {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE,
            config: Descriptor {
                media_type: CONFIG_MEDIA_TYPE,
                digest: &config_digest,
                size: config.len(),
            },
            layers: layers
                .iter()
                .map(|l| Descriptor {
                    media_type: LAYER_MEDIA_TYPE,
                    digest: &l.digest,
                    size: l.blob.len(),
                })
                .collect(),
        };
        let manifest = serde_json::to_vec(&manifest).expect("a manifest always serialises");
        Self {
            manifest_digest: sha256_digest(&manifest),
            layers,
            config,
            config_digest,
            manifest,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::LayerBuilder;

    #[test]
    fn config_and_manifest_have_fixed_fields_and_order() {
        let mut layer = LayerBuilder::new();
        layer.file("/hello", 0o644, b"hi".to_vec());
        let layer = layer.build().unwrap();
        let run = RunConfig {
            user: Some("1000:1000"),
            env: vec!["PATH=/bin"],
            cmd: vec!["sh"],
            exposed_ports: vec!["80/tcp"],
            stop_signal: Some("SIGTERM"),
            labels: vec![("b", "2"), ("a", "1")],
            ..RunConfig::default()
        };
        let image = Image::assemble(vec![layer.clone()], &run);
        assert_eq!(
            String::from_utf8(image.config.clone()).unwrap(),
            format!(
                concat!(
                    r#"{{"created":"1970-01-01T00:00:00Z","architecture":"amd64","os":"linux","#,
                    r#""config":{{"User":"1000:1000","ExposedPorts":{{"80/tcp":{{}}}},"#,
                    r#""Env":["PATH=/bin"],"Cmd":["sh"],"Labels":{{"a":"1","b":"2"}},"#,
                    r#""StopSignal":"SIGTERM"}},"rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#
                ),
                layer.diff_id
            )
        );
        let manifest: serde_json::Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["digest"], image.config_digest.as_str());
        assert_eq!(manifest["config"]["size"], image.config.len());
        assert_eq!(manifest["layers"][0]["digest"], layer.digest.as_str());
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(image.manifest_digest, sha256_digest(&image.manifest));
    }
}
