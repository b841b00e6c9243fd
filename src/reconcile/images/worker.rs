//! The image worker: the long-running task (started by the daemon) that runs the jobs the
//! `ImageBook` says are due: pulls apps asked for and the registry digest checks of
//! followed tags, at most [`PULL_CONCURRENCY`] at once, each with credentials from the
//! docker config; it records each outcome in the book and wakes the loop.
//! Must not touch: containers, nginx, the store.

use super::{ImageDone, ImageJob, ImageOutcome, ImageSettings, Images, PULL_CONCURRENCY};
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::reconcile::StepError;
use crate::runtime::credentials::{self, registry_of};
use crate::runtime::{ContainerRuntime, RuntimeError};
use crate::source::Waker;
use futures_util::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The pulling task: started by the daemon (`Controller::image_worker`), runs until
/// aborted. A job in flight when berth stops is simply dropped (the engine finishes or
/// abandons the pull; the next berth asks again).
pub struct ImageWorker<R: ContainerRuntime> {
    pub(in crate::reconcile) runtime: Arc<R>,
    pub(in crate::reconcile) images: Arc<Images>,
    pub(in crate::reconcile) metrics: Arc<Metrics>,
    pub(in crate::reconcile) wake: Waker,
    pub(in crate::reconcile) settings: ImageSettings,
}

impl<R: ContainerRuntime> ImageWorker<R> {
    pub async fn run(self) {
        let mut running = FuturesUnordered::new();
        loop {
            let now = now_ms();
            let free = PULL_CONCURRENCY.saturating_sub(running.len());
            let jobs = if free > 0 {
                let mut jobs = self.images.lock().start_due(now);
                // Over the bound: give the rest back, they start when a slot frees.
                for (image, job, _) in jobs.split_off(free.min(jobs.len())) {
                    let mut book = self.images.lock();
                    if let Some(e) = book.entries.get_mut(&image) {
                        e.running = None;
                        e.wanted |= job == ImageJob::Pull;
                    }
                }
                jobs
            } else {
                Vec::new()
            };
            for (image, job, apps) in jobs {
                running.push(job_future(
                    self.runtime.clone(),
                    self.metrics.clone(),
                    self.settings.docker_config.clone(),
                    image,
                    job,
                    apps,
                ));
            }
            let sleep = self
                .images
                .lock()
                .next_due()
                .map(|at| Duration::from_millis((at - now).clamp(0, 3_600_000) as u64))
                .unwrap_or(Duration::from_secs(3600));
            let sleep = if running.len() >= PULL_CONCURRENCY {
                Duration::from_secs(3600)
            } else {
                sleep
            };
            tokio::select! {
                _ = self.images.notify.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                Some(outcome) = running.next(), if !running.is_empty() => {
                    let wake = match (&outcome.job, &outcome.result) {
                        (ImageJob::Check, Ok(done)) => {
                            let book = self.images.lock();
                            let known = book.entries.get(&outcome.image).and_then(|e| e.id.clone());
                            done.pulled || known.as_deref() != Some(done.id.as_str())
                        }
                        _ => true,
                    };
                    self.images.lock().finish(outcome, now_ms(), self.settings.poll);
                    if wake {
                        (self.wake)("image");
                    }
                }
            }
        }
    }
}

/// One job: credentials, then the pull or the check (+ pull when the digest moved), then
/// the local ID.
async fn job_future<R: ContainerRuntime>(
    runtime: Arc<R>,
    metrics: Arc<Metrics>,
    docker_config: PathBuf,
    image: String,
    job: ImageJob,
    apps: BTreeSet<String>,
) -> ImageOutcome {
    let started = Instant::now();
    let result = run_job(&*runtime, &metrics, &docker_config, &image, job, started).await;
    if let Err(e) = &result {
        tracing::warn!(image, ?job, "{e}");
    }
    ImageOutcome {
        image,
        job,
        apps,
        result,
    }
}

async fn run_job<R: ContainerRuntime>(
    runtime: &R,
    metrics: &Metrics,
    docker_config: &std::path::Path,
    image: &str,
    job: ImageJob,
    started: Instant,
) -> Result<ImageDone, StepError> {
    let auth = credentials::credentials_for(docker_config, image).await?;
    let mut digest = None;
    if job == ImageJob::Check {
        let local = runtime.local_image(image).await;
        let remote = runtime.registry_digest(image, auth.as_ref()).await;
        let remote = match remote {
            Ok(d) => d,
            Err(e) => {
                metrics.image_check(None);
                return Err(e.into());
            }
        };
        if let Some(local) = local?.filter(|l| l.has_digest(&remote)) {
            metrics.image_check(Some(false));
            return Ok(ImageDone {
                id: local.id,
                digest: Some(remote),
                pulled: false,
                layers: 0,
                bytes: 0,
                millis: started.elapsed().as_millis() as u64,
            });
        }
        metrics.image_check(Some(true));
        tracing::info!(image, digest = %remote, "registry digest moved: pulling");
        digest = Some(remote);
    }
    tracing::info!(image, registry = %registry_of(image), "pulling image");
    let pulled = runtime.pull(image, auth.as_ref()).await;
    metrics.image_pull(pulled.is_ok());
    let report = pulled?;
    let local = runtime
        .local_image(image)
        .await?
        .ok_or_else(|| RuntimeError::ImageMissing {
            image: image.to_string(),
        })?;
    Ok(ImageDone {
        id: local.id,
        digest: report.digest.or(digest),
        pulled: true,
        layers: report.layers_downloaded,
        bytes: report.bytes,
        millis: started.elapsed().as_millis() as u64,
    })
}
