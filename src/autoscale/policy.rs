//! The autoscaling policy: window metrics of one app in, a replica decision out. Pure: no
//! I/O, no clock (`now` is a parameter, unix milliseconds), no store, no Docker. The loop
//! (`autoscale::Autoscaler`) feeds it and acts on what it returns.
//!
//! Rules (the seed's scale factors, HPA-style stabilization on top):
//! - a factor per metric, 1.0 = at target: `cpu` = CPU% of the limit / 70, `memory` =
//!   memory% / 75, `rps` = requests/s per replica / `targetRPSPerReplica`, `latency` = p95 /
//!   `maxP95LatencyMs` (when set), `connections` = in-flight requests per replica / 80.
//!   Per-replica figures divide by `max(current, ready)`: replicas that are still starting
//!   count as capacity already on its way, so one burst is not answered twice.
//! - tolerance band: scale out only when the largest factor is above
//!   `scaleOutThresholdPct` × (1 + tolerance), scale in only when it is below
//!   `scaleInThresholdPct` × (1 − tolerance) (tolerance 10%, like the HPA's).
//! - step by pressure: +3 above 1.5, +2 above 1.2, else +1; scale in is always −1.
//! - scale-in stabilization: the count used for scale-in is the highest recommendation of
//!   the last stabilization window (default: the app's `windowSeconds`), and scale-in is
//!   never decided before the app was watched for that long.
//! - unready or new replicas do not count toward scale-in: while fewer replicas are ready
//!   than desired, the app is not scaled in.
//! - cooldown: at most one scaling change per `cooldownSeconds` (both directions).
//! - bounds: the result lies in `minReplicas..=maxReplicas`; an override outside them
//!   (bounds changed in git) is clamped at once, cooldown or not.
//! - an app at zero replicas that receives requests goes to one.

use crate::spec::{HttpScaling, Scaling};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};

/// Defaults of the knobs the spec does not carry (the seed's values).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyConfig {
    /// Relative band around both thresholds inside which nothing changes (0.1 = 10%).
    pub tolerance: f64,
    /// Scale-in stabilization window in seconds; `None` uses the app's `windowSeconds`.
    pub scale_in_stabilization_seconds: Option<u32>,
    /// CPU share of the container's limit (of one core without a limit) that counts as 1.0.
    pub target_cpu_pct: f64,
    /// Memory share of the container's limit that counts as 1.0.
    pub target_memory_pct: f64,
    /// In-flight requests per replica that count as 1.0.
    pub target_connections_per_replica: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            tolerance: 0.1,
            scale_in_stabilization_seconds: None,
            target_cpu_pct: 70.0,
            target_memory_pct: 75.0,
            target_connections_per_replica: 80.0,
        }
    }
}

/// Factors closer than this to a band edge count as on it (float rounding, not load).
const EDGE_EPSILON: f64 = 1e-9;

/// Above this largest factor a scale out adds three replicas.
pub const PRESSURE_STEP_3: f64 = 1.5;
/// Above this largest factor a scale out adds two replicas.
pub const PRESSURE_STEP_2: f64 = 1.2;

/// What the collector measured for one app over its window. `None` = not measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Metrics {
    /// Seconds of data behind the rates (the window, or less right after start).
    pub coverage_seconds: f64,
    /// Requests per second through nginx (all of the app's requests, any status).
    pub rps: Option<f64>,
    /// 95th percentile of the upstream response time, milliseconds.
    pub p95_ms: Option<f64>,
    /// Mean number of requests in flight (sum of request times / window: Little's law).
    pub in_flight: Option<f64>,
    /// Mean CPU of the ready replicas, percent of their CPU limit (of one core without one).
    pub cpu_pct: Option<f64>,
    /// Mean memory of the ready replicas, percent of their memory limit.
    pub memory_pct: Option<f64>,
}

