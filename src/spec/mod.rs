//! App specs: parse App YAML into validated `AppSpec`s, report every problem with file,
//! line, column and field path, and produce the JSON Schema. Pure: no file system, no
//! clock; callers hand in file contents. serde_yaml is used only inside this module (in
//! `parse`); nothing here may touch Docker, nginx, the store or the clock.
//!
//! Pipeline per file: `screen` (size and nesting caps, before any YAML parser) ->
//! `split` (one chunk per `---` document) -> serde_yaml into `raw` types -> `validate`
//! (defaults and rules) -> `model::AppSpec`. `locate` maps field paths back to lines.

mod diagnose;
pub mod hash;
pub(crate) mod locate;
pub mod model;
mod parse;
mod placement;
pub mod raw;
pub mod screen;
mod split;
pub mod units;
mod validate;
mod workload;

pub use hash::spec_hash;
pub use model::*;
pub use parse::{
    issue_at, load_files, load_source, load_source_with, parse_file, ParsedFile, MAX_FILE_BYTES,
    MAX_ISSUES_PER_DOCUMENT,
};
pub use screen::{MAX_ALIASES_PER_DOC, MAX_BLOCK_DEPTH, MAX_FLOW_DEPTH, MAX_FLOW_OPENS_PER_DOC};
pub use workload::path_problem;
pub use workload::{image_registry, registry_problem, SpecPolicy, DOCKER_SOCKETS};

/// The JSON Schema of an App document (`berth schema`), generated from the raw types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(raw::App);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
