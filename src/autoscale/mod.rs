//! The autoscaler. `policy` is the pure decision (no I/O, no clock).

pub mod policy;
