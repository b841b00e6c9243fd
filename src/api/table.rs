//! Text tables for `berth status`, from the API's JSON answers. Pure: time is a parameter.
//! Must not touch: the network (the client fetches), stdout (main prints).

use serde_json::Value;
use std::fmt::Write;

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`; `-` when unknown.
pub fn ago(at_ms: Option<i64>, now_ms: i64) -> String {
    let Some(at) = at_ms else {
        return "-".to_string();
    };
    let seconds = (now_ms - at).max(0) / 1000;
    match seconds {
        0..=59 => format!("{seconds}s ago"),
        60..=3599 => format!("{}m ago", seconds / 60),
        3600..=86399 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) if s.is_empty() => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(value: &str, max: usize) -> String {
    let one_line = value.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
fn columns(rows: &[Vec<String>]) -> String {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; width];
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn ready(app: &Value) -> String {
    match (
        app["ready_replicas"].as_u64(),
        app["desired_replicas"].as_u64(),
    ) {
        (Some(r), Some(d)) => format!("{r}/{d}"),
        _ => "-".to_string(),
    }
}

/// The app list (`GET /api/v1/apps`).
pub fn apps(list: &Value, now_ms: i64) -> String {
    let mut rows = vec![[
        "APP",
        "STATUS",
        "READY",
        "REPLICAS FROM",
        "REVISION",
        "RECONCILED",
        "SOURCE",
        "LAST ERROR",
    ]
    .map(String::from)
    .to_vec()];
    let empty = Vec::new();
    for app in list["apps"].as_array().unwrap_or(&empty) {
        rows.push(vec![
            text(&app["name"]),
            text(&app["status"]),
            ready(app),
            text(&app["replica_source"]),
            short(&text(&app["revision"]), 12),
            ago(app["last_reconciled_at"].as_i64(), now_ms),
            text(&app["source_file"]),
            short(&text(&app["last_error"]), 60),
        ]);
    }
    let mut out = columns(&rows);
    let count = rows.len() - 1;
    let _ = writeln!(
        out,
        "{count} apps; revision {}, last pass {}",
        text(&list["revision"]),
        ago(list["last_pass_at"].as_i64(), now_ms)
    );
    let issues = list["issues"].as_array().unwrap_or(&empty);
    if !issues.is_empty() {
        let _ = writeln!(
            out,
            "\n{} spec issues (berth validate explains):",
            issues.len()
        );
        for issue in issues {
            let field = match issue["field"].as_str() {
                Some(field) if !field.is_empty() => format!("{field}: "),
                _ => String::new(),
            };
            let owner = match issue["app"].as_str() {
                Some(app) => format!(" (app {app})"),
                None => " (no valid app in this file)".to_string(),
            };
            let _ = writeln!(
                out,
                "  {}:{}:{}: {field}{}{owner}",
                text(&issue["file"]),
                issue["line"].as_u64().unwrap_or(0),
                issue["column"].as_u64().unwrap_or(0),
                text(&issue["message"]),
            );
        }
    }
    out
}

/// One app (`GET /api/v1/apps/{name}`) with its recent events.
pub fn app(detail: &Value, events: &Value, now_ms: i64) -> String {
    let mut out = String::new();
    let replicas = &detail["replicas"];
    let mut from = text(&replicas["source"]);
    if let Some(requested) = replicas["detail"]["requested"].as_u64() {
        from.push_str(&format!(", override asked {requested}"));
    }
    if let (Some(min), Some(max)) = (replicas["min"].as_u64(), replicas["max"].as_u64()) {
        from.push_str(&format!(
            ", bounds {min}..{max} ({})",
            text(&replicas["mode"])
        ));
    }
    let mut facts = vec![
        vec!["app".to_string(), text(&detail["name"])],
        vec!["status".to_string(), text(&detail["status"])],
        vec![
            "replicas".to_string(),
            format!(
                "{} ready (effective {}, from {from})",
                ready(detail),
                text(&replicas["effective"])
            ),
        ],
        vec!["revision".to_string(), text(&detail["revision"])],
        vec![
            "spec".to_string(),
            format!(
                "{} in {}",
                text(&detail["spec_hash"]),
                text(&detail["source_file"])
            ),
        ],
        vec![
            "reconciled".to_string(),
            ago(detail["last_reconciled_at"].as_i64(), now_ms),
        ],
        vec!["last error".to_string(), text(&detail["last_error"])],
    ];
    if !detail["held_reason"].is_null() {
        facts.push(vec!["held".to_string(), text(&detail["held_reason"])]);
    }
    if !detail["failed_rollout"].is_null() {
        let failed = &detail["failed_rollout"];
        facts.push(vec![
            "failed rollout".to_string(),
            format!(
                "spec {} {}: {}",
                text(&failed["spec_hash"]),
                ago(failed["at"].as_i64(), now_ms),
                text(&failed["reason"])
            ),
        ]);
    }
    if !detail["last_good"].is_null() {
        let good = &detail["last_good"];
        facts.push(vec![
            "last good".to_string(),
            format!(
                "spec {} (revision {}, {})",
                text(&good["spec_hash"]),
                text(&good["revision"]),
                ago(good["at"].as_i64(), now_ms)
            ),
        ]);
    }
    out.push_str(&columns(&facts));

    let empty = Vec::new();
    out.push_str("\nCONTAINERS\n");
    let containers = detail["containers"].as_array().unwrap_or(&empty);
    if containers.is_empty() {
        out.push_str("(none)\n");
    } else {
        let mut rows = vec![[
            "ID", "NAME", "IMAGE", "STATE", "HEALTH", "ADDRESS", "STARTED", "SPEC",
        ]
        .map(String::from)
        .to_vec()];
        for c in containers {
            let spec = if c["current"].as_bool() == Some(true) {
                "current".to_string()
            } else {
                format!("old {}", short(&text(&c["spec_hash"]), 8))
            };
            rows.push(vec![
                text(&c["id"]).chars().take(12).collect(),
                text(&c["name"]),
                text(&c["image"]),
                text(&c["state"]),
                text(&c["health"]),
                text(&c["address"]),
                ago(c["started_at"].as_i64(), now_ms),
                spec,
            ]);
        }
        out.push_str(&columns(&rows));
    }

    if detail["service"].is_object() {
        let service = &detail["service"];
        let update = match text(&service["update_state"]).as_str() {
            "" | "-" => String::new(),
            state => format!(", update {state}"),
        };
        let _ = writeln!(
            out,
            "\nSWARM SERVICE {} ({} replicas{update})",
            text(&service["name"]),
            text(&service["replicas"])
        );
        let tasks = service["tasks"].as_array().unwrap_or(&empty);
        if tasks.is_empty() {
            out.push_str("(no tasks)\n");
        } else {
            let mut rows = vec![[
                "TASK", "SLOT", "NODE", "STATE", "HEALTH", "IMAGE", "ADDRESS", "ERROR",
            ]
            .map(String::from)
            .to_vec()];
            for t in tasks {
                let state = match (text(&t["state"]), text(&t["desired_state"])) {
                    (state, desired) if desired == state || desired == "-" => state,
                    (state, desired) => format!("{state} -> {desired}"),
                };
                rows.push(vec![
                    text(&t["id"]).chars().take(12).collect(),
                    text(&t["slot"]),
                    short(&text(&t["node"]), 12),
                    state,
                    text(&t["health"]),
                    text(&t["image"]),
                    text(&t["address"]),
                    text(&t["error"]),
                ]);
            }
            out.push_str(&columns(&rows));
        }
    }

    let planned: Vec<&Value> = detail["planned_steps"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .collect();
    if !planned.is_empty() {
        out.push_str("\nPLANNED AT THE LAST PASS\n");
        for step in planned {
            let mut line = text(&step["step"]);
            for key in ["reason", "name", "old_name", "file", "image"] {
                if !step[key].is_null() {
                    line.push_str(&format!(" {key}={}", text(&step[key])));
                }
            }
            let _ = writeln!(out, "{line}");
        }
    }

    out.push_str("\nRECENT EVENTS\n");
    let events = events["events"].as_array().unwrap_or(&empty);
    if events.is_empty() {
        out.push_str("(none)\n");
    } else {
        let rows: Vec<Vec<String>> = events
            .iter()
            .map(|e| {
                vec![
                    ago(e["at"].as_i64(), now_ms),
                    text(&e["event_type"]),
                    short(&text(&e["message"]), 100),
                ]
            })
            .collect();
        out.push_str(&columns(&rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ago_units() {
        let now = 1_000_000_000;
        assert_eq!(ago(None, now), "-");
        assert_eq!(ago(Some(now - 5_000), now), "5s ago");
        assert_eq!(ago(Some(now - 120_000), now), "2m ago");
        assert_eq!(ago(Some(now - 7_200_000), now), "2h ago");
        assert_eq!(ago(Some(now - 172_800_000), now), "2d ago");
        assert_eq!(ago(Some(now + 5_000), now), "0s ago");
    }

    #[test]
    fn spec_issues_follow_the_app_table() {
        let list = json!({
            "revision": "abc",
            "last_pass_at": 1_000,
            "apps": [],
            "issues": [
                {"file": "/specs/web.yaml", "line": 4, "column": 3, "field": "spec.replicas",
                 "message": "expected an integer", "app": "web"},
                {"file": "/specs/broken.yaml", "line": 1, "column": 1, "field": "",
                 "message": "the file cannot be read: fix its permissions", "app": null},
            ]
        });
        let out = apps(&list, 2_000);
        assert!(
            out.contains("2 spec issues (berth validate explains):"),
            "{out}"
        );
        assert!(
            out.contains("  /specs/web.yaml:4:3: spec.replicas: expected an integer (app web)\n"),
            "{out}"
        );
        assert!(
            out.contains(
                "  /specs/broken.yaml:1:1: the file cannot be read: fix its permissions (no valid app in this file)\n"
            ),
            "{out}"
        );
        let clean = apps(
            &json!({"revision": "abc", "last_pass_at": 1_000, "apps": [], "issues": []}),
            2_000,
        );
        assert!(!clean.contains("spec issues"), "{clean}");
    }

    #[test]
    fn app_table_aligns() {
        let now = 100_000;
        let list = json!({
            "revision": "abc",
            "last_pass_at": 98_000,
            "apps": [
                {"name": "web", "status": "synced", "ready_replicas": 2, "desired_replicas": 2,
                 "replica_source": "spec", "revision": "abc", "last_reconciled_at": 98_000,
                 "source_file": "web.yaml", "last_error": null},
                {"name": "api-long", "status": "degraded", "ready_replicas": 0, "desired_replicas": 1,
                 "replica_source": "bounds", "revision": "abc", "last_reconciled_at": null,
                 "source_file": "api.yaml", "last_error": "boom"}
            ]
        });
        let text = apps(&list, now);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("APP       STATUS    READY"), "{text}");
        assert!(lines[1].starts_with("web       synced    2/2"), "{text}");
        assert!(
            lines[2].contains("api-long  degraded  0/1    bounds"),
            "{text}"
        );
        assert!(lines[2].ends_with("boom"), "{text}");
        assert_eq!(lines[3], "2 apps; revision abc, last pass 2s ago");
    }

    #[test]
    fn a_crash_looping_app_shows_why() {
        let list = json!({
            "revision": "abc",
            "last_pass_at": 1_000,
            "apps": [
                {"name": "web", "status": "crash-looping", "ready_replicas": 0,
                 "desired_replicas": 1, "replica_source": "spec", "revision": "abc",
                 "last_reconciled_at": 1_000, "source_file": "web.yaml",
                 "last_error": "5 repairs within 10 minutes, last: container berth-web-1 kept exiting (docker was restarting it); self-heal stopped until the spec changes"}
            ]
        });
        let text = apps(&list, 2_000);
        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("web  crash-looping  0/1"), "{text}");
        assert!(
            row.ends_with("5 repairs within 10 minutes, last: container berth-web-1 ke…"),
            "{text}"
        );
    }
}
