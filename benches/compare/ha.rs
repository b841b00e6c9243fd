//! Highly available controllers: takeover time over many rounds with the default lease
//! (10 s, renewed every 3 s) on the scenario of tests/ha/mod.rs (two `berth serve` on one
//! PostgreSQL store and one engine, the leader SIGKILLed in the middle of a rollout; every
//! round must converge with one leader, no duplicate and no orphan container, both nginx
//! serving). `BERTH_BENCH_HA_ROUNDS` sets the rounds (default 50).

use crate::fault::{Rng, Scene};
use crate::support::postgres::Postgres;
use std::fmt::Write as _;
use std::time::Duration;

pub async fn section() -> String {
    let rounds: usize = std::env::var("BERTH_BENCH_HA_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let scene = Scene::new("bench-ha");
    let pg = Postgres::start();
    let store = pg.database();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let run = crate::ha::kill_leader_rounds(&scene, &store, ("10", "3"), rounds, &mut rng)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut takeovers = run.takeovers.clone();
    takeovers.sort();
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    let median = takeovers[takeovers.len() / 2];
    let max = *takeovers.last().unwrap();
    let min = takeovers[0];
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n### Highly available controllers: takeover after kill -9 of the leader\n\n\
         Two `berth serve` on one PostgreSQL store (a local server started by the bench) and \
         one engine, default lease (`--lease-duration 10`, `--lease-renew 3`). Each round \
         flips the app's image (2 replicas), SIGKILLs the leader 0–1 s after the rollout's \
         first new container appeared, and measures until the survivor's `GET /api/v1/leader` \
         says it leads (it acts from then on); the killed controller restarts as a follower, \
         and the round must converge: one agreed leader, 2 containers of the new image, \
         nothing stopped, no other container under the instance, both controllers' nginx \
         serving the app. Target: median ≤ 10 s, max ≤ 15 s (lease + one renewal).\n\n\
         | rounds | takeover min (s) | median (s) | max (s) | duplicates | orphans |\n\
         |---|---|---|---|---|---|\n\
         | {rounds} | {} | {} | {} | 0 | 0 |",
        secs(min),
        secs(median),
        secs(max),
    );
    let _ = writeln!(
        md,
        "\nA killed leader's lease runs out 10 s after its last renewal, which happened 0–3 s \
         before the kill; the survivor knows the expiry (database clock) from its last \
         attempt and tries again right then, so takeover lands ~7–10 s after the kill plus \
         one round trip and the 100 ms poll of the API (a shorter one means the killed leader's \
         last renewal came late; it had stopped acting 8 s after that renewal, 80% of the \
         lease). Store round trips of a no-op pass on PostgreSQL: 0 (the lease is renewed \
         by its own task, one statement per renewal; `tests/ha_postgres.rs` counts the \
         server's statement log)."
    );
    md
}
