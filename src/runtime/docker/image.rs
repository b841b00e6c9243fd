//! Images: inspecting a local image (ID and registry digests), asking the registry for a
//! tag's current manifest digest through the engine's distribution endpoint (one manifest
//! HEAD; ~25 ms against a loopback registry, measured), and pulling (`create_image`) with
//! credentials from the docker config and progress in the log. Engine answers of a failed
//! pull become [`RuntimeError::Pull`] with the failure's kind (`classify`, pure).
//!
//! Must not touch: containers, networks; it never removes or tags an image.

use super::{Counters, DockerRuntime};
use crate::runtime::credentials::{registry_of, RegistryAuth};
use crate::runtime::{LocalImage, PullFailure, PullReport, RuntimeError};
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::image::CreateImageOptions;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How often a pull's progress is logged at most.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// A pull's own request timeout (the engine streams progress; a large image takes long).
const PULL_TIMEOUT: Duration = Duration::from_secs(1800);

fn docker_credentials(auth: Option<&RegistryAuth>) -> Option<DockerCredentials> {
    let auth = auth?;
    Some(if auth.identity_token {
        DockerCredentials {
            identitytoken: Some(auth.secret.clone()),
            serveraddress: Some(auth.server.clone()),
            ..Default::default()
        }
    } else {
        DockerCredentials {
            username: Some(auth.username.clone()),
            password: Some(auth.secret.clone()),
            serveraddress: Some(auth.server.clone()),
            ..Default::default()
        }
    })
}

/// What kind of failure the engine's answer to a pull or a registry check describes.
pub(super) fn classify(status: Option<u16>, message: &str) -> PullFailure {
    let m = message.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| m.contains(w));
    if matches!(status, Some(401) | Some(403))
        || has(&[
            "unauthorized",
            "authentication required",
            "no basic auth credentials",
            "denied",
            "incorrect username or password",
        ])
    {
        PullFailure::Unauthorized
    } else if has(&[
        "connection refused",
        "no such host",
        "i/o timeout",
        "dial tcp",
        "network is unreachable",
        "tls: ",
        "server gave http response to https client",
        "context deadline exceeded",
    ]) {
        PullFailure::Unreachable
    } else if status == Some(404)
        || has(&[
            "manifest unknown",
            "not found",
            "name unknown",
            "does not exist",
        ])
    {
        PullFailure::NotFound
    } else {
        PullFailure::Other
    }
}

fn pull_error(image: &str, status: Option<u16>, message: &str) -> RuntimeError {
    RuntimeError::Pull {
        image: image.to_string(),
        registry: registry_of(image),
        failure: classify(status, message),
        message: super::connect::lower_first(message.trim()),
    }
}

