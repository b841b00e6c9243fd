//! spec: parsing and validation through the public API (`parse_file`, `load_files`,
//! `json_schema`): the DESIGN.md example, defaults, every validation rule (data-driven),
//! multi-document files and line numbers.

use berth::spec::{
    json_schema, load_files, parse_file, AppSpec, AppType, EnvValue, EnvVar, HealthSpec,
    HttpScaling, ParsedFile, Probe, Resources, Route, Scaling, ScalingMode, SourceRef, SpecIssue,
    Termination,
};
use std::path::{Path, PathBuf};

const DESIGN_EXAMPLE: &str = r#"apiVersion: v1
kind: App
metadata:
  name: my-app                 # DNS label: [a-z0-9-], 1..63, starts with a letter
spec:
  type: http                   # http (routed through nginx) | worker (no route, no ports)
  image: my-app:latest
  command: ["/entrypoint"]     # optional
  ports:
    - containerPort: 8080
  health:
    httpGet: { path: /healthz, port: 8080 }   # or tcpSocket: { port: 8080 }
    intervalSeconds: 5
    timeoutSeconds: 2
    failureThreshold: 3
  resources:
    cpu: 0.5                   # cores; "500m" also accepted
    memory: 512Mi
  replicas: 2                  # optional fixed count when scaling is absent or mode: manual
  scaling:
    minReplicas: 1
    maxReplicas: 10
    policy:
      mode: auto               # auto | manual
      cooldownSeconds: 30
      http:
        targetRPSPerReplica: 50
        maxP95LatencyMs: 200
        scaleOutThresholdPct: 80
        scaleInThresholdPct: 30
        windowSeconds: 20
  env:
    - name: NODE_ENV
      value: production
    - name: REDIS_URL
      valueFrom: sdk           # supplied by the host at deploy time (never in git), redacted in API/logs
  termination:
    drainSeconds: 30
  route:                       # berth extension, optional: default path /<name>
    host: app.example.com
    path: /
"#;

fn parse(text: &str) -> ParsedFile {
    parse_file(Path::new("apps/test.yaml"), text)
}

fn only_app(text: &str) -> AppSpec {
    let parsed = parse(text);
    assert!(
        parsed.issues.is_empty(),
        "unexpected issues: {:#?}",
        parsed.issues
    );
    assert!(parsed.readable);
    assert_eq!(parsed.apps.len(), 1);
    parsed.apps[0].0.clone()
}

fn only_issue(text: &str) -> SpecIssue {
    let parsed = parse(text);
    assert_eq!(
        parsed.issues.len(),
        1,
        "want exactly one issue for:\n{text}\ngot {:#?}",
        parsed.issues
    );
    parsed.issues[0].clone()
}

/// A minimal valid http app named `web`, with `extra` appended under `spec:`.
fn http_app(extra: &str) -> String {
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  image: web:1\n  ports:\n  - containerPort: 8080\n{extra}"
    )
}

#[test]
fn design_example_parses_to_the_expected_model() {
    let parsed = parse(DESIGN_EXAMPLE);
    assert!(parsed.issues.is_empty(), "{:#?}", parsed.issues);
    assert!(parsed.readable);
    let want = AppSpec {
        name: "my-app".into(),
        app_type: AppType::Http,
        image: "my-app:latest".into(),
        image_pull_policy: berth::spec::ImagePullPolicy::IfNotPresent,
        command: Some(vec!["/entrypoint".into()]),
        ports: vec![8080],
        health: Some(HealthSpec {
            probe: Probe::HttpGet {
                path: "/healthz".into(),
                port: 8080,
            },
            interval_seconds: 5,
            timeout_seconds: 2,
            failure_threshold: 3,
            success_threshold: 1,
            initial_delay_seconds: 0,
        }),
        resources: Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(512 * 1024 * 1024),
        },
        replicas: Some(2),
        scaling: Some(Scaling {
            min_replicas: 1,
            max_replicas: 10,
            mode: ScalingMode::Auto,
            cooldown_seconds: 30,
            http: Some(HttpScaling {
                target_rps_per_replica: 50.0,
                max_p95_latency_ms: 200.0,
                scale_out_threshold_pct: 80.0,
                scale_in_threshold_pct: 30.0,
                window_seconds: 20,
            }),
        }),
        env: vec![
            EnvVar {
                name: "NODE_ENV".into(),
                value: EnvValue::Literal("production".into()),
            },
            EnvVar {
                name: "REDIS_URL".into(),
                value: EnvValue::FromHost,
            },
        ],
        termination: Termination {
            drain_seconds: 30,
            ..Default::default()
        },
        route: Some(Route {
            host: Some("app.example.com".into()),
            path: "/".into(),
            strip_prefix: true,
            proxy: Default::default(),
            tls: None,
        }),
        workload: Default::default(),
    };
    assert_eq!(
        parsed.apps,
        vec![(
            want,
            SourceRef {
                file: "apps/test.yaml".into(),
                line: 1
            }
        )]
    );
}

