//! Registry images: which images the desired apps want pulled or followed (`ImageBook`,
//! fed by each pass), the pulls themselves and the moving-tag checks of `Always` images
//! (`ImageWorker`, a long-running task the daemon starts), and the outcomes the next pass
//! turns into events and per-app retry backoff. A pull never runs inside a pass: the pass
//! asks for it (an app whose image is missing), the worker pulls (at most
//! [`PULL_CONCURRENCY`] at once) and wakes the loop when done, so one slow registry never
//! delays another app. The worker is the only code that pulls; it lives here because only
//! `reconcile` calls mutating runtime methods.
//!
//! Must not touch: containers, nginx, the store (the pass records what the worker did).

use super::{now_ms, Controller, StepError};
use crate::plan::heal::{after_failure, BACKOFF_BASE_MS, BACKOFF_MAX_MS};
use crate::plan::{Desired, ImageView, Observed};
use crate::runtime::credentials::{self, registry_of};
use crate::runtime::ContainerRuntime;
use crate::spec::ImagePullPolicy;
use crate::store::EventType;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

mod worker;
pub use worker::ImageWorker;

/// Pulls (and checks) in flight at once, across apps.
pub const PULL_CONCURRENCY: usize = 4;
/// Default `--image-poll`: how often an `Always` image's registry digest is checked.
pub const DEFAULT_IMAGE_POLL: Duration = Duration::from_secs(300);

/// Where credentials come from and how often moving tags are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSettings {
    /// Docker's client config directory (`config.json` inside): `--docker-config`, else
    /// `$DOCKER_CONFIG`, else `~/.docker`.
    pub docker_config: PathBuf,
    /// `--image-poll`.
    pub poll: Duration,
}

impl Default for ImageSettings {
    fn default() -> Self {
        Self {
            docker_config: credentials::default_config_dir(),
            poll: DEFAULT_IMAGE_POLL,
        }
    }
}

/// Why the worker touches an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageJob {
    /// An app's create found the image missing: pull it.
    Pull,
    /// An `Always` image is due: compare the registry's digest with the local one, pull
    /// when it moved.
    Check,
}

/// What the worker did for one image.
#[derive(Debug, Clone)]
pub struct ImageOutcome {
    pub image: String,
    pub job: ImageJob,
    /// The apps that named the image when the job started.
    pub apps: BTreeSet<String>,
    pub result: Result<ImageDone, StepError>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageDone {
    /// The local image ID now.
    pub id: String,
    /// The registry digest, when known.
    pub digest: Option<String>,
    /// True when something was pulled (false: the registry's digest had not moved).
    pub pulled: bool,
    /// Layers downloaded and their bytes, as the engine reported them.
    pub layers: u32,
    pub bytes: u64,
    pub millis: u64,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    apps: BTreeSet<String>,
    always: bool,
    /// Local image ID as of the worker's last job (`Always` images).
    id: Option<String>,
    /// A pull asked for by a pass, not started yet.
    wanted: bool,
    running: Option<ImageJob>,
    /// Unix ms when an `Always` image is checked next (0: at once).
    next_check: i64,
    /// Failed jobs in a row (the check's backoff).
    failures: u32,
}

/// The images the desired apps want, what is in flight and what finished. Pure state
/// (time is a parameter); shared by the pass and the worker behind a mutex.
#[derive(Debug, Default)]
pub struct ImageBook {
    entries: BTreeMap<String, Entry>,
    finished: Vec<ImageOutcome>,
}

impl ImageBook {
    /// Forgets resolved image IDs and finished jobs (a new leader resolves every followed
    /// tag again); a job running now keeps its entry.
    pub fn forget_resolved(&mut self) {
        self.entries.retain(|_, e| e.running.is_some());
        self.finished.clear();
    }

    /// The pass's wanted set: every image of a desired app whose policy is not `Never`,
    /// with its apps and whether any of them follows the tag (`Always`). Entries no app
    /// names any more go (unless a job runs for them).
    pub fn sync(&mut self, desired: &Desired) {
        let mut wanted: BTreeMap<&str, (BTreeSet<String>, bool)> = BTreeMap::new();
        for (name, app) in &desired.apps {
            let policy = app.spec.image_pull_policy;
            if policy == ImagePullPolicy::Never {
                continue;
            }
            let entry = wanted.entry(app.spec.image.as_str()).or_default();
            entry.0.insert(name.clone());
            entry.1 |= policy == ImagePullPolicy::Always;
        }
        self.entries
            .retain(|image, e| wanted.contains_key(image.as_str()) || e.running.is_some());
        for (image, (apps, always)) in wanted {
            let entry = self.entries.entry(image.to_string()).or_default();
            if always && !entry.always {
                entry.next_check = 0;
            }
            entry.apps = apps;
            entry.always = always;
        }
    }

