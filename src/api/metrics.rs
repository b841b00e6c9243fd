//! `/metrics`: renders the Prometheus text exposition format (0.0.4) from the loop's
//! counters, the app list and the store's replica overrides. Pure: callers hand in what
//! they read. Names follow Prometheus conventions: `berth_` prefix, counters end in
//! `_total`, durations are `_seconds`, every family has HELP and TYPE. Must not touch:
//! the store, the runtime, the proxy.

use super::dto::AppSummary;
use crate::metrics::{MetricsSnapshot, PASS_DURATION_BUCKETS, REQUEST_DURATION_BUCKETS};
use crate::store::{AppStatus, ReplicaOverrideRow};
use std::fmt::Write;

/// What one scrape shows besides the counters.
#[derive(Debug, Clone, Copy)]
pub struct Scrape<'a> {
    pub counters: &'a MetricsSnapshot,
    pub apps: &'a [AppSummary],
    pub overrides: &'a [ReplicaOverrideRow],
    /// Revision and time (unix ms) of the last pass, and its spec issue count.
    pub revision: Option<&'a str>,
    pub last_pass_at: Option<i64>,
    pub spec_issues: Option<usize>,
    /// Whether the store answered this scrape (the app gauges then come from it).
    pub store_up: bool,
    pub version: &'a str,
}

