//! Pure helpers of the dashboard: the server-side SVG chart of an app's replicas, request
//! rate and p95 over the last hour (from its scaling decisions), commit links for known
//! forges, and relative times. No I/O, no clock (`now_ms` is a parameter).

use crate::store::ScalingDecisionRow;
use std::fmt::Write;

/// The chart's time window.
pub const WINDOW_MS: i64 = 3_600_000;
const W: f64 = 640.0;
const H: f64 = 180.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 52.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 24.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// "12 s ago", "3 min ago", "2 h ago", "4 d ago"; "in the future" for clock skew.
pub fn ago(at_ms: i64, now_ms: i64) -> String {
    if now_ms < at_ms {
        return "just now".to_string();
    }
    let seconds = (now_ms - at_ms) / 1000;
    match seconds {
        s if s < 0 => "just now".to_string(),
        s if s < 60 => format!("{s} s ago"),
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86_400),
    }
}

/// The web page of `commit` when `url` is a repository on a known forge (GitHub, GitLab,
/// Gitea/Forgejo/Codeberg; https or ssh forms); credentials in the URL are dropped.
pub fn commit_link(url: &str, commit: &str) -> Option<String> {
    if commit.len() < 7 || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .or_else(|| url.strip_prefix("ssh://"))
        .map(|r| r.to_string())
        .or_else(|| {
            // scp-like: git@host:owner/repo.git
            let (user_host, path) = url.split_once(':')?;
            (!user_host.contains('/')).then(|| format!("{user_host}/{path}"))
        })?;
    // Drop `user[:password]@`.
    let rest = rest.rsplit_once('@').map_or(rest.as_str(), |(_, r)| r);
    let (host, path) = rest.split_once('/')?;
    let host = host.split(':').next()?.to_ascii_lowercase();
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    if path.split('/').filter(|p| !p.is_empty()).count() < 2
        || !path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._/~".contains(&b))
    {
        return None;
    }
    let kind = if host == "github.com" || host.starts_with("github.") {
        "github"
    } else if host == "gitlab.com" || host.contains("gitlab") {
        "gitlab"
    } else if host == "codeberg.org" || host.contains("gitea") || host.contains("forgejo") {
        "gitea"
    } else {
        return None;
    };
    Some(match kind {
        "gitlab" => format!("https://{host}/{path}/-/commit/{commit}"),
        _ => format!("https://{host}/{path}/commit/{commit}"),
    })
}

/// One point of a series: x in ms, y in the series' unit.
type Series = Vec<(i64, f64)>;

fn number(metrics: &serde_json::Value, name: &str) -> Option<f64> {
    metrics.get(name).and_then(serde_json::Value::as_f64)
}

