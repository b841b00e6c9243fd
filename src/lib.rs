//! berth: a declarative reconciler for one Docker host. See ARCHITECTURE.md for the code map.
pub mod api;
pub mod autoscale;
pub mod clock;
pub mod daemon;
pub mod health;
pub mod last_pass;
pub mod metrics;
pub mod notify;
pub mod plan;
pub mod proxy;
pub mod reconcile;
pub mod redact;
pub mod runtime;
pub mod service;
pub mod source;
pub mod spec;
pub mod store;
