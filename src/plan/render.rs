//! nginx rendering (pure): one app's route and healthy members -> the text of its proxy
//! files. Path-routed apps get `<app>.conf` (upstream, http context) and `<app>.loc`
//! (locations, included inside the default server); host-routed apps get one `<app>.conf`
//! holding the upstream and their own server block.
//!
//! Two upstream modes (`Upstreams`): `Static` lists the members as `server` lines (a member
//! change rewrites `<app>.conf` and reloads nginx); `Dynamic` renders a member-independent
//! upstream whose `balancer_by_lua_block` picks from the members nginx holds in a shared
//! dict, and the members go to `<app>.members` (one address per line), which the proxy
//! pushes to nginx at run time instead of reloading.
//!
//! Written with `std::fmt::Write` rather than tera: `plan()` renders every app on every
//! pass, and with tera the rendering was ~80% of plan()'s instructions (callgrind, 10,000
//! apps: ~30k instructions per app). The main nginx.conf, rendered once, stays a tera
//! template (`proxy`). The golden tests in `plan::tests` pin the output.

use crate::spec::{AppSpec, Route, RouteProxy, RouteTls};
use serde::Serialize;
use std::fmt::Write;

/// How an app's upstream members reach nginx.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upstreams {
    /// `server` lines in the upstream block: a member change is a reload.
    #[default]
    Static,
    /// `balancer_by_lua` over a shared dict: a member change is a push, not a reload.
    Dynamic,
}

/// Read timeout of upgraded (WebSocket) connections: they idle between messages.
pub const UPGRADED_READ_TIMEOUT_SECONDS: u32 = 3600;

/// The proxy file names an app can own.
pub fn conf_file(app: &str) -> String {
    format!("{app}.conf")
}
pub fn location_file(app: &str) -> String {
    format!("{app}.loc")
}
pub fn members_file(app: &str) -> String {
    format!("{app}.members")
}

/// Is this proxy file a member list (pushed at run time, never read by `nginx -t`)?
pub fn is_members_file(file: &str) -> bool {
    file.ends_with(".members")
}

/// The app a proxy file belongs to (file name without its extension).
pub fn app_of_file(file: &str) -> &str {
    file.rsplit_once('.').map(|(stem, _)| stem).unwrap_or(file)
}

/// The text of `<app>.members`: a comment line, then one `127.0.0.1:<port>` per line.
pub fn members_text(app: &str, members: &[String]) -> String {
    let mut text = String::with_capacity(48 + 24 * members.len());
    let _ = writeln!(
        text,
        "# berth app {app}: upstream members, generated, do not edit"
    );
    for member in members {
        let _ = writeln!(text, "{member}");
    }
    text
}

/// The members listed in a `<app>.members` text or in a static upstream's `server` lines.
pub fn members_in(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("server ") {
                let address = rest.split_whitespace().next()?;
                return (address != "0.0.0.1;").then(|| address.trim_end_matches(';').to_string());
            }
            // A `<app>.members` line is a bare address.
            let bare = line.contains(':')
                && line
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'));
            bare.then(|| line.to_string())
        })
        .collect()
}