/// Everything the policy needs about one app at one tick.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub scaling: &'a Scaling,
    /// The replica override in the store, if any (may lie outside the bounds).
    pub override_replicas: Option<u32>,
    /// The effective replica count (`plan::effective_replicas`).
    pub current: u32,
    /// Replicas of the current spec that are running and healthy (last pass).
    pub ready: u32,
    pub metrics: &'a Metrics,
}

/// The memory one app's policy keeps between ticks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppState {
    /// When the last scaling change was decided (cooldown).
    pub last_change_at: Option<i64>,
    /// When the policy first looked at this app (scale-in needs a full stabilization window).
    pub watched_since: Option<i64>,
    /// (time, recommended replicas) over the stabilization window, oldest first.
    pub recommendations: VecDeque<(i64, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    ScaleOut,
    ScaleIn,
    /// The stored override lies outside the bounds (they changed in git).
    Clamp,
    /// Requests arrived for an app at zero replicas.
    FromZero,
    Hold,
}

/// One decision with everything that led to it (stored as a scaling decision row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    pub action: Action,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// Factor per metric (1.0 = at target).
    pub factors: BTreeMap<&'static str, f64>,
    /// The largest factor and its metric.
    pub max_factor: Option<(&'static str, f64)>,
    /// Scale out above / scale in below these (thresholds with the tolerance applied).
    pub scale_out_above: f64,
    pub scale_in_below: f64,
    /// This tick's raw recommendation (before cooldown and stabilization).
    pub recommendation: u32,
    /// Highest recommendation of the stabilization window (what scale-in may go down to).
    pub stabilized: u32,
    /// Per-replica divisor used for the rps and connections factors.
    pub basis: u32,
}

impl Decision {
    /// True when the decision writes a new override.
    pub fn changes(&self) -> bool {
        self.from != self.to
    }

    /// The factors as JSON with the thresholds and the steps (for the decision row).
    pub fn factors_json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (name, value) in &self.factors {
            map.insert((*name).to_string(), round3(*value).into());
        }
        if let Some((name, value)) = self.max_factor {
            map.insert("max".into(), round3(value).into());
            map.insert("max_metric".into(), name.into());
        }
        map.insert(
            "scale_out_above".into(),
            round3(self.scale_out_above).into(),
        );
        map.insert("scale_in_below".into(), round3(self.scale_in_below).into());
        map.insert("recommendation".into(), self.recommendation.into());
        map.insert("stabilized".into(), self.stabilized.into());
        map.insert("basis_replicas".into(), self.basis.into());
        map.insert(
            "action".into(),
            serde_json::to_value(self.action).unwrap_or_default(),
        );
        serde_json::Value::Object(map)
    }
}

/// The clamp rule alone: a stored override outside the bounds is brought inside them.
fn clamp_rule(scaling: &Scaling, stored: Option<u32>) -> Option<(u32, u32, String)> {
    let (min, max) = (scaling.min_replicas, scaling.max_replicas);
    let stored = stored?;
    if (min..=max).contains(&stored) {
        return None;
    }
    let to = stored.clamp(min, max);
    Some((
        stored,
        to,
        format!(
            "bounds changed in git: override {stored} is outside {min}..{max}, clamped to {to}"
        ),
    ))
}

