//! The dashboard in a real browser: Debian's chromium, headless, driven over the DevTools
//! protocol (a websocket, tokio-tungstenite), against a real controller on the real Docker
//! engine serving the status API on 127.0.0.1 behind a token. Checks: without the token the
//! page shows the login form and no data; after signing in, the overview lists the apps
//! with their statuses; a status change appears without reloading the page; an app page
//! shows its containers and events; the page fits a phone's width; the page's script throws
//! nothing and logs no error. Screenshots of the overview and an app page go to
//! `target/dashboard-*.png` (and to docs/ with `BERTH_UPDATE_SCREENSHOTS=1`). Own instance
//! label, cleaned up by the `Scene`'s guards; chromium is killed by pid when the test ends.

mod support;

use base64::Engine;
use berth::api::{self, ApiConfig};
use berth::reconcile;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::{test_settings, Scene};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "dashboard-t0ken";

fn worker(name: &str, image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: App\nmetadata:\n  name: {name}\nspec:\n  type: worker\n  image: {image}\n  command: [\"/bin/busybox\", \"sh\", \"-c\", \"echo {name} up; exec /bin/busybox sleep 3600\"]\n  replicas: 1\n  termination:\n    drainSeconds: 0\n"
    )
}

/// Headless chromium on a temp profile; killed (by its pid, through the child handle) on
/// drop.
struct Browser {
    _child: tokio::process::Child,
    ws: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromium is installed (scripts/setup.sh)");
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let browser_ws = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    return url.trim().to_string();
                }
            }
            panic!("chromium exited without a DevTools url");
        })
        .await
        .expect("chromium starts within 30 s");
        // Keep draining stderr so chromium never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = browser_ws
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let list = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://{http}/json/list"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let list: Value = serde_json::from_str(&list).unwrap();
        let ws = list
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        Browser {
            _child: child,
            ws,
            _profile: profile,
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One page over the DevTools protocol; collects the page's exceptions and console errors.
struct Page {
    socket: Socket,
    next: u64,
    errors: Vec<String>,
}

impl Page {
    async fn open(browser: &Browser) -> Page {
        let (socket, _) = tokio_tungstenite::connect_async(&browser.ws).await.unwrap();
        let mut page = Page {
            socket,
            next: 0,
            errors: Vec::new(),
        };
        for method in ["Runtime.enable", "Page.enable"] {
            page.call(method, json!({})).await;
        }
        page
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let text = json!({ "id": id, "method": method, "params": params }).to_string();
        self.socket.send(Message::text(text)).await.unwrap();
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("the DevTools socket is open")
                .unwrap();
            let Message::Text(text) = message else {
                continue;
            };
            let value: Value = serde_json::from_str(text.as_str()).unwrap();
            match value["method"].as_str() {
                Some("Runtime.exceptionThrown") => self.errors.push(value.to_string()),
                Some("Runtime.consoleAPICalled") if value["params"]["type"] == "error" => {
                    self.errors.push(value.to_string())
                }
                _ => {}
            }
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
        }
    }

    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is true (polling the page); panics with `what` after 20 s.
    async fn wait_for(&mut self, expression: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.eval(expression).await == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let text = self.eval("document.body.innerText").await;
        panic!("{what} did not happen within 20 s; the page shows:\n{text}");
    }

    async fn text(&mut self) -> String {
        self.eval("document.body.innerText")
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn screenshot(&mut self, name: &str) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::write(root.join("target").join(name), &png).unwrap();
        if std::env::var_os("BERTH_UPDATE_SCREENSHOTS").is_some() {
            std::fs::write(root.join("docs").join(name), &png).unwrap();
        }
    }

    async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_a_real_browser() {
    let scene = Scene::new("dash-browser");
    let specs = scene.specs.path();
    std::fs::write(specs.join("alpha.yaml"), worker("alpha", support::IMAGE_V1)).unwrap();
    std::fs::write(specs.join("beta.yaml"), worker("beta", support::IMAGE_V1)).unwrap();
    let settings = test_settings(
        &scene.instance,
        berth::source::SourceConfig::Dir(specs.to_path_buf()),
    );
    let ctl = scene.controller_with(settings).await;
    reconcile::run_pass(&ctl, "test").await.unwrap();
    reconcile::run_pass(&ctl, "test").await.unwrap();

    let listener = api::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let router = api::router(
        ctl.clone(),
        &ApiConfig {
            token: Some(TOKEN.to_string()),
        },
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, router, stop.clone().cancelled_owned()));

    let browser = Browser::start().await;
    let mut page = Page::open(&browser).await;
    page.viewport(1280, 900, false).await;
    page.call(
        "Page.navigate",
        json!({ "url": format!("http://{address}/") }),
    )
    .await;

    // No token yet: the login form, and no data.
    page.wait_for(
        "document.getElementById('login') && !document.getElementById('login').hidden",
        "the login form",
    )
    .await;
    let text = page.text().await;
    assert!(!text.contains("alpha") && !text.contains("beta"), "{text}");

    // Sign in as a user would: type the token, submit.
    page.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; \
         document.getElementById('login-form').requestSubmit(); true"
    ))
    .await;
    page.wait_for(
        "!!document.querySelector('tr[data-app=\"beta\"]') && \
         document.querySelector('tr[data-app=\"alpha\"]').innerText.includes('synced')",
        "the overview with alpha and beta synced",
    )
    .await;
    let text = page.text().await;
    assert!(text.contains("beta") && text.contains("synced"), "{text}");
    assert_eq!(
        page.eval("sessionStorage.getItem('berth-api-token')").await,
        TOKEN
    );
    page.screenshot("dashboard-overview.png").await;

    // A status change appears without a reload: beta's image goes missing.
    page.eval("window.__sameDocument = true").await;
    std::fs::write(
        specs.join("beta.yaml"),
        worker("beta", "berth-missing:none"),
    )
    .unwrap();
    reconcile::run_pass(&ctl, "test").await.unwrap();
    page.wait_for(
        "!document.querySelector('tr[data-app=\"beta\"]').innerText.includes('synced')",
        "beta's new status",
    )
    .await;
    let beta = page
        .eval("document.querySelector('tr[data-app=\"beta\"]').innerText")
        .await;
    assert_eq!(page.eval("window.__sameDocument === true").await, true);
    println!("beta after the change: {beta}");

    // The API goes away (a controller restart) and comes back on the same address: the
    // page says so, keeps polling and recovers without a reload.
    // A graceful stop, as `berth serve` does on SIGTERM: idle keep-alive connections close.
    stop.cancel();
    server.await.unwrap().unwrap();
    page.wait_for(
        "!document.getElementById('banner').hidden",
        "the 'not answering' banner",
    )
    .await;
    let listener = api::bind(&address).await.unwrap();
    let router = api::router(
        ctl.clone(),
        &ApiConfig {
            token: Some(TOKEN.to_string()),
        },
    );
    let server = tokio::spawn(api::serve(listener, router, std::future::pending()));
    page.wait_for(
        "document.getElementById('banner').hidden && !!document.querySelector('tr[data-app=\"alpha\"]')",
        "the overview after the restart",
    )
    .await;
    assert_eq!(page.eval("window.__sameDocument === true").await, true);

    // An app page: containers and the events timeline.
    page.eval("location.hash = '#/apps/alpha'; true").await;
    page.wait_for(
        "!!document.querySelector('ol.events li') && document.body.innerText.includes('berth-alpha-')",
        "alpha's page with its events",
    )
    .await;
    let text = page.text().await;
    assert!(
        text.contains("Events") && text.contains("created"),
        "{text}"
    );
    assert!(text.contains("alpha up"), "the last log lines: {text}");
    page.screenshot("dashboard-app.png").await;

    // A phone: nothing wider than the screen (tables scroll inside their box).
    page.viewport(390, 844, true).await;
    page.eval("location.hash = '#/'; true").await;
    page.wait_for(
        "!!document.querySelector('tr[data-app=\"alpha\"]')",
        "the overview on a phone",
    )
    .await;
    let width = page
        .eval("document.documentElement.scrollWidth")
        .await
        .as_u64()
        .unwrap();
    assert!(
        width <= 390,
        "the page is {width} px wide on a 390 px phone"
    );

    assert!(page.errors.is_empty(), "page errors: {:#?}", page.errors);
    drop(page);
    drop(browser);
    server.abort();
}
