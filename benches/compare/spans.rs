//! Wall-clock times of berth's own tracing spans, read in this process: a tracing layer
//! that keeps, for every closed `reconcile_pass`, `app_steps` and `step` span, its app,
//! its step kind and when it opened and closed. The sections use it for the moment berth
//! decided something (a `create` step ends when its replicas passed the health gate and
//! join the members; a `remove` step starts by taking its replicas out) and to see where
//! a pass spends its time. Every other span and event is disabled (no formatting cost).

use std::sync::Mutex;
use std::time::SystemTime;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The spans kept, by name.
const KEPT: [&str; 3] = ["reconcile_pass", "app_steps", "step"];

/// One closed span.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: &'static str,
    /// Its `app` field ("" for a pass).
    pub app: String,
    /// Its `step` field (create, remove, replace, ...; "" for the others).
    pub step: String,
    pub opened: SystemTime,
    pub closed: SystemTime,
}

impl Span {
    /// Open to close, in ms.
    pub fn ms(&self) -> f64 {
        since_ms(self.opened, self.closed)
    }
}

/// `later - earlier` in ms (negative when `later` is earlier).
pub fn since_ms(earlier: SystemTime, later: SystemTime) -> f64 {
    match later.duration_since(earlier) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

static CLOSED: Mutex<Vec<Span>> = Mutex::new(Vec::new());

/// Installs the layer as the process's subscriber (once; later calls do nothing).
pub fn install() {
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Times));
}

/// The spans closed since the last call (and forgets them).
pub fn take() -> Vec<Span> {
    std::mem::take(&mut *CLOSED.lock().expect("spans lock"))
}

#[derive(Default)]
struct Fields {
    app: String,
    step: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "app" => self.app = value.to_string(),
            "step" => self.step = value.to_string(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, format!("{value:?}").trim_matches('"'));
    }
}

/// Kept in the span's extensions from its creation to its close.
struct Opened {
    fields: Fields,
    at: SystemTime,
}

struct Times;

fn kept(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && KEPT.contains(&metadata.name())
}

impl<S> Layer<S> for Times
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if kept(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        kept(metadata)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let at = SystemTime::now();
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened { fields, at });
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let closed = SystemTime::now();
        let Some(span) = ctx.span(&id) else {
            return;
        };
        let name = span.metadata().name();
        let Some(opened) = span.extensions_mut().remove::<Opened>() else {
            return;
        };
        CLOSED.lock().expect("spans lock").push(Span {
            name,
            app: opened.fields.app,
            step: opened.fields.step,
            opened: opened.at,
            closed,
        });
    }
}