/// For an app in mode auto without `policy.http`: nothing to scale on, but an override
/// outside the bounds is still clamped.
pub fn bounds_only(scaling: &Scaling, stored: Option<u32>, current: u32) -> Decision {
    let mut d = Decision {
        action: Action::Hold,
        from: current,
        to: current,
        reason: "no scaling.policy.http block: no metric to act on".to_string(),
        factors: BTreeMap::new(),
        max_factor: None,
        scale_out_above: 0.0,
        scale_in_below: 0.0,
        recommendation: current,
        stabilized: current,
        basis: current,
    };
    if let Some((from, to, reason)) = clamp_rule(scaling, stored) {
        d.action = Action::Clamp;
        d.from = from;
        d.to = to;
        d.recommendation = to;
        d.stabilized = to;
        d.reason = reason;
    }
    d
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The scale factors of one app (1.0 = at target). Metrics that are not measured, and
/// targets that are off (`maxP95LatencyMs: 0`), give no factor.
pub fn factors(
    config: &PolicyConfig,
    http: &HttpScaling,
    metrics: &Metrics,
    basis: u32,
) -> BTreeMap<&'static str, f64> {
    let basis = f64::from(basis.max(1));
    let mut out = BTreeMap::new();
    if let Some(cpu) = metrics.cpu_pct {
        if config.target_cpu_pct > 0.0 {
            out.insert("cpu", cpu / config.target_cpu_pct);
        }
    }
    if let Some(memory) = metrics.memory_pct {
        if config.target_memory_pct > 0.0 {
            out.insert("memory", memory / config.target_memory_pct);
        }
    }
    if let Some(rps) = metrics.rps {
        if http.target_rps_per_replica > 0.0 {
            out.insert("rps", rps / basis / http.target_rps_per_replica);
        }
    }
    if let Some(p95) = metrics.p95_ms {
        if http.max_p95_latency_ms > 0.0 {
            out.insert("latency", p95 / http.max_p95_latency_ms);
        }
    }
    if let Some(in_flight) = metrics.in_flight {
        if config.target_connections_per_replica > 0.0 {
            out.insert(
                "connections",
                in_flight / basis / config.target_connections_per_replica,
            );
        }
    }
    out
}

/// Replicas a scale out adds for a largest factor of `pressure`.
pub fn scale_out_step(pressure: f64) -> u32 {
    if pressure > PRESSURE_STEP_3 {
        3
    } else if pressure > PRESSURE_STEP_2 {
        2
    } else {
        1
    }
}

fn stabilization_ms(config: &PolicyConfig, http: &HttpScaling) -> i64 {
    let seconds = config
        .scale_in_stabilization_seconds
        .unwrap_or(http.window_seconds);
    i64::from(seconds) * 1000
}

