//! wrk under a Lua script for the load sections (rollout.rs, scale.rs): ~500 req/s on
//! keep-alive connections to 127.0.0.1, every request sent counted with its answer (or its
//! absence), so a failed request cannot hide. Debian's wrk 4.1, one thread.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// wrk connections and the think time per request: 10 x 1000/(18 ms + latency) ≈ 500 req/s.
pub const CONNECTIONS: u32 = 10;
pub const DELAY_MS: u32 = 18;

/// Quiet tail of each wrk run: no request is sent in the last seconds, so every request
/// sent has had time to be answered or to time out ([`TIMEOUT`]) when wrk stops (wrk drops
/// in-flight requests at its end).
pub const QUIET: Duration = Duration::from_secs(3);
/// wrk's request timeout: a request unanswered this long counts as unanswered.
pub const TIMEOUT: Duration = Duration::from_secs(2);

/// wrk script: a think time per request; counts of requests sent (`request`), answers,
/// statuses and bodies; stops sending [`QUIET`] before the end. `done` prints one
/// machine-readable line with wrk's own socket-error counters. The clock is LuaJIT's ffi
/// `clock_gettime(CLOCK_MONOTONIC)` (wrk's Lua has no finer clock than `os.time`).
const WRK_SCRIPT: &str = r#"
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } berth_timespec;
int clock_gettime(int clk, berth_timespec *tp);
]]
local ts = ffi.new("berth_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  sent = 0; answered = 0; bad = 0; v1 = 0; v2 = 0; other = 0; s502 = 0; s503 = 0; s504 = 0
  first = 0; last = 0; stop_at = nil
end
function delay()
  local now = now_ms()
  if stop_at == nil then stop_at = now + SEND_MS end
  if now >= stop_at then return 3600000 end
  return DELAY
end
function request()
  -- wrk calls request() once before the run to check it (thread 0, before any delay()):
  -- not a request sent.
  if stop_at == nil then return wrk.format(nil, nil) end
  local now = now_ms()
  if sent == 0 then first = now end
  last = now
  sent = sent + 1
  return wrk.format(nil, nil)
end
function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 then bad = bad + 1 end
  if status == 502 then s502 = s502 + 1 elseif status == 503 then s503 = s503 + 1 elseif status == 504 then s504 = s504 + 1 end
  if body == "v1\n" then v1 = v1 + 1 elseif body == "v2\n" then v2 = v2 + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local keys = { "sent", "answered", "bad", "v1", "v2", "other", "s502", "s503", "s504" }
  local t = {}
  for _, k in ipairs(keys) do t[k] = 0 end
  local span = 0
  for _, thread in ipairs(threads) do
    for _, k in ipairs(keys) do t[k] = t[k] + thread:get(k) end
    span = math.max(span, thread:get("last") - thread:get("first"))
  end
  local e = summary.errors
  io.write(string.format(
    "BERTH-WRK sent=%d answered=%d non200=%d v1=%d v2=%d other=%d s502=%d s503=%d s504=%d send_ms=%d connect=%d read=%d write=%d timeout=%d p99_us=%d max_us=%d\n",
    t.sent, t.answered, t.bad, t.v1, t.v2, t.other, t.s502, t.s503, t.s504, span,
    e.connect, e.read, e.write, e.timeout, latency:percentile(99), latency.max))
end
"#;

/// What one wrk run counted.
#[derive(Debug, Default, Clone)]
pub struct Load {
    /// Requests written (the script's `request` calls).
    pub sent: u64,
    /// Answers received, whatever their status.
    pub answered: u64,
    pub non_200: u64,
    /// wrk's connect errors: a connection the client wanted and could not open.
    pub connect_errors: u64,
    /// wrk's read errors: the server closed a connection (with or without a request on it).
    pub read_errors: u64,
    /// From the first to the last request sent.
    pub send_seconds: f64,
    pub v1: u64,
    pub v2: u64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// wrk's counts as printed (statuses, socket errors), for the log.
    pub detail: String,
}

impl Load {
    /// Requests that did not get a 200: non-200 answers, requests sent that never got an
    /// answer (reset, closed or timed out connections) and connections that could not open.
    pub fn failed(&self) -> u64 {
        self.non_200 + self.unanswered() + self.connect_errors
    }

    pub fn unanswered(&self) -> u64 {
        self.sent.saturating_sub(self.answered)
    }

    /// Sending rate while the load ran (the quiet tail excluded).
    pub fn rps(&self) -> f64 {
        self.sent as f64 / self.send_seconds.max(1e-9)
    }

    fn parse(stdout: &str) -> Option<Load> {
        let line = stdout.lines().find(|l| l.starts_with("BERTH-WRK "))?;
        let field = |name: &str| -> u64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Some(Load {
            sent: field("sent"),
            answered: field("answered"),
            non_200: field("non200"),
            connect_errors: field("connect"),
            read_errors: field("read"),
            send_seconds: field("send_ms") as f64 / 1000.0,
            v1: field("v1"),
            v2: field("v2"),
            p99_ms: field("p99_us") as f64 / 1000.0,
            max_ms: field("max_us") as f64 / 1000.0,
            detail: line.trim_start_matches("BERTH-WRK ").to_string(),
        })
    }
}

/// A running wrk; [`Wrk::finish`] waits for it and parses its counts.
pub struct Wrk {
    child: Option<Child>,
    _script: tempfile::NamedTempFile,
}

impl Wrk {
    /// Starts wrk against `url` for `load` (the last [`QUIET`] of it sends nothing).
    pub fn start(url: &str, load: Duration) -> Wrk {
        assert!(
            url.starts_with("http://127.0.0.1:"),
            "load goes to loopback only: {url}"
        );
        let mut script = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(
            &mut script,
            WRK_SCRIPT
                .replace("SEND_MS", &(load - QUIET).as_millis().to_string())
                .replace("DELAY", &DELAY_MS.to_string())
                .as_bytes(),
        )
        .unwrap();
        let child = Command::new(wrk_binary())
            .args([
                "-t1",
                &format!("-c{CONNECTIONS}"),
                &format!("-d{}s", load.as_secs()),
                "--timeout",
                &format!("{}s", TIMEOUT.as_secs()),
                "-s",
                script.path().to_str().unwrap(),
                url,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run wrk (apt-get install wrk)");
        Wrk {
            child: Some(child),
            _script: script,
        }
    }

    pub fn finish(mut self) -> Load {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        Load::parse(&stdout).unwrap_or_else(|| {
            panic!(
                "wrk printed no counts: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn wrk_binary() -> PathBuf {
    PathBuf::from("/usr/bin/wrk")
}
