//! The CRI wire check against the upstream Go bindings (k8s.io/cri-api, the
//! version pinned in hack/cri-wire/go.mod), through `hack/bin/cri-wire`:
//!
//! 1. `cri-wire descriptor`: our `cri/v1/api.proto`, as protoc compiled it,
//!    declares every name, number, type, label and streaming flag as upstream.
//! 2. `cri-wire encode`: Go writes every message of `runtime.v1` with every
//!    field set; each decodes with our type and re-encodes byte-identically.
//! 3. `cri-wire check`: our re-encodings decode with Go's types and re-encode
//!    byte-identically there too.
//!
//! Without the binary the test skips, unless `CRIUS_REQUIRE_ROOT` is set (as
//! in CI), where it fails: run hack/install-test-tools.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crius_proto::cri;
use prost::Message;

/// Decodes with our type and re-encodes.
type RoundTrip = fn(&[u8]) -> Result<Vec<u8>, prost::DecodeError>;

fn round_trip<M: Message + Default>(bytes: &[u8]) -> Result<Vec<u8>, prost::DecodeError> {
    Ok(M::decode(bytes)?.encode_to_vec())
}

/// Every message of `runtime.v1` by its proto name (the name of cri-wire's
/// file), with our type for it. Listed by hand: the test fails when this
/// list and upstream's message set differ, so a new message cannot be
/// skipped silently.
macro_rules! messages {
    ($($name:literal => $ty:ident,)*) => {
        const MESSAGES: &[(&str, RoundTrip)] = &[$(($name, round_trip::<cri::$ty>),)*];
    };
}

