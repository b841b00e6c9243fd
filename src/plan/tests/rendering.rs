//! Rendering tests: nginx text for routes (plain, TLS, WebSocket upgrades) and the dynamic
//! upstreams' member files, from the same fixtures as the plan cases.

use super::*;

#[test]
fn render_routes() {
    let spec = http_app("web", "web:v1", 1);
    let files = render::render_app(
        &spec,
        &["127.0.0.1:30001".to_string()],
        "127.0.0.1:8080",
        &Default::default(),
        render::Upstreams::Static,
    );
    assert_eq!(files.len(), 2);
    assert!(files[0].1.contains("upstream berth_web {"));
    assert!(files[1].1.contains("location /web/ {"));
    assert!(files[1].1.contains("proxy_pass http://berth_web/;"));
    assert!(files[1].1.contains("location = /web {"));
    assert!(files[1].1.contains("X-Request-ID"));
    assert!(files[1].1.contains("proxy_next_upstream error timeout"));

    let mut hosted = http_app("api", "api:v1", 1);
    hosted.route = Some(Route {
        host: Some("api.localhost".into()),
        path: "/".into(),
        strip_prefix: true,
        proxy: Default::default(),
        tls: None,
    });
    let files = render::render_app(
        &hosted,
        &[],
        "127.0.0.1:8080",
        &Default::default(),
        render::Upstreams::Static,
    );
    assert_eq!(files.len(), 1);
    let conf = &files[0].1;
    assert!(conf.contains("server_name api.localhost;"), "{conf}");
    assert!(conf.contains("listen 127.0.0.1:8080;"), "{conf}");
    assert!(conf.contains("return 503"), "{conf}");
    assert!(!conf.contains("upstream"), "{conf}");
}

#[test]
fn a_tls_route_renders_a_tls_server_and_the_redirect() {
    let mut app = http_app("api", "api:v1", 1);
    app.route = Some(Route {
        host: Some("api.example.com".into()),
        path: "/".into(),
        strip_prefix: true,
        proxy: Default::default(),
        tls: Some(crate::spec::RouteTls {
            cert_file: "/etc/tls/api.crt".into(),
            key_file: "/etc/tls/api.key".into(),
            redirect_http: false,
            fingerprint: "0123456789abcdef0123".into(),
        }),
    });
    let listen = render::TlsListen {
        address: "127.0.0.1:8443".into(),
        copies: "/state/tls".into(),
    };
    let members = ["127.0.0.1:4001".to_string()];
    let render = |app: &AppSpec| {
        render::render_app(
            app,
            &members,
            "127.0.0.1:8080",
            &listen,
            render::Upstreams::Static,
        )
        .remove(0)
        .1
    };
    let conf = render(&app);
    assert!(
        conf.contains("# tls certificate and key sha256 0123456789abcdef0123\n"),
        "{conf}"
    );
    assert!(conf.contains("listen 127.0.0.1:8443 ssl;"), "{conf}");
    assert!(
        conf.contains("ssl_certificate /state/tls/api-0123456789abcdef.crt;"),
        "{conf}"
    );
    assert!(
        conf.contains("ssl_certificate_key /state/tls/api-0123456789abcdef.key;"),
        "{conf}"
    );
    assert_eq!(
        conf.matches("proxy_pass http://berth_api;").count(),
        4,
        "{conf}"
    );
    assert!(!conf.contains("return 308 https"), "{conf}");

    // redirectHttp: the plain server only redirects; a renewed file changes the text.
    let tls = app.route.as_mut().and_then(|r| r.tls.as_mut()).unwrap();
    tls.redirect_http = true;
    tls.fingerprint = "fedcba9876543210ffff".into();
    let conf = render(&app);
    assert!(
        conf.contains("    return 308 https://$host:8443$request_uri;\n"),
        "{conf}"
    );
    assert_eq!(
        conf.matches("proxy_pass http://berth_api;").count(),
        2,
        "{conf}"
    );
    assert!(
        conf.contains("/state/tls/api-fedcba9876543210.crt"),
        "{conf}"
    );
}