#[test]
fn cpu_as_millicore_string_is_the_same() {
    let text = DESIGN_EXAMPLE.replace("cpu: 0.5 ", "cpu: \"500m\"");
    assert_eq!(only_app(&text).resources.cpu_millis, Some(500));
}

#[test]
fn defaults_are_applied() {
    let app = only_app(&http_app("  health:\n    tcpSocket: {port: 8080}\n  scaling:\n    maxReplicas: 3\n    policy:\n      http: {targetRPSPerReplica: 10}\n"));
    assert_eq!(app.app_type, AppType::Http);
    assert_eq!(app.command, None);
    assert_eq!(
        app.health,
        Some(HealthSpec {
            probe: Probe::TcpSocket { port: 8080 },
            interval_seconds: 5,
            timeout_seconds: 2,
            failure_threshold: 3,
            success_threshold: 1,
            initial_delay_seconds: 0,
        })
    );
    assert_eq!(app.resources, Resources::default());
    assert_eq!(app.replicas, None);
    assert_eq!(
        app.scaling,
        Some(Scaling {
            min_replicas: 1,
            max_replicas: 3,
            mode: ScalingMode::Auto,
            cooldown_seconds: 60,
            http: Some(HttpScaling {
                target_rps_per_replica: 10.0,
                max_p95_latency_ms: 0.0,
                scale_out_threshold_pct: 80.0,
                scale_in_threshold_pct: 30.0,
                window_seconds: 20,
            }),
        })
    );
    assert!(app.env.is_empty());
    assert_eq!(
        app.termination,
        Termination {
            drain_seconds: 5,
            ..Default::default()
        }
    );
    assert_eq!(
        app.route,
        Some(Route {
            host: None,
            path: "/web".into(),
            strip_prefix: true,
            proxy: Default::default(),
            tls: None,
        })
    );
}

#[test]
fn more_defaults() {
    // A short interval lowers the default timeout with it.
    let app = only_app(&http_app(
        "  health:\n    httpGet: {path: /, port: 8080}\n    intervalSeconds: 1\n",
    ));
    assert_eq!(
        app.health.map(|h| (h.interval_seconds, h.timeout_seconds)),
        Some((1, 1))
    );
    // A route with a host defaults to `/`; stripPrefix can be turned off.
    let app = only_app(&http_app(
        "  route:\n    host: Web.Example.com\n    stripPrefix: false\n",
    ));
    assert_eq!(
        app.route,
        Some(Route {
            host: Some("web.example.com".into()),
            path: "/".into(),
            strip_prefix: false,
            proxy: Default::default(),
            tls: None,
        })
    );
    // Per-route proxy settings.
    let app = only_app(&http_app(
        "  route:\n    maxBodySize: 64Mi\n    timeouts: {connect: 5, read: 300}\n    headers:\n      X-Frame-Options: DENY\n      Strict-Transport-Security: max-age=31536000\n",
    ));
    let proxy = app.route.expect("route").proxy;
    assert_eq!(proxy.max_body_bytes, 64 << 20);
    assert_eq!(
        (
            proxy.connect_timeout_seconds,
            proxy.read_timeout_seconds,
            proxy.send_timeout_seconds
        ),
        (5, 300, 60)
    );
    assert_eq!(
        proxy.headers,
        vec![
            (
                "Strict-Transport-Security".to_string(),
                "max-age=31536000".to_string()
            ),
            ("X-Frame-Options".to_string(), "DENY".to_string()),
        ]
    );
    // Scaling without a policy block.
    let app = only_app(&http_app(
        "  scaling: {minReplicas: 0, maxReplicas: 2}\n  replicas: 0\n",
    ));
    let s = app.scaling.expect("scaling");
    assert_eq!(
        (
            s.min_replicas,
            s.max_replicas,
            s.mode,
            s.cooldown_seconds,
            s.http
        ),
        (0, 2, ScalingMode::Auto, 60, None)
    );
    assert_eq!(app.replicas, Some(0));
    // Workers: no ports, no route.
    let worker = only_app("apiVersion: v1\nkind: App\nmetadata: {name: w}\nspec:\n  type: worker\n  image: w:1\n  replicas: 1\n");
    assert_eq!(
        (worker.app_type, worker.ports.len(), worker.route),
        (AppType::Worker, 0, None)
    );
}

struct Case {
    what: &'static str,
    extra: &'static str,
    line: usize,
    field: &'static str,
    says: &'static str,
}