messages! {
    "AttachRequest" => AttachRequest,
    "AttachResponse" => AttachResponse,
    "AuthConfig" => AuthConfig,
    "CDIDevice" => CdiDevice,
    "Capability" => Capability,
    "CheckpointContainerRequest" => CheckpointContainerRequest,
    "CheckpointContainerResponse" => CheckpointContainerResponse,
    "CheckpointPodRequest" => CheckpointPodRequest,
    "CheckpointPodResponse" => CheckpointPodResponse,
    "Container" => Container,
    "ContainerAttributes" => ContainerAttributes,
    "ContainerConfig" => ContainerConfig,
    "ContainerEventResponse" => ContainerEventResponse,
    "ContainerFilter" => ContainerFilter,
    "ContainerMetadata" => ContainerMetadata,
    "ContainerMetrics" => ContainerMetrics,
    "ContainerResources" => ContainerResources,
    "ContainerStateValue" => ContainerStateValue,
    "ContainerStats" => ContainerStats,
    "ContainerStatsFilter" => ContainerStatsFilter,
    "ContainerStatsRequest" => ContainerStatsRequest,
    "ContainerStatsResponse" => ContainerStatsResponse,
    "ContainerStatus" => ContainerStatus,
    "ContainerStatusRequest" => ContainerStatusRequest,
    "ContainerStatusResponse" => ContainerStatusResponse,
    "ContainerUser" => ContainerUser,
    "CpuUsage" => CpuUsage,
    "CreateContainerRequest" => CreateContainerRequest,
    "CreateContainerResponse" => CreateContainerResponse,
    "DNSConfig" => DnsConfig,
    "Device" => Device,
    "ExecRequest" => ExecRequest,
    "ExecResponse" => ExecResponse,
    "ExecSyncRequest" => ExecSyncRequest,
    "ExecSyncResponse" => ExecSyncResponse,
    "FilesystemIdentifier" => FilesystemIdentifier,
    "FilesystemUsage" => FilesystemUsage,
    "GetEventsRequest" => GetEventsRequest,
    "HugepageLimit" => HugepageLimit,
    "IDMapping" => IdMapping,
    "Image" => Image,
    "ImageFilter" => ImageFilter,
    "ImageFsInfoRequest" => ImageFsInfoRequest,
    "ImageFsInfoResponse" => ImageFsInfoResponse,
    "ImageSpec" => ImageSpec,
    "ImageStatusRequest" => ImageStatusRequest,
    "ImageStatusResponse" => ImageStatusResponse,
    "Int64Value" => Int64Value,
    "IoUsage" => IoUsage,
    "KeyValue" => KeyValue,
    "LinuxContainerConfig" => LinuxContainerConfig,
    "LinuxContainerResources" => LinuxContainerResources,
    "LinuxContainerSecurityContext" => LinuxContainerSecurityContext,
    "LinuxContainerUser" => LinuxContainerUser,
    "LinuxPodSandboxConfig" => LinuxPodSandboxConfig,
    "LinuxPodSandboxStats" => LinuxPodSandboxStats,
    "LinuxPodSandboxStatus" => LinuxPodSandboxStatus,
    "LinuxRuntimeConfiguration" => LinuxRuntimeConfiguration,
    "LinuxSandboxSecurityContext" => LinuxSandboxSecurityContext,
    "ListContainerStatsRequest" => ListContainerStatsRequest,
    "ListContainerStatsResponse" => ListContainerStatsResponse,
    "ListContainersRequest" => ListContainersRequest,
    "ListContainersResponse" => ListContainersResponse,
    "ListImagesRequest" => ListImagesRequest,
    "ListImagesResponse" => ListImagesResponse,
    "ListMetricDescriptorsRequest" => ListMetricDescriptorsRequest,
    "ListMetricDescriptorsResponse" => ListMetricDescriptorsResponse,
    "ListPodSandboxMetricsRequest" => ListPodSandboxMetricsRequest,
    "ListPodSandboxMetricsResponse" => ListPodSandboxMetricsResponse,
    "ListPodSandboxRequest" => ListPodSandboxRequest,
    "ListPodSandboxResponse" => ListPodSandboxResponse,
    "ListPodSandboxStatsRequest" => ListPodSandboxStatsRequest,
    "ListPodSandboxStatsResponse" => ListPodSandboxStatsResponse,
    "MemoryUsage" => MemoryUsage,
    "Metric" => Metric,
    "MetricDescriptor" => MetricDescriptor,
    "Mount" => Mount,
    "Namespace" => Namespace,
    "NamespaceOption" => NamespaceOption,
    "NetworkConfig" => NetworkConfig,
    "NetworkInterfaceUsage" => NetworkInterfaceUsage,
    "NetworkUsage" => NetworkUsage,
    "PodIP" => PodIp,
    "PodSandbox" => PodSandbox,
    "PodSandboxAttributes" => PodSandboxAttributes,
    "PodSandboxConfig" => PodSandboxConfig,
    "PodSandboxFilter" => PodSandboxFilter,
    "PodSandboxMetadata" => PodSandboxMetadata,
    "PodSandboxMetrics" => PodSandboxMetrics,
    "PodSandboxNetworkStatus" => PodSandboxNetworkStatus,
    "PodSandboxStateValue" => PodSandboxStateValue,
    "PodSandboxStats" => PodSandboxStats,
    "PodSandboxStatsFilter" => PodSandboxStatsFilter,
    "PodSandboxStatsRequest" => PodSandboxStatsRequest,
    "PodSandboxStatsResponse" => PodSandboxStatsResponse,
    "PodSandboxStatus" => PodSandboxStatus,
    "PodSandboxStatusRequest" => PodSandboxStatusRequest,
    "PodSandboxStatusResponse" => PodSandboxStatusResponse,
    "PortForwardRequest" => PortForwardRequest,
    "PortForwardResponse" => PortForwardResponse,
    "PortMapping" => PortMapping,
    "ProcessUsage" => ProcessUsage,
    "PsiData" => PsiData,
    "PsiStats" => PsiStats,
    "PullImageRequest" => PullImageRequest,
    "PullImageResponse" => PullImageResponse,
    "RemoveContainerRequest" => RemoveContainerRequest,
    "RemoveContainerResponse" => RemoveContainerResponse,
    "RemoveImageRequest" => RemoveImageRequest,
    "RemoveImageResponse" => RemoveImageResponse,
    "RemovePodSandboxRequest" => RemovePodSandboxRequest,
    "RemovePodSandboxResponse" => RemovePodSandboxResponse,
    "ReopenContainerLogRequest" => ReopenContainerLogRequest,
    "ReopenContainerLogResponse" => ReopenContainerLogResponse,
    "RestorePodRequest" => RestorePodRequest,
    "RestorePodResponse" => RestorePodResponse,
    "RestoredContainer" => RestoredContainer,
    "RunPodSandboxRequest" => RunPodSandboxRequest,
    "RunPodSandboxResponse" => RunPodSandboxResponse,
    "RuntimeCondition" => RuntimeCondition,
    "RuntimeConfig" => RuntimeConfig,
    "RuntimeConfigRequest" => RuntimeConfigRequest,
    "RuntimeConfigResponse" => RuntimeConfigResponse,
    "RuntimeFeatures" => RuntimeFeatures,
    "RuntimeHandler" => RuntimeHandler,
    "RuntimeHandlerFeatures" => RuntimeHandlerFeatures,
    "RuntimeStatus" => RuntimeStatus,
    "SELinuxOption" => SeLinuxOption,
    "SecurityProfile" => SecurityProfile,
    "StartContainerRequest" => StartContainerRequest,
    "StartContainerResponse" => StartContainerResponse,
    "StatusRequest" => StatusRequest,
    "StatusResponse" => StatusResponse,
    "StopContainerRequest" => StopContainerRequest,
    "StopContainerResponse" => StopContainerResponse,
    "StopPodSandboxRequest" => StopPodSandboxRequest,
    "StopPodSandboxResponse" => StopPodSandboxResponse,
    "StreamContainerStatsRequest" => StreamContainerStatsRequest,
    "StreamContainerStatsResponse" => StreamContainerStatsResponse,
    "StreamContainersRequest" => StreamContainersRequest,
    "StreamContainersResponse" => StreamContainersResponse,
    "StreamImagesRequest" => StreamImagesRequest,
    "StreamImagesResponse" => StreamImagesResponse,
    "StreamPodSandboxMetricsRequest" => StreamPodSandboxMetricsRequest,
    "StreamPodSandboxMetricsResponse" => StreamPodSandboxMetricsResponse,
    "StreamPodSandboxStatsRequest" => StreamPodSandboxStatsRequest,
    "StreamPodSandboxStatsResponse" => StreamPodSandboxStatsResponse,
    "StreamPodSandboxesRequest" => StreamPodSandboxesRequest,
    "StreamPodSandboxesResponse" => StreamPodSandboxesResponse,
    "SwapUsage" => SwapUsage,
    "UInt64Value" => UInt64Value,
    "UpdateContainerResourcesRequest" => UpdateContainerResourcesRequest,
    "UpdateContainerResourcesResponse" => UpdateContainerResourcesResponse,
    "UpdatePodSandboxResourcesRequest" => UpdatePodSandboxResourcesRequest,
    "UpdatePodSandboxResourcesResponse" => UpdatePodSandboxResourcesResponse,
    "UpdateRuntimeConfigRequest" => UpdateRuntimeConfigRequest,
    "UpdateRuntimeConfigResponse" => UpdateRuntimeConfigResponse,
    "UserNamespace" => UserNamespace,
    "VersionRequest" => VersionRequest,
    "VersionResponse" => VersionResponse,
    "WindowsContainerConfig" => WindowsContainerConfig,
    "WindowsContainerResources" => WindowsContainerResources,
    "WindowsContainerSecurityContext" => WindowsContainerSecurityContext,
    "WindowsContainerStats" => WindowsContainerStats,
    "WindowsCpuGroupAffinity" => WindowsCpuGroupAffinity,
    "WindowsCpuUsage" => WindowsCpuUsage,
    "WindowsFilesystemUsage" => WindowsFilesystemUsage,
    "WindowsMemoryUsage" => WindowsMemoryUsage,
    "WindowsNamespaceOption" => WindowsNamespaceOption,
    "WindowsNetworkInterfaceUsage" => WindowsNetworkInterfaceUsage,
    "WindowsNetworkUsage" => WindowsNetworkUsage,
    "WindowsPodSandboxConfig" => WindowsPodSandboxConfig,
    "WindowsPodSandboxStats" => WindowsPodSandboxStats,
    "WindowsProcessUsage" => WindowsProcessUsage,
    "WindowsSandboxSecurityContext" => WindowsSandboxSecurityContext,
}

