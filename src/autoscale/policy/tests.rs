//! Tables of samples -> decisions for the pure policy.

use super::*;
use crate::spec::{HttpScaling, Scaling, ScalingMode};

fn http(target_rps: f64, max_p95: f64) -> HttpScaling {
    HttpScaling {
        target_rps_per_replica: target_rps,
        max_p95_latency_ms: max_p95,
        scale_out_threshold_pct: 80.0,
        scale_in_threshold_pct: 30.0,
        window_seconds: 20,
    }
}

fn scaling(min: u32, max: u32, cooldown: u32) -> Scaling {
    Scaling {
        min_replicas: min,
        max_replicas: max,
        mode: ScalingMode::Auto,
        cooldown_seconds: cooldown,
        http: Some(http(10.0, 0.0)),
    }
}

fn rps(value: f64) -> Metrics {
    Metrics {
        coverage_seconds: 20.0,
        rps: Some(value),
        ..Metrics::default()
    }
}

/// Drives the policy like the loop does: every change becomes the override and (unless
/// told otherwise) every replica is ready at once.
struct Sim {
    config: PolicyConfig,
    scaling: Scaling,
    state: AppState,
    current: u32,
    ready: u32,
    stored: Option<u32>,
    changes: Vec<(i64, u32, u32)>,
}

impl Sim {
    fn new(scaling: Scaling, current: u32) -> Sim {
        Sim {
            config: PolicyConfig::default(),
            scaling,
            state: AppState::default(),
            current,
            ready: current,
            stored: None,
            changes: Vec::new(),
        }
    }

    /// One tick at `t` seconds with per-replica load `factor` x target (rps metric).
    fn load(&mut self, t: i64, factor: f64) -> Decision {
        let target = self.scaling.http.as_ref().unwrap().target_rps_per_replica;
        let metrics = rps(factor * target * f64::from(self.current.max(1)));
        self.tick(t * 1000, &metrics)
    }

    fn tick(&mut self, now: i64, metrics: &Metrics) -> Decision {
        let http = self.scaling.http.clone().unwrap();
        let input = Input {
            scaling: &self.scaling,
            override_replicas: self.stored,
            current: self.current,
            ready: self.ready,
            metrics,
        };
        let d = decide(&self.config, &input, &http, &mut self.state, now);
        if d.changes() {
            self.changes.push((now / 1000, d.from, d.to));
            self.current = d.to;
            self.ready = d.to;
            self.stored = Some(d.to);
        }
        d
    }
}

