//! The autoscaler. `policy` is the pure decision (no I/O, no clock); `collector` turns the
//! nginx access log and Docker stats samples into window metrics.

pub mod collector;
pub mod policy;
