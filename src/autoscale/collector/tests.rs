use super::*;
use crate::runtime::ContainerStats;
use std::io::Write;

/// A line exactly as the private nginx's `berth` log_format writes it.
fn line(
    at_ms: i64,
    app: &str,
    status: u16,
    request_s: f64,
    upstream_s: &str,
    addr: &str,
) -> String {
    format!(
        "{{\"time\":{}.{:03},\"app\":\"{app}\",\"status\":{status},\"request_time\":{request_s:.3},\
         \"upstream_time\":\"{upstream_s}\",\"upstream\":\"{addr}\",\"request_id\":\"0123456789abcdef\",\
         \"method\":\"GET\",\"host\":\"127.0.0.1\",\"uri\":\"/\",\"connections\":3}}\n",
        at_ms / 1000,
        at_ms % 1000
    )
}

#[test]
fn parses_nginx_lines() {
    let l = parse_line(
        line(
            1_700_000_000_123,
            "web",
            200,
            0.004,
            "0.003",
            "127.0.0.1:32768",
        )
        .trim()
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(l.at, 1_700_000_000_123);
    assert_eq!(l.app, "web");
    assert_eq!(l.status, 200);
    assert_eq!(l.upstream_time, Some(0.003));
    assert_eq!(l.upstream.as_deref(), Some("127.0.0.1:32768"));
    assert_eq!(l.connections, 3);
    // Retries and upstream groups: times add up, the last address answered.
    let l = parse_line(
        line(
            1_000,
            "web",
            200,
            0.01,
            "0.002, 0.004 : 0.001",
            "127.0.0.1:1, 127.0.0.1:2 : 127.0.0.1:3",
        )
        .trim()
        .as_bytes(),
    )
    .unwrap();
    assert!((l.upstream_time.unwrap() - 0.007).abs() < 1e-9);
    assert_eq!(l.upstream.as_deref(), Some("127.0.0.1:3"));
    // No upstream asked (503 from a location without members).
    let l = parse_line(line(1_000, "web", 503, 0.0, "", "").trim().as_bytes()).unwrap();
    assert_eq!((l.upstream_time, l.upstream), (None, None));
    let l = parse_line(line(1_000, "web", 502, 0.0, "-", "-").trim().as_bytes()).unwrap();
    assert_eq!((l.upstream_time, l.upstream), (None, None));
    // Not ours.
    for bad in [
        &b"127.0.0.1 - - [23/Nov/2025] \"GET / HTTP/1.1\" 200"[..],
        b"{}",
        b"{\"time\":0,\"app\":\"x\",\"status\":200}",
        b"{\"time\":1.5,\"app\":\"x\"}",
    ] {
        assert_eq!(parse_line(bad), None, "{}", String::from_utf8_lossy(bad));
    }
}

fn watched(apps: &[(&str, u32)]) -> BTreeMap<String, u32> {
    apps.iter().map(|(a, w)| (a.to_string(), *w)).collect()
}

#[test]
fn windows_give_rate_percentile_in_flight_and_upstreams() {
    let mut log = AccessLog::new(PathBuf::from("/nonexistent"));
    log.configure(&watched(&[("web", 10), ("api", 10)]));
    let t0 = 1_700_000_000_000;
    // 30 s of traffic to web, 50 requests/s; latency 1..=100 ms cycling; two upstreams.
    let mut data = String::new();
    let mut exact = Vec::new();
    for i in 0..1500i64 {
        let at = t0 + i * 20;
        let ms = (i % 100 + 1) as f64;
        let addr = if i % 2 == 0 {
            "127.0.0.1:1001"
        } else {
            "127.0.0.1:1002"
        };
        data.push_str(&line(
            at,
            "web",
            200,
            ms / 1000.0,
            &format!("{:.3}", ms / 1000.0),
            addr,
        ));
        if at >= t0 + 20_000 {
            exact.push(ms);
        }
    }
    data.push_str(&line(
        t0 + 29_000,
        "manual-app",
        200,
        0.001,
        "0.001",
        "127.0.0.1:9",
    ));
    data.push_str("garbage\n");
    let stats = log.ingest_bytes(data.as_bytes());
    assert_eq!((stats.lines, stats.bad_lines, stats.ignored), (1502, 1, 1));
    let now = t0 + 30_000;
    let s = log.summary("web", now).unwrap();
    assert_eq!(s.window_seconds, 10.0);
    assert_eq!(s.coverage_seconds, 10.0);
    assert_eq!(s.requests, 500, "only the last 10 s count");
    assert!((s.rps - 50.0).abs() < 1e-9, "{}", s.rps);
    exact.sort_by(f64::total_cmp);
    let true_p95 = exact[(exact.len() as f64 * 0.95).ceil() as usize - 1];
    let p95 = s.p95_ms.unwrap();
    assert!(
        (p95 - true_p95).abs() / true_p95 < 0.06,
        "{p95} vs {true_p95}"
    );
    // Little's law: 50/s x mean 50.5 ms = 2.525 in flight.
    assert!((s.in_flight - 2.525).abs() < 0.01, "{}", s.in_flight);
    assert_eq!(s.upstream_rps.len(), 2);
    assert!((s.upstream_rps["127.0.0.1:1001"] - 25.0).abs() < 1e-9);
    assert_eq!(s.nginx_connections_max, 3);
    // Nothing for api; unknown apps have no window.
    let api = log.summary("api", now).unwrap();
    assert_eq!((api.requests, api.rps, api.p95_ms), (0, 0.0, None));
    assert!(log.summary("manual-app", now).is_none());
    // The window slides: 8 s later only 2 s of traffic remain.
    let s = log.summary("web", now + 8_000).unwrap();
    assert_eq!(s.requests, 100);
    // Reconfiguring drops unwatched apps and restarts changed windows.
    log.configure(&watched(&[("web", 20)]));
    assert_eq!(log.summary("web", now).unwrap().requests, 0);
    assert!(log.summary("api", now).is_none());
}

#[test]
fn long_windows_use_coarser_buckets() {
    let mut log = AccessLog::new(PathBuf::from("/nonexistent"));
    log.configure(&watched(&[("web", 600)]));
    let t0 = 1_700_000_000_000;
    let mut data = String::new();
    for i in 0..1200i64 {
        data.push_str(&line(
            t0 + i * 1000,
            "web",
            200,
            0.01,
            "0.010",
            "127.0.0.1:1",
        ));
    }
    log.ingest_bytes(data.as_bytes());
    let window = &log.apps["web"];
    assert_eq!(window.bucket_ms, 10_000);
    let s = log.summary("web", t0 + 1_200_000).unwrap();
    assert!(log.apps["web"].buckets.len() <= MAX_BUCKETS as usize + 1);
    assert!((s.rps - 1.0).abs() < 0.02, "{}", s.rps);
}

#[test]
fn tails_a_growing_file_across_partial_lines_rotation_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let mut log = AccessLog::new(path.clone());
    log.configure(&watched(&[("web", 60)]));
    let t0 = 1_700_000_000_000;
    // Missing file: nothing, no error.
    assert_eq!(log.poll(t0).unwrap(), IngestStats::default());
    assert!(log.summary("web", t0).is_none());

    let mut f = std::fs::File::create(&path).unwrap();
    let first = line(t0, "web", 200, 0.001, "0.001", "127.0.0.1:1");
    let (head, tail) = first.split_at(40);
    f.write_all(head.as_bytes()).unwrap();
    assert_eq!(log.poll(t0).unwrap().lines, 0, "half a line waits");
    f.write_all(tail.as_bytes()).unwrap();
    f.write_all(line(t0 + 10, "web", 200, 0.001, "0.001", "127.0.0.1:1").as_bytes())
        .unwrap();
    assert_eq!(log.poll(t0 + 100).unwrap().lines, 2);
    assert_eq!(log.summary("web", t0 + 100).unwrap().requests, 2);
    // A file that existed from its start covers the whole window.
    assert_eq!(log.summary("web", t0 + 100).unwrap().coverage_seconds, 60.0);

    // Rotation: the old file gets one more line, then a new file appears.
    f.write_all(line(t0 + 20, "web", 200, 0.001, "0.001", "127.0.0.1:1").as_bytes())
        .unwrap();
    std::fs::rename(&path, dir.path().join("access.log.1")).unwrap();
    let mut g = std::fs::File::create(&path).unwrap();
    g.write_all(line(t0 + 30, "web", 200, 0.001, "0.001", "127.0.0.1:1").as_bytes())
        .unwrap();
    assert_eq!(log.poll(t0 + 200).unwrap().lines, 2, "old tail + new file");
    assert_eq!(log.summary("web", t0 + 200).unwrap().requests, 4);

    // Truncation in place: read again from the start.
    g.set_len(0).unwrap();
    drop(g);
    let mut g = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    g.write_all(line(t0 + 40, "web", 200, 0.001, "0.001", "127.0.0.1:1").as_bytes())
        .unwrap();
    assert_eq!(log.poll(t0 + 300).unwrap().lines, 1);
    assert_eq!(log.summary("web", t0 + 300).unwrap().requests, 5);
    assert_eq!(log.totals.lines, 5);
}

