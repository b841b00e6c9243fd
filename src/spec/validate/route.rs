//! Route validation (part of `validate`): host and path syntax (the nginx injection guard),
//! `route.tls` paths and `route.proxy` settings. Pure; must not read the TLS files (the
//! reconcile module checks those against the operator's `--allow-tls-dir`).

use super::Checker;
use crate::spec::locate::fpath;
use crate::spec::model::{AppType, Route, RouteProxy, RouteTls};
use crate::spec::{raw, units};

fn valid_host(host: &str) -> bool {
    let rest = host.strip_prefix("*.").unwrap_or(host);
    !rest.is_empty()
        && host.len() <= 253
        && rest.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

pub(super) fn check_route(
    c: &mut Checker,
    app_type: AppType,
    name: &str,
    r: Option<&raw::Route>,
) -> Option<Route> {
    if app_type == AppType::Worker {
        if r.is_some() {
            c.err(
                fpath!["spec", "route"],
                "workers are not routed: remove `route` or set `type: http`",
            );
        }
        return None;
    }
    let Some(r) = r else {
        return Some(Route {
            host: None,
            path: format!("/{name}"),
            strip_prefix: true,
            proxy: RouteProxy::default(),
            tls: None,
        });
    };
    let host = r.host.as_ref().map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host {
        if !valid_host(h) {
            c.err(
                fpath!["spec", "route", "host"],
                format!(
                    "`{}` is not a valid host name: use a DNS name like app.example.com, optionally starting with `*.`",
                    h.escape_debug()
                ),
            );
        }
    }
    let path = match (&r.path, &host) {
        (Some(p), _) => p.clone(),
        (None, Some(_)) => "/".to_string(),
        (None, None) => format!("/{name}"),
    };
    let at = fpath!["spec", "route", "path"];
    if !path.starts_with('/') {
        c.err(
            at,
            format!("route path `{}` must start with '/'", path.escape_debug()),
        );
    } else if let Some(bad) = path
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '~' | '/' | '-')))
    {
        c.err(
            at,
            format!(
                "route path contains `{}`: use only letters, digits and . _ ~ / - (the path is written into the nginx config)",
                bad.escape_debug()
            ),
        );
    } else if path.len() > 256 {
        c.err(at, "route path is longer than 256 characters: shorten it");
    } else if path.contains("//") || path.split('/').any(|seg| seg == "." || seg == "..") {
        c.err(
            at,
            "route path must not contain empty, `.` or `..` segments: write it in its plain form like /api/v1",
        );
    }
    let tls = check_route_tls(c, r, host.is_some());
    Some(Route {
        host,
        path,
        strip_prefix: r.strip_prefix.unwrap_or(true),
        proxy: check_route_proxy(c, r),
        tls,
    })
}

/// `route.tls`: host routes only; both paths absolute and normalized (the operator's
/// `--allow-tls-dir` prefixes are checked against them by the reconcile shell).
fn check_route_tls(c: &mut Checker, r: &raw::Route, has_host: bool) -> Option<RouteTls> {
    let tls = r.tls.as_ref()?;
    if !has_host {
        c.err(
            fpath!["spec", "route", "tls"],
            "tls needs a host route: set `route.host` (a path-only route is served on any host, so no certificate can match it)",
        );
        return None;
    }
    let mut file = |key: &'static str, value: &str| {
        let at = fpath!["spec", "route", "tls", key];
        match tls_path(value) {
            Ok(path) => Some(path),
            Err(m) => {
                c.err(at, m);
                None
            }
        }
    };
    let cert_file = file("certFile", &tls.cert_file);
    let key_file = file("keyFile", &tls.key_file);
    Some(RouteTls {
        cert_file: cert_file?,
        key_file: key_file?,
        redirect_http: tls.redirect_http.unwrap_or(false),
        fingerprint: String::new(),
    })
}

/// A TLS file path: absolute, normalized (no empty, `.` or `..` segments), and only
/// characters safe in the nginx config.
fn tls_path(value: &str) -> Result<std::path::PathBuf, String> {
    if !value.starts_with('/') {
        return Err(format!(
            "`{}` is not an absolute path: write the full host path, e.g. /etc/berth/tls/app.pem",
            value.escape_debug()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-' | '/' | '+' | '@')))
    {
        return Err(format!(
            "the path contains `{}`: use only letters, digits and . _ - + @ / (it is written into the nginx config)",
            bad.escape_debug()
        ));
    }
    if value.len() > 1024
        || value.ends_with('/')
        || value[1..]
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(
            "the path must be normalized (no empty, `.` or `..` segments, no trailing /): write it in its plain form".to_string(),
        );
    }
    Ok(std::path::PathBuf::from(value))
}

/// `route.maxBodySize`, `route.timeouts`, `route.headers`.
fn check_route_proxy(c: &mut Checker, r: &raw::Route) -> RouteProxy {
    let defaults = RouteProxy::default();
    let max_body_bytes = match &r.max_body_size {
        None => defaults.max_body_bytes,
        Some(size) => units::body_size_bytes(&size.0)
            .map_err(|m| c.err(fpath!["spec", "route", "maxBodySize"], m))
            .unwrap_or(defaults.max_body_bytes),
    };
    let t = r.timeouts.as_ref();
    let mut timeout = |key: &'static str, value: Option<i64>, default: u32| {
        c.int(
            fpath!["spec", "route", "timeouts", key],
            value,
            default,
            1,
            3600,
        )
        .unwrap_or(default)
    };
    let connect_timeout_seconds = timeout(
        "connect",
        t.and_then(|t| t.connect),
        defaults.connect_timeout_seconds,
    );
    let read_timeout_seconds = timeout(
        "read",
        t.and_then(|t| t.read),
        defaults.read_timeout_seconds,
    );
    let send_timeout_seconds = timeout(
        "send",
        t.and_then(|t| t.send),
        defaults.send_timeout_seconds,
    );
    let mut headers = Vec::new();
    for (name, value) in r.headers.iter().flatten() {
        let at = fpath!["spec", "route", "headers", name.as_str()];
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        {
            c.err(
                at,
                format!(
                    "header name `{}` must be 1 to 64 letters, digits or `-`",
                    name.escape_debug()
                ),
            );
        } else if let Some(bad) = value.chars().find(|ch| {
            !(' '..='~').contains(ch) || matches!(ch, '"' | '\\' | '$' | '{' | '}' | ';')
        }) {
            c.err(
                at,
                format!(
                    "header value contains `{}`: use printable ASCII without \" \\ $ {{ }} ; (the value is written into the nginx config)",
                    bad.escape_debug()
                ),
            );
        } else if value.len() > 1024 {
            c.err(
                at,
                "header value is longer than 1024 characters: shorten it",
            );
        } else {
            headers.push((name.clone(), value.clone()));
        }
    }
    RouteProxy {
        max_body_bytes,
        connect_timeout_seconds,
        read_timeout_seconds,
        send_timeout_seconds,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        for ok in [
            "localhost",
            "api.localhost",
            "app.example.com",
            "*.example.com",
            "a-b.c1.io",
            "1.2.3.4",
        ] {
            assert!(valid_host(ok), "{ok}");
        }
        for bad in [
            "", "*.", "a..b", "-a.com", "a-.com", "a b", "a;b", "a.com.", "*", "a.*.com",
            "a_b.com", "x{y}",
        ] {
            assert!(!valid_host(bad), "{bad:?}");
        }
    }
}
