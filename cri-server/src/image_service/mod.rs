//! The CRI ImageService.

mod fs_usage;

use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use crate::error::CriError;
use crate::instrument::{rpc, unimplemented};
use crate::Crius;

pub struct ImageHandler {
    crius: Arc<Crius>,
}

impl ImageHandler {
    pub fn new(crius: Arc<Crius>) -> ImageHandler {
        ImageHandler { crius }
    }

    /// Where images live: blobs and unpacked layers.
    fn images_dir(&self) -> std::path::PathBuf {
        self.crius.config.root.join("images")
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl ImageService for ImageHandler {
    async fn list_images(
        &self,
        _request: Request<cri::ListImagesRequest>,
    ) -> Reply<cri::ListImagesResponse> {
        unimplemented("ListImages")
    }

    async fn image_status(
        &self,
        _request: Request<cri::ImageStatusRequest>,
    ) -> Reply<cri::ImageStatusResponse> {
        unimplemented("ImageStatus")
    }

    async fn pull_image(
        &self,
        _request: Request<cri::PullImageRequest>,
    ) -> Reply<cri::PullImageResponse> {
        unimplemented("PullImage")
    }

    async fn remove_image(
        &self,
        _request: Request<cri::RemoveImageRequest>,
    ) -> Reply<cri::RemoveImageResponse> {
        unimplemented("RemoveImage")
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Reply<cri::ImageFsInfoResponse> {
        let dir = self.images_dir();
        rpc("ImageFsInfo", "", async move {
            let measured = dir.clone();
            let usage = tokio::task::spawn_blocking(move || fs_usage::dir_usage(&measured))
                .await
                .map_err(anyhow::Error::from)?
                .map_err(|e| anyhow::anyhow!("measuring {}: {e}", dir.display()))?;
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(anyhow::Error::from)?
                .as_nanos() as i64;
            Ok::<_, CriError>(cri::ImageFsInfoResponse {
                image_filesystems: vec![cri::FilesystemUsage {
                    timestamp,
                    fs_id: Some(cri::FilesystemIdentifier {
                        mountpoint: dir.display().to_string(),
                    }),
                    used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
                    inodes_used: Some(cri::UInt64Value {
                        value: usage.inodes,
                    }),
                }],
                container_filesystems: Vec::new(),
            })
        })
        .await
    }
}
