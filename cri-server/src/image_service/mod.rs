//! The CRI ImageService: thin handlers over `crate::image::ImageStore`.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use crius_proto::cri;
use crius_proto::cri::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use crate::error::CriError;
use crate::fs_usage::Usage;
use crate::image::{ImageRecord, RegistryAuth};
use crate::instrument::{rpc, unimplemented, ReplyStream};
use crate::task::detached;
use crate::Crius;

pub struct ImageHandler {
    crius: Arc<Crius>,
}

impl ImageHandler {
    pub fn new(crius: Arc<Crius>) -> ImageHandler {
        ImageHandler { crius }
    }
}

type Reply<T> = Result<Response<T>, Status>;

/// `image.image` of a request: required.
/// The image a request names, for its span (validated later by `image_name`).
fn span_image(spec: Option<&cri::ImageSpec>) -> String {
    spec.map(|s| s.image.clone()).unwrap_or_default()
}

fn image_name(spec: Option<cri::ImageSpec>) -> Result<String, CriError> {
    match spec.map(|s| s.image) {
        Some(image) if !image.is_empty() => Ok(image),
        _ => Err(CriError::invalid("image.image", "must name an image")),
    }
}

/// The credentials of a pull, sent to every endpoint the pull tries
/// (mirrors included, as containerd's CRI does): a registry token, a user
/// and password, or docker's base64 `user:password`; anonymous when none is
/// given. An identity token alone (an OAuth2 refresh token to trade at the
/// registry's token service) is refused: the registry client has no
/// refresh-token grant, and pulling anonymously instead would hide why the
/// registry says no.
fn registry_auth(auth: Option<cri::AuthConfig>) -> Result<RegistryAuth, CriError> {
    let Some(auth) = auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    if !auth.identity_token.is_empty()
        && auth.registry_token.is_empty()
        && auth.username.is_empty()
        && auth.auth.is_empty()
    {
        return Err(CriError::invalid(
            "auth.identity_token",
            "identity (OAuth2 refresh) tokens are not supported: give registry_token, \
             username and password, or auth",
        ));
    }
    if !auth.registry_token.is_empty() {
        return Ok(RegistryAuth::Bearer(auth.registry_token));
    }
    if !auth.username.is_empty() {
        return Ok(RegistryAuth::Basic(auth.username, auth.password));
    }
    if !auth.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let Some((user, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(CriError::invalid(
                "auth.auth",
                "must be base64 of \"username:password\"",
            ));
        };
        return Ok(RegistryAuth::Basic(user.to_string(), password.to_string()));
    }
    Ok(RegistryAuth::Anonymous)
}

/// The CRI view of an image; `pinned` as the config's `pinned_images` says.
fn cri_image(record: &ImageRecord, pinned: bool) -> cri::Image {
    let (uid, username) = record.config.uid_or_username();
    cri::Image {
        id: record.id.clone(),
        repo_tags: record.repo_tags.clone(),
        repo_digests: record.repo_digests.clone(),
        size: record.size,
        uid: uid.map(|value| cri::Int64Value { value }),
        username,
        spec: Some(cri::ImageSpec {
            image: record.id.clone(),
            ..Default::default()
        }),
        pinned,
    }
}