/// Decides one tick for one app in mode auto with a `policy.http` block. Updates `state`
/// (recommendation history, cooldown) and returns the decision; `Decision::changes` says
/// whether a new override is to be written.
pub fn decide(
    config: &PolicyConfig,
    input: &Input,
    http: &HttpScaling,
    state: &mut AppState,
    now: i64,
) -> Decision {
    let scaling = input.scaling;
    let (min, max) = (scaling.min_replicas, scaling.max_replicas);
    let current = input.current;
    let watched_since = *state.watched_since.get_or_insert(now);
    let stabilization = stabilization_ms(config, http);
    let out_above = http.scale_out_threshold_pct / 100.0 * (1.0 + config.tolerance);
    let in_below = http.scale_in_threshold_pct / 100.0 * (1.0 - config.tolerance);
    let above_band = |f: f64| f > out_above + EDGE_EPSILON;
    let below_band = |f: f64| f < in_below - EDGE_EPSILON;
    let basis = current.max(input.ready);
    let factors = factors(config, http, input.metrics, basis);
    let max_factor = factors.iter().map(|(name, value)| (*name, *value)).fold(
        None,
        |best: Option<(&'static str, f64)>, (name, value)| match best {
            Some((_, b)) if b >= value => best,
            _ => Some((name, value)),
        },
    );
    let mut decision = Decision {
        action: Action::Hold,
        from: current,
        to: current,
        reason: String::new(),
        factors,
        max_factor,
        scale_out_above: out_above,
        scale_in_below: in_below,
        recommendation: current,
        stabilized: current,
        basis,
    };
    let hold = |mut d: Decision, reason: String| {
        d.to = d.from;
        d.action = Action::Hold;
        d.reason = reason;
        d
    };

    // Bounds first: git is the authority, cooldown does not delay it.
    if let Some((from, to, reason)) = clamp_rule(scaling, input.override_replicas) {
        decision.action = Action::Clamp;
        decision.from = from;
        decision.to = to;
        decision.recommendation = to;
        decision.stabilized = to;
        decision.reason = reason;
        return decision;
    }

    // Scale from zero: there is no replica to measure, only requests that got a 503.
    if current == 0 {
        let rps = input.metrics.rps.unwrap_or(0.0);
        if rps > 0.0 && max >= 1 {
            let to = 1.max(min);
            state.last_change_at = Some(now);
            decision.action = Action::FromZero;
            decision.to = to;
            decision.recommendation = to;
            decision.stabilized = to;
            decision.reason =
                format!("scale out from zero: {rps:.1} requests/s arrived with no replica");
            return decision;
        }
        return hold(decision, "no replicas and no requests".to_string());
    }
    if input.ready == 0 {
        return hold(
            decision,
            "no ready replica yet: load is judged once one serves".to_string(),
        );
    }
    let Some((metric, pressure)) = max_factor else {
        return hold(
            decision,
            "no metrics yet (no requests logged, no container stats)".to_string(),
        );
    };

    // This tick's raw recommendation.
    let (recommendation, step) = if above_band(pressure) {
        let step = scale_out_step(pressure);
        ((current + step).min(max), step)
    } else if below_band(pressure) {
        (current.saturating_sub(1).max(min), 1)
    } else {
        (current, 0)
    };
    decision.recommendation = recommendation;
    state.recommendations.push_back((now, recommendation));
    while let Some((at, _)) = state.recommendations.front() {
        if now - *at > stabilization {
            state.recommendations.pop_front();
        } else {
            break;
        }
    }
    let stabilized = state
        .recommendations
        .iter()
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(recommendation)
        .clamp(min, max);
    decision.stabilized = stabilized;
    let cooldown_left = state.last_change_at.map_or(0, |at| {
        (at + i64::from(scaling.cooldown_seconds) * 1000 - now).max(0)
    });
    let why = format!("{metric} factor {pressure:.2}");

    if above_band(pressure) {
        if recommendation <= current {
            return hold(
                decision,
                format!("{why} > {out_above:.2}, but already at maxReplicas {max}"),
            );
        }
        if cooldown_left > 0 {
            return hold(
                decision,
                format!(
                    "{why} > {out_above:.2} wants +{step}, cooldown: {:.0}s left",
                    secs(cooldown_left)
                ),
            );
        }
        state.last_change_at = Some(now);
        decision.action = Action::ScaleOut;
        decision.to = recommendation;
        decision.reason = format!(
            "scale out +{}: {why} > {out_above:.2}",
            recommendation - current
        );
        return decision;
    }
    if below_band(pressure) {
        if recommendation >= current {
            return hold(
                decision,
                format!("{why} < {in_below:.2}, but already at minReplicas {min}"),
            );
        }
        if input.ready < current {
            return hold(
                decision,
                format!(
                    "{why} < {in_below:.2}, but only {} of {current} replicas are ready: \
                     unready replicas do not count toward scale-in",
                    input.ready
                ),
            );
        }
        if now - watched_since < stabilization {
            return hold(
                decision,
                format!(
                    "{why} < {in_below:.2}, scale-in stabilizing: watched for {:.0}s of {:.0}s",
                    secs(now - watched_since),
                    secs(stabilization)
                ),
            );
        }
        if stabilized >= current {
            return hold(
                decision,
                format!(
                    "{why} < {in_below:.2}, scale-in stabilizing: highest recommendation \
                     of the last {:.0}s is {stabilized}",
                    secs(stabilization)
                ),
            );
        }
        if cooldown_left > 0 {
            return hold(
                decision,
                format!(
                    "{why} < {in_below:.2} wants -1, cooldown: {:.0}s left",
                    secs(cooldown_left)
                ),
            );
        }
        state.last_change_at = Some(now);
        decision.action = Action::ScaleIn;
        // One replica at a time, whatever the history says.
        decision.to = stabilized.max(current - 1);
        decision.reason = format!(
            "scale in -1: {why} < {in_below:.2} for {:.0}s",
            secs(stabilization)
        );
        return decision;
    }
    hold(
        decision,
        format!(
            "within thresholds: {why} (scale out above {out_above:.2}, in below {in_below:.2})"
        ),
    )
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

#[cfg(test)]
mod tests;
