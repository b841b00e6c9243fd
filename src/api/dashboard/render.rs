//! The dashboard's HTML: tera templates (embedded with `include_str!`, autoescaped) filled
//! from contexts built here out of the same DTOs the JSON API serves, redacted as a whole
//! (`redact_json`) before rendering. Pure: store rows, the last pass and `now_ms` in,
//! HTML out.

use super::chart;
use crate::api::dto::{self, AppDetail};
use crate::api::redact;
use crate::last_pass::LastPass;
use crate::plan::{display, Plan};
use crate::store::{AppRow, EventRow, ScalingDecisionRow};
use serde_json::{json, Value};
use std::sync::OnceLock;

fn tera() -> &'static tera::Tera {
    static TERA: OnceLock<tera::Tera> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut tera = tera::Tera::default();
        tera.add_raw_templates(vec![
            ("shell.html", include_str!("templates/shell.html")),
            ("overview.html", include_str!("templates/overview.html")),
            ("app.html", include_str!("templates/app.html")),
        ])
        .expect("the dashboard templates parse (tests render each)");
        tera.autoescape_on(vec![".html"]);
        tera
    })
}

/// Renders `template` with `context` (an object), redacted first.
pub fn render(template: &str, mut context: Value) -> Result<String, tera::Error> {
    redact::redact_json(&mut context);
    let context = tera::Context::from_value(context)?;
    tera().render(template, &context)
}

/// The page every dashboard URL starts from: no data, only the login form and the scripts.
pub fn shell() -> String {
    render(
        "shell.html",
        json!({ "version": env!("CARGO_PKG_VERSION") }),
    )
    .expect("the shell renders")
}

/// `(css class, symbol)` of an app status: the symbol and the text carry the meaning, the
/// colour only repeats it.
fn status_look(status: &str) -> (&'static str, &'static str) {
    match status {
        "synced" => ("ok", "✓"),
        "progressing" => ("busy", "…"),
        "degraded" => ("warn", "!"),
        "quarantined" | "failed-rollout" | "crash-looping" => ("bad", "✗"),
        _ => ("other", "?"),
    }
}

fn short(revision: &str) -> String {
    revision.chars().take(12).collect()
}

/// The source's URL when it is git (for commit links).
fn git_url(last: Option<&LastPass>) -> Option<String> {
    last.filter(|l| l.source.kind == "git")
        .map(|l| l.source.location.clone())
}

fn revision_value(revision: Option<&str>, git: Option<&str>) -> Value {
    match revision {
        None => Value::Null,
        Some(r) => json!({
            "short": short(r),
            "full": r,
            "link": git.and_then(|url| chart::commit_link(url, r)),
        }),
    }
}

/// The overview: every app, the source, file-level spec issues.
pub fn overview(rows: &[AppRow], last: Option<&LastPass>, now_ms: i64) -> Value {
    let list = dto::app_list(rows, last);
    let git = git_url(last);
    let apps: Vec<Value> = list
        .apps
        .iter()
        .map(|a| {
            let (class, symbol) = status_look(&a.status);
            let reason = matches!(
                a.status.as_str(),
                "quarantined" | "failed-rollout" | "crash-looping" | "degraded"
            )
            .then(|| a.last_error.clone())
            .flatten();
            json!({
                "name": a.name,
                "href": crate::api::client::encode(&a.name),
                "status": a.status,
                "class": class,
                "symbol": symbol,
                "ready": a.ready_replicas,
                "desired": a.desired_replicas,
                "replicas_from": a.replica_source,
                "revision": revision_value(a.revision.as_deref(), git.as_deref()),
                "reconciled": a.last_reconciled_at.map(|at| chart::ago(at, now_ms)),
                "reason": reason,
                "file": a.source_file,
                "in_source": a.in_source,
            })
        })
        .collect();
    let source = last.map(|l| {
        json!({
            "kind": l.source.kind,
            "location": redacted_location(&l.source.location),
            "revision": revision_value(l.source.revision.as_deref(), git.as_deref()),
            "synced": l.source.synced_at.map(|at| chart::ago(at, now_ms)),
            "degraded": l.source.degraded,
            "failures": l.source.failures,
        })
    });
    let bad = apps.iter().filter(|a| a["class"] == "bad").count();
    json!({
        "apps": apps,
        "bad": bad,
        "source": source,
        "issues": list.issues,
        "revision": list.revision.as_deref().map(short),
        "last_pass": list.last_pass_at.map(|at| chart::ago(at, now_ms)),
    })
}

