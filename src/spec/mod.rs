//! App specs: parse App YAML into validated `AppSpec`s, report every problem with file,
//! line, column and field path, and produce the JSON Schema. Pure: no file system, no
//! clock; callers hand in file contents. serde_yaml is used only inside this module; nothing
//! here may touch Docker, nginx, the store or the clock.

pub mod hash;
pub mod model;
pub mod raw;
pub mod screen;
pub mod units;

pub use hash::spec_hash;
pub use model::*;
pub use screen::{MAX_ALIASES_PER_DOC, MAX_BLOCK_DEPTH, MAX_FILE_BYTES, MAX_FLOW_DEPTH};

/// The JSON Schema of an App document (`berth schema`), generated from the raw types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::App);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
