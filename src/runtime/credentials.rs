//! Registry credentials from Docker's own client config, the way the docker CLI finds them:
//! `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`): `credHelpers[registry]`,
//! else `credsStore`, else the `auths` entry (base64 `auth` = `user:password`, or
//! `username`/`password`, or an `identitytoken`). A helper is the program
//! `docker-credential-<name>`, run as `get` with the registry on stdin, answering JSON
//! (`{"ServerURL", "Username", "Secret"}`; the username `<token>` marks an identity token).
//!
//! Everything but [`credentials_for`] is pure (parse, look up, decode) and unit-tested;
//! `credentials_for` is the shell: it reads the file and runs the helper.
//! Must not touch: the engine, containers; never log a secret (`Debug` redacts it).

use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The key Docker Hub's credentials are stored under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// How long a credential helper may take.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials for one registry. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryAuth {
    /// The registry as the config names it (`127.0.0.1:5000`, or [`DOCKER_HUB_KEY`]).
    pub server: String,
    pub username: String,
    /// A password, or an identity token when `identity_token` is set.
    pub secret: String,
    pub identity_token: bool,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .field("identity_token", &self.identity_token)
            .finish()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialError {
    #[error("cannot read the docker config {path}: {message} (fix the file or point DOCKER_CONFIG / --docker-config elsewhere)")]
    Config { path: PathBuf, message: String },
    #[error("credential helper docker-credential-{helper} failed for registry {registry}: {message} (is the helper installed and logged in? try `docker login {registry}`)")]
    Helper {
        helper: String,
        registry: String,
        message: String,
    },
}

/// The parts of `config.json` that say where credentials are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    pub creds_store: Option<String>,
    #[serde(default)]
    pub cred_helpers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AuthEntry {
    pub auth: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub identitytoken: Option<String>,
}

/// Where one registry's credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(RegistryAuth),
    /// Run `docker-credential-<helper> get` with `server` on stdin.
    Helper {
        helper: String,
        server: String,
    },
    /// No credentials: pull anonymously.
    None,
}

/// The registry host of an image reference, as Docker resolves it (`spec::image_registry`).
pub fn registry_of(image: &str) -> String {
    crate::spec::image_registry(image)
}

/// The key the docker CLI stores a registry's credentials under.
pub fn config_key(registry: &str) -> String {
    if is_docker_hub(registry) {
        DOCKER_HUB_KEY.to_string()
    } else {
        registry.to_string()
    }
}

fn is_docker_hub(registry: &str) -> bool {
    matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// Parses `config.json`'s text.
pub fn parse_config(text: &str) -> Result<DockerConfig, String> {
    if text.trim().is_empty() {
        return Ok(DockerConfig::default());
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// An `auths` key naming `registry`: exact, or with a scheme and/or a path
/// (`https://127.0.0.1:5000/v2/`) as `docker login` of older clients wrote them.
fn key_matches(key: &str, registry: &str) -> bool {
    let host = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = host.split('/').next().unwrap_or(host);
    host == registry || (is_docker_hub(registry) && is_docker_hub(host))
}

/// Where `registry`'s credentials are, by the docker CLI's precedence.
pub fn lookup(config: &DockerConfig, registry: &str) -> Result<Lookup, String> {
    let key = config_key(registry);
    if let Some(helper) = config
        .cred_helpers
        .iter()
        .find(|(k, _)| key_matches(k, registry))
        .map(|(_, h)| h)
    {
        return Ok(Lookup::Helper {
            helper: helper.clone(),
            server: key,
        });
    }
    if let Some(helper) = config.creds_store.as_ref().filter(|h| !h.is_empty()) {
        return Ok(Lookup::Helper {
            helper: helper.clone(),
            server: key,
        });
    }
    let entry = config.auths.get(&key).or_else(|| {
        config
            .auths
            .iter()
            .find(|(k, _)| key_matches(k, registry))
            .map(|(_, e)| e)
    });
    match entry {
        Some(entry) => Ok(decode_entry(entry, &key)?.map_or(Lookup::None, Lookup::Found)),
        None => Ok(Lookup::None),
    }
}

/// One `auths` entry -> credentials (None when it holds none, as `docker login` with a
/// credential store leaves it).
fn decode_entry(entry: &AuthEntry, server: &str) -> Result<Option<RegistryAuth>, String> {
    if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
        return Ok(Some(RegistryAuth {
            server: server.to_string(),
            username: entry.username.clone().unwrap_or_default(),
            secret: token.clone(),
            identity_token: true,
        }));
    }
    if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|e| format!("auths.{server}.auth is not valid base64: {e}"))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| format!("auths.{server}.auth is not UTF-8 once decoded"))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| format!("auths.{server}.auth must decode to `user:password`"))?;
        return Ok(Some(RegistryAuth {
            server: server.to_string(),
            username: username.to_string(),
            secret: password.to_string(),
            identity_token: false,
        }));
    }
    match (&entry.username, &entry.password) {
        (Some(username), Some(password)) => Ok(Some(RegistryAuth {
            server: server.to_string(),
            username: username.clone(),
            secret: password.clone(),
            identity_token: false,
        })),
        _ => Ok(None),
    }
}

