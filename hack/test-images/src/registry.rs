//! A push-only client of the Registry HTTP API v2, over plain HTTP: HEAD to
//! skip blobs the repository has, POST + monolithic PUT to upload the others,
//! PUT of the manifest by tag.

use std::time::Duration;

use ureq::http::StatusCode;
use ureq::Agent;

use crate::oci::{Image, MANIFEST_MEDIA_TYPE};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{method} {url}: {source}")]
    Transport {
        method: &'static str,
        url: String,
        source: Box<ureq::Error>,
    },
    #[error("{method} {url}: unexpected status {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("POST {url}: no Location header in the upload response")]
    NoUploadLocation { url: String },
}

/// What a push did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    pub blobs_uploaded: usize,
    pub bytes_uploaded: usize,
    pub blobs_present: usize,
    pub tags: usize,
}

impl std::ops::AddAssign for PushStats {
    fn add_assign(&mut self, other: Self) {
        self.blobs_uploaded += other.blobs_uploaded;
        self.bytes_uploaded += other.bytes_uploaded;
        self.blobs_present += other.blobs_present;
        self.tags += other.tags;
    }
}

pub struct Registry {
    /// `http://host:port`
    base: String,
    agent: Agent,
}

type Response = ureq::http::Response<ureq::Body>;

impl Registry {
    /// A client of the registry at `host` (`host:port`).
    pub fn new(host: &str) -> Self {
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build();
        Self {
            base: format!("http://{host}"),
            agent: Agent::new_with_config(config),
        }
    }

    fn check(
        method: &'static str,
        url: &str,
        result: Result<Response, ureq::Error>,
        expected: &[StatusCode],
    ) -> Result<Response, RegistryError> {
        let mut response = result.map_err(|source| RegistryError::Transport {
            method,
            url: url.to_string(),
            source: Box::new(source),
        })?;
        let status = response.status();
        if expected.contains(&status) {
            return Ok(response);
        }
        let body = response.body_mut().read_to_string().unwrap_or_default();
        Err(RegistryError::Status {
            method,
            url: url.to_string(),
            status,
            body,
        })
    }

    /// Uploads the blob unless the repository has it; true when uploaded.
    pub fn push_blob(&self, repo: &str, digest: &str, blob: &[u8]) -> Result<bool, RegistryError> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        let head = self.agent.head(&url).call();
        let head = Self::check("HEAD", &url, head, &[StatusCode::OK, StatusCode::NOT_FOUND])?;
        if head.status() == StatusCode::OK {
            return Ok(false);
        }

        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let started = Self::check(
            "POST",
            &url,
            self.agent.post(&url).send_empty(),
            &[StatusCode::ACCEPTED],
        )?;
        let location = started
            .headers()
            .get("Location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| RegistryError::NoUploadLocation { url: url.clone() })?;
        // The location may be absolute or relative, and may carry a query.
        let mut url = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(digest);
        let put = self
            .agent
            .put(&url)
            .content_type("application/octet-stream")
            .send(blob);
        Self::check("PUT", &url, put, &[StatusCode::CREATED])?;
        Ok(true)
    }

    /// Pushes the image's blobs, then its manifest under each tag.
    pub fn push_image(
        &self,
        repo: &str,
        tags: &[&str],
        image: &Image,
    ) -> Result<PushStats, RegistryError> {
        let mut stats = PushStats::default();
        let blobs = image
            .layers
            .iter()
            .map(|l| (l.digest.as_str(), &l.blob[..]))
            .chain([(image.config_digest.as_str(), &image.config[..])]);
        for (digest, blob) in blobs {
            if self.push_blob(repo, digest, blob)? {
                stats.blobs_uploaded += 1;
                stats.bytes_uploaded += blob.len();
            } else {
                stats.blobs_present += 1;
            }
        }
        for tag in tags {
            let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
            let put = self
                .agent
                .put(&url)
                .content_type(MANIFEST_MEDIA_TYPE)
                .send(&image.manifest[..]);
            Self::check("PUT", &url, put, &[StatusCode::CREATED])?;
            stats.tags += 1;
        }
        Ok(stats)
    }
}