/// Renders an http app's proxy files: `(file name, text)` pairs, sorted by name.
/// `members` are `127.0.0.1:<port>` addresses of healthy containers.
pub fn render_app(
    spec: &AppSpec,
    members: &[String],
    listen: &str,
    listen_tls: &TlsListen,
    upstreams: Upstreams,
) -> Vec<(String, String)> {
    let default_route = Route {
        host: None,
        path: format!("/{}", spec.name),
        strip_prefix: true,
        proxy: RouteProxy::default(),
        tls: None,
    };
    let route = spec.route.as_ref().unwrap_or(&default_route);
    let app = spec.name.as_str();
    let dynamic = upstreams == Upstreams::Dynamic;
    // Dynamic upstreams always exist (a request finds no member at run time and gets
    // 503 from the access check); static ones only with members.
    let proxied = dynamic || !members.is_empty();
    let mut conf = String::with_capacity(160 + 64 * members.len());
    let _ = writeln!(conf, "# berth app {app}: generated, do not edit");
    let tls = route.tls.as_ref().filter(|_| route.host.is_some());
    if let Some(tls) = tls {
        // The content hash of certificate and key: a renewed certificate changes this
        // text, so the plan sees a change and nginx reloads once.
        let _ = writeln!(conf, "# tls certificate and key sha256 {}", tls.fingerprint);
    }
    if dynamic {
        let _ = write!(
            conf,
            "upstream berth_{app} {{
    server 0.0.0.1;
    balancer_by_lua_block {{ require(\"berth\").balance(\"{app}\") }}
    keepalive 16;
}}
"
        );
    } else if !members.is_empty() {
        let _ = writeln!(conf, "upstream berth_{app} {{");
        for member in members {
            let _ = writeln!(conf, "    server {member} max_fails=1 fail_timeout=2s;");
        }
        conf.push_str("    keepalive 16;\n}\n");
    }
    let mut files = match &route.host {
        Some(host) => {
            let _ = write!(
                conf,
                "\nserver {{\n    listen {listen};\n    server_name {host};\n    set $berth_app {app};\n"
            );
            match tls {
                Some(tls) if tls.redirect_http => {
                    let port = https_port_suffix(&listen_tls.address);
                    let _ = writeln!(conf, "    return 308 https://$host{port}$request_uri;");
                }
                _ => write_locations(&mut conf, app, route, proxied, dynamic),
            }
            conf.push_str("}\n");
            if let Some(tls) = tls {
                let (cert, key) = tls_served_files(listen_tls, app, tls);
                let _ = write!(
                    conf,
                    "\nserver {{\n    listen {} ssl;\n    server_name {host};\n    ssl_certificate {cert};\n    ssl_certificate_key {key};\n    set $berth_app {app};\n",
                    listen_tls.address
                );
                write_locations(&mut conf, app, route, proxied, dynamic);
                conf.push_str("}\n");
            }
            vec![(conf_file(app), conf)]
        }
        None => {
            let mut location = String::with_capacity(1400);
            let _ = writeln!(location, "# berth app {app}: generated, do not edit");
            write_locations(&mut location, app, route, proxied, dynamic);
            vec![(conf_file(app), conf), (location_file(app), location)]
        }
    };
    if dynamic {
        files.push((members_file(app), members_text(app, members)));
    }
    files
}

/// Where TLS servers listen and where nginx reads certificates from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsListen {
    /// nginx `listen` value of TLS servers (`--listen-tls`, e.g. `127.0.0.1:8443`).
    pub address: String,
    /// Directory of berth's content-addressed copies of validated certificates and keys;
    /// empty: nginx reads the files where the spec names them.
    pub copies: String,
}

/// The certificate and key files an app's TLS server names: berth's copies
/// (`<copies>/<app>-<fingerprint prefix>.crt|.key`, so a broken file written over the
/// original later never reaches nginx), or the spec's paths when there is no copy dir.
pub fn tls_served_files(listen: &TlsListen, app: &str, tls: &RouteTls) -> (String, String) {
    if listen.copies.is_empty() {
        return (
            tls.cert_file.display().to_string(),
            tls.key_file.display().to_string(),
        );
    }
    let short = tls.fingerprint.get(..16).unwrap_or(&tls.fingerprint);
    let dir = listen.copies.trim_end_matches('/');
    (
        format!("{dir}/{app}-{short}.crt"),
        format!("{dir}/{app}-{short}.key"),
    )
}

/// `:<port>` for a redirect to the TLS listener, empty when it is the standard 443.
fn https_port_suffix(listen_tls: &str) -> String {
    match listen_tls.rsplit_once(':').map(|(_, port)| port) {
        Some("443") => String::new(),
        Some(port) if port.chars().all(|c| c.is_ascii_digit()) => format!(":{port}"),
        _ if listen_tls.chars().all(|c| c.is_ascii_digit()) && listen_tls != "443" => {
            format!(":{listen_tls}")
        }
        _ => String::new(),
    }
}

