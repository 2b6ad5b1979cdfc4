//! Images against a real criusd and the loopback test registry, as issue 13
//! asks: a loopback registry pulled from without any `[registry]` config
//! (HTTPS first, then plain HTTP, as containerd), pinned images reported as
//! such to kubelet, and one image ID everywhere (KEP-2535:
//! `PullImageResponse.image_ref` = `Image.id` = `ContainerStatus.image_id`)
//! whatever name was pulled or used.

use crius_proto::cri;
use crius_proto::cri::image_service_client::ImageServiceClient;
use crius_tests::cri::{
    container_config, container_status, create_container, pod_config, run_pod, stop_and_remove_pod,
};
use crius_tests::registry::TestRegistry;
use crius_tests::{require_root, Daemon, DaemonOptions};
use tonic::transport::Channel;

async fn pull(images: &mut ImageServiceClient<Channel>, image: &str) -> Result<String, String> {
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().image_ref)
        .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
}

async fn image_status(images: &mut ImageServiceClient<Channel>, image: &str) -> cri::Image {
    images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .unwrap_or_else(|| panic!("{image} is not there"))
}

fn crictl_json(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let out = daemon.crictl().args(args).output().expect("running crictl");
    assert!(
        out.status.success(),
        "crictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("crictl's JSON")
}

/// The test registry speaks plain HTTP on 127.0.0.1; the daemon's config
/// names no registry at all, yet the pull works, by address and by
/// `localhost`. The log shows the HTTPS attempt and the fallback.
#[tokio::test]
async fn a_loopback_registry_needs_no_config() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    let daemon = Daemon::start_with(DaemonOptions::default());
    let mut images = daemon.images().await;

    let by_address = registry.image("crius/busybox:latest");
    let id = pull(&mut images, &by_address)
        .await
        .expect("pull from 127.0.0.1 without config");
    assert_eq!(image_status(&mut images, &by_address).await.id, id);

    let port = registry.addr.rsplit_once(':').unwrap().1;
    let by_name = format!("localhost:{port}/crius/busybox:latest");
    assert_eq!(
        pull(&mut images, &by_name)
            .await
            .expect("pull from localhost without config"),
        id
    );
    let log = daemon.log_text();
    assert!(
        log.contains("the registry speaks plain HTTP: asking over HTTP")
            && log.contains(&format!("https://{}", registry.addr)),
        "{log}"
    );
}

/// `pinned_images` names one image by its tag and another by its ID;
/// ListImages and ImageStatus (as crictl shows them) report those two
/// pinned and the third not.
#[tokio::test]
async fn configured_images_are_pinned_and_others_not() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    let busybox = registry.image("crius/busybox:latest");
    let layers = registry.image("crius/layers:latest");
    let workdir = registry.image("crius/workdir:latest");

    // The IDs are only known after a pull: a first daemon learns one.
    let workdir_id = {
        let daemon = Daemon::start_with(DaemonOptions {
            config_toml: registry.config_toml(),
            ..Default::default()
        });
        pull(&mut daemon.images().await, &workdir)
            .await
            .expect("pull")
    };
    let daemon = Daemon::start_with(DaemonOptions {
        config_toml: format!(
            "pinned_images = [\"{busybox}\", \"{workdir_id}\"]\n{}",
            registry.config_toml()
        ),
        ..Default::default()
    });
    let mut images = daemon.images().await;
    for image in [&busybox, &layers, &workdir] {
        pull(&mut images, image).await.expect("pull");
    }

    let listed = crictl_json(&daemon, &["images", "-o", "json"]);
    let mut pinned: Vec<(String, bool)> = listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["repoTags"][0].as_str().unwrap().to_string(),
                i["pinned"].as_bool().unwrap(),
            )
        })
        .collect();
    pinned.sort();
    let mut expected = vec![
        (busybox.clone(), true),
        (layers.clone(), false),
        (workdir.clone(), true),
    ];
    expected.sort();
    assert_eq!(pinned, expected);

    for (image, expected) in [(&busybox, true), (&layers, false), (&workdir, true)] {
        let inspected = crictl_json(&daemon, &["inspecti", "-o", "json", image]);
        assert_eq!(
            inspected["status"]["pinned"].as_bool(),
            Some(expected),
            "{image}: {inspected}"
        );
    }
}

/// Pulled by tag and by digest, and containers made from the tag, the
/// digest and the ID: one image ID everywhere, and the status' `image_ref`
/// and `image` as containerd gives them.
#[tokio::test]
async fn one_image_id_by_every_name() {
    if !require_root() {
        return;
    }
    let registry = TestRegistry::shared();
    let daemon = Daemon::start_with(DaemonOptions {
        config_toml: registry.config_toml(),
        network: true,
        ..Default::default()
    });
    let mut images = daemon.images().await;
    let tag = registry.image("crius/busybox:latest");

    let by_tag = pull(&mut images, &tag).await.expect("pull by tag");
    let image = image_status(&mut images, &tag).await;
    assert_eq!(image.id, by_tag);
    let repo_digest = image.repo_digests[0].clone();
    let by_digest = pull(&mut images, &repo_digest)
        .await
        .expect("pull by digest");
    assert_eq!(by_digest, by_tag);
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await
        .unwrap()
        .into_inner()
        .images;
    assert_eq!(
        listed.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        [by_tag.as_str()]
    );
    for name in [&tag, &repo_digest, &by_tag] {
        assert_eq!(image_status(&mut images, name).await.id, by_tag, "{name}");
    }

    let mut rt = daemon.runtime().await;
    let logs = daemon.dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let pod = pod_config("image-ids", &logs);
    let pod_id = run_pod(&mut rt, &pod).await.expect("RunPodSandbox");
    let mut seen = Vec::new();
    for (n, name) in [&tag, &repo_digest, &by_tag].into_iter().enumerate() {
        let config = container_config(&format!("c{n}"), name, &["sleep", "600"]);
        let id = create_container(&mut rt, &pod_id, &pod, config)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer from {name}: {e:?}"));
        let status = container_status(&mut rt, &id).await;
        let listed = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    id: id.clone(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .containers;
        seen.push((
            name.to_string(),
            status.image_id,
            status.image_ref,
            status.image.unwrap().image,
            listed[0].image_id.clone(),
            listed[0].image_ref.clone(),
        ));
    }
    stop_and_remove_pod(&mut rt, &pod_id).await;
    for (name, image_id, image_ref, image, listed_id, listed_ref) in seen {
        assert_eq!(image_id, by_tag, "ContainerStatus.image_id from {name}");
        assert_eq!(
            image_ref, repo_digest,
            "ContainerStatus.image_ref from {name}"
        );
        assert_eq!(image, tag, "ContainerStatus.image from {name}");
        assert_eq!(
            (listed_id, listed_ref),
            (by_tag.clone(), by_tag.clone()),
            "ListContainers from {name}"
        );
    }
}
