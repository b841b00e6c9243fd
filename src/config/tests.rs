//! The config file's layering on berth's real command line (no I/O but temp files).

use super::*;
use crate::cli::Cli;
use clap::{CommandFactory, FromArgMatches};
use std::io::Write;

fn file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f
}

fn layer_with(args: &[&str], config: &tempfile::NamedTempFile) -> Result<Layered, ConfigError> {
    let mut argv: Vec<OsString> = vec!["berth".into(), "--config".into(), config.path().into()];
    argv.extend(args.iter().map(OsString::from));
    layer(Cli::command(), argv)
}

fn entry<'a>(layered: &'a Layered, key: &str) -> &'a Effective {
    layered.effective.iter().find(|e| e.key == key).unwrap()
}

#[test]
fn every_serve_flag_is_a_key() {
    let keys = keys(&Cli::command());
    for key in [
        "interval",
        "state-dir",
        "listen",
        "api-listen",
        "autoscale-tick",
        "no-autoscale",
        "git",
        "dir",
        "log-format",
    ] {
        assert!(
            keys.contains(&key.to_string()),
            "{key} missing from {keys:?}"
        );
    }
    assert!(!keys.contains(&"config".to_string()));
    assert!(!keys.contains(&"help".to_string()));
}

#[test]
fn file_values_apply_under_flags() {
    let f = file("interval = 9\nlisten = \"127.0.0.1:9999\"\nno-autoscale = true\n");
    let l = layer_with(&["serve", "--interval", "3"], &f).unwrap();
    assert_eq!(entry(&l, "interval").values, ["3"]);
    assert_eq!(entry(&l, "interval").origin, Origin::Flag);
    assert_eq!(entry(&l, "listen").values, ["127.0.0.1:9999"]);
    assert!(matches!(
        entry(&l, "listen").origin,
        Origin::File { line: 2, .. }
    ));
    assert_eq!(entry(&l, "no-autoscale").values, ["true"]);
    assert_eq!(entry(&l, "shutdown-timeout").origin, Origin::Default);
    assert_eq!(entry(&l, "webhook-listen").origin, Origin::Unset);
    // The parsed command line carries the file's values.
    let cli = Cli::from_arg_matches(&l.matches).unwrap();
    let crate::cli::Command::Serve { serve } = cli.command else {
        panic!("not serve")
    };
    assert_eq!(serve.interval, 3);
    assert_eq!(serve.common.listen, "127.0.0.1:9999");
    assert!(serve.autoscale.no_autoscale);
}

#[test]
fn a_flag_that_conflicts_with_a_file_key_wins() {
    let f = file("dir = \"/srv/apps\"\n");
    let l = layer_with(&["serve", "--git", "/tmp/repo"], &f).unwrap();
    assert_eq!(entry(&l, "git").origin, Origin::Flag);
    assert_eq!(entry(&l, "dir").origin, Origin::Unset);
}

