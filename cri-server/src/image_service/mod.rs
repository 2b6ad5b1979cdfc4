//! The CRI ImageService.

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use crate::instrument::unimplemented;

pub struct ImageHandler;

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
        unimplemented("ImageFsInfo")
    }
}
