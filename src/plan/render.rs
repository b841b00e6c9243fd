//! nginx rendering (pure): one app's route and healthy members -> the text of its proxy
//! files. Path-routed apps get `<app>.conf` (upstream, http context) and `<app>.loc`
//! (location, included inside the default server); host-routed apps get one `<app>.conf`
//! holding the upstream and their own server block.
//!
//! Written with `std::fmt::Write` rather than tera: `plan()` renders every app on every
//! pass, and with tera the rendering was ~80% of plan()'s instructions (callgrind, 10,000
//! apps: ~30k instructions per app). The main nginx.conf, rendered once, stays a tera
//! template (`proxy`). The golden tests in `plan::tests` pin the output.

use crate::spec::{AppSpec, Route};
use std::fmt::Write;

/// The proxy file names an app can own.
pub fn conf_file(app: &str) -> String {
    format!("{app}.conf")
}
pub fn location_file(app: &str) -> String {
    format!("{app}.loc")
}

/// The app a proxy file belongs to (file name without its extension).
pub fn app_of_file(file: &str) -> &str {
    file.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(file)
}

/// Renders an http app's proxy files: `(file name, text)` pairs, sorted by name.
/// `members` are `127.0.0.1:<port>` addresses of healthy containers.
pub fn render_app(spec: &AppSpec, members: &[String], listen: &str) -> Vec<(String, String)> {
    let default_route = Route {
        host: None,
        path: format!("/{}", spec.name),
        strip_prefix: true,
    };
    let route = spec.route.as_ref().unwrap_or(&default_route);
    let app = spec.name.as_str();
    let mut conf = String::with_capacity(160 + 64 * members.len());
    let _ = writeln!(conf, "# berth app {app}: generated, do not edit");
    if !members.is_empty() {
        let _ = writeln!(conf, "upstream berth_{app} {{");
        for member in members {
            let _ = writeln!(conf, "    server {member} max_fails=1 fail_timeout=2s;");
        }
        conf.push_str("    keepalive 16;\n}\n");
    }
    match &route.host {
        Some(host) => {
            let _ = write!(
                conf,
                "\nserver {{\n    listen {listen};\n    server_name {host};\n    set $berth_app {app};\n"
            );
            write_location(&mut conf, app, route, !members.is_empty());
            conf.push_str("}\n");
            vec![(conf_file(app), conf)]
        }
        None => {
            let mut location = String::with_capacity(720);
            let _ = writeln!(location, "# berth app {app}: generated, do not edit");
            write_location(&mut location, app, route, !members.is_empty());
            vec![(conf_file(app), conf), (location_file(app), location)]
        }
    }
}

/// The `location` block(s) of a route: a redirect from the bare path to `<path>/`, then
/// the proxied prefix (or a 503 while no member is healthy).
fn write_location(out: &mut String, app: &str, route: &Route, has_members: bool) {
    let trimmed = route.path.trim_end_matches('/');
    let prefix = format!("{trimmed}/");
    if !trimmed.is_empty() {
        let _ = write!(
            out,
            "    location = {trimmed} {{\n        return 308 {prefix}$is_args$args;\n    }}\n"
        );
    }
    let pass_suffix = if route.strip_prefix && !trimmed.is_empty() {
        "/"
    } else {
        ""
    };
    let _ = write!(
        out,
        "    location {prefix} {{\n        set $berth_app {app};\n        add_header X-Request-ID $request_id always;\n"
    );
    if has_members {
        let _ = write!(
            out,
            "        proxy_pass http://berth_{app}{pass_suffix};
        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_set_header Host $host;
        proxy_set_header X-Request-ID $request_id;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 3;
        proxy_connect_timeout 2s;
"
        );
    } else {
        let _ = write!(
            out,
            "        default_type text/plain;\n        return 503 \"no healthy replicas for app {app}\\n\";\n"
        );
    }
    out.push_str("    }\n");
}