#[test]
fn dynamic_upstreams_change_only_the_members_file() {
    let mut d = desired(vec![http_app("web", "web:v1", 2)]);
    d.upstreams = render::Upstreams::Dynamic;
    let mut obs = in_sync(&d);
    assert!(!plan(&d, &obs, &Overrides::default(), 0).has_changes());
    let members = &obs.proxy_files["web.members"];
    assert_eq!(
        render::members_in(members),
        vec!["127.0.0.1:30001", "127.0.0.1:30002"]
    );
    let conf = obs.proxy_files["web.conf"].clone();
    assert!(conf.contains("balancer_by_lua_block"), "{conf}");
    assert!(
        !conf.contains("30001"),
        "members stay out of the config: {conf}"
    );

    // One replica becomes unhealthy: only the member list changes (a push, no reload).
    obs.health.insert("id-web-2".into(), Health::Unhealthy);
    let p = plan(&d, &obs, &Overrides::default(), 0);
    let files: Vec<&str> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            Step::WriteProxy { file, .. } => Some(file.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(files, vec!["web.members"], "{}", text(&p));

    // No healthy member at all: the config still proxies (503 comes from the Lua check).
    let files = render::render_app(
        &d.apps["web"].spec,
        &[],
        "127.0.0.1:8080",
        &Default::default(),
        render::Upstreams::Dynamic,
    );
    let names: Vec<&str> = files.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(names, vec!["web.conf", "web.loc", "web.members"]);
    assert_eq!(files[0].1, conf, "the config does not depend on members");
    assert!(files[1].1.contains("access_by_lua_block"), "{}", files[1].1);
    assert!(render::members_in(&files[2].1).is_empty());
}

#[test]
fn switching_to_static_upstreams_removes_the_members_files() {
    let mut d = desired(vec![http_app("web", "web:v1", 1)]);
    d.upstreams = render::Upstreams::Dynamic;
    let obs = in_sync(&d);
    d.upstreams = render::Upstreams::Static;
    let p = plan(&d, &obs, &Overrides::default(), 0);
    let shown = text(&p);
    assert!(shown.contains("web.members"), "{shown}");
    assert!(p
        .steps
        .iter()
        .any(|s| matches!(s, Step::RemoveProxy { file, .. } if file == "web.members")));
    assert!(p
        .steps
        .iter()
        .any(|s| matches!(s, Step::WriteProxy { file, .. } if file == "web.conf")));
}

#[test]
fn upgraded_requests_continue_in_a_named_location_with_a_long_read_timeout() {
    let spec = http_app("web", "web:v1", 1);
    let files = render::render_app(
        &spec,
        &["127.0.0.1:30001".to_string()],
        "127.0.0.1:8080",
        &Default::default(),
        render::Upstreams::Static,
    );
    let loc = &files[1].1;
    assert!(
        loc.contains("error_page 418 = @berth_web_upgrade;"),
        "{loc}"
    );
    assert!(loc.contains("location @berth_web_upgrade {"), "{loc}");
    assert!(loc.contains("rewrite ^/web/(.*)$ /$1 break;"), "{loc}");
    assert!(loc.contains("proxy_read_timeout 3600s;"), "{loc}");
    assert!(
        loc.contains("proxy_set_header Connection $berth_connection_upgrade;"),
        "{loc}"
    );
    assert!(
        loc.contains("proxy_set_header X-Request-ID $berth_request_id;"),
        "{loc}"
    );
}

#[test]
fn members_are_read_back_from_either_upstream_form() {
    let spec = http_app("web", "web:v1", 2);
    let members = vec!["127.0.0.1:30001".to_string(), "127.0.0.1:30002".to_string()];
    for upstreams in [render::Upstreams::Static, render::Upstreams::Dynamic] {
        let files = render::render_app(
            &spec,
            &members,
            "127.0.0.1:8080",
            &Default::default(),
            upstreams,
        );
        let file = match upstreams {
            render::Upstreams::Static => &files[0].1,
            render::Upstreams::Dynamic => &files[2].1,
        };
        assert_eq!(render::members_in(file), members, "{file}");
    }
}