#[test]
fn two_conflicting_file_keys_are_an_error_with_a_line() {
    let f = file("dir = \"/srv/apps\"\ngit = \"/tmp/repo\"\n");
    let err = layer_with(&["serve"], &f).err().unwrap().to_string();
    assert!(err.contains(":2:1:") || err.contains(":1:1:"), "{err}");
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn unknown_keys_name_the_line_and_a_near_key() {
    let f = file("# berth\ninterval = 5\nintervall = 5\n");
    let err = layer_with(&["serve"], &f).err().unwrap().to_string();
    assert!(
        err.contains(":3:1: unknown key `intervall` (did you mean `interval`?)"),
        "{err}"
    );
}

#[test]
fn a_bad_value_names_the_line_and_the_parsers_complaint() {
    let f = file("listen = \"x\"\n\ninterval = \"soon\"\n");
    let err = layer_with(&["serve"], &f).err().unwrap().to_string();
    assert!(err.contains(":3:1: interval:"), "{err}");
    assert!(err.contains("soon"), "{err}");
    let f = file("no-autoscale = \"yes\"\n");
    let err = layer_with(&["serve"], &f).err().unwrap().to_string();
    assert!(
        err.contains(":1:1: no-autoscale: expected true or false"),
        "{err}"
    );
    let f = file("interval = [1, 2]\n");
    let err = layer_with(&["serve"], &f).err().unwrap().to_string();
    assert!(err.contains("expected one value, not a list"), "{err}");
}

#[test]
fn toml_syntax_errors_name_the_line() {
    let f = file("interval = 5\nlisten = \n");
    let err = layer_with(&["serve"], &f).err().unwrap().to_string();
    assert!(err.contains(":2:"), "{err}");
    assert!(err.contains("not valid TOML"), "{err}");
}

#[test]
fn keys_a_subcommand_does_not_take_are_left_out() {
    // plan has no --interval: the file's interval is for serve.
    let f = file("interval = 7\nstate-dir = \"/tmp/x\"\n");
    let l = layer_with(&["plan", "--observed-empty"], &f).unwrap();
    assert_eq!(entry(&l, "state-dir").values, ["/tmp/x"]);
    assert!(l.effective.iter().all(|e| e.key != "interval"));
}

#[test]
fn secrets_are_redacted_and_names_of_secrets_are_not() {
    assert!(is_secret_key("api-token"));
    assert!(!is_secret_key("webhook-secret-env"));
    assert!(!is_secret_key("api-token-file"));
    assert!(!is_secret_key("git-ssh-key"));
    let f = file("git = \"https://user:hunter2@example.com/specs.git\"\n");
    let l = layer_with(&["config", "show"], &f).unwrap();
    let git = &entry(&l, "git").values[0];
    assert!(!git.contains("hunter2"), "{git}");
    // A PostgreSQL store URL: the password in the userinfo and in a query parameter.
    let f = file("store = \"postgres://berth:hunter2@127.0.0.1/berth?password=hunter3\"\n");
    let l = layer_with(&["config", "show"], &f).unwrap();
    let store = &entry(&l, "store").values[0];
    assert!(
        !store.contains("hunter2") && !store.contains("hunter3"),
        "{store}"
    );
    assert!(
        store.starts_with("postgres://berth:***@127.0.0.1/berth"),
        "{store}"
    );
}

#[test]
fn show_renders_toml_with_origins() {
    let f = file("interval = 9\n");
    let l = layer_with(&["config", "show"], &f).unwrap();
    let text = render_text(l.file.as_deref(), &l.effective);
    assert!(text.contains("interval = 9"), "{text}");
    assert!(
        text.contains(&format!("# file {}:1", f.path().display())),
        "{text}"
    );
    assert!(text.contains("listen = \"127.0.0.1:8080\""), "{text}");
    // What it prints is a valid config file again (comments and all).
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let again = file(&body);
    layer_with(&["serve"], &again).unwrap();
}

#[test]
fn line_columns_count_from_one() {
    assert_eq!(line_column("a\nbc\n", 0), (1, 1));
    assert_eq!(line_column("a\nbc\n", 3), (2, 2));
    assert_eq!(edit_distance("intervall", "interval"), 1);
}

#[test]
fn status_finds_the_api_serve_listens_on() {
    let f = file("api-listen = \"127.0.0.1:7171\"\n");
    let l = layer_with(&["status"], &f).unwrap();
    let cli = Cli::from_arg_matches(&l.matches).unwrap();
    let crate::cli::Command::Status { api, .. } = cli.command else {
        panic!("not status")
    };
    assert_eq!(api, "127.0.0.1:7171");
    let l = layer_with(&["status", "--api", "127.0.0.1:1"], &f).unwrap();
    let cli = Cli::from_arg_matches(&l.matches).unwrap();
    let crate::cli::Command::Status { api, .. } = cli.command else {
        panic!("not status")
    };
    assert_eq!(api, "127.0.0.1:1");
    let f = file("api-listen = \"off\"\n");
    let l = layer_with(&["status"], &f).unwrap();
    let cli = Cli::from_arg_matches(&l.matches).unwrap();
    let crate::cli::Command::Status { api, .. } = cli.command else {
        panic!("not status")
    };
    assert_eq!(api, berth::api::DEFAULT_LISTEN);
}