#[test]
fn a_restart_backfills_from_the_tail_of_a_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let t0 = 1_700_000_000_000;
    let one = line(t0, "web", 200, 0.001, "0.001", "127.0.0.1:1");
    let n = (BACKFILL_BYTES as usize / one.len()) * 2;
    let mut text = String::with_capacity(n * one.len());
    for i in 0..n as i64 {
        text.push_str(&line(t0 + i, "web", 200, 0.001, "0.001", "127.0.0.1:1"));
    }
    std::fs::write(&path, &text).unwrap();
    let mut log = AccessLog::new(path);
    log.configure(&watched(&[("web", 3600)]));
    let stats = log.poll(t0 + n as i64).unwrap();
    assert!(stats.bytes <= BACKFILL_BYTES);
    assert_eq!(stats.bad_lines, 0, "the cut first line is skipped");
    assert!(stats.lines as usize >= n / 2 - 1);
    // Coverage starts at the first line read, not at the window's start.
    let s = log.summary("web", t0 + n as i64).unwrap();
    assert!(s.coverage_seconds < 3600.0);
}

#[test]
fn cpu_share_comes_from_two_samples() {
    let mut tracker = CpuTracker::default();
    let sample = |id: &str, total: u64, system: u64| ContainerStats {
        id: id.to_string(),
        cpu_total_ns: total,
        system_cpu_ns: Some(system),
        online_cpus: 4,
        memory_bytes: 64 << 20,
        memory_limit_bytes: 256 << 20,
    };
    let first = tracker.update(&[sample("a", 1_000, 10_000)]);
    assert_eq!(
        first["a"].cpu_cores, None,
        "one sample says nothing about CPU"
    );
    assert_eq!(first["a"].memory_pct, Some(25.0));
    // 4 CPUs: the system counter moved 8 s of CPU time = 2 s of wall time; the container
    // used 1 s of CPU: half a core.
    let second = tracker.update(&[
        sample("a", 1_000 + 1_000_000_000, 10_000 + 8_000_000_000),
        sample("b", 5, 10),
    ]);
    assert!((second["a"].cpu_cores.unwrap() - 0.5).abs() < 1e-9);
    assert_eq!(second["b"].cpu_cores, None);
    // A container not sampled is forgotten.
    let third = tracker.update(&[sample("b", 5, 10)]);
    assert!(!third.contains_key("a"));
    assert_eq!(
        third["b"].cpu_cores, None,
        "the system counter did not move"
    );
}

