//! App specs: parse App YAML into validated `AppSpec`s, report every problem with file,
//! line, column and field path, and produce the JSON Schema. Pure: no file system, no
//! clock; callers hand in file contents. serde_yaml is used only inside this module.

pub mod hash;
pub mod model;

pub use hash::spec_hash;
pub use model::*;
