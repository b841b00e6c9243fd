//! What the plan reads about registry images (pure): the image worker's view of each image
//! (`ImageView`, in `Observed::images`), the hold of an app whose pull is pending, and the
//! containers of a followed tag (`imagePullPolicy: Always`) that run an older image.
//! Must not touch: anything but its arguments (no I/O, no clock).

use super::{DesiredApp, Observed};
use crate::runtime::ObservedContainer;
use crate::spec::ImagePullPolicy;
use serde::Serialize;

/// What the image worker knows about one image reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImageView {
    /// The local image ID the tag points to, as of the last registry check
    /// (`imagePullPolicy: Always` images only): containers from another ID run an old
    /// digest of the tag and are rolled out ("image digest changed").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A pull an app asked for is pending or running: the app's steps wait for it.
    pub pulling: bool,
}

/// Why the app waits: a pull of its image is pending or running.
pub(super) fn pull_hold(app: &DesiredApp, observed: &Observed) -> Option<String> {
    let pulling = app.spec.image_pull_policy != ImagePullPolicy::Never
        && observed
            .images
            .get(&app.spec.image)
            .is_some_and(|v| v.pulling);
    pulling.then(|| {
        format!(
            "waiting for image {} to be pulled; what runs is kept",
            app.spec.image
        )
    })
}

/// A predicate: does this container of `app` run another image than the one its followed
/// tag points to now? Always false unless the app follows its tag and the worker resolved
/// the tag's ID; a container whose image ID is unknown is never outdated by it.
pub(super) fn old_image_of<'a>(
    app: &'a DesiredApp,
    observed: &'a Observed,
) -> impl Fn(&ObservedContainer) -> bool + 'a {
    let tag_id = observed
        .images
        .get(&app.spec.image)
        .filter(|_| app.spec.image_pull_policy == ImagePullPolicy::Always)
        .and_then(|v| v.id.as_deref());
    move |c: &ObservedContainer| tag_id.is_some_and(|id| !c.image_id.is_empty() && c.image_id != id)
}