/// `hack/bin/cri-wire`, or `None` when the test is to be skipped.
fn cri_wire() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/bin/cri-wire");
    if bin.exists() {
        return Some(bin);
    }
    let missing = format!(
        "{} is missing: run hack/install-test-tools to build it",
        bin.display()
    );
    if std::env::var_os("CRIUS_REQUIRE_ROOT").is_some() {
        panic!("{missing} (CRIUS_REQUIRE_ROOT is set, so the wire check must run)");
    }
    eprintln!("skipping the CRI wire check: {missing}");
    None
}

/// Runs `cri-wire SUBCOMMAND PATH`; its own output says what differs.
fn run(bin: &Path, subcommand: &str, path: &Path) {
    let status = Command::new(bin)
        .arg(subcommand)
        .arg(path)
        .status()
        .unwrap_or_else(|e| panic!("run {}: {e}", bin.display()));
    assert!(
        status.success(),
        "{} {subcommand} {}: {status}",
        bin.display(),
        path.display()
    );
}

fn bin_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| name.strip_suffix(".bin").map(str::to_string))
        .collect()
}

#[test]
fn our_declaration_matches_upstream_descriptor() {
    let Some(bin) = cri_wire() else { return };
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("crius-cri.pb");
    std::fs::write(&set, cri::FILE_DESCRIPTOR_SET).unwrap();
    run(&bin, "descriptor", &set);
}

#[test]
fn every_message_round_trips_through_both_encoders() {
    let Some(bin) = cri_wire() else { return };
    let dir = tempfile::tempdir().unwrap();
    run(&bin, "encode", dir.path());

    let from_go = bin_names(dir.path());
    let known: BTreeSet<String> = MESSAGES.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(known.len(), MESSAGES.len(), "a message is listed twice");
    assert_eq!(
        from_go,
        known,
        "upstream's messages (left) and this test's list (right) differ: \
         only upstream {:?}, only here {:?}",
        from_go.difference(&known).collect::<Vec<_>>(),
        known.difference(&from_go).collect::<Vec<_>>(),
    );

    let rust_dir = dir.path().join("rust");
    std::fs::create_dir(&rust_dir).unwrap();
    let mut failures = Vec::new();
    for (name, round_trip) in MESSAGES {
        let go = std::fs::read(dir.path().join(format!("{name}.bin"))).unwrap();
        match round_trip(&go) {
            Ok(ours) => {
                if ours != go {
                    failures.push(format!(
                        "{name}: re-encodes differently ({} bytes from Go, {} from prost)",
                        go.len(),
                        ours.len()
                    ));
                }
                std::fs::write(rust_dir.join(format!("{name}.bin")), ours).unwrap();
            }
            Err(e) => failures.push(format!("{name}: does not decode: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} messages differ:\n  {}",
        failures.len(),
        MESSAGES.len(),
        failures.join("\n  ")
    );

    run(&bin, "check", dir.path());
}
