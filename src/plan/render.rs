//! nginx rendering (pure): one app's route and healthy members -> the text of its proxy
//! files. Path-routed apps get `<app>.conf` (upstream, http context) and `<app>.loc`
//! (location, included inside the default server); host-routed apps get one `<app>.conf`
//! holding the upstream and their own server block. Templates are tera, compiled once.

use crate::spec::{AppSpec, Route};
use std::sync::OnceLock;
use tera::{Context, Tera};

const UPSTREAM_TEMPLATE: &str = r#"# berth app {{ app }}: generated, do not edit
{% if members %}upstream berth_{{ app }} {
{% for m in members %}    server {{ m }} max_fails=1 fail_timeout=2s;
{% endfor %}    keepalive 16;
}
{% endif %}{% if host %}
server {
    listen {{ listen }};
    server_name {{ host }};
    set $berth_app {{ app }};
{% include "location" %}}
{% endif %}"#;

const LOCATION_FILE_TEMPLATE: &str = r#"# berth app {{ app }}: generated, do not edit
{% include "location" %}"#;

const LOCATION_TEMPLATE: &str = r#"{% if redirect %}    location = {{ redirect }} {
        return 308 {{ prefix }}$is_args$args;
    }
{% endif %}    location {{ prefix }} {
        set $berth_app {{ app }};
        add_header X-Request-ID $request_id always;
{% if members %}        proxy_pass http://berth_{{ app }}{{ pass_suffix }};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Request-ID $request_id;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_next_upstream error timeout http_502 http_503;
        proxy_next_upstream_tries 3;
        proxy_connect_timeout 2s;
{% else %}        default_type text/plain;
        return 503 "no healthy replicas for app {{ app }}\n";
{% endif %}    }
"#;

fn templates() -> &'static Tera {
    static TERA: OnceLock<Tera> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut tera = Tera::default();
        tera.add_raw_templates(vec![
            ("location", LOCATION_TEMPLATE),
            ("upstream", UPSTREAM_TEMPLATE),
            ("location-file", LOCATION_FILE_TEMPLATE),
        ])
        .expect("built-in nginx templates are valid");
        tera
    })
}

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
    let trimmed = route.path.trim_end_matches('/');
    let (prefix, redirect) = if trimmed.is_empty() {
        ("/".to_string(), None)
    } else {
        (format!("{trimmed}/"), Some(trimmed.to_string()))
    };
    let pass_suffix = if route.strip_prefix && prefix != "/" {
        "/"
    } else {
        ""
    };
    let mut context = Context::new();
    context.insert("app", &spec.name);
    context.insert("members", members);
    context.insert("listen", listen);
    context.insert("host", &route.host);
    context.insert("prefix", &prefix);
    context.insert("redirect", &redirect);
    context.insert("pass_suffix", pass_suffix);
    let render = |name: &str| {
        templates()
            .render(name, &context)
            .expect("nginx templates render with a complete context")
    };
    let mut files = vec![(conf_file(&spec.name), render("upstream"))];
    if route.host.is_none() {
        files.push((location_file(&spec.name), render("location-file")));
    }
    files
}