/// The `location` blocks of a route: a redirect from the bare path to `<path>/`, then the
/// proxied prefix (or a 503 while no member is healthy), and the named location upgraded
/// (WebSocket) requests continue in, with a long read timeout.
fn write_locations(out: &mut String, app: &str, route: &Route, proxied: bool, dynamic: bool) {
    let trimmed = route.path.trim_end_matches('/');
    let prefix = format!("{trimmed}/");
    if !trimmed.is_empty() {
        let _ = write!(
            out,
            "    location = {trimmed} {{\n        return 308 {prefix}$is_args$args;\n    }}\n"
        );
    }
    let strip = route.strip_prefix && !trimmed.is_empty();
    let pass_suffix = if strip { "/" } else { "" };
    let _ = write!(
        out,
        "    location {prefix} {{\n        set $berth_app {app};\n"
    );
    write_answer_settings(out, &route.proxy);
    if !proxied {
        let _ = write!(
            out,
            "        default_type text/plain;\n        return 503 \"no healthy replicas for app {app}\\n\";\n    }}\n"
        );
        return;
    }
    if dynamic {
        let _ = writeln!(
            out,
            "        access_by_lua_block {{ require(\"berth\").access(\"{app}\") }}"
        );
    }
    let _ = write!(
        out,
        "        error_page 418 = @berth_{app}_upgrade;\n        if ($http_upgrade) {{\n            return 418;\n        }}\n        proxy_pass http://berth_{app}{pass_suffix};\n"
    );
    write_proxy_settings(out, &route.proxy, route.proxy.read_timeout_seconds);
    out.push_str("    }\n");
    // An upgraded request keeps its connection open for as long as the client talks: the
    // same proxying with the long read timeout (proxy_read_timeout takes no variables).
    let _ = write!(
        out,
        "    location @berth_{app}_upgrade {{\n        set $berth_app {app};\n"
    );
    write_answer_settings(out, &route.proxy);
    if dynamic {
        let _ = writeln!(
            out,
            "        access_by_lua_block {{ require(\"berth\").access(\"{app}\") }}"
        );
    }
    if strip {
        let _ = writeln!(
            out,
            "        rewrite ^{}/(.*)$ /$1 break;",
            regex_literal(trimmed)
        );
    }
    let _ = writeln!(out, "        proxy_pass http://berth_{app};");
    write_proxy_settings(out, &route.proxy, UPGRADED_READ_TIMEOUT_SECONDS);
    out.push_str("    }\n");
}

/// What every answer of a route carries (the request id, the route's headers) and its
/// body limit.
fn write_answer_settings(out: &mut String, proxy: &RouteProxy) {
    out.push_str("        add_header X-Request-ID $berth_request_id always;\n");
    for (name, value) in &proxy.headers {
        let _ = writeln!(out, "        add_header {name} \"{value}\" always;");
    }
    let _ = writeln!(
        out,
        "        client_max_body_size {};",
        proxy.max_body_bytes
    );
}

/// The proxying directives shared by a route's locations.
fn write_proxy_settings(out: &mut String, proxy: &RouteProxy, read_timeout: u32) {
    let (connect, send) = (proxy.connect_timeout_seconds, proxy.send_timeout_seconds);
    let _ = write!(
        out,
        "        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $berth_connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Request-ID $berth_request_id;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 3;
        proxy_connect_timeout {connect}s;
        proxy_read_timeout {read_timeout}s;
        proxy_send_timeout {send}s;
"
    );
}

/// A route path as a regex literal: validation allows only `A-Za-z0-9._~/-`, of which `.`
/// is the only regex metacharacter.
fn regex_literal(path: &str) -> String {
    path.replace('.', "\\.")
}