/// `image` as `fromImage` + `tag` (a digest reference keeps its digest as the "tag").
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    match image.rsplit_once(':') {
        // A colon after the last slash separates the tag; one before it is a port.
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

impl DockerRuntime {
    pub(super) async fn local_image_of(
        &self,
        image: &str,
    ) -> Result<Option<LocalImage>, RuntimeError> {
        Counters::bump(&self.counters.images);
        match self.docker.inspect_image(image).await {
            Ok(info) => Ok(Some(LocalImage {
                id: info.id.unwrap_or_default(),
                repo_digests: info.repo_digests.unwrap_or_default(),
            })),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(super::connect::map_error(
                &self.endpoint,
                "inspect image",
                e,
            )),
        }
    }

    pub(super) async fn registry_digest_of(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<String, RuntimeError> {
        Counters::bump(&self.counters.images);
        match self
            .docker
            .inspect_registry_image(image, docker_credentials(auth))
            .await
        {
            Ok(answer) => answer.descriptor.digest.ok_or_else(|| RuntimeError::Pull {
                image: image.to_string(),
                registry: registry_of(image),
                failure: PullFailure::Other,
                message: "the registry answered without a manifest digest".to_string(),
            }),
            Err(BollardError::DockerResponseServerError {
                status_code,
                message,
            }) => Err(pull_error(image, Some(status_code), &message)),
            Err(e) => Err(super::connect::map_error(
                &self.endpoint,
                "registry digest",
                e,
            )),
        }
    }

    pub(super) async fn pull_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<PullReport, RuntimeError> {
        Counters::bump(&self.counters.pulls);
        let (from_image, tag) = split_reference(image);
        let options = CreateImageOptions {
            from_image,
            tag,
            ..Default::default()
        };
        let docker = self.docker.clone().with_timeout(PULL_TIMEOUT);
        let mut stream = docker.create_image(Some(options), None, docker_credentials(auth));
        let started = Instant::now();
        let mut last_log = Instant::now();
        let mut report = PullReport::default();
        // Layer id -> total bytes, and the layers the engine said it downloaded.
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        let mut downloaded: BTreeSet<String> = BTreeSet::new();
        while let Some(item) = stream.next().await {
            let info = match item {
                Ok(info) => info,
                Err(BollardError::DockerResponseServerError {
                    status_code,
                    message,
                }) => return Err(pull_error(image, Some(status_code), &message)),
                Err(BollardError::DockerStreamError { error }) => {
                    return Err(pull_error(image, None, &error))
                }
                Err(e) => return Err(super::connect::map_error(&self.endpoint, "pull", e)),
            };
            if let Some(error) = info.error {
                return Err(pull_error(image, None, &error));
            }
            let status = info.status.unwrap_or_default();
            if let Some(digest) = status.strip_prefix("Digest: ") {
                report.digest = Some(digest.trim().to_string());
            }
            if let (Some(id), Some(detail)) = (&info.id, &info.progress_detail) {
                if let Some(total) = detail.total.filter(|t| *t > 0) {
                    sizes.insert(id.clone(), total as u64);
                }
            }
            if let Some(id) = &info.id {
                if status == "Download complete" || status == "Pull complete" {
                    downloaded.insert(id.clone());
                }
            }
            if last_log.elapsed() >= PROGRESS_EVERY {
                last_log = Instant::now();
                tracing::info!(
                    image,
                    layers_done = downloaded.len(),
                    layers_seen = sizes.len(),
                    seconds = started.elapsed().as_secs(),
                    "pulling image: {status}"
                );
            }
        }
        report.layers_downloaded = downloaded.len() as u32;
        report.bytes = downloaded.iter().filter_map(|id| sizes.get(id)).sum();
        tracing::info!(
            image,
            digest = report.digest.as_deref().unwrap_or(""),
            layers = report.layers_downloaded,
            bytes = report.bytes,
            ms = started.elapsed().as_millis() as u64,
            "pulled image"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_answers_are_classified() {
        // Answers of dockerd 20.10 against docker-registry 2.8 (measured).
        let cases = [
            (Some(500), "unauthorized: authentication required", PullFailure::Unauthorized),
            (Some(401), "unauthorized: authentication required", PullFailure::Unauthorized),
            (
                Some(500),
                "Head \"http://127.0.0.1:44845/v2/demo/manifests/v1\": no basic auth credentials",
                PullFailure::Unauthorized,
            ),
            (
                Some(404),
                "manifest for 127.0.0.1:44845/demo:nope not found: manifest unknown: manifest unknown",
                PullFailure::NotFound,
            ),
            (
                Some(500),
                "Get \"http://127.0.0.1:1/v2/\": dial tcp 127.0.0.1:1: connect: connection refused",
                PullFailure::Unreachable,
            ),
            (
                Some(500),
                "pull access denied for ghost, repository does not exist or may require 'docker login'",
                PullFailure::Unauthorized,
            ),
            (Some(500), "something else", PullFailure::Other),
        ];
        for (status, message, want) in cases {
            assert_eq!(classify(status, message), want, "{message}");
        }
    }

    #[test]
    fn references_split_into_image_and_tag() {
        assert_eq!(
            split_reference("127.0.0.1:5000/demo:v1"),
            ("127.0.0.1:5000/demo", "v1")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/demo"),
            ("127.0.0.1:5000/demo", "latest")
        );
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_reference("r.io/a@sha256:abc"),
            ("r.io/a", "sha256:abc")
        );
    }

    #[test]
    fn a_pull_error_says_which_image_and_registry() {
        let e = pull_error(
            "127.0.0.1:5000/demo:v1",
            Some(500),
            "unauthorized: authentication required",
        );
        let text = e.to_string();
        assert!(
            text.contains("registry 127.0.0.1:5000 refused image 127.0.0.1:5000/demo:v1"),
            "{text}"
        );
        assert!(text.contains("docker login 127.0.0.1:5000"), "{text}");
    }
}
