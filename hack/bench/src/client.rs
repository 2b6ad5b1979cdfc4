//! A CRI client over a unix socket.

use anyhow::{bail, Context};
use crius_proto::cri;
use crius_proto::cri::image_service_client::ImageServiceClient;
use crius_proto::cri::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint, Uri};

pub type Runtime = RuntimeServiceClient<Channel>;
pub type Images = ImageServiceClient<Channel>;

/// The socket path of a `unix:///path` endpoint (a bare path is taken as is).
pub fn socket_path(endpoint: &str) -> anyhow::Result<PathBuf> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if !path.starts_with('/') {
        bail!("endpoint {endpoint:?} is not unix:///absolute/path");
    }
    Ok(PathBuf::from(path))
}

pub async fn connect(endpoint: &str) -> anyhow::Result<(Runtime, Images)> {
    let socket = socket_path(endpoint)?;
    // The URI is a placeholder: the connector ignores it and dials the socket.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok((
        RuntimeServiceClient::new(channel.clone()),
        ImageServiceClient::new(channel),
    ))
}

/// "name version" as the runtime reports itself.
pub async fn runtime_version(rt: &mut Runtime) -> anyhow::Result<String> {
    let v = rt
        .version(cri::VersionRequest::default())
        .await
        .context("Version")?
        .into_inner();
    Ok(format!("{} {}", v.runtime_name, v.runtime_version))
}

pub async fn pull(images: &mut Images, image: &str) -> anyhow::Result<()> {
    images
        .pull_image(cri::PullImageRequest {
            image: Some(cri::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .with_context(|| format!("PullImage {image}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_of_endpoints() {
        assert_eq!(
            socket_path("unix:///run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        assert_eq!(
            socket_path("/run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
        assert!(socket_path("unix://relative.sock").is_err());
        assert!(socket_path("tcp://127.0.0.1:1").is_err());
    }
}
