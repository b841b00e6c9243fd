//! berth: a declarative reconciler for one Docker host. See ARCHITECTURE.md for the code map.
pub mod plan;
pub mod runtime;
pub mod spec;
pub mod store;
