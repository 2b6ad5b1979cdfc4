//! The wire contracts of crius:
//!
//! - [`cri`]: the CRI v1 (package `runtime.v1`) that kubelet, crictl and
//!   critest speak to criusd, generated from crius' own declaration
//!   `cri/v1/api.proto` of k8s.io/cri-api v0.37.2 (Kubernetes 1.37);
//! - [`shim`]: the gRPC service between criusd and crius-shim
//!   (`shim/v1/shim.proto`), plus the two channels that work without the
//!   socket: the start-up readiness pipe and the exit file.

pub mod exit_file;
pub mod ready;

/// CRI v1 (`runtime.v1`): messages, `runtime_service_server`/`image_service_server`
/// for criusd, `runtime_service_client`/`image_service_client` for the tests
/// and tools. Same names as upstream's Go types, in prost's spelling.
pub mod cri {
    tonic::include_proto!("runtime.v1");

    /// The encoded `FileDescriptorSet` of `cri/v1/api.proto`, as protoc
    /// built it: what the wire test compares with upstream's descriptor.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/cri_v1_descriptor.bin"));

    /// Shows whether each credential is set, never its value: upstream marks
    /// `password`, `auth`, `identity_token` and `registry_token` debug_redact.
    impl std::fmt::Debug for AuthConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let redacted = |secret: &str| if secret.is_empty() { "" } else { "<redacted>" };
            f.debug_struct("AuthConfig")
                .field("username", &self.username)
                .field("password", &redacted(&self.password))
                .field("auth", &redacted(&self.auth))
                .field("server_address", &self.server_address)
                .field("identity_token", &redacted(&self.identity_token))
                .field("registry_token", &redacted(&self.registry_token))
                .finish()
        }
    }
}

pub mod shim {
    pub mod v1 {
        tonic::include_proto!("crius.shim.v1");
    }
}

#[cfg(test)]
mod tests {
    use super::cri;

    #[test]
    fn auth_config_debug_hides_secrets() {
        let auth = cri::AuthConfig {
            username: "user".into(),
            password: "hunter2".into(),
            auth: "dXNlcjpodW50ZXIy".into(),
            server_address: "registry.example".into(),
            identity_token: "id-token".into(),
            registry_token: String::new(),
        };
        let shown = format!("{auth:?}");
        for secret in ["hunter2", "dXNlcjpodW50ZXIy", "id-token"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("user") && shown.contains("registry.example"));
        assert!(shown.contains("registry_token: \"\""), "{shown}");
    }

    #[test]
    fn a_config_from_an_older_record_reads_with_defaults() {
        // As a record written before ContainerConfig.stop_signal and
        // Mount.image_sub_path existed holds it.
        let config: cri::ContainerConfig = serde_json::from_str(
            r#"{"metadata":{"name":"c","attempt":1},"mounts":[{"container_path":"/data"}]}"#,
        )
        .unwrap();
        assert_eq!(config.metadata.unwrap().name, "c");
        assert_eq!(config.stop_signal, cri::Signal::RuntimeDefault as i32);
        assert_eq!(config.mounts[0].container_path, "/data");
        assert_eq!(config.mounts[0].image_sub_path, "");
    }
}