/// A credential helper's `get` answer -> credentials.
pub fn parse_helper_output(text: &str, server: &str) -> Result<RegistryAuth, String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let answer: Answer = serde_json::from_str(text.trim())
        .map_err(|e| format!("the helper's answer is not the expected JSON: {e}"))?;
    let identity_token = answer.username == "<token>";
    Ok(RegistryAuth {
        server: server.to_string(),
        username: if identity_token {
            String::new()
        } else {
            answer.username
        },
        secret: answer.secret,
        identity_token,
    })
}

/// The config directory: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn default_config_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".docker")
}

/// Credentials for pulling `image`, from `<config_dir>/config.json` (a missing file means
/// none), running the credential helper when the config names one.
pub async fn credentials_for(
    config_dir: &Path,
    image: &str,
) -> Result<Option<RegistryAuth>, CredentialError> {
    let path = config_dir.join("config.json");
    let text = match tokio::fs::read_to_string(&path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CredentialError::Config {
                path,
                message: e.to_string(),
            })
        }
    };
    let registry = registry_of(image);
    let config = parse_config(&text).map_err(|message| CredentialError::Config {
        path: path.clone(),
        message,
    })?;
    match lookup(&config, &registry).map_err(|message| CredentialError::Config {
        path: path.clone(),
        message,
    })? {
        Lookup::Found(auth) => Ok(Some(auth)),
        Lookup::None => Ok(None),
        Lookup::Helper { helper, server } => run_helper(&helper, &server, &registry).await,
    }
}

/// `docker-credential-<helper> get` with `server` on stdin. "credentials not found" (what
/// every helper answers for an unknown registry) means none.
async fn run_helper(
    helper: &str,
    server: &str,
    registry: &str,
) -> Result<Option<RegistryAuth>, CredentialError> {
    let program = PathBuf::from(format!("docker-credential-{helper}"));
    run_program(&program, helper, server, registry).await
}

