//! The config file (`--config PATH`, `$BERTH_CONFIG`, default `/etc/berth/berth.toml` when
//! it exists): a flat TOML table whose keys are the long flags of `berth serve` (and the
//! global `log-format`), read from clap's own definitions in `cli.rs`, so a new serve flag
//! is a new key with no code here. Precedence: flag > env > file > default. A file value
//! becomes an extra `--key=value` argument that clap parses with the flag's own value
//! parser, unless the flag or its env var was given (or a flag it conflicts with, such as
//! `--git` over a file's `dir`). Errors name the file, line and column.
//! Must not touch: what the commands do (main.rs, commands.rs, serve.rs), the flags
//! themselves (cli.rs).

use clap::error::{ContextKind, ContextValue};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Read when it exists and no `--config`/`$BERTH_CONFIG` names another file.
pub(crate) const DEFAULT_PATH: &str = "/etc/berth/berth.toml";
/// `--config none` reads no file (not even the default one).
pub(crate) const NONE: &str = "none";
/// The subcommand whose flags are the file's keys.
const KEYS_OF: &str = "serve";
/// Keys that feed a differently named flag of another command: (command, its flag, key,
/// a key value that does not apply). `berth status` finds the API `serve` listens on.
const ALIASES: &[(&str, &str, &str, &str)] = &[("status", "api", "api-listen", "off")];
/// Arguments that are never keys.
const NOT_KEYS: &[&str] = &["help", "version", "config"];

#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigError {
    #[error("cannot read config file {path}: {source}; pass --config PATH (or --config none)")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// A command-line problem clap reports itself (help and version too).
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

/// Where an effective value came from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub(crate) enum Origin {
    Flag,
    Env { var: String },
    File { path: String, line: usize },
    Default,
    Unset,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Flag => f.write_str("flag"),
            Origin::Env { var } => write!(f, "env {var}"),
            Origin::File { path, line } => write!(f, "file {path}:{line}"),
            Origin::Default => f.write_str("default"),
            Origin::Unset => f.write_str("unset"),
        }
    }
}

/// One key of the effective configuration, as `berth config show` prints it.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Effective {
    pub(crate) key: String,
    /// The values (several for a repeatable flag), secrets redacted.
    pub(crate) values: Vec<String>,
    pub(crate) origin: Origin,
    pub(crate) redacted: bool,
}

/// The command line after layering the config file under it.
pub(crate) struct Layered {
    pub(crate) matches: ArgMatches,
    /// The file that was read, if any.
    pub(crate) file: Option<PathBuf>,
    /// Every key of the running subcommand with its value and origin.
    pub(crate) effective: Vec<Effective>,
}

/// One key of the file: its text values and where it is.
struct FileEntry {
    values: Vec<String>,
    line: usize,
    column: usize,
}

/// Parses `argv` with `cmd` (berth's whole command), then layers the config file under it.
pub(crate) fn layer(mut cmd: Command, argv: Vec<OsString>) -> Result<Layered, ConfigError> {
    cmd.build();
    let first = cmd.clone().try_get_matches_from(&argv)?;
    let explicit = first.get_one::<PathBuf>("config").cloned();
    let file = match explicit {
        Some(path) if path.as_os_str() == NONE => None,
        Some(path) => Some(path),
        None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
    };
    let keys = key_args(&cmd);
    let entries = match &file {
        Some(path) => read_file(path, &keys)?,
        None => BTreeMap::new(),
    };
    let Some((_, sub_first)) = first.subcommand() else {
        return Ok(Layered {
            matches: first,
            file,
            effective: Vec::new(),
        });
    };
    let sub = leaf(&cmd, &first);
    let sub_matches = leaf_matches(sub_first);
    let display = file
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // Which file keys apply to this subcommand, and as which arguments.
    let mut injected: BTreeMap<String, usize> = BTreeMap::new();
    let mut extra: Vec<OsString> = Vec::new();
    for (key, entry) in &entries {
        let Some(arg) = find_arg(&cmd, sub, key).or_else(|| alias(sub, key, &entry.values)) else {
            continue; // a serve key this subcommand has no use for (plan has no --interval)
        };
        let long = arg.get_long().unwrap_or(key);
        let matches = if arg.is_global_set() {
            &first
        } else {
            sub_matches
        };
        if given(matches, arg.get_id().as_str()) {
            continue; // flag or env wins
        }
        // `--git` on the command line overrides a file's `dir`.
        if sub
            .get_arg_conflicts_with(arg)
            .into_iter()
            .any(|other| given(sub_matches, other.get_id().as_str()))
        {
            continue;
        }
        if let Some(other) = entries.keys().find(|other| {
            *other < key
                && find_arg(&cmd, sub, other).is_some_and(|o| {
                    sub.get_arg_conflicts_with(arg)
                        .iter()
                        .any(|c| c.get_id() == o.get_id())
                })
        }) {
            return Err(invalid(
                &display,
                entry,
                format!(
                    "`{key}` cannot be used with `{other}` (line {}): keep one",
                    entries[other].line
                ),
            ));
        }
        for value in &entry.values {
            if is_flag(arg) {
                if value == "true" {
                    extra.push(format!("--{long}").into());
                }
            } else {
                extra.push(format!("--{long}={value}").into());
            }
        }
        injected.insert(key.clone(), entry.line);
    }
    let mut argv = argv;
    if !extra.is_empty() {
        // After the leaf subcommand's own arguments; a `--` would end the options.
        let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
        argv.splice(at..at, extra);
    }
    let matches = cmd.clone().try_get_matches_from(&argv).map_err(|e| {
        match invalid_arg(&e).and_then(|key| entries.get(&key).map(|entry| (key, entry))) {
            Some((key, entry)) if injected.contains_key(&key) => {
                invalid(&display, entry, format!("{key}: {}", clap_message(&e)))
            }
            _ => ConfigError::Clap(e),
        }
    })?;
    let effective = effective(&cmd, sub, &first, &matches, &injected, &display);
    Ok(Layered {
        matches,
        file,
        effective,
    })
}