    /// A pass found `image` missing for `app`: pull it. False when a pull is already
    /// asked for or running (nothing new to report).
    pub fn request_pull(&mut self, image: &str, app: &str) -> bool {
        let entry = self.entries.entry(image.to_string()).or_default();
        entry.apps.insert(app.to_string());
        if entry.wanted || entry.running == Some(ImageJob::Pull) {
            return false;
        }
        entry.wanted = true;
        true
    }

    /// The jobs to start now; they are marked running.
    pub fn start_due(&mut self, now: i64) -> Vec<(String, ImageJob, BTreeSet<String>)> {
        let mut jobs = Vec::new();
        for (image, e) in &mut self.entries {
            if e.running.is_some() {
                continue;
            }
            let job = if e.wanted {
                ImageJob::Pull
            } else if e.always && e.next_check <= now {
                ImageJob::Check
            } else {
                continue;
            };
            e.wanted = false;
            e.running = Some(job);
            jobs.push((image.clone(), job, e.apps.clone()));
        }
        jobs
    }

    /// A job ended at `now`; `poll` is the check interval. A failure is checked again with
    /// backoff (2 s doubling, at most `poll` and 5 min).
    pub fn finish(&mut self, outcome: ImageOutcome, now: i64, poll: Duration) {
        if let Some(e) = self.entries.get_mut(&outcome.image) {
            e.running = None;
            let poll_ms = poll.as_millis() as i64;
            match &outcome.result {
                Ok(done) => {
                    // The image is on the host now: a pull asked for meanwhile is done.
                    e.wanted = false;
                    e.id = Some(done.id.clone());
                    e.failures = 0;
                    e.next_check = now + poll_ms;
                }
                Err(_) => {
                    e.failures += 1;
                    let backoff = (BACKOFF_BASE_MS << (e.failures - 1).min(16)).min(BACKOFF_MAX_MS);
                    e.next_check = now + backoff.min(poll_ms.max(BACKOFF_BASE_MS));
                }
            }
        }
        self.finished.push(outcome);
    }

    /// Outcomes since the last call (the pass records them).
    pub fn take_finished(&mut self) -> Vec<ImageOutcome> {
        std::mem::take(&mut self.finished)
    }

    /// When the next check is due (None: no `Always` image waits).
    pub fn next_due(&self) -> Option<i64> {
        self.entries
            .values()
            .filter(|e| e.running.is_none())
            .filter_map(|e| {
                if e.wanted {
                    Some(0)
                } else {
                    e.always.then_some(e.next_check)
                }
            })
            .min()
    }

    /// What the plan sees: per image, the local ID the worker resolved (`Always` images)
    /// and whether a pull asked for by an app is pending or running.
    pub fn view(&self) -> BTreeMap<String, ImageView> {
        self.entries
            .iter()
            .map(|(image, e)| {
                (
                    image.clone(),
                    ImageView {
                        id: if e.always { e.id.clone() } else { None },
                        pulling: e.wanted || e.running == Some(ImageJob::Pull),
                    },
                )
            })
            .collect()
    }
}

/// The book plus the worker's wake-up.
#[derive(Debug, Default)]
pub struct Images {
    book: Mutex<ImageBook>,
    notify: Notify,
}

impl Images {
    /// True while a pull an app asked for is pending or running.
    pub fn pulls_pending(&self) -> bool {
        self.lock().view().values().any(|v| v.pulling)
    }

    /// True while a finished pull waits for a pass to record it (and create what waited).
    pub fn pulls_unrecorded(&self) -> bool {
        self.lock().finished.iter().any(|o| o.job == ImageJob::Pull)
    }