/// A git URL without `user:password@`.
fn redacted_location(location: &str) -> String {
    match location.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((_, host))
                if !rest[..rest.find('/').unwrap_or(rest.len())].is_empty()
                    && rest.find('@') < rest.find('/') =>
            {
                format!("{scheme}://{host}")
            }
            _ => location.to_string(),
        },
        None => location.to_string(),
    }
}

/// What the app page shows beyond the detail.
pub struct AppExtras {
    pub events: Vec<EventRow>,
    pub decisions: Vec<ScalingDecisionRow>,
    /// The newest log lines, already prefixed and redacted; `Err` says why there are none.
    pub logs: Result<Vec<String>, String>,
}

/// One app's page.
pub fn app(detail: &AppDetail, extras: &AppExtras, last: Option<&LastPass>, now_ms: i64) -> Value {
    let git = git_url(last);
    let s = &detail.summary;
    let (class, symbol) = status_look(&s.status);
    let containers: Vec<Value> = detail
        .containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "state": c.state,
                "health": c.health,
                "address": c.address,
                "current": c.current,
                "started": chart::ago(c.started_at, now_ms),
                "probe_error": c.last_probe_error,
            })
        })
        .collect();
    let plan = (!detail.planned_steps.is_empty()).then(|| {
        let text = display::render_text(&Plan {
            revision: s.revision.clone().unwrap_or_default(),
            steps: detail.planned_steps.clone(),
            apps: Default::default(),
        });
        // Drop the revision header and the whole-plan summary line.
        let lines: Vec<&str> = text.lines().collect();
        lines[1..lines.len().saturating_sub(1)].join("\n")
    });
    let events: Vec<Value> = extras
        .events
        .iter()
        .map(|e| {
            json!({
                "at": chart::ago(e.at, now_ms),
                "type": e.event_type,
                "message": e.message,
            })
        })
        .collect();
    json!({
        "name": s.name,
        "status": s.status,
        "class": class,
        "symbol": symbol,
        "ready": s.ready_replicas,
        "desired": s.desired_replicas,
        "replicas_from": detail.replicas.source,
        "revision": revision_value(s.revision.as_deref(), git.as_deref()),
        "reconciled": s.last_reconciled_at.map(|at| chart::ago(at, now_ms)),
        "error": s.last_error,
        "held": detail.held_reason,
        "file": s.source_file,
        "containers": containers,
        "plan": plan,
        "events": events,
        "chart": chart::svg(&extras.decisions, detail.replicas.effective, now_ms),
        "decisions": extras.decisions.iter().filter(|d| d.at >= now_ms - chart::WINDOW_MS).count(),
        "logs": extras.logs.as_ref().ok(),
        "logs_error": extras.logs.as_ref().err(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_renders_and_escapes() {
        assert!(shell().contains("<form"));
        let html = render("overview.html", overview(&[], None, 0)).unwrap();
        assert!(html.contains("No apps"), "{html}");
        let mut ctx = json!({
            "name": "<b>x</b>", "status": "synced", "class": "ok", "symbol": "✓",
            "containers": [], "events": [{"at": "1 s ago", "type": "created", "message": "DB_PASSWORD=hunter2 <i>"}],
            "chart": "<svg></svg>", "decisions": 0, "logs": ["a | TOKEN=abc"], "revision": null,
            "ready": 1, "desired": null, "replicas_from": "spec", "reconciled": null, "error": null,
            "held": null, "file": "x.yaml", "logs_error": null,
        });
        ctx["plan"] = Value::Null;
        let html = render("app.html", ctx).unwrap();
        assert!(html.contains("&lt;b&gt;x&lt;&#x2F;b&gt;"), "{html}");
        assert!(
            !html.contains("hunter2") && !html.contains("TOKEN=abc"),
            "{html}"
        );
        assert!(
            html.contains("<svg></svg>"),
            "the server's chart is not escaped"
        );
    }

    #[test]
    fn locations_lose_credentials() {
        assert_eq!(
            redacted_location("https://bot:t0k@github.com/a/b.git"),
            "https://github.com/a/b.git"
        );
        assert_eq!(redacted_location("/srv/git/x"), "/srv/git/x");
        assert_eq!(
            redacted_location("https://github.com/a/b@c"),
            "https://github.com/a/b@c"
        );
    }
}