/// The keys: serve's long flags and the global ones, by long name.
fn key_args(cmd: &Command) -> BTreeMap<String, Arg> {
    let serve = cmd
        .find_subcommand(KEYS_OF)
        .expect("berth has a serve subcommand");
    serve
        .get_arguments()
        .chain(cmd.get_arguments().filter(|a| a.is_global_set()))
        .filter(|a| !NOT_KEYS.contains(&a.get_id().as_str()))
        .filter_map(|a| a.get_long().map(|long| (long.to_string(), a.clone())))
        .collect()
}

/// The names of every key (tests check the set).
#[cfg(test)]
pub(crate) fn keys(cmd: &Command) -> Vec<String> {
    let mut cmd = cmd.clone();
    cmd.build();
    key_args(&cmd).into_keys().collect()
}

/// The deepest subcommand the user ran (`config show`, not `config`).
fn leaf<'a>(cmd: &'a Command, matches: &ArgMatches) -> &'a Command {
    let mut cmd = cmd;
    let mut matches = matches;
    while let Some((name, sub)) = matches.subcommand() {
        match cmd.find_subcommand(name) {
            Some(c) => {
                cmd = c;
                matches = sub;
            }
            None => break,
        }
    }
    cmd
}

fn leaf_matches(matches: &ArgMatches) -> &ArgMatches {
    let mut matches = matches;
    while let Some((_, sub)) = matches.subcommand() {
        matches = sub;
    }
    matches
}

/// The argument of `sub` (or a global one) with this long name.
fn find_arg<'a>(root: &'a Command, sub: &'a Command, long: &str) -> Option<&'a Arg> {
    sub.get_arguments()
        .chain(root.get_arguments().filter(|a| a.is_global_set()))
        .find(|a| a.get_long() == Some(long) && !NOT_KEYS.contains(&a.get_id().as_str()))
}

/// The flag of `sub` a key feeds under another name ([`ALIASES`]).
fn alias<'a>(sub: &'a Command, key: &str, values: &[String]) -> Option<&'a Arg> {
    let (_, long, _, skip) = ALIASES
        .iter()
        .find(|(command, _, k, _)| *command == sub.get_name() && *k == key)?;
    if values.iter().any(|v| v == skip) {
        return None;
    }
    sub.get_arguments().find(|a| a.get_long() == Some(long))
}

/// Was this argument given as a flag or through its env var?
fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches
            .try_contains_id(id)
            .ok()
            .and_then(|_| matches.value_source(id)),
        Some(ValueSource::CommandLine) | Some(ValueSource::EnvVariable)
    )
}

fn is_flag(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse)
}

fn repeatable(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append)
}

/// Reads and checks the file: TOML syntax, known keys, value shapes. Values stay text:
/// clap's value parsers check them when they are layered.
fn read_file(
    path: &Path,
    keys: &BTreeMap<String, Arg>,
) -> Result<BTreeMap<String, FileEntry>, ConfigError> {
    let display = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: display.clone(),
        source,
    })?;
    parse_text(&display, &text, keys)
}