/// Names of every metric family this renders (documented in README.md).
pub const FAMILIES: [&str; 27] = [
    "berth_build_info",
    "berth_store_up",
    "berth_reconcile_passes_total",
    "berth_reconcile_errors_total",
    "berth_reconcile_pass_duration_seconds",
    "berth_reconcile_last_pass_timestamp_seconds",
    "berth_reconcile_steps_applied_total",
    "berth_reconcile_steps_failed_total",
    "berth_apps",
    "berth_app_replicas_desired",
    "berth_app_replicas_ready",
    "berth_nginx_reloads_total",
    "berth_nginx_reload_failures_total",
    "berth_nginx_member_pushes_total",
    "berth_app_requests_total",
    "berth_app_request_duration_seconds",
    "berth_source_revision_info",
    "berth_source_errors_total",
    "berth_spec_issues",
    "berth_events_total",
    "berth_autoscaler_decisions_total",
    "berth_autoscaler_override_replicas",
    "berth_app_last_reconcile_timestamp_seconds",
    "berth_image_pulls_total",
    "berth_image_checks_total",
    "berth_leader",
    "berth_leader_changes_total",
];

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{key}=\"{}\"", escape_label(val));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// Label values escape backslash, double quote and newline.
fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn seconds(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

/// The full exposition text.
pub fn render(scrape: &Scrape<'_>) -> String {
    let c = scrape.counters;
    let mut out = Out(String::with_capacity(4096 + scrape.apps.len() * 256));

    out.family(
        "berth_build_info",
        "gauge",
        "Always 1; the version label says which berth runs.",
    );
    out.sample("berth_build_info", &[("version", scrape.version)], 1);
    out.family(
        "berth_store_up",
        "gauge",
        "1 when the store answered this scrape, 0 when it could not be read.",
    );
    out.sample("berth_store_up", &[], u8::from(scrape.store_up));

    out.family(
        "berth_reconcile_passes_total",
        "counter",
        "Reconcile passes finished since berth started, successful or not.",
    );
    out.sample("berth_reconcile_passes_total", &[], c.passes);
    out.family(
        "berth_reconcile_errors_total",
        "counter",
        "Reconcile passes that ended in an error (source, runtime, proxy or store).",
    );
    out.sample("berth_reconcile_errors_total", &[], c.pass_errors);
    out.family(
        "berth_reconcile_pass_duration_seconds",
        "histogram",
        "Wall time of a reconcile pass, including the rollouts it ran.",
    );
    for (bound, count) in PASS_DURATION_BUCKETS.iter().zip(&c.pass_buckets) {
        out.sample(
            "berth_reconcile_pass_duration_seconds_bucket",
            &[("le", &bound.to_string())],
            count,
        );
    }
    let total = c.pass_buckets.last().copied().unwrap_or(0);
    out.sample(
        "berth_reconcile_pass_duration_seconds_bucket",
        &[("le", "+Inf")],
        total,
    );
    out.sample(
        "berth_reconcile_pass_duration_seconds_sum",
        &[],
        c.pass_seconds_sum,
    );
    out.sample("berth_reconcile_pass_duration_seconds_count", &[], total);
    out.family(
        "berth_reconcile_last_pass_timestamp_seconds",
        "gauge",
        "Unix time the last reconcile pass planned at (0 before the first pass).",
    );
    out.sample(
        "berth_reconcile_last_pass_timestamp_seconds",
        &[],
        seconds(scrape.last_pass_at.unwrap_or(0)),
    );
    out.family(
        "berth_reconcile_steps_applied_total",
        "counter",
        "Plan steps carried out, by kind.",
    );
    for (kind, n) in &c.steps_applied {
        out.sample("berth_reconcile_steps_applied_total", &[("kind", kind)], n);
    }
    out.family(
        "berth_reconcile_steps_failed_total",
        "counter",
        "Plan steps that failed, by kind.",
    );
    for (kind, n) in &c.steps_failed {
        out.sample("berth_reconcile_steps_failed_total", &[("kind", kind)], n);
    }

    out.family("berth_apps", "gauge", "Apps by reconcile status.");
    for status in AppStatus::ALL {
        let n = scrape
            .apps
            .iter()
            .filter(|a| a.status == status.as_str())
            .count();
        out.sample("berth_apps", &[("status", status.as_str())], n);
    }
    out.family(
        "berth_app_replicas_desired",
        "gauge",
        "Effective replica count of an app at the last pass.",
    );
    for app in scrape.apps {
        if let Some(n) = app.desired_replicas {
            out.sample("berth_app_replicas_desired", &[("app", &app.name)], n);
        }
    }
    out.family(
        "berth_app_replicas_ready",
        "gauge",
        "Healthy containers of an app's desired spec at the last pass.",
    );
    for app in scrape.apps {
        if let Some(n) = app.ready_replicas {
            out.sample("berth_app_replicas_ready", &[("app", &app.name)], n);
        }
    }
    out.family(
        "berth_app_last_reconcile_timestamp_seconds",
        "gauge",
        "Unix time of the last pass that reconciled an app.",
    );
    for app in scrape.apps {
        if let Some(at) = app.last_reconciled_at {
            out.sample(
                "berth_app_last_reconcile_timestamp_seconds",
                &[("app", &app.name)],
                seconds(at),
            );
        }
    }

    out.family(
        "berth_nginx_reloads_total",
        "counter",
        "nginx reloads berth made (only when a file's text changed and nginx -t passed).",
    );
    out.sample("berth_nginx_reloads_total", &[], c.nginx_reloads);
    out.family(
        "berth_nginx_reload_failures_total",
        "counter",
        "nginx config batches rejected (nginx -t or reload failed; previous files restored).",
    );
    out.sample(
        "berth_nginx_reload_failures_total",
        &[],
        c.nginx_reload_failures,
    );
    out.family(
        "berth_app_requests_total",
        "counter",
        "Requests nginx answered per app and status code (its access log, since berth started).",
    );
    for (app, requests) in &c.requests.apps {
        for (code, n) in &requests.codes {
            out.sample(
                "berth_app_requests_total",
                &[("app", app), ("code", &code.to_string())],
                n,
            );
        }
    }
    out.family(
        "berth_app_request_duration_seconds",
        "histogram",
        "Time nginx took per request of an app, first client byte to last byte sent ($request_time).",
    );
    for (app, requests) in &c.requests.apps {
        let mut cumulative = 0;
        for (i, bound) in REQUEST_DURATION_BUCKETS.iter().enumerate() {
            cumulative += requests.buckets.get(i).copied().unwrap_or(0);
            out.sample(
                "berth_app_request_duration_seconds_bucket",
                &[("app", app), ("le", &bound.to_string())],
                cumulative,
            );
        }
        let total: u64 = requests.buckets.iter().sum();
        out.sample(
            "berth_app_request_duration_seconds_bucket",
            &[("app", app), ("le", "+Inf")],
            total,
        );
        out.sample(
            "berth_app_request_duration_seconds_sum",
            &[("app", app)],
            requests.seconds_sum,
        );
        out.sample(
            "berth_app_request_duration_seconds_count",
            &[("app", app)],
            total,
        );
    }
    out.family(
        "berth_nginx_member_pushes_total",
        "counter",
        "Upstream member lists handed to nginx's Lua balancer and confirmed (dynamic upstreams: no reload).",
    );
    out.sample(
        "berth_nginx_member_pushes_total",
        &[],
        c.nginx_member_pushes,
    );

    out.family(
        "berth_source_revision_info",
        "gauge",
        "Always 1; the revision label is the source revision of the last pass.",
    );
    if let Some(revision) = scrape.revision {
        out.sample("berth_source_revision_info", &[("revision", revision)], 1);
    }
    out.family(
        "berth_source_errors_total",
        "counter",
        "Times the source (spec directory or git) could not be read or polled.",
    );
    out.sample("berth_source_errors_total", &[], c.source_errors);
    out.family(
        "berth_spec_issues",
        "gauge",
        "Spec problems (parse or validation) found by the last pass.",
    );
    out.sample("berth_spec_issues", &[], scrape.spec_issues.unwrap_or(0));

    out.family(
        "berth_events_total",
        "counter",
        "Events recorded since berth started, by type.",
    );
    for (event_type, n) in &c.events {
        out.sample("berth_events_total", &[("type", event_type)], n);
    }
    out.family(
        "berth_autoscaler_decisions_total",
        "counter",
        "Autoscaler decisions since berth started, by app and direction (out, in, hold).",
    );
    for ((app, direction), n) in &c.scaling_decisions {
        out.sample(
            "berth_autoscaler_decisions_total",
            &[("app", app), ("direction", direction)],
            n,
        );
    }
    out.family(
        "berth_autoscaler_override_replicas",
        "gauge",
        "Replica count the autoscaler (or an operator) set for an app, before clamping.",
    );
    for row in scrape.overrides {
        out.sample(
            "berth_autoscaler_override_replicas",
            &[("app", &row.app)],
            row.replicas,
        );
    }
    out.family(
        "berth_image_pulls_total",
        "counter",
        "Image pulls from registries since berth started, by result (success, failure).",
    );
    for result in crate::metrics::PULL_RESULTS {
        let n = c.image_pulls.get(result).copied().unwrap_or(0);
        out.sample("berth_image_pulls_total", &[("result", result)], n);
    }
    out.family(
        "berth_image_checks_total",
        "counter",
        "Registry digest checks of imagePullPolicy Always images, by result (unchanged, changed, failure).",
    );
    for result in crate::metrics::CHECK_RESULTS {
        let n = c.image_checks.get(result).copied().unwrap_or(0);
        out.sample("berth_image_checks_total", &[("result", result)], n);
    }
    out.family(
        "berth_leader",
        "gauge",
        "1 while this controller (id) is the leader and may act; always 1 with a SQLite store.",
    );
    out.sample(
        "berth_leader",
        &[("id", c.leader_id.as_str())],
        u8::from(c.is_leader),
    );
    out.family(
        "berth_leader_changes_total",
        "counter",
        "Times this controller became the leader (took the lease with a new epoch).",
    );
    out.sample("berth_leader_changes_total", &[], c.leader_changes);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_declared_once_and_labels_escape() {
        let counters = MetricsSnapshot {
            pass_buckets: vec![0; PASS_DURATION_BUCKETS.len() + 1],
            ..Default::default()
        };
        let text = render(&Scrape {
            counters: &counters,
            apps: &[],
            overrides: &[],
            revision: Some("a\"b\\c\nd"),
            last_pass_at: None,
            spec_issues: None,
            store_up: true,
            version: "0.1.0",
        });
        for family in FAMILIES {
            assert_eq!(
                text.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family}\n{text}"
            );
        }
        assert_eq!(text.matches("# TYPE ").count(), FAMILIES.len());
        assert!(text.contains(r#"berth_source_revision_info{revision="a\"b\\c\nd"} 1"#));
        assert!(text.contains(r#"berth_reconcile_pass_duration_seconds_bucket{le="+Inf"} 0"#));
        assert!(text.contains(r#"berth_reconcile_pass_duration_seconds_bucket{le="0.005"} 0"#));
    }
}