#[test]
fn requests_are_counted_for_metrics_from_the_first_poll_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let t0 = 1_700_000_000_000;
    let mut f = std::fs::File::create(&path).unwrap();
    // Written before berth started: backfills the windows, is not counted again.
    f.write_all(line(t0 - 5_000, "web", 200, 0.001, "0.001", "127.0.0.1:1").as_bytes())
        .unwrap();
    let mut log = AccessLog::new(path);
    log.configure(&watched(&[("web", 60)]));
    log.poll(t0).unwrap();
    assert!(log.take_requests().is_empty());
    for (at, app, status, seconds) in [
        (t0 + 1, "web", 200, 0.02),
        (t0 + 2, "web", 503, 0.0),
        (t0 + 3, "manual", 200, 3.0),
        (t0 + 4, "-", 404, 0.0),
    ] {
        f.write_all(line(at, app, status, seconds, "0.001", "127.0.0.1:1").as_bytes())
            .unwrap();
    }
    log.poll(t0 + 10).unwrap();
    let tally = log.take_requests();
    let web = &tally.apps["web"];
    assert_eq!(web.codes, BTreeMap::from([(200, 1), (503, 1)]));
    assert_eq!(web.buckets.iter().sum::<u64>(), 2);
    assert_eq!(
        tally.apps["manual"].codes[&200], 1,
        "every app, not only watched ones"
    );
    assert!(
        !tally.apps.contains_key("-"),
        "unrouted requests are not an app"
    );
    assert!(log.take_requests().is_empty(), "taken once");
}
