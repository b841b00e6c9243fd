//! The status API against schemathesis (a property-based API tester; scripts/setup.sh
//! installs a pinned version into a venv, /opt/berth-venv or `$BERTH_SCHEMATHESIS_VENV`):
//! the fixture's controller on a SQLite file, served on 127.0.0.1 behind a bearer token,
//! tested on every operation of the document it serves at `/api/v1/openapi.json` with every
//! check. Fails (never skips) when the venv is missing. The child runs in a temp dir (the
//! served document and its `.hypothesis` database go there) and is killed if the test ends
//! first.

mod api_support;

use berth::runtime::ContainerObserver;

use api_support::{assert_no_secrets, fixture_on_disk};
use berth::api::client::Client;
use berth::api::{self, ApiConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKEN: &str = "schemathesis-t0ken";
const VENV_ENV: &str = "BERTH_SCHEMATHESIS_VENV";
const DEFAULT_VENV: &str = "/opt/berth-venv";
/// Test cases per operation and phase (bounded so the run takes well under a minute).
const MAX_EXAMPLES: &str = "50";
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn schemathesis() -> PathBuf {
    let venv =
        std::env::var_os(VENV_ENV).map_or_else(|| PathBuf::from(DEFAULT_VENV), PathBuf::from);
    let bin = venv.join("bin/schemathesis");
    assert!(
        bin.is_file(),
        "schemathesis is not installed at {}: run scripts/setup.sh (it creates the venv with \
         the pinned schemathesis, or set {VENV_ENV} to another venv); this test fails instead \
         of skipping on purpose",
        bin.display()
    );
    bin
}

/// Stops the API server when the test ends, however it ends.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), api::ApiError>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_failure_on_any_operation() {
    let bin = schemathesis();
    let f = fixture_on_disk().await;
    // A source directory with one spec, so `GET /api/v1/plan` (fresh) can plan.
    let berth::source::SourceConfig::Dir(specs) = &f.ctl.settings().source else {
        unreachable!("the fixture reads a directory")
    };
    std::fs::create_dir_all(specs).unwrap();
    std::fs::write(
        specs.join("web.yaml"),
        "apiVersion: v1\nkind: App\nmetadata:\n  name: web\nspec:\n  type: http\n  image: web:v1\n  ports:\n    - containerPort: 8080\n  replicas: 2\n",
    )
    .unwrap();
    let events_before = f.ctl.store().events(&Default::default()).await.unwrap();

    let listener = api::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let router = api::router(
        f.ctl.clone(),
        &ApiConfig {
            token: Some(TOKEN.to_string()),
        },
    );
    let _server = AbortOnDrop(tokio::spawn(api::serve(
        listener,
        router,
        std::future::pending(),
    )));

    // The document as served, from a file: loaded from its URL, schemathesis leaves the
    // document's own operation out.
    let work = tempfile::tempdir().unwrap();
    let served = Client::new(&address, Some(TOKEN.into()), Duration::from_secs(5))
        .get("/api/v1/openapi.json")
        .await
        .unwrap();
    let document = work.path().join("openapi.json");
    std::fs::write(&document, served.to_string()).unwrap();
    let started = Instant::now();
    let run = tokio::process::Command::new(&bin)
        .args([
            "run",
            document.to_str().unwrap(),
            "--url",
            &format!("http://{address}"),
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--header",
            &format!("Authorization: Bearer {TOKEN}"),
        ])
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_TIMEOUT:?}"))
        .expect("run schemathesis");
    let elapsed = started.elapsed();
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found failures (exit {:?}) after {elapsed:?}:\n{report}",
        out.status.code()
    );
    // Every documented operation was tested, and passed.
    let tested = report
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Tested:")?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no \"Tested:\" count in schemathesis' report:\n{report}"));
    assert_eq!(tested, api::ROUTES.len(), "{report}");
    assert!(report.contains("No issues found"), "{report}");
    assert_no_secrets("schemathesis' report", &report);
    println!("schemathesis: {elapsed:?}\n{report}");

    // Hundreds of requests changed nothing.
    let calls = f.ctl.runtime().calls();
    assert_eq!(calls.mutating(), 0, "{calls:?}");
    assert_eq!(
        f.ctl.store().events(&Default::default()).await.unwrap(),
        events_before
    );
}