/// The SVG (inline, no script, no style attribute) of replicas (solid steps), request rate
/// (dashed) and p95 latency (dotted, right axis) over the hour before `now_ms`; `current`
/// is the effective replica count now. Each series is also drawn with a distinct dash
/// pattern and named in the legend, so the chart reads without colour.
pub fn svg(decisions: &[ScalingDecisionRow], current: Option<u32>, now_ms: i64) -> String {
    let start = now_ms - WINDOW_MS;
    let mut rows: Vec<&ScalingDecisionRow> = decisions
        .iter()
        .filter(|d| d.at >= start && d.at <= now_ms)
        .collect();
    rows.sort_by_key(|d| d.at);
    // Replicas as steps: the first decision's "from" holds from the window's start.
    let mut replicas: Series = Vec::new();
    let first = rows
        .first()
        .map(|d| d.from_replicas)
        .or(current)
        .unwrap_or(0);
    replicas.push((start, f64::from(first)));
    for d in &rows {
        if let Some(&(_, y)) = replicas.last() {
            replicas.push((d.at, y));
        }
        replicas.push((d.at, f64::from(d.to_replicas)));
    }
    let last = replicas.last().map_or(0.0, |p| p.1);
    replicas.push((now_ms, current.map_or(last, f64::from)));
    let rps: Series = rows
        .iter()
        .filter_map(|d| Some((d.at, number(&d.metrics, "rps")?)))
        .collect();
    let p95: Series = rows
        .iter()
        .filter_map(|d| Some((d.at, number(&d.metrics, "p95_ms")?)))
        .collect();
    let left_max = replicas
        .iter()
        .chain(&rps)
        .map(|p| p.1)
        .fold(1.0_f64, f64::max)
        .ceil();
    let right_max = p95.iter().map(|p| p.1).fold(1.0_f64, f64::max).ceil();
    let x = |t: i64| LEFT + (t - start) as f64 / WINDOW_MS as f64 * (W - LEFT - RIGHT);
    let y = |v: f64, max: f64| TOP + (1.0 - v / max) * (H - TOP - BOTTOM);
    let path = |series: &Series, max: f64| {
        let mut d = String::new();
        for (i, (t, v)) in series.iter().enumerate() {
            let _ = write!(
                d,
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x(*t),
                y(*v, max)
            );
        }
        d
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-labelledby="chart-title" xmlns="http://www.w3.org/2000/svg"><title id="chart-title">{}</title>"#,
        escape(&format!(
            "Last hour: {} scaling decisions; replicas now {}",
            rows.len(),
            current.map_or("unknown".to_string(), |c| c.to_string())
        ))
    );
    // Axes and grid.
    let _ = write!(
        out,
        r#"<g class="axis"><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{b}"/><line x1="{LEFT}" y1="{b}" x2="{r}" y2="{b}"/><line x1="{r}" y1="{TOP}" x2="{r}" y2="{b}"/></g>"#,
        b = H - BOTTOM,
        r = W - RIGHT
    );
    let _ = write!(
        out,
        r#"<g class="labels"><text x="{}" y="{}" text-anchor="end">{left_max}</text><text x="{}" y="{}" text-anchor="end">0</text><text x="{}" y="{}" text-anchor="start">{right_max} ms</text><text x="{LEFT}" y="{}">-60 min</text><text x="{}" y="{}" text-anchor="end">now</text></g>"#,
        LEFT - 4.0,
        TOP + 8.0,
        LEFT - 4.0,
        H - BOTTOM,
        W - RIGHT + 4.0,
        TOP + 8.0,
        H - 6.0,
        W - RIGHT,
        H - 6.0
    );
    let _ = write!(
        out,
        r#"<path class="replicas" d="{}"/>"#,
        path(&replicas, left_max)
    );
    if !rps.is_empty() {
        let _ = write!(out, r#"<path class="rps" d="{}"/>"#, path(&rps, left_max));
    }
    if !p95.is_empty() {
        let _ = write!(out, r#"<path class="p95" d="{}"/>"#, path(&p95, right_max));
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(at: i64, from: u32, to: u32, rps: f64, p95: f64) -> ScalingDecisionRow {
        ScalingDecisionRow {
            id: at,
            app: "web".into(),
            at,
            from_replicas: from,
            to_replicas: to,
            reason: "load".into(),
            metrics: serde_json::json!({ "rps": rps, "p95_ms": p95 }),
            factors: serde_json::json!({}),
        }
    }

    #[test]
    fn links_for_known_forges_only() {
        let sha = "4f2a9c01d3e8aa";
        assert_eq!(
            commit_link("https://github.com/acme/apps.git", sha).as_deref(),
            Some("https://github.com/acme/apps/commit/4f2a9c01d3e8aa")
        );
        assert_eq!(
            commit_link("git@github.com:acme/apps.git", sha).as_deref(),
            Some("https://github.com/acme/apps/commit/4f2a9c01d3e8aa")
        );
        assert_eq!(
            commit_link("https://user:s3cret@gitlab.example.com/g/sub/apps", sha).as_deref(),
            Some("https://gitlab.example.com/g/sub/apps/-/commit/4f2a9c01d3e8aa")
        );
        assert_eq!(
            commit_link("ssh://git@codeberg.org:2222/me/apps.git", sha).as_deref(),
            Some("https://codeberg.org/me/apps/commit/4f2a9c01d3e8aa")
        );
        assert_eq!(
            commit_link("https://gitea.local/me/apps", sha).as_deref(),
            Some("https://gitea.local/me/apps/commit/4f2a9c01d3e8aa")
        );
        assert_eq!(commit_link("/srv/git/apps", sha), None);
        assert_eq!(commit_link("https://example.com/me/apps", sha), None);
        assert_eq!(commit_link("https://github.com/me/apps", "not-a-sha"), None);
        assert_eq!(commit_link("https://github.com/me\"/x", sha), None);
    }

    #[test]
    fn ago_reads_like_a_person() {
        assert_eq!(ago(1_000, 13_000), "12 s ago");
        assert_eq!(ago(0, 180_000), "3 min ago");
        assert_eq!(ago(0, 7_200_000), "2 h ago");
        assert_eq!(ago(10, 0), "just now");
    }

    #[test]
    fn chart_draws_steps_and_series_inside_the_hour() {
        let now = 10 * WINDOW_MS;
        let old = decision(now - 2 * WINDOW_MS, 1, 9, 500.0, 900.0);
        let a = decision(now - 1_800_000, 2, 4, 120.0, 80.0);
        let b = decision(now - 600_000, 4, 3, 40.0, 20.0);
        let svg = svg(&[b.clone(), old, a], Some(3), now);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains("2 scaling decisions; replicas now 3"), "{svg}");
        // Left axis tops at the largest replica/rps value inside the window (120, not 500).
        assert!(svg.contains(">120<"), "{svg}");
        assert!(svg.contains(">80 ms<"), "{svg}");
        assert!(svg.contains(r#"class="replicas" d="M44.0,"#), "{svg}");
        assert_eq!(svg.matches("<path").count(), 3);
        assert!(!svg.contains("style="));
        let empty = super::svg(&[], None, now);
        assert_eq!(empty.matches("<path").count(), 1, "{empty}");
    }
}