#[tonic::async_trait]
impl ImageService for ImageHandler {
    type StreamImagesStream = ReplyStream<cri::StreamImagesResponse>;

    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> Reply<cri::ListImagesResponse> {
        let filter = request
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|i| !i.is_empty());
        rpc("ListImages", filter.as_deref().unwrap_or(""), async {
            let images = &self.crius.images;
            let records = match &filter {
                Some(image) => images.resolve(image).into_iter().collect(),
                None => images.list(),
            };
            Ok(cri::ListImagesResponse {
                images: records
                    .iter()
                    .map(|r| cri_image(r, images.is_pinned(r)))
                    .collect(),
            })
        })
        .await
    }

    async fn stream_images(
        &self,
        _request: Request<cri::StreamImagesRequest>,
    ) -> Reply<Self::StreamImagesStream> {
        unimplemented("StreamImages")
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> Reply<cri::ImageStatusResponse> {
        let request = request.into_inner();
        let verbose = request.verbose;
        let image = span_image(request.image.as_ref());
        rpc("ImageStatus", &image, async {
            let image = image_name(request.image)?;
            // An unknown image is no error: kubelet asks before it pulls.
            let Some(record) = self.crius.images.resolve(&image) else {
                return Ok(cri::ImageStatusResponse::default());
            };
            let mut info = HashMap::new();
            if verbose {
                let detail = serde_json::json!({
                    "id": record.id,
                    "chainIDs": record.chain_ids,
                    "config": record.config,
                    "layers": self.crius.images.layer_dirs(&record),
                });
                info.insert("info".to_string(), detail.to_string());
            }
            Ok(cri::ImageStatusResponse {
                image: Some(cri_image(&record, self.crius.images.is_pinned(&record))),
                info,
            })
        })
        .await
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> Reply<cri::PullImageResponse> {
        let request = request.into_inner();
        let image = span_image(request.image.as_ref());
        rpc("PullImage", &image, async {
            let image = image_name(request.image)?;
            let auth = registry_auth(request.auth)?;
            // In a task of its own: a client that gives up must not leave a
            // shared pull (or a half-written layer) behind.
            let crius = self.crius.clone();
            let pulled =
                detached(async move { Ok(crius.images.pull(&image, &auth).await?) }).await?;
            Ok(cri::PullImageResponse {
                image_ref: pulled.id,
            })
        })
        .await
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> Reply<cri::RemoveImageResponse> {
        let request = request.into_inner();
        let image = span_image(request.image.as_ref());
        rpc("RemoveImage", &image, async {
            let image = image_name(request.image)?;
            let crius = self.crius.clone();
            detached(async move { Ok(crius.images.remove(&image).await?) }).await?;
            Ok(cri::RemoveImageResponse {})
        })
        .await
    }

    async fn image_fs_info(
        &self,
        _request: Request<cri::ImageFsInfoRequest>,
    ) -> Reply<cri::ImageFsInfoResponse> {
        let image_dir = self.crius.images.images_dir().to_path_buf();
        let container_dir = self.crius.config.container_dir();
        rpc("ImageFsInfo", "", async move {
            let (image_fs, container_fs) = tokio::task::spawn_blocking(move || {
                anyhow::Ok((filesystem_of(&image_dir)?, filesystem_of(&container_dir)?))
            })
            .await??;
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .context("reading the clock")?
                .as_nanos() as i64;
            Ok::<_, CriError>(cri::ImageFsInfoResponse {
                image_filesystems: vec![filesystem_usage(image_fs, timestamp)],
                container_filesystems: vec![filesystem_usage(container_fs, timestamp)],
            })
        })
        .await
    }
}

/// The mount point of the filesystem `dir` is on and what crius keeps in
/// `dir` (bytes and inodes). Errors name `dir`.
fn filesystem_of(dir: &std::path::Path) -> anyhow::Result<(std::path::PathBuf, Usage)> {
    let measured = || {
        Ok::<_, std::io::Error>((
            crate::fs_usage::mount_point(dir)?,
            crate::fs_usage::dir_usage(dir)?,
        ))
    };
    measured().with_context(|| format!("measuring {}", dir.display()))
}

/// One filesystem in ImageFsInfo: kubelet (pkg/kubelet/stats) takes
/// `fs_id.mountpoint` to find the filesystem's capacity, `used_bytes` and
/// `inodes_used` as the runtime's share of it, and two different mount
/// points as a split image filesystem (KEP-4191).
fn filesystem_usage(
    (mountpoint, usage): (std::path::PathBuf, Usage),
    timestamp: i64,
) -> cri::FilesystemUsage {
    cri::FilesystemUsage {
        timestamp,
        fs_id: Some(cri::FilesystemIdentifier {
            mountpoint: mountpoint.display().to_string(),
        }),
        used_bytes: Some(cri::UInt64Value { value: usage.bytes }),
        inodes_used: Some(cri::UInt64Value {
            value: usage.inodes,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filesystem_maps_to_its_mount_point_and_usage() {
        let usage = Usage {
            bytes: 4096,
            inodes: 3,
        };
        assert_eq!(
            filesystem_usage(("/mnt/images".into(), usage), 42),
            cri::FilesystemUsage {
                timestamp: 42,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: "/mnt/images".into(),
                }),
                used_bytes: Some(cri::UInt64Value { value: 4096 }),
                inodes_used: Some(cri::UInt64Value { value: 3 }),
            }
        );
    }

    #[test]
    fn credentials_in_every_form() {
        assert!(matches!(
            registry_auth(None).unwrap(),
            RegistryAuth::Anonymous
        ));
        let basic = registry_auth(Some(cri::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        }))
        .unwrap();
        assert!(matches!(basic, RegistryAuth::Basic(u, p) if u == "u" && p == "p"));
        let encoded = registry_auth(Some(cri::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("user:pa:ss"),
            ..Default::default()
        }))
        .unwrap();
        assert!(matches!(encoded, RegistryAuth::Basic(u, p) if u == "user" && p == "pa:ss"));
        let err = registry_auth(Some(cri::AuthConfig {
            auth: "%%%".into(),
            ..Default::default()
        }))
        .unwrap_err();
        assert!(err.to_string().starts_with("auth.auth"), "{err}");
        let token = registry_auth(Some(cri::AuthConfig {
            registry_token: "t".into(),
            identity_token: "i".into(),
            ..Default::default()
        }))
        .unwrap();
        assert!(matches!(token, RegistryAuth::Bearer(t) if t == "t"));
        let status: Status = registry_auth(Some(cri::AuthConfig {
            identity_token: "i".into(),
            ..Default::default()
        }))
        .unwrap_err()
        .into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("auth.identity_token: "),
            "{}",
            status.message()
        );
    }

    #[test]
    fn errors_map_to_cri_codes() {
        let status: Status = image_name(None).unwrap_err().into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn user_becomes_uid_or_username() {
        let mut record = ImageRecord {
            id: "sha256:1".into(),
            repo_tags: vec![],
            repo_digests: vec![],
            size: 1,
            chain_ids: vec![],
            config: Default::default(),
            blobs: vec![],
        };
        record.config.user = "1002".into();
        let image = cri_image(&record, false);
        assert_eq!(image.uid.map(|u| u.value), Some(1002));
        assert_eq!(image.username, "");
        record.config.user = "www-data".into();
        let image = cri_image(&record, true);
        assert!(image.pinned);
        assert_eq!(image.uid, None);
        assert_eq!(image.username, "www-data");
        assert_eq!(image.spec.unwrap().image, "sha256:1");
    }
}