/// `program get` (the helper `helper`) with `server` on stdin.
async fn run_program(
    program: &Path,
    helper: &str,
    server: &str,
    registry: &str,
) -> Result<Option<RegistryAuth>, CredentialError> {
    use tokio::io::AsyncWriteExt;
    let fail = |message: String| CredentialError::Helper {
        helper: helper.to_string(),
        registry: registry.to_string(),
        message,
    };
    let mut child = tokio::process::Command::new(program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(server.as_bytes())
            .await
            .map_err(|e| fail(format!("cannot write to it: {e}")))?;
    }
    let output = tokio::time::timeout(HELPER_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| fail(format!("no answer within {} s", HELPER_TIMEOUT.as_secs())))?
        .map_err(|e| fail(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let said = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(format!("{}: {}", output.status, said.trim())));
    }
    parse_helper_output(&stdout, server).map(Some).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn registry_is_the_first_component_with_a_dot_colon_or_localhost() {
        assert_eq!(registry_of("127.0.0.1:5000/team/app:1.4"), "127.0.0.1:5000");
        assert_eq!(
            registry_of("registry.example.com/app"),
            "registry.example.com"
        );
        assert_eq!(registry_of("localhost/app:1"), "localhost");
        assert_eq!(registry_of("team/app:1"), "docker.io");
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(config_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(config_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn auths_entry_with_base64_auth_or_username_password() {
        let text = format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{}"}},
                "https://reg.example.com/v2/": {{"username": "bob", "password": "pw"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "empty.example.com": {{}}
            }}}}"#,
            b64("alice:s3:cret"),
            b64("hub:tok")
        );
        let config = parse_config(&text).unwrap();
        let Lookup::Found(a) = lookup(&config, "127.0.0.1:5000").unwrap() else {
            panic!("expected credentials");
        };
        assert_eq!(
            (a.username.as_str(), a.secret.as_str()),
            ("alice", "s3:cret")
        );
        assert!(!a.identity_token);
        let Lookup::Found(b) = lookup(&config, "reg.example.com").unwrap() else {
            panic!("expected credentials");
        };
        assert_eq!((b.username.as_str(), b.secret.as_str()), ("bob", "pw"));
        let Lookup::Found(hub) = lookup(&config, "docker.io").unwrap() else {
            panic!("expected credentials");
        };
        assert_eq!(
            (hub.server.as_str(), hub.username.as_str()),
            (DOCKER_HUB_KEY, "hub")
        );
        assert_eq!(lookup(&config, "empty.example.com").unwrap(), Lookup::None);
        assert_eq!(lookup(&config, "other:5000").unwrap(), Lookup::None);
        assert!(
            !format!("{a:?}").contains("s3:cret"),
            "Debug leaks the secret"
        );
    }

    #[test]
    fn identity_tokens_and_bad_auth_values() {
        let config =
            parse_config(r#"{"auths": {"r.io": {"identitytoken": "tok", "username": "u"}}}"#)
                .unwrap();
        let Lookup::Found(a) = lookup(&config, "r.io").unwrap() else {
            panic!("expected credentials");
        };
        assert!(a.identity_token);
        assert_eq!(a.secret, "tok");
        let bad = parse_config(r#"{"auths": {"r.io": {"auth": "!!!"}}}"#).unwrap();
        let err = lookup(&bad, "r.io").unwrap_err();
        assert!(err.contains("auths.r.io.auth is not valid base64"), "{err}");
        let no_colon = format!(
            r#"{{"auths": {{"r.io": {{"auth": "{}"}}}}}}"#,
            b64("nocolon")
        );
        let err = lookup(&parse_config(&no_colon).unwrap(), "r.io").unwrap_err();
        assert!(err.contains("user:password"), "{err}");
        assert!(parse_config("{not json").is_err());
        assert_eq!(parse_config("").unwrap(), DockerConfig::default());
    }

    #[test]
    fn helpers_take_precedence_cred_helpers_first() {
        let config = parse_config(&format!(
            r#"{{"auths": {{"a.io": {{"auth": "{}"}}}}, "credsStore": "secretservice",
                 "credHelpers": {{"b.io": "ecr-login"}}}}"#,
            b64("u:p")
        ))
        .unwrap();
        assert_eq!(
            lookup(&config, "b.io").unwrap(),
            Lookup::Helper {
                helper: "ecr-login".into(),
                server: "b.io".into()
            }
        );
        assert_eq!(
            lookup(&config, "a.io").unwrap(),
            Lookup::Helper {
                helper: "secretservice".into(),
                server: "a.io".into()
            }
        );
        assert_eq!(
            lookup(&config, "docker.io").unwrap(),
            Lookup::Helper {
                helper: "secretservice".into(),
                server: DOCKER_HUB_KEY.into()
            }
        );
    }

    #[test]
    fn helper_answers() {
        let a = parse_helper_output(
            r#"{"ServerURL":"r.io","Username":"alice","Secret":"pw"}"#,
            "r.io",
        )
        .unwrap();
        assert_eq!((a.username.as_str(), a.secret.as_str()), ("alice", "pw"));
        let t = parse_helper_output(
            r#"{"ServerURL":"r.io","Username":"<token>","Secret":"tok"}"#,
            "r.io",
        )
        .unwrap();
        assert!(t.identity_token);
        assert!(parse_helper_output("nope", "r.io").is_err());
    }

    #[tokio::test]
    async fn a_helper_program_is_run_with_the_registry_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        // A helper that echoes the server it was asked about as the username.
        let helper = bin.join("docker-credential-berthtest");
        std::fs::write(
            &helper,
            "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nread -r server\n\
             printf '{\"ServerURL\":\"%s\",\"Username\":\"%s\",\"Secret\":\"pw\"}' \"$server\" \"$server\"\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let auth = run_in_path(&bin, "berthtest", "127.0.0.1:5000")
            .await
            .unwrap();
        let auth = auth.expect("credentials");
        assert_eq!(auth.username, "127.0.0.1:5000");
        assert_eq!(auth.secret, "pw");
        let missing = run_in_path(&bin, "nosuchhelper", "r.io").await.unwrap_err();
        assert!(
            missing
                .to_string()
                .contains("docker-credential-nosuchhelper"),
            "{missing}"
        );
    }

    /// The helper run by its full path (the test does not change the process's PATH,
    /// which other tests share).
    async fn run_in_path(
        bin: &Path,
        helper: &str,
        server: &str,
    ) -> Result<Option<RegistryAuth>, CredentialError> {
        let program = bin.join(format!("docker-credential-{helper}"));
        run_program(&program, helper, server, server).await
    }
}