fn parse_text(
    display: &str,
    text: &str,
    keys: &BTreeMap<String, Arg>,
) -> Result<BTreeMap<String, FileEntry>, ConfigError> {
    let table: BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> = toml::from_str(text)
        .map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| line_column(text, s.start))
            .unwrap_or((1, 1));
        ConfigError::Invalid {
            path: display.to_string(),
            line,
            column,
            message: format!("not valid TOML: {}", e.message()),
        }
    })?;
    let mut entries = BTreeMap::new();
    for (key, value) in table {
        let (line, column) = line_column(text, key.span().start);
        let at = |message: String| ConfigError::Invalid {
            path: display.to_string(),
            line,
            column,
            message,
        };
        let name = key.get_ref().as_str();
        let Some(arg) = keys.get(name) else {
            let hint = closest(name, keys.keys())
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(at(format!(
                "unknown key `{name}`{hint}: the keys are the long flags of `berth serve` \
                 (`berth config show` lists them)"
            )));
        };
        let values = match value.get_ref() {
            toml::Value::Array(items) if repeatable(arg) => items
                .iter()
                .map(|item| {
                    scalar(item).ok_or_else(|| at(format!("{name}: expected a list of values")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            toml::Value::Array(_) => {
                return Err(at(format!("{name}: expected one value, not a list")))
            }
            toml::Value::Boolean(_) => vec![scalar(value.get_ref()).unwrap_or_default()],
            _ if is_flag(arg) => {
                return Err(at(format!("{name}: expected true or false")));
            }
            other => vec![scalar(other)
                .ok_or_else(|| at(format!("{name}: expected a value, not a table")))?],
        };
        entries.insert(
            name.to_string(),
            FileEntry {
                values,
                line,
                column,
            },
        );
    }
    Ok(entries)
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// 1-based line and column of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The known key closest to a misspelt one (at most 3 edits away).
fn closest<'a>(name: &str, keys: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    keys.map(|k| (edit_distance(name, k), k))
        .filter(|(d, _)| *d <= 3)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

fn invalid(display: &str, entry: &FileEntry, message: String) -> ConfigError {
    ConfigError::Invalid {
        path: display.to_string(),
        line: entry.line,
        column: entry.column,
        message,
    }
}

/// The long name of the argument a clap error is about (`--interval <INTERVAL>` -> interval).
fn invalid_arg(e: &clap::Error) -> Option<String> {
    match e.get(ContextKind::InvalidArg)? {
        ContextValue::String(s) => s
            .strip_prefix("--")
            .map(|rest| rest.split([' ', '=']).next().unwrap_or(rest).to_string()),
        _ => None,
    }
}

/// clap's one-line message without its `error: ` prefix and usage tail.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

/// Each key of the running subcommand, its effective value and where it came from.
fn effective(
    root: &Command,
    sub: &Command,
    first: &ArgMatches,
    last: &ArgMatches,
    injected: &BTreeMap<String, usize>,
    file: &str,
) -> Vec<Effective> {
    let keys = key_args(root);
    let first_sub = leaf_matches(first);
    let last_sub = leaf_matches(last);
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for key in keys.keys() {
        let Some(arg) = find_arg(root, sub, key) else {
            continue;
        };
        if !seen.insert(key.clone()) {
            continue;
        }
        let id = arg.get_id().as_str();
        let (before, after) = if arg.is_global_set() {
            (first, last)
        } else {
            (first_sub, last_sub)
        };
        let origin = if let Some(line) = injected.get(key) {
            Origin::File {
                path: file.to_string(),
                line: *line,
            }
        } else {
            match before
                .try_contains_id(id)
                .ok()
                .and_then(|_| before.value_source(id))
            {
                Some(ValueSource::CommandLine) => Origin::Flag,
                Some(ValueSource::EnvVariable) => Origin::Env {
                    var: arg
                        .get_env()
                        .map(|v| v.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                },
                Some(ValueSource::DefaultValue) => Origin::Default,
                _ => Origin::Unset,
            }
        };
        let mut values: Vec<String> = after
            .get_raw(id)
            .map(|raw| raw.map(|v| v.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        if is_flag(arg) && values.is_empty() {
            values.push("false".to_string());
        }
        let redacted = is_secret_key(key) && !values.is_empty() && origin != Origin::Default;
        if redacted {
            values = vec![berth::redact::REDACTED.to_string()];
        } else {
            values = values
                .into_iter()
                .map(|v| berth::source::git::redact_url(&berth::redact::redact_text(&v)))
                .collect();
        }
        out.push(Effective {
            key: key.clone(),
            values,
            origin,
            redacted,
        });
    }
    out
}

/// A key that holds a secret itself (not the name of a file or env var that holds one).
fn is_secret_key(key: &str) -> bool {
    berth::redact::is_secret_name(key)
        && !key.ends_with("-env")
        && !key.ends_with("-file")
        && !key.ends_with("-path")
        && !key.ends_with("known-hosts")
        && !key.ends_with("-key")
}

/// `berth config show` as text: TOML lines a config file could hold, each with its origin.
pub(crate) fn render_text(file: Option<&Path>, effective: &[Effective]) -> String {
    let mut out = match file {
        Some(path) => format!("# config file: {}\n", path.display()),
        None => format!("# config file: none ({DEFAULT_PATH} does not exist or --config none)\n"),
    };
    let lines: Vec<(String, String)> = effective
        .iter()
        .map(|e| {
            let line = match e.values.as_slice() {
                [] => format!("# {} =", e.key),
                [one] => format!("{} = {}", e.key, toml_value(one)),
                many => format!(
                    "{} = [{}]",
                    e.key,
                    many.iter()
                        .map(|v| toml_value(v))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            (line, e.origin.to_string())
        })
        .collect();
    let width = lines.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (line, origin) in lines {
        out.push_str(&format!("{line:width$}  # {origin}\n"));
    }
    out
}

/// A value as TOML: numbers and booleans bare, everything else a quoted string.
fn toml_value(value: &str) -> String {
    if value == "true"
        || value == "false"
        || value.parse::<i64>().is_ok()
        || value.parse::<f64>().is_ok_and(f64::is_finite)
    {
        value.to_string()
    } else {
        toml::Value::String(value.to_string()).to_string()
    }
}

#[cfg(test)]
mod tests;