/// Every rule, one broken field each, added to a valid http app (whose `spec:` is line 5 and
/// `extra` starts at line 9).
#[test]
fn each_validation_rule_reports_file_line_and_field() {
    let cases = [
        Case { what: "negative replicas", extra: "  replicas: -1\n", line: 9, field: "spec.replicas", says: "use a value from 0 to 1000" },
        Case { what: "placement constraint grammar", extra: "  placement:\n    constraints:\n    - node.role = manager\n", line: 11, field: "spec.placement.constraints[0]", says: "is not a constraint: write `<attribute> == <value>`" },
        Case { what: "placement role value", extra: "  placement:\n    constraints: [\"node.role==boss\"]\n", line: 10, field: "spec.placement.constraints[0]", says: "node.role is `manager` or `worker`" },
        Case { what: "placement spread attribute", extra: "  placement:\n    preferences:\n    - spread: zone\n", line: 11, field: "spec.placement.preferences[0].spread", says: "is not a node attribute" },
        Case { what: "max replicas per node", extra: "  maxReplicasPerNode: 0\n", line: 9, field: "spec.maxReplicasPerNode", says: "use a value from 1 to 1000" },
        Case { what: "too many replicas", extra: "  replicas: 1001\n", line: 9, field: "spec.replicas", says: "use a value from 0 to 1000" },
        Case { what: "fractional replicas", extra: "  replicas: 2.5\n", line: 9, field: "spec.replicas", says: "expected a whole number, found the number 2.5" },
        Case { what: "string replicas", extra: "  replicas: two\n", line: 9, field: "spec.replicas", says: "expected a whole number, found the string \"two\"" },
        Case { what: "unknown field", extra: "  replica: 1\n", line: 9, field: "spec.replica", says: "unknown field `replica`: remove it or use one of" },
        Case { what: "duplicate port", extra: "  - containerPort: 8080\n", line: 9, field: "spec.ports[1].containerPort", says: "listed twice" },
        Case { what: "port zero", extra: "  - containerPort: 0\n", line: 9, field: "spec.ports[1].containerPort", says: "use 1 to 65535" },
        Case { what: "port too big", extra: "  - containerPort: 70000\n", line: 9, field: "spec.ports[1].containerPort", says: "use 1 to 65535" },
        Case { what: "bad type", extra: "  type: cron\n", line: 9, field: "spec.type", says: "unknown value `cron`: use `http` or `worker`" },
        Case { what: "bad pull policy", extra: "  imagePullPolicy: Sometimes\n", line: 9, field: "spec.imagePullPolicy", says: "unknown value `Sometimes`: use one of `IfNotPresent`, `Always`, `Never`" },
        Case { what: "pull policy case", extra: "  imagePullPolicy: always\n", line: 9, field: "spec.imagePullPolicy", says: "unknown value `always`" },
        Case { what: "no probe", extra: "  health:\n    intervalSeconds: 5\n", line: 9, field: "spec.health", says: "exactly one probe" },
        Case { what: "two probes", extra: "  health:\n    httpGet: {path: /, port: 8080}\n    tcpSocket: {port: 8080}\n", line: 11, field: "spec.health.tcpSocket", says: "only one probe" },
        Case { what: "probe port not a port", extra: "  health:\n    tcpSocket:\n      port: 9090\n", line: 11, field: "spec.health.tcpSocket.port", says: "not one of the app's ports (8080)" },
        Case { what: "probe path", extra: "  health:\n    httpGet:\n      path: healthz\n      port: 8080\n", line: 11, field: "spec.health.httpGet.path", says: "must start with '/'" },
        Case { what: "interval zero", extra: "  health:\n    tcpSocket: {port: 8080}\n    intervalSeconds: 0\n", line: 11, field: "spec.health.intervalSeconds", says: "use a value from 1 to 3600" },
        Case { what: "timeout over interval", extra: "  health:\n    tcpSocket: {port: 8080}\n    intervalSeconds: 2\n    timeoutSeconds: 3\n", line: 12, field: "spec.health.timeoutSeconds", says: "must not exceed intervalSeconds (2)" },
        Case { what: "failure threshold", extra: "  health:\n    tcpSocket: {port: 8080}\n    failureThreshold: 0\n", line: 11, field: "spec.health.failureThreshold", says: "use a value from 1 to 100" },
        Case { what: "success threshold", extra: "  health:\n    tcpSocket: {port: 8080}\n    successThreshold: 0\n", line: 11, field: "spec.health.successThreshold", says: "use a value from 1 to 100" },
        Case { what: "initial delay", extra: "  health:\n    tcpSocket: {port: 8080}\n    initialDelaySeconds: -1\n", line: 11, field: "spec.health.initialDelaySeconds", says: "use a value from 0 to 3600" },
        Case { what: "cpu zero", extra: "  resources:\n    cpu: 0\n", line: 10, field: "spec.resources.cpu", says: "greater than 0" },
        Case { what: "cpu garbage", extra: "  resources:\n    cpu: lots\n", line: 10, field: "spec.resources.cpu", says: "not a valid quantity" },
        Case { what: "cpu list", extra: "  resources:\n    cpu: [1]\n", line: 10, field: "spec.resources.cpu", says: "expected a number of cores like 0.5" },
        Case { what: "memory too small", extra: "  resources:\n    memory: 4Mi\n", line: 10, field: "spec.resources.memory", says: "minimum of 6Mi" },
        Case { what: "memory unit", extra: "  resources:\n    memory: 512MB\n", line: 10, field: "spec.resources.memory", says: "unknown unit `MB`" },
        Case { what: "memory milli", extra: "  resources:\n    memory: 512m\n", line: 10, field: "spec.resources.memory", says: "use Mi" },
        Case { what: "max below min", extra: "  scaling:\n    minReplicas: 3\n    maxReplicas: 2\n", line: 11, field: "spec.scaling.maxReplicas", says: "must be at least minReplicas (3)" },
        Case { what: "max missing", extra: "  scaling:\n    minReplicas: 3\n", line: 9, field: "spec.scaling.maxReplicas", says: "required field `maxReplicas` is missing" },
        Case { what: "max too big", extra: "  scaling:\n    maxReplicas: 1001\n", line: 10, field: "spec.scaling.maxReplicas", says: "use a value from 1 to 1000" },
        Case { what: "bad mode", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      mode: fast\n", line: 12, field: "spec.scaling.policy.mode", says: "use `auto` or `manual`" },
        Case { what: "cooldown", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      cooldownSeconds: -5\n", line: 12, field: "spec.scaling.policy.cooldownSeconds", says: "use a value from 0 to 86400" },
        Case { what: "target rps missing", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      http:\n        windowSeconds: 5\n", line: 12, field: "spec.scaling.policy.http.targetRPSPerReplica", says: "required field `targetRPSPerReplica`" },
        Case { what: "target rps zero", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      http:\n        targetRPSPerReplica: 0\n", line: 13, field: "spec.scaling.policy.http.targetRPSPerReplica", says: "greater than 0" },
        Case { what: "latency negative", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      http:\n        targetRPSPerReplica: 5\n        maxP95LatencyMs: -1\n", line: 14, field: "spec.scaling.policy.http.maxP95LatencyMs", says: "at least 0" },
        Case { what: "in above out", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      http:\n        targetRPSPerReplica: 5\n        scaleOutThresholdPct: 50\n        scaleInThresholdPct: 60\n", line: 15, field: "spec.scaling.policy.http.scaleInThresholdPct", says: "below scaleOutThresholdPct (50)" },
        Case { what: "out above 100", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      http:\n        targetRPSPerReplica: 5\n        scaleOutThresholdPct: 150\n", line: 14, field: "spec.scaling.policy.http.scaleOutThresholdPct", says: "at most 100" },
        Case { what: "in zero", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      http:\n        targetRPSPerReplica: 5\n        scaleInThresholdPct: 0\n", line: 14, field: "spec.scaling.policy.http.scaleInThresholdPct", says: "greater than 0" },
        Case { what: "window zero", extra: "  scaling:\n    maxReplicas: 2\n    policy:\n      http:\n        targetRPSPerReplica: 5\n        windowSeconds: 0\n", line: 14, field: "spec.scaling.policy.http.windowSeconds", says: "use a value from 1 to 3600" },
        Case { what: "replicas outside bounds", extra: "  replicas: 5\n  scaling:\n    maxReplicas: 4\n", line: 9, field: "spec.replicas", says: "between minReplicas (1) and maxReplicas (4)" },
        Case { what: "env name", extra: "  env:\n  - name: 1BAD\n    value: x\n", line: 10, field: "spec.env[0].name", says: "not a valid variable name" },
        Case { what: "env duplicate", extra: "  env:\n  - name: A\n    value: x\n  - name: A\n    value: y\n", line: 12, field: "spec.env[1].name", says: "set twice" },
        Case { what: "env neither", extra: "  env:\n  - name: A\n", line: 10, field: "spec.env[0]", says: "exactly one of `value` or `valueFrom: sdk`" },
        Case { what: "env both", extra: "  env:\n  - name: A\n    value: x\n    valueFrom: sdk\n", line: 12, field: "spec.env[0].valueFrom", says: "only one of" },
        Case { what: "env valueFrom", extra: "  env:\n  - name: A\n  - name: B\n    valueFrom: vault\n", line: 12, field: "spec.env[1].valueFrom", says: "unknown value `vault`: use `sdk`" },
        Case { what: "env unknown field", extra: "  env:\n  - name: A\n    valu: x\n", line: 11, field: "spec.env[0].valu", says: "unknown field `valu`: remove it or use one of `name`, `value`, `valueFrom`" },
        Case { what: "drain too long", extra: "  termination:\n    drainSeconds: 3601\n", line: 10, field: "spec.termination.drainSeconds", says: "use a value from 0 to 3600" },
        Case { what: "route path", extra: "  route:\n    path: api\n", line: 10, field: "spec.route.path", says: "must start with '/'" },
        Case { what: "route injection", extra: "  route:\n    path: \"/a { return 200; }\"\n", line: 10, field: "spec.route.path", says: "contains ` `" },
        Case { what: "route injection 2", extra: "  route:\n    path: /a;b\n", line: 10, field: "spec.route.path", says: "contains `;`" },
        Case { what: "route dotdot", extra: "  route:\n    path: /a/../b\n", line: 10, field: "spec.route.path", says: "`..` segments" },
        Case { what: "route host", extra: "  route:\n    host: \"a.com; evil\"\n", line: 10, field: "spec.route.host", says: "not a valid host name" },
        Case { what: "route strip", extra: "  route:\n    stripPrefix: yes\n", line: 10, field: "spec.route.stripPrefix", says: "expected true or false" },
        Case { what: "body size unit", extra: "  route:\n    maxBodySize: 10MB\n", line: 10, field: "spec.route.maxBodySize", says: "maxBodySize `10MB` has an unknown unit `MB`" },
        Case { what: "body size too big", extra: "  route:\n    maxBodySize: 2Gi\n", line: 10, field: "spec.route.maxBodySize", says: "between 1 byte and 1Gi" },
        Case { what: "body size zero", extra: "  route:\n    maxBodySize: 0\n", line: 10, field: "spec.route.maxBodySize", says: "between 1 byte and 1Gi" },
        Case { what: "read timeout", extra: "  route:\n    timeouts:\n      read: 0\n", line: 11, field: "spec.route.timeouts.read", says: "use a value from 1 to 3600" },
        Case { what: "unknown timeout", extra: "  route:\n    timeouts:\n      idle: 5\n", line: 11, field: "spec.route.timeouts.idle", says: "unknown field `idle`" },
        Case { what: "header name", extra: "  route:\n    headers:\n      \"X Bad\": v\n", line: 11, field: "spec.route.headers.X Bad", says: "letters, digits or `-`" },
        Case { what: "header injection", extra: "  route:\n    headers:\n      X-Frame-Options: \"DENY; return 200\"\n", line: 11, field: "spec.route.headers.X-Frame-Options", says: "contains `;`" },
        Case { what: "header variable", extra: "  route:\n    headers:\n      X-Leak: $http_authorization\n", line: 11, field: "spec.route.headers.X-Leak", says: "contains `$`" },
        Case { what: "tls without host", extra: "  route:\n    tls: {certFile: /t/a.crt, keyFile: /t/a.key}\n", line: 10, field: "spec.route.tls", says: "tls needs a host route" },
        Case { what: "tls relative", extra: "  route:\n    host: a.example.com\n    tls:\n      certFile: a.crt\n      keyFile: /t/a.key\n", line: 12, field: "spec.route.tls.certFile", says: "not an absolute path" },
        Case { what: "tls dotdot", extra: "  route:\n    host: a.example.com\n    tls:\n      certFile: /t/a.crt\n      keyFile: /t/../etc/a.key\n", line: 13, field: "spec.route.tls.keyFile", says: "must be normalized" },
        Case { what: "tls injection", extra: "  route:\n    host: a.example.com\n    tls:\n      certFile: \"/t/a.crt; include /x\"\n      keyFile: /t/a.key\n", line: 12, field: "spec.route.tls.certFile", says: "contains `;`" },
        Case { what: "tls unknown", extra: "  route:\n    host: a.example.com\n    tls:\n      certFile: /t/a.crt\n      keyFile: /t/a.key\n      ca: /t/ca\n", line: 14, field: "spec.route.tls.ca", says: "unknown field `ca`" },
        Case { what: "command empty", extra: "  command: []\n", line: 9, field: "spec.command", says: "must not be empty" },
        Case { what: "command type", extra: "  command: /bin/sh\n", line: 9, field: "spec.command", says: "expected a list" },
        Case { what: "duplicate image", extra: "  image: \"web 1\"\n", line: 9, field: "spec.image", says: "field `image` is set more than once" },
        Case { what: "duplicate key", extra: "  ports: []\n", line: 9, field: "spec.ports", says: "set more than once" },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        let text = http_app(case.extra);
        let parsed = parse(&text);
        let got: Vec<(usize, &str, &str)> = parsed
            .issues
            .iter()
            .map(|i| (i.line, i.field.as_str(), i.message.as_str()))
            .collect();
        let ok = parsed.issues.len() == 1
            && parsed.issues[0].line == case.line
            && parsed.issues[0].field == case.field
            && parsed.issues[0].message.contains(case.says)
            && parsed.issues[0].file == Path::new("apps/test.yaml")
            && parsed.issues[0].column >= 1
            && parsed.issues[0].app.as_deref() == Some("web")
            && parsed.apps.is_empty()
            && parsed.invalid_apps.len() == 1
            && parsed.readable;
        if !ok {
            failures.push(format!(
                "{}: want line {} field {} saying {:?}; got {got:?}",
                case.what, case.line, case.field, case.says
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn messages_are_lowercase_without_trailing_period() {
    let texts = [
        http_app("  replicas: x\n  bogus: 1\n"),
        http_app("  health:\n    tcpSocket: {port: 1}\n"),
        http_app("  image: [\n"),
        "apiVersion: v2\n".to_string(),
    ];
    for text in texts {
        for i in parse(&text).issues {
            let first = i.message.chars().next().unwrap_or('x');
            assert!(!first.is_uppercase() && !i.message.ends_with('.'), "{i}");
            assert!(i.message.contains(':'), "should say what to do: {i}");
        }
    }
}

#[test]
fn top_level_rules() {
    let cases: &[(&str, usize, &str, &str)] = &[
        ("apiVersion: v2\nkind: App\nmetadata: {name: web}\nspec: {image: x}\n", 1, "apiVersion", "unknown value `v2`: use `v1`"),
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: web}\nspec: {image: x}\n", 2, "kind", "use `App`"),
        ("apiVersion: v1\nkind: App\nmetadata: {name: web}\n", 1, "spec", "required field `spec` is missing"),
        ("apiVersion: v1\nkind: App\nmetadata:\n  name: web\n  labels: {a: b}\nspec: {image: x}\n", 5, "metadata.labels", "unknown field `labels`"),
        ("apiVersion: v1\nkind: App\nmetadata: {name: web}\nspec:\n  image: \"\"\n  ports: [{containerPort: 80}]\n", 5, "spec.image", "must not be empty"),
        ("apiVersion: v1\nkind: App\nmetadata: {name: web}\nspec:\n  image: x\n", 4, "spec.ports", "http apps need at least one tcp port"),
        ("apiVersion: v1\nkind: App\nmetadata: {name: web}\nspec:\n  ports: [{containerPort: 80}]\n  image: \"web 1\"\n", 6, "spec.image", "contains whitespace"),
        ("apiVersion: v1\nkind: App\nmetadata: {name: web}\nspec:\n  type: worker\n  image: x\n  ports: [{containerPort: 80}]\n", 7, "spec.ports[0].containerPort", "workers take no traffic"),
        ("apiVersion: v1\nkind: App\nmetadata: {name: web}\nspec:\n  type: worker\n  image: x\n  route: {path: /x}\n", 7, "spec.route", "workers are not routed"),
        ("apiVersion: v1\nkind: App\nmetadata: {name: web}\nspec:\n  type: worker\n  image: x\n  health: {tcpSocket: {port: 1}}\n", 7, "spec.health", "workers have no ports"),
        ("apiVersion: v1\nkind: App\nmetadata: {name: web}\nspec:\n  type: worker\n  image: x\n  scaling:\n    maxReplicas: 2\n    policy:\n      http: {targetRPSPerReplica: 1}\n", 10, "spec.scaling.policy.http", "workers receive no http traffic"),
    ];
    for (text, line, field, says) in cases {
        let i = only_issue(text);
        assert_eq!((i.line, i.field.as_str()), (*line, *field), "{text}\n{i}");
        assert!(i.message.contains(says), "{i}");
        assert_eq!(i.app.as_deref(), Some("web"), "{i}");
    }
}

#[test]
fn invalid_and_odd_names_are_rejected_and_make_the_file_unreadable() {
    for name in [
        "My-App",
        "1abc",
        "a_b",
        "-a",
        "a-",
        "../x",
        "..",
        "a/b",
        "x.y",
        "\"\"",
        &"a".repeat(64),
    ] {
        let text = format!("apiVersion: v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  image: x\n  ports: [{{containerPort: 80}}]\n");
        let parsed = parse(&text);
        assert_eq!(parsed.issues.len(), 1, "{name}: {:#?}", parsed.issues);
        let i = &parsed.issues[0];
        assert_eq!(
            (i.line, i.column, i.field.as_str()),
            (4, 3, "metadata.name"),
            "{name}"
        );
        assert!(i.message.contains("not a valid app name"), "{i}");
        assert_eq!(i.app, None);
        // The document names no app we could keep running, so the file is unreadable.
        assert!(!parsed.readable, "{name}");
    }
}

#[test]
fn multi_document_file_keeps_the_good_documents() {
    let text = "\
# three apps
apiVersion: v1
kind: App
metadata: {name: one}
spec: {image: one:1, ports: [{containerPort: 80}]}
---
---
# an empty document above is skipped
apiVersion: v1
kind: App
metadata:
  name: two
spec:
  image: two:1
  ports: [{containerPort: 80}]
  replicas: many
---
apiVersion: v1
kind: App
metadata: {name: three}
spec: {type: worker, image: three:1}
";
    let parsed = parse(text);
    let names: Vec<(&str, usize)> = parsed
        .apps
        .iter()
        .map(|(a, s)| (a.name.as_str(), s.line))
        .collect();
    assert_eq!(names, vec![("one", 2), ("three", 18)]);
    assert_eq!(
        parsed.invalid_apps,
        vec![(
            "two".to_string(),
            SourceRef {
                file: "apps/test.yaml".into(),
                line: 9
            }
        )]
    );
    assert!(parsed.readable);
    assert_eq!(parsed.issues.len(), 1);
    let i = &parsed.issues[0];
    assert_eq!(
        (i.line, i.column, i.field.as_str(), i.app.as_deref()),
        (16, 13, "spec.replicas", Some("two"))
    );
}

#[test]
fn line_numbers_in_later_documents_are_file_lines() {
    let text = format!(
        "{}---\n{}",
        http_app(""),
        http_app("  health:\n    tcpSocket:\n      port: 1\n  replicas: x\n").replace("web", "api")
    );
    let parsed = parse(&text);
    // The first document is 8 lines, the `---` is line 9, so the second starts at line 10.
    assert_eq!(parsed.apps.len(), 1);
    let i = only_issue_of(&parsed);
    assert_eq!(
        (i.line, i.column, i.field.as_str()),
        (21, 13, "spec.replicas")
    );
    // A validation error (found after deserialization) in the second document.
    let text = format!(
        "{}---\n{}",
        http_app(""),
        http_app("  health:\n    tcpSocket:\n      port: 1\n").replace("web", "api")
    );
    let parsed = parse(&text);
    let i = only_issue_of(&parsed);
    assert_eq!(
        (i.line, i.column, i.field.as_str(), i.app.as_deref()),
        (20, 7, "spec.health.tcpSocket.port", Some("api"))
    );
    assert_eq!(parsed.invalid_apps[0].1.line, 10);
    // A syntax error in the second document: its context position is shifted too.
    let text = format!(
        "{}---\napiVersion: v1\nkind: App\nmetadata:\n  name: api\nspec:\n  image: \"x\n",
        http_app("")
    );
    let parsed = parse(&text);
    let i = only_issue_of(&parsed);
    assert_eq!((i.line, i.app.as_deref()), (16, Some("api")), "{i}");
    assert!(i.message.starts_with("invalid yaml: "), "{i}");
    assert!(i.message.contains("at line 15 column"), "{i}");
    assert!(parsed.readable);
}

fn only_issue_of(parsed: &ParsedFile) -> SpecIssue {
    assert_eq!(parsed.issues.len(), 1, "{:#?}", parsed.issues);
    parsed.issues[0].clone()
}

#[test]
fn unattributable_documents_make_the_file_unreadable() {
    let cases = [
        "apiVersion: v1\nkind: App\nspec: {image: x}\n",
        "just a string\n",
        "apiVersion: v1\nkind: App\nmetadata: {name: [web}\n",
        "- a\n- b\n",
    ];
    for text in cases {
        let good = http_app("");
        let parsed = parse(&format!("{good}---\n{text}"));
        assert!(!parsed.readable, "{text}");
        assert_eq!(parsed.apps.len(), 1, "{text}");
        assert!(
            parsed
                .issues
                .iter()
                .all(|i| i.app.is_none() && i.line >= 10),
            "{:#?}",
            parsed.issues
        );
    }
    // Empty files and comment-only files define nothing and are readable.
    for text in ["", "# nothing\n", "---\n---\n", "\n\n"] {
        let parsed = parse(text);
        assert!(
            parsed.readable && parsed.apps.is_empty() && parsed.issues.is_empty(),
            "{text:?}"
        );
    }
}

#[test]
fn duplicate_names_across_files_drop_only_that_app() {
    let web = http_app("");
    let api = http_app("").replace("web", "api");
    let broken_web = http_app("  replicas: x\n");
    let files = vec![
        (PathBuf::from("a.yaml"), format!("{web}---\n{api}")),
        (PathBuf::from("b.yaml"), web.clone()),
        (PathBuf::from("c.yaml"), broken_web),
    ];
    let loaded = load_files(&files);
    assert_eq!(loaded.apps.keys().collect::<Vec<_>>(), vec!["api"]);
    assert!(loaded.unreadable_files.is_empty());
    let dup: Vec<(String, usize, usize, String)> = loaded
        .issues
        .iter()
        .filter(|i| i.message.contains("also defined"))
        .map(|i| {
            (
                i.file.display().to_string(),
                i.line,
                i.column,
                i.field.clone(),
            )
        })
        .collect();
    assert_eq!(
        dup,
        vec![
            ("a.yaml".to_string(), 4, 3, "metadata.name".to_string()),
            ("b.yaml".to_string(), 4, 3, "metadata.name".to_string()),
            ("c.yaml".to_string(), 4, 3, "metadata.name".to_string()),
        ]
    );
    let at_a = loaded
        .issues
        .iter()
        .find(|i| i.file == Path::new("a.yaml"))
        .expect("issue in a.yaml");
    assert!(
        at_a.message.contains("b.yaml:4") && at_a.message.contains("c.yaml:4"),
        "{at_a}"
    );
    assert_eq!(at_a.app.as_deref(), Some("web"));
    // The broken definition keeps its own issue too.
    assert!(loaded
        .issues
        .iter()
        .any(|i| i.file == Path::new("c.yaml") && i.field == "spec.replicas"));
}

#[test]
fn duplicate_names_within_one_file() {
    let web = http_app("");
    let loaded = load_files(&[(PathBuf::from("a.yaml"), format!("{web}---\n{web}"))]);
    assert!(loaded.apps.is_empty());
    let lines: Vec<usize> = loaded.issues.iter().map(|i| i.line).collect();
    assert_eq!(lines, vec![4, 13]);
    assert!(
        loaded.issues[0].message.contains("a.yaml:13"),
        "{}",
        loaded.issues[0]
    );
}

#[test]
fn conflicting_routes_drop_both_apps() {
    let a = http_app("  route: {host: x.localhost, path: /api}\n");
    let b = http_app("  route:\n    host: x.localhost\n    path: /api/\n").replace("web", "other");
    let c = http_app("  route: {path: /api}\n").replace("web", "third");
    let loaded = load_files(&[
        (PathBuf::from("a.yaml"), a),
        (PathBuf::from("b.yaml"), b),
        (PathBuf::from("c.yaml"), c),
    ]);
    assert_eq!(loaded.apps.keys().collect::<Vec<_>>(), vec!["third"]);
    let got: Vec<(String, usize, String)> = loaded
        .issues
        .iter()
        .map(|i| (i.file.display().to_string(), i.line, i.field.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a.yaml".into(), 9, "spec.route".into()),
            ("b.yaml".into(), 9, "spec.route".into())
        ]
    );
    assert!(
        loaded.issues[0].message.contains("`other` (b.yaml:9)"),
        "{}",
        loaded.issues[0]
    );
}

#[test]
fn unreadable_files_are_listed() {
    let loaded = load_files(&[
        (PathBuf::from("ok.yaml"), http_app("")),
        (PathBuf::from("bad.yaml"), "a: [[[\n".into()),
    ]);
    assert_eq!(loaded.unreadable_files, vec![PathBuf::from("bad.yaml")]);
    assert_eq!(loaded.apps.len(), 1);
    assert_eq!(loaded.issues.len(), 1);
    assert_eq!(loaded.issues[0].file, PathBuf::from("bad.yaml"));
}

#[test]
fn issue_display_names_file_line_column_and_field() {
    let i = only_issue(&http_app("  replicas: -1\n"));
    assert_eq!(
        i.to_string(),
        "apps/test.yaml:9:3: spec.replicas: -1 is out of range: use a value from 0 to 1000"
    );
}

#[test]
fn json_schema_describes_the_app() {
    let schema = json_schema();
    assert_eq!(schema["title"], "App");
    assert_eq!(schema["additionalProperties"], false);
    let required = schema["required"].as_array().expect("required");
    for f in ["apiVersion", "kind", "metadata", "spec"] {
        assert!(required.iter().any(|r| r == f), "{f}");
    }
    let defs = &schema["definitions"];
    assert_eq!(
        defs["Health"]["properties"]["intervalSeconds"]["default"],
        5
    );
    assert_eq!(defs["HttpPolicy"]["required"][0], "targetRPSPerReplica");
    assert!(defs["Cpu"]["anyOf"].is_array());
    assert_eq!(defs["ValueFrom"]["enum"][0], "sdk");
}

#[test]
fn placement_parses_and_leaves_the_spec_hash_alone() {
    let plain = only_app(&http_app(""));
    let placed = only_app(&http_app(
        "  placement:\n    constraints: [\"node.role == manager\", \"node.labels.zone!=eu\"]\n    preferences:\n    - spread: node.labels.zone\n  maxReplicasPerNode: 2\n",
    ));
    assert_eq!(
        placed.workload.placement.constraints,
        vec!["node.role==manager", "node.labels.zone!=eu"]
    );
    assert_eq!(
        placed.workload.placement.preferences,
        vec!["node.labels.zone"]
    );
    assert_eq!(placed.workload.max_replicas_per_node, Some(2));
    assert!(placed.workload.uses_swarm_options() && !plain.workload.uses_swarm_options());
    // Only the swarm backend reads them: the docker backend's containers do not roll.
    assert_eq!(
        berth::spec::spec_hash(&placed),
        berth::spec::spec_hash(&plain)
    );
    let schema = serde_json::to_string(&json_schema()).unwrap();
    assert!(schema.contains("maxReplicasPerNode") && schema.contains("PlacementPreference"));
}
