//! Hostile and edge-case requests through the router (no socket): non-ASCII and oversized
//! query values, empty and repeated parameters, paths that are not UTF-8. Each answers with
//! the API's JSON (400 or 200 as `openapi.json` says), never a panic or a dropped
//! connection; and the app detail's shape matches the document.

mod api_support;

use api_support::{fixture, get, Fixture, PASS_AT};
use berth::api::{self, ApiConfig};
use serde_json::Value;

fn router(fixture: &Fixture) -> axum::Router {
    api::router(fixture.ctl.clone(), &ApiConfig::default())
}

fn error_of(body: &str) -> String {
    let value: Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not json ({e}): {body}"));
    value["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn non_ascii_and_malformed_query_values_answer_400_json() {
    let f = fixture().await;
    let r = router(&f);
    for (path, param) in [
        // Found by schemathesis: "Ø" used to be cut inside its UTF-8 bytes (a panic).
        ("/api/v1/apps/web/events?since=%C3%98", "since"),
        ("/api/v1/events?since=5%C3%98", "since"),
        ("/api/v1/events?since=%C3%98m", "since"),
        ("/api/v1/events?since=%D9%A3", "since"),
        ("/api/v1/events?since=%2B5", "since"),
        ("/api/v1/events?since=1234567890123456", "since"),
        ("/api/v1/events?since=5m%0A", "since"),
        ("/api/v1/events?limit=%2B5", "limit"),
        ("/api/v1/events?limit=%EF%BC%95", "limit"),
        ("/api/v1/events?before=99999999999999999999", "before"),
        ("/api/v1/events?before=", "before"),
        ("/api/v1/events?limit=5&limit=6", "limit"),
        ("/api/v1/apps/api/scaling?limit=", "limit"),
        ("/api/v1/plan?source=", "source"),
        ("/api/v1/plan?source=%C3%98", "source"),
    ] {
        let answer = get(&r, path).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert_eq!(answer.headers["content-type"], "application/json", "{path}");
        let error = error_of(&answer.body);
        assert!(
            error.starts_with(&format!("bad query parameter {param}")),
            "{path}: {error}"
        );
    }
}

#[tokio::test]
async fn empty_filters_mean_no_filter() {
    let f = fixture().await;
    let r = router(&f);
    for (with_empty, without) in [
        (
            "/api/v1/events?since=&limit=1000",
            "/api/v1/events?limit=1000",
        ),
        (
            "/api/v1/events?since=&type=&app=&limit=1000",
            "/api/v1/events?limit=1000",
        ),
        ("/api/v1/apps/web/events?since=", "/api/v1/apps/web/events"),
    ] {
        let a = get(&r, with_empty).await;
        let b = get(&r, without).await;
        assert_eq!(a.status, 200, "{with_empty}: {}", a.body);
        assert_eq!(a.json()["events"], b.json()["events"], "{with_empty}");
    }
    // A duration reaching before 1970 is 0: everything, and `next` stays a valid URL.
    let all = get(&r, "/api/v1/events?since=999999999999999d&limit=100").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let next = all.json()["next"].as_str().unwrap().to_string();
    assert!(next.contains("&since=0"), "{next}");
    assert_eq!(get(&r, &next).await.status, 200, "{next}");
    // `since` as unix ms still filters.
    let recent = get(&r, &format!("/api/v1/events?since={PASS_AT}"))
        .await
        .json();
    assert_eq!(recent["events"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn paths_that_are_not_utf8_answer_400_json() {
    let f = fixture().await;
    let r = router(&f);
    for path in [
        "/api/v1/apps/%FF",
        "/api/v1/apps/%C3/events",
        "/api/v1/apps/%FE%FF/scaling",
    ] {
        let answer = get(&r, path).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        assert!(error_of(&answer.body).starts_with("bad path "), "{path}");
    }
    // Unicode names are fine (and unknown).
    let answer = get(&r, "/api/v1/apps/%C3%98").await;
    assert_eq!(answer.status, 404, "{}", answer.body);
    assert!(error_of(&answer.body).contains("\"Ø\" not found"));
}

#[tokio::test]
async fn app_detail_containers_is_the_list_and_the_list_counts_them() {
    let f = fixture().await;
    let r = router(&f);
    let detail = get(&r, "/api/v1/apps/web").await;
    assert_eq!(detail.status, 200, "{}", detail.body);
    // One `containers` key on the wire, an array (the summary's count is not repeated).
    assert_eq!(
        detail.body.matches("\"containers\"").count(),
        1,
        "{}",
        detail.body
    );
    assert_eq!(detail.json()["containers"].as_array().unwrap().len(), 2);
    let list = get(&r, "/api/v1/apps").await.json();
    let web = list["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "web")
        .unwrap();
    assert_eq!(web["containers"], 2);
}
