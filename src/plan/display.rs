//! Plan display (pure): terraform-style text (`+` create, `-/+` replace, `-` remove,
//! `~` proxy change, `=` no-op with its reason) and unified diffs of proxy files.

use super::{CreateReason, Plan, RemoveReason, ReplaceReason, Step};
use crate::spec::Strategy;
use similar::TextDiff;
use std::fmt::Write;

/// Unified diff of one proxy file; empty when the texts are equal.
pub fn unified_diff(file: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(2)
        .header(&format!("a/{file}"), &format!("b/{file}"))
        .to_string()
}

/// One line per step (plus indented diffs), then a summary line.
pub fn render_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "revision {}", plan.revision);
    let mut counts = [0usize; 4];
    for step in &plan.steps {
        match step {
            Step::Create {
                app,
                hash,
                image,
                reason,
            } => {
                counts[0] += 1;
                let why = match reason {
                    CreateReason::BelowReplicas => "below replica count",
                    CreateReason::ReplacesStopped => "replaces a stopped container",
                };
                let _ = writeln!(
                    out,
                    "  + {app}: create container (image {image}, spec {hash}): {why}"
                );
            }
            Step::Replace {
                app,
                old_name,
                old_hash,
                hash,
                image,
                reason,
                order,
                of,
                strategy,
                ..
            } => {
                counts[1] += 1;
                let why = match reason {
                    ReplaceReason::Outdated => format!("spec {old_hash} -> {hash}"),
                    ReplaceReason::Unhealthy => "unhealthy".to_string(),
                    ReplaceReason::ImageChanged => "image digest changed".to_string(),
                };
                let how = match strategy {
                    Strategy::Rolling => "",
                    Strategy::Recreate => ", recreate: stop old first",
                };
                let _ = writeln!(
                    out,
                    "-/+ {app}: replace {old_name} ({order}/{of}, image {image}{how}): {why}"
                );
            }
            Step::Remove {
                app, name, reason, ..
            } => {
                counts[2] += 1;
                let why = match reason {
                    RemoveReason::ScaleIn => "scale in",
                    RemoveReason::AppRemoved => "app removed from source",
                    RemoveReason::Outdated => "old generation",
                    RemoveReason::NotRunning => "not running",
                };
                let _ = writeln!(out, "  - {app}: remove {name}: {why}");
            }
            Step::WriteProxy {
                app, file, diff, ..
            } => {
                counts[3] += 1;
                let _ = writeln!(out, "  ~ {app}: proxy {file}");
                write_indented(&mut out, diff);
            }
            Step::RemoveProxy { app, file, diff } => {
                counts[3] += 1;
                let _ = writeln!(out, "  - {app}: proxy {file} (delete)");
                write_indented(&mut out, diff);
            }
            Step::NoOp { app, reason } => {
                let _ = writeln!(out, "  = {app}: {reason}");
            }
            Step::CreateService {
                app,
                service,
                hash,
                image,
                replicas,
            } => {
                counts[0] += 1;
                let _ = writeln!(
                    out,
                    "  + {app}: create service {service} (image {image}, {replicas} replicas, spec {hash})"
                );
            }
            Step::UpdateService {
                app,
                service,
                old_hash,
                hash,
                changes,
                ..
            } => {
                counts[1] += 1;
                let spec = if old_hash == hash {
                    String::new()
                } else {
                    format!(" (spec {old_hash} -> {hash})")
                };
                let _ = writeln!(
                    out,
                    "  ~ {app}: update service {service}: {}{spec}",
                    changes.join(", ")
                );
            }
            Step::RemoveService { app, service, .. } => {
                counts[2] += 1;
                let _ = writeln!(
                    out,
                    "  - {app}: remove service {service}: app removed from source"
                );
            }
        }
    }
    if plan.has_changes() {
        let _ = writeln!(
            out,
            "plan: {} to create, {} to replace, {} to remove, {} proxy changes",
            counts[0], counts[1], counts[2], counts[3]
        );
    } else {
        let _ = writeln!(out, "no changes: {} apps in sync", plan.apps.len());
    }
    out
}

fn write_indented(out: &mut String, text: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "      {line}");
    }
}

pub fn render_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("a plan always serializes")
}