#[test]
fn factors_follow_the_seed_definitions() {
    let config = PolicyConfig::default();
    let h = http(10.0, 200.0);
    // (metrics, basis) -> expected factors
    type Case = (Metrics, u32, Vec<(&'static str, f64)>);
    let cases: Vec<Case> = vec![
        (
            Metrics {
                cpu_pct: Some(35.0),
                memory_pct: Some(75.0),
                rps: Some(40.0),
                p95_ms: Some(300.0),
                in_flight: Some(40.0),
                coverage_seconds: 20.0,
            },
            2,
            vec![
                ("connections", 0.25),
                ("cpu", 0.5),
                ("latency", 1.5),
                ("memory", 1.0),
                ("rps", 2.0),
            ],
        ),
        // Nothing measured: no factor at all.
        (Metrics::default(), 1, vec![]),
        // Basis 0 is treated as one replica.
        (rps(5.0), 0, vec![("rps", 0.5)]),
    ];
    for (metrics, basis, expected) in cases {
        let got = factors(&config, &h, &metrics, basis);
        let got: Vec<(&str, f64)> = got.into_iter().collect();
        assert_eq!(got.len(), expected.len(), "{metrics:?}: {got:?}");
        for ((gn, gv), (en, ev)) in got.iter().zip(&expected) {
            assert_eq!(gn, en);
            assert!((gv - ev).abs() < 1e-9, "{gn}: {gv} != {ev}");
        }
    }
    // maxP95LatencyMs: 0 turns the latency factor off.
    let off = factors(
        &config,
        &http(10.0, 0.0),
        &Metrics {
            p95_ms: Some(5000.0),
            ..Metrics::default()
        },
        1,
    );
    assert!(off.is_empty(), "{off:?}");
}

#[test]
fn step_sizes_by_pressure() {
    let table = [
        (0.89, 1),
        (1.0, 1),
        (1.2, 1),
        (1.21, 2),
        (1.5, 2),
        (1.51, 3),
        (10.0, 3),
    ];
    for (pressure, step) in table {
        assert_eq!(scale_out_step(pressure), step, "pressure {pressure}");
    }
    // Through decide: 2 replicas, max 10, load factor -> new count.
    let table = [
        (0.85, 2),  // inside the tolerance band (0.8 x 1.1 = 0.88): hold
        (0.9, 3),   // +1
        (1.3, 4),   // +2
        (2.0, 5),   // +3
        (0.28, 2),  // inside the band (0.3 x 0.9 = 0.27)
        (0.5, 2),   // between thresholds
        (100.0, 5), // still +3
    ];
    for (factor, expected) in table {
        let mut sim = Sim::new(scaling(1, 10, 0), 2);
        let d = sim.load(0, factor);
        assert_eq!(d.to, expected, "factor {factor}: {}", d.reason);
    }
}

#[test]
fn scale_in_is_one_at_a_time() {
    let mut sim = Sim::new(scaling(1, 10, 0), 6);
    for t in 0..=200 {
        sim.load(t, 0.0);
    }
    assert_eq!(sim.current, 1);
    for (_, from, to) in &sim.changes {
        assert_eq!(from - to, 1, "{:?}", sim.changes);
    }
}

#[test]
fn bounds_are_respected_and_overrides_outside_them_are_clamped() {
    // Near the top: +3 wanted, only one left.
    let mut sim = Sim::new(scaling(1, 10, 0), 9);
    assert_eq!(sim.load(0, 5.0).to, 10);
    let at_max = sim.load(1, 5.0);
    assert!(!at_max.changes());
    assert!(
        at_max.reason.contains("maxReplicas 10"),
        "{}",
        at_max.reason
    );

    // At the bottom: no load never goes below minReplicas.
    let mut sim = Sim::new(scaling(2, 10, 0), 2);
    for t in 0..100 {
        let d = sim.load(t, 0.0);
        assert!(!d.changes(), "{}", d.reason);
    }
    assert!(sim.load(100, 0.0).reason.contains("minReplicas 2"));

    // Bounds lowered in git: the stored 8 becomes 5 at once, even inside a cooldown.
    let mut sim = Sim::new(scaling(1, 5, 600), 5);
    sim.state.last_change_at = Some(0);
    sim.stored = Some(8);
    let d = sim.load(1, 0.5);
    assert_eq!(
        (d.action, d.from, d.to),
        (Action::Clamp, 8, 5),
        "{}",
        d.reason
    );
    assert!(d.reason.contains("bounds changed in git"));
    // Raised minimum: clamped up.
    let mut sim = Sim::new(scaling(3, 5, 600), 3);
    sim.stored = Some(1);
    let d = sim.load(1, 0.5);
    assert_eq!((d.action, d.from, d.to), (Action::Clamp, 1, 3));
    // Inside the bounds: no clamp.
    let mut sim = Sim::new(scaling(1, 5, 600), 4);
    sim.stored = Some(4);
    assert_eq!(sim.load(1, 0.5).action, Action::Hold);
}

#[test]
fn cooldown_spaces_changes_in_both_directions() {
    let mut sim = Sim::new(scaling(1, 20, 30), 1);
    assert_eq!(sim.load(0, 2.0).action, Action::ScaleOut); // 1 -> 4
    let d = sim.load(15, 2.0);
    assert_eq!(d.action, Action::Hold);
    assert!(d.reason.contains("cooldown: 15s left"), "{}", d.reason);
    assert_eq!(d.recommendation, 7, "the recommendation is still recorded");
    let d = sim.load(29, 2.0);
    assert!(!d.changes());
    assert_eq!(sim.load(30, 2.0).action, Action::ScaleOut);
    // Load gone: scale-in waits for the cooldown too (and for stabilization).
    let mut times = Vec::new();
    for t in 31..400 {
        if sim.load(t, 0.0).changes() {
            times.push(t);
        }
    }
    assert!(!times.is_empty());
    let mut last = 30;
    for t in times {
        assert!(
            t - last >= 30,
            "changes at {last} and {t}: {:?}",
            sim.changes
        );
        last = t;
    }
    assert_eq!(sim.current, 1);
}

/// Deterministic noise in [-amplitude, +amplitude] (both ends included).
fn noise(i: usize, amplitude: f64) -> f64 {
    let pattern = [
        0.0, 1.0, -1.0, 0.5, -0.5, 0.9, -0.9, 0.2, -0.3, 1.0, -1.0, 0.7,
    ];
    pattern[i % pattern.len()] * amplitude
}

#[test]
fn no_flapping_on_ten_percent_noise_around_either_threshold() {
    for threshold in [0.8, 0.3] {
        for replicas in [1u32, 3, 5] {
            let mut sim = Sim::new(scaling(1, 10, 15), replicas);
            for i in 0..240 {
                let factor = threshold * (1.0 + noise(i, 0.10));
                let d = sim.load(i as i64 * 15, factor);
                assert!(
                    !d.changes(),
                    "threshold {threshold}, {replicas} replicas, tick {i}: {}",
                    d.reason
                );
            }
        }
    }
    // The same noise without the tolerance band does move replicas: the band is what holds.
    let mut sim = Sim::new(scaling(1, 10, 15), 3);
    sim.config.tolerance = 0.0;
    for i in 0..240 {
        sim.load(i as i64 * 15, 0.8 * (1.0 + noise(i, 0.10)));
    }
    assert!(!sim.changes.is_empty());
}

#[test]
fn spiky_load_scales_out_and_does_not_scale_back_in_between_spikes() {
    // Every third tick a spike, quiet otherwise: stabilization keeps the capacity.
    let mut sim = Sim::new(scaling(1, 10, 0), 2);
    for i in 0..120i64 {
        let factor = if i % 3 == 0 { 1.0 } else { 0.05 };
        sim.load(i * 5, factor);
    }
    assert!(
        sim.changes.iter().all(|(_, from, to)| to > from),
        "only scale outs: {:?}",
        sim.changes
    );
}

#[test]
fn scale_in_waits_for_the_highest_recommendation_of_the_window() {
    // Window 20 s, no cooldown: high load until t=100, then nothing.
    let mut sim = Sim::new(scaling(1, 10, 0), 4);
    for t in (0..=100).step_by(5) {
        sim.load(t, 0.6); // between thresholds: recommendation 4
    }
    let mut first_in = None;
    for t in (105..=300).step_by(5) {
        let d = sim.load(t, 0.0);
        if d.changes() && first_in.is_none() {
            first_in = Some(t);
        }
        if t < 120 {
            assert!(!d.changes(), "t={t}: {}", d.reason);
            assert!(d.reason.contains("stabilizing"), "t={t}: {}", d.reason);
        }
    }
    // The "4" of t=100 leaves the 20 s window at t=125.
    assert_eq!(first_in, Some(125), "{:?}", sim.changes);
    // One low tick among normal ones never scales in.
    let mut sim = Sim::new(scaling(1, 10, 0), 4);
    for t in (0..=300).step_by(5) {
        let factor = if t == 150 { 0.0 } else { 0.6 };
        assert!(!sim.load(t, factor).changes());
    }
    // Right after start (history shorter than the window) nothing scales in.
    let mut sim = Sim::new(scaling(1, 10, 0), 4);
    let d = sim.load(0, 0.0);
    assert!(!d.changes());
    assert!(d.reason.contains("watched for 0s of 20s"), "{}", d.reason);
    // A configured stabilization window wins over windowSeconds.
    let mut sim = Sim::new(scaling(1, 10, 0), 4);
    sim.config.scale_in_stabilization_seconds = Some(60);
    let mut first = None;
    for t in (0..=200).step_by(5) {
        if sim.load(t, 0.0).changes() && first.is_none() {
            first = Some(t);
        }
    }
    assert_eq!(first, Some(60));
}

#[test]
fn unready_replicas_do_not_count_toward_scale_in() {
    let mut sim = Sim::new(scaling(1, 10, 0), 3);
    for t in (0..=60).step_by(5) {
        sim.load(t, 0.6);
    }
    sim.ready = 1; // two replicas still starting (or broken)
    for t in (65..=200).step_by(5) {
        let d = sim.load(t, 0.0);
        assert!(!d.changes(), "t={t}: {}", d.reason);
    }
    assert!(sim
        .load(205, 0.0)
        .reason
        .contains("only 1 of 3 replicas are ready"));
    sim.ready = 3;
    assert_eq!(sim.load(210, 0.0).action, Action::ScaleIn);
}

#[test]
fn starting_replicas_count_as_capacity_for_scale_out() {
    // 3 desired, 1 ready, 30 rps, target 10: per replica 10 -> factor 1.0 -> +1 (not +3).
    let s = scaling(1, 10, 0);
    let mut state = AppState::default();
    let metrics = rps(30.0);
    let input = Input {
        scaling: &s,
        override_replicas: Some(3),
        current: 3,
        ready: 1,
        metrics: &metrics,
    };
    let d = decide(
        &PolicyConfig::default(),
        &input,
        s.http.as_ref().unwrap(),
        &mut state,
        0,
    );
    assert_eq!((d.basis, d.to), (3, 4), "{}", d.reason);
}

#[test]
fn edge_cases_hold_or_wake() {
    let s = scaling(0, 4, 60);
    let h = s.http.clone().unwrap();
    let config = PolicyConfig::default();
    // (current, ready, metrics) -> (action, to, reason fragment)
    let cases = [
        (0, 0, rps(3.0), Action::FromZero, 1, "from zero"),
        (
            0,
            0,
            rps(0.0),
            Action::Hold,
            0,
            "no replicas and no requests",
        ),
        (2, 0, rps(50.0), Action::Hold, 2, "no ready replica"),
        (2, 2, Metrics::default(), Action::Hold, 2, "no metrics"),
        (2, 2, rps(10.0), Action::Hold, 2, "within thresholds"),
    ];
    for (current, ready, metrics, action, to, fragment) in cases {
        let mut state = AppState::default();
        let input = Input {
            scaling: &s,
            override_replicas: None,
            current,
            ready,
            metrics: &metrics,
        };
        let d = decide(&config, &input, &h, &mut state, 0);
        assert_eq!((d.action, d.to), (action, to), "{}", d.reason);
        assert!(d.reason.contains(fragment), "{}", d.reason);
    }
}

#[test]
fn latency_alone_can_scale_out() {
    let mut s = scaling(1, 10, 0);
    s.http = Some(http(100.0, 200.0));
    let metrics = Metrics {
        rps: Some(10.0),
        p95_ms: Some(450.0),
        ..rps(10.0)
    };
    let input = Input {
        scaling: &s,
        override_replicas: None,
        current: 2,
        ready: 2,
        metrics: &metrics,
    };
    let mut state = AppState::default();
    let d = decide(
        &PolicyConfig::default(),
        &input,
        s.http.as_ref().unwrap(),
        &mut state,
        0,
    );
    assert_eq!((d.action, d.to), (Action::ScaleOut, 5), "{}", d.reason);
    assert_eq!(d.max_factor.map(|(m, _)| m), Some("latency"));
    let json = d.factors_json();
    assert_eq!(json["max_metric"], "latency");
    assert_eq!(json["latency"], 2.25);
    assert_eq!(json["rps"], 0.05);
    assert_eq!(json["scale_out_above"], 0.88);
    assert_eq!(json["scale_in_below"], 0.27);
    assert_eq!(json["action"], "scale-out");
}
