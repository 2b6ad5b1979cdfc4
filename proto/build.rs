use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure().compile_protos(&["shim/v1/shim.proto"], &["."])?;

    // The CRI. Its descriptor set goes along so the wire test can compare
    // our declaration with upstream's (hack/cri-wire descriptor). AuthConfig
    // gets a hand-written Debug that hides its secrets (lib.rs): upstream
    // marks them debug_redact, which the proto cannot say here.
    //
    // criusd keeps pod and container configs in its JSON records, so the
    // types derive serde with Rust's field names (as the k8s-cri crate did,
    // which wrote the records before), and a field missing from an older
    // record reads as its default.
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("cri_v1_descriptor.bin"))
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .message_attribute(".", "#[serde(default)]")
        .skip_debug([".runtime.v1.AuthConfig"])
        .compile_protos(&["cri/v1/api.proto"], &["."])?;
    Ok(())
}