    /// True while a pull of `image` an app asked for is pending or running.
    pub fn pulling(&self, image: &str) -> bool {
        self.lock()
            .entries
            .get(image)
            .is_some_and(|e| e.wanted || e.running == Some(ImageJob::Pull))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, ImageBook> {
        self.book.lock().expect("image book lock")
    }

    /// Asks the worker for a pull of `image` (for `app`); true when newly asked.
    pub fn request_pull(&self, image: &str, app: &str) -> bool {
        let new = self.lock().request_pull(image, app);
        if new {
            self.notify.notify_one();
        }
        new
    }

    /// Publishes the pass's wanted set and wakes the worker when it has new work.
    pub fn sync(&self, desired: &Desired) {
        let due = {
            let mut book = self.lock();
            book.sync(desired);
            book.next_due()
        };
        if due.is_some_and(|at| at <= now_ms()) {
            self.notify.notify_one();
        }
    }
}

/// An app's create found `image` missing: ask the worker for a pull (once; it runs
/// outside the pass) and record an `image-pulling` event when newly asked.
pub(super) async fn ask_for_pull<R: ContainerRuntime>(
    ctl: &Controller<R>,
    app: &str,
    image: &str,
    revision: &str,
) {
    if ctl.images.request_pull(image, app) {
        ctl.event(
            Some(app),
            EventType::ImagePulling,
            format!(
                "image {image} is not on this host: pulling it from {}",
                registry_of(image)
            ),
            revision,
            serde_json::json!({ "image": image }),
        )
        .await;
    }
}

/// The pass's part, before it plans: publish the wanted images, then record what the
/// worker finished since the last pass: events per app, and for a failed pull an app asked
/// for, the app's retry backoff (in the loop's state and in this pass's `observed`, so this
/// very pass holds the app instead of asking again). Refreshes `observed.images`.
/// Answers the apps whose asked-for pull failed, with the error (the pass counts them as
/// failed steps after its own retry bookkeeping).
pub(super) async fn record_outcomes<R: ContainerRuntime>(
    ctl: &Controller<R>,
    desired: &Desired,
    observed: &mut Observed,
    revision: &str,
) -> BTreeMap<String, StepError> {
    let mut failed = BTreeMap::new();
    ctl.images.sync(desired);
    let finished = ctl.images.lock().take_finished();
    let now = now_ms();
    for outcome in finished {
        let image = &outcome.image;
        let registry = registry_of(image);
        for app in outcome
            .apps
            .iter()
            .filter(|a| desired.apps.contains_key(*a))
        {
            match &outcome.result {
                Ok(done) => {
                    ctl.clear_reported(app, EventType::ImagePullFailed);
                    if !done.pulled {
                        continue;
                    }
                    let why = match outcome.job {
                        ImageJob::Pull => "it was not on this host",
                        ImageJob::Check => "the registry's digest of the tag moved",
                    };
                    ctl.event(
                        Some(app),
                        EventType::ImagePulled,
                        format!(
                            "pulled image {image} from {registry} in {} ms, {} layers, {} bytes ({why}): {}",
                            done.millis,
                            done.layers,
                            done.bytes,
                            done.digest.as_deref().unwrap_or(&done.id)
                        ),
                        revision,
                        serde_json::json!({
                            "image": image,
                            "registry": registry,
                            "id": done.id,
                            "digest": done.digest,
                            "ms": done.millis,
                            "layers": done.layers,
                            "bytes": done.bytes,
                        }),
                    )
                    .await;
                }
                Err(error) => {
                    let message = error.to_string();
                    ctl.event_once(app, EventType::ImagePullFailed, message.clone(), revision)
                        .await;
                    if outcome.job == ImageJob::Pull {
                        let hash = &desired.apps[app].hash;
                        let mut retry = ctl.retry.lock().expect("retry lock");
                        let next = after_failure(retry.get(app), hash, &message, now);
                        tracing::warn!(
                            app = %app,
                            failures = next.failures,
                            retry_in_ms = next.retry_at - now,
                            "image pull failed; backing off: {message}"
                        );
                        retry.insert(app.clone(), next.clone());
                        observed.retry.insert(app.clone(), next);
                        failed.insert(app.clone(), error.clone());
                    }
                }
            }
        }
    }
    observed.images = ctl.images.lock().view();
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::DesiredApp;
    use crate::spec::{model::test_worker, SourceRef};

    fn desired(apps: &[(&str, &str, ImagePullPolicy)]) -> Desired {
        let mut d = Desired::default();
        for (name, image, policy) in apps {
            let mut spec = test_worker(name, image);
            spec.image_pull_policy = *policy;
            let source = SourceRef {
                file: "a.yaml".into(),
                line: 1,
            };
            d.apps
                .insert(name.to_string(), DesiredApp::new(spec, source));
        }
        d
    }

    fn done(
        book: &mut ImageBook,
        image: &str,
        job: ImageJob,
        result: Result<&str, &str>,
        now: i64,
    ) {
        book.finish(
            ImageOutcome {
                image: image.into(),
                job,
                apps: BTreeSet::new(),
                result: result
                    .map(|id| ImageDone {
                        id: id.into(),
                        digest: None,
                        pulled: true,
                        layers: 1,
                        bytes: 1,
                        millis: 1,
                    })
                    .map_err(|image| {
                        StepError::from(crate::runtime::RuntimeError::ImageMissing {
                            image: image.to_string(),
                        })
                    }),
            },
            now,
            Duration::from_secs(300),
        );
    }

    #[test]
    fn always_images_are_checked_at_once_then_every_poll() {
        let mut book = ImageBook::default();
        book.sync(&desired(&[
            ("a", "r:5000/a:1", ImagePullPolicy::Always),
            ("b", "r:5000/b:1", ImagePullPolicy::IfNotPresent),
            ("c", "c:1", ImagePullPolicy::Never),
        ]));
        assert_eq!(book.next_due(), Some(0));
        let jobs = book.start_due(1_000);
        assert_eq!(jobs.len(), 1, "only the Always image is checked: {jobs:?}");
        assert_eq!(
            (jobs[0].0.as_str(), jobs[0].1),
            ("r:5000/a:1", ImageJob::Check)
        );
        assert!(
            book.start_due(1_000).is_empty(),
            "a running job is not started twice"
        );
        done(
            &mut book,
            "r:5000/a:1",
            ImageJob::Check,
            Ok("sha256:1"),
            2_000,
        );
        assert_eq!(book.next_due(), Some(302_000));
        assert!(book.start_due(301_999).is_empty());
        assert_eq!(book.start_due(302_000).len(), 1);
        let view = book.view();
        assert_eq!(view["r:5000/a:1"].id.as_deref(), Some("sha256:1"));
        assert!(!view.contains_key("c:1"), "Never images are not tracked");
        assert_eq!(book.take_finished().len(), 1);
        assert!(book.take_finished().is_empty());
    }

    #[test]
    fn a_requested_pull_is_pending_until_it_ends_and_failures_back_off() {
        let mut book = ImageBook::default();
        book.sync(&desired(&[("b", "r/b:1", ImagePullPolicy::IfNotPresent)]));
        assert!(
            book.start_due(0).is_empty(),
            "IfNotPresent pulls only on request"
        );
        assert!(book.request_pull("r/b:1", "b"));
        assert!(!book.request_pull("r/b:1", "b"), "asked once");
        assert!(book.view()["r/b:1"].pulling);
        let jobs = book.start_due(0);
        assert_eq!(jobs[0].1, ImageJob::Pull);
        assert!(!book.request_pull("r/b:1", "b"), "running");
        assert!(book.view()["r/b:1"].pulling);
        done(
            &mut book,
            "r/b:1",
            ImageJob::Pull,
            Err("unauthorized"),
            10_000,
        );
        assert!(!book.view()["r/b:1"].pulling);
        assert_eq!(
            book.view()["r/b:1"].id,
            None,
            "ids are tracked for Always images only"
        );
        // Checks of a failing Always image back off from 2 s.
        book.sync(&desired(&[("b", "r/b:1", ImagePullPolicy::Always)]));
        book.start_due(10_000);
        // (the failed pull was the first failure in a row)
        done(&mut book, "r/b:1", ImageJob::Check, Err("down"), 10_000);
        assert_eq!(book.next_due(), Some(14_000));
        book.start_due(14_000);
        done(&mut book, "r/b:1", ImageJob::Check, Err("down"), 14_000);
        assert_eq!(book.next_due(), Some(22_000));
        book.start_due(22_000);
        done(&mut book, "r/b:1", ImageJob::Check, Ok("sha256:2"), 22_000);
        assert_eq!(
            book.next_due(),
            Some(322_000),
            "a success resets the backoff"
        );
        // The app leaves: its image is forgotten.
        book.sync(&Desired::default());
        assert!(book.view().is_empty());
    }
}
