//! TLS files of host routes (imperative shell): every pass checks each `route.tls` path
//! against the operator's `--allow-tls-dir` prefixes (the path as written and the file it
//! resolves to), reads the certificate and key, checks them with OpenSSL (PEM, key matches
//! the certificate, inside its validity period) and fills the route's fingerprint (sha256
//! of both files), which the renderer writes into the app's config: a renewed certificate
//! changes the text and reloads nginx once. A failure becomes a spec issue of the app, so
//! the app stays on its last good spec (nginx keeps serving what it had) and the error is
//! in status and events. It writes only its copies under `<state>/tls` (`write_copies`,
//! and `prune_copies` for the ones nothing names any more). Must not: render nginx text,
//! decide the plan.

use crate::plan::{
    render::{tls_served_files, TlsListen},
    Desired,
};
use crate::spec::{issue_at, AppSpec, LoadedSpecs, RouteTls, SourceRef, SpecIssue};
use openssl::asn1::Asn1Time;
use openssl::pkey::PKey;
use openssl::x509::X509;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Default `--listen-tls`.
pub const DEFAULT_LISTEN_TLS: &str = "127.0.0.1:8443";

/// `--listen-tls` and `--allow-tls-dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// nginx `listen` address of the TLS servers.
    pub listen_tls: String,
    /// Directories route certificates and keys may come from (absolute, normalized); none
    /// by default, which refuses every `route.tls`.
    pub allowed_dirs: Vec<PathBuf>,
    /// Where berth keeps content-addressed copies of validated certificates and keys for
    /// nginx (`<state>/tls`); None: nginx reads the files where the spec names them.
    pub copies: Option<PathBuf>,
}

impl TlsSettings {
    /// What the renderer needs.
    pub fn listen(&self) -> TlsListen {
        TlsListen {
            address: self.listen_tls.clone(),
            copies: self
                .copies
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
        }
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            listen_tls: DEFAULT_LISTEN_TLS.to_string(),
            allowed_dirs: Vec::new(),
            copies: None,
        }
    }
}

/// An operator prefix (`--allow-tls-dir`): absolute and normalized by the same rule as a
/// spec's host paths (`spec::path_problem`). The error says what is wrong.
pub fn parse_allowed_dir(flag: &str, value: &str) -> Result<PathBuf, String> {
    if crate::spec::path_problem(value).is_some() {
        return Err(format!(
            "{flag} {value}: give an absolute, normalized directory (no `.`, `..` or empty segments), e.g. /etc/berth/tls"
        ));
    }
    Ok(PathBuf::from(value))
}

/// `loaded` with every TLS route checked: apps whose files pass get their fingerprint,
/// the others leave `apps` for an issue each. Also returns a key of the outcome (every
/// fingerprint and issue), so callers can tell a changed file from an unchanged one.
/// `files` is the source snapshot (for the issue's line), `now_ms` the wall clock.
pub fn check_routes(
    loaded: &LoadedSpecs,
    files: &[(PathBuf, String)],
    settings: &TlsSettings,
    now_ms: i64,
) -> Option<(LoadedSpecs, String)> {
    if !loaded
        .apps
        .values()
        .any(|(spec, _)| route_tls(spec).is_some())
    {
        return None;
    }
    let mut out = loaded.clone();
    let mut key = String::new();
    for (name, (spec, source)) in &loaded.apps {
        let Some(tls) = route_tls(spec) else { continue };
        match check(tls, settings, now_ms) {
            Ok(fingerprint) => {
                let _ = write!(key, "{name}={fingerprint};");
                if let Some((spec, _)) = out.apps.get_mut(name) {
                    if let Some(t) = spec.route.as_mut().and_then(|r| r.tls.as_mut()) {
                        t.fingerprint = fingerprint;
                    }
                }
            }
            Err((field, message)) => {
                let _ = write!(key, "{name}!{message};");
                out.apps.remove(name);
                out.issues
                    .push(located(files, source, field, message, name));
            }
        }
    }
    out.issues
        .sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    Some((out, key))
}

fn route_tls(spec: &AppSpec) -> Option<&RouteTls> {
    spec.route.as_ref().and_then(|r| r.tls.as_ref())
}

fn located(
    files: &[(PathBuf, String)],
    source: &SourceRef,
    field: &str,
    message: String,
    app: &str,
) -> SpecIssue {
    let text = files
        .iter()
        .find(|(f, _)| *f == source.file)
        .map_or("", |(_, t)| t.as_str());
    issue_at(text, source, &["spec", "route", "tls", field], message, app)
}

/// The fingerprint of a route's files, or the field and message of what is wrong.
fn check(
    tls: &RouteTls,
    settings: &TlsSettings,
    now_ms: i64,
) -> Result<String, (&'static str, String)> {
    let cert = read_allowed(&tls.cert_file, settings).map_err(|m| ("certFile", m))?;
    let key = read_allowed(&tls.key_file, settings).map_err(|m| ("keyFile", m))?;
    let cert_path = tls.cert_file.display();
    let chain = X509::stack_from_pem(&cert)
        .ok()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            (
                "certFile",
                format!("{cert_path} holds no PEM certificate: give the certificate (BEGIN CERTIFICATE) with its chain"),
            )
        })?;
    let leaf = &chain[0];
    let private = PKey::private_key_from_pem(&key).map_err(|_| {
        (
            "keyFile",
            format!(
                "{} holds no PEM private key (an encrypted key cannot be used): give the unencrypted key of {cert_path}",
                tls.key_file.display()
            ),
        )
    })?;
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&private))
        .unwrap_or(false);
    if !matches {
        return Err((
            "keyFile",
            format!(
                "{} is not the key of the certificate in {cert_path}: give the private key the certificate was issued for",
                tls.key_file.display()
            ),
        ));
    }
    let now = Asn1Time::from_unix(now_ms / 1000).map_err(|e| {
        (
            "certFile",
            format!("cannot compare the validity period: {e}"),
        )
    })?;
    if leaf.not_after().compare(&now).ok() != Some(Ordering::Greater) {
        return Err((
            "certFile",
            format!(
                "the certificate in {cert_path} expired on {}: renew it (berth picks up the new file on the next pass)",
                leaf.not_after()
            ),
        ));
    }
    if leaf.not_before().compare(&now).ok() == Some(Ordering::Greater) {
        return Err((
            "certFile",
            format!(
                "the certificate in {cert_path} is not valid before {}: check the host clock or the certificate",
                leaf.not_before()
            ),
        ));
    }
    let mut both = cert;
    both.extend_from_slice(&key);
    Ok(hex::encode(openssl::sha::sha256(&both)))
}

/// The file's bytes, if it lies under an allowed directory both as written and as resolved
/// (a symlink out of the directory is refused too).
fn read_allowed(path: &Path, settings: &TlsSettings) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let under = |p: &Path| settings.allowed_dirs.iter().any(|dir| p.starts_with(dir));
    if !under(path) {
        return Err(if settings.allowed_dirs.is_empty() {
            format!("{shown} may not be read: berth reads TLS files only under directories the operator allows; start berth with --allow-tls-dir <dir> for the directory holding it")
        } else {
            format!(
                "{shown} lies outside the directories allowed by --allow-tls-dir ({}): move it there or allow its directory with --allow-tls-dir",
                list(&settings.allowed_dirs)
            )
        });
    }
    let resolved = std::fs::canonicalize(path).map_err(|e| {
        format!("cannot read {shown}: {e}: check the path and that berth may read it")
    })?;
    let resolved_dirs: Vec<PathBuf> = settings
        .allowed_dirs
        .iter()
        .map(|d| std::fs::canonicalize(d).unwrap_or_else(|_| d.clone()))
        .collect();
    if !resolved_dirs.iter().any(|dir| resolved.starts_with(dir)) {
        return Err(format!(
            "{shown} resolves to {} outside the directories allowed by --allow-tls-dir ({}): replace the symlink with the file",
            resolved.display(),
            list(&settings.allowed_dirs)
        ));
    }
    std::fs::read(&resolved)
        .map_err(|e| format!("cannot read {shown}: {e}: check the path and that berth may read it"))
}

/// Writes the copies nginx reads (see `render::tls_served_files`) that do not exist yet:
/// the spec's files are read again and written only when they still hash to the
/// fingerprint the plan rendered (a file renewed in between waits for the next pass).
/// Keys are written 0600. Returns the apps whose copies could not be written, with why.
pub fn write_copies(desired: &Desired, settings: &TlsSettings) -> Vec<(String, String)> {
    let mut failed = Vec::new();
    let Some(dir) = &settings.copies else {
        return failed;
    };
    let listen = settings.listen();
    for (app, d) in &desired.apps {
        let Some(tls) = route_tls(&d.spec).filter(|t| !t.fingerprint.is_empty()) else {
            continue;
        };
        let (cert_copy, key_copy) = tls_served_files(&listen, app, tls);
        if Path::new(&cert_copy).exists() && Path::new(&key_copy).exists() {
            continue;
        }
        if let Err(e) = write_copy(dir, tls, &cert_copy, &key_copy, settings) {
            failed.push((app.clone(), e));
        }
    }
    failed
}

fn write_copy(
    dir: &Path,
    tls: &RouteTls,
    cert_copy: &str,
    key_copy: &str,
    settings: &TlsSettings,
) -> Result<(), String> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let cert = read_allowed(&tls.cert_file, settings)?;
    let key = read_allowed(&tls.key_file, settings)?;
    let mut both = cert.clone();
    both.extend_from_slice(&key);
    if hex::encode(openssl::sha::sha256(&both)) != tls.fingerprint {
        return Err(format!(
            "{} or {} changed while berth read them: the next pass picks up the new files",
            tls.cert_file.display(),
            tls.key_file.display()
        ));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (path, bytes) in [(cert_copy, &cert), (key_copy, &key)] {
        let temp = format!("{path}.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| format!("cannot write {temp}: {e}"))?;
        file.write_all(bytes)
            .and_then(|_| file.sync_all())
            .map_err(|e| format!("cannot write {temp}: {e}"))?;
        std::fs::rename(&temp, path).map_err(|e| format!("cannot write {path}: {e}"))?;
    }
    Ok(())
}

/// Removes copies in `<state>/tls` that neither the desired state nor any managed nginx
/// file on disk names (a renewed certificate's old copy, a removed app's): nginx loads
/// certificates when it loads its config, so a copy no config file names is never read
/// again. Returns the removed paths; a copy that cannot be removed is left for the next pass.
pub fn prune_copies(
    desired: &Desired,
    proxy_files: &BTreeMap<String, String>,
    settings: &TlsSettings,
) -> Vec<PathBuf> {
    let Some(dir) = &settings.copies else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let listen = settings.listen();
    let mut wanted = BTreeSet::new();
    for (app, d) in &desired.apps {
        if let Some(tls) = route_tls(&d.spec).filter(|t| !t.fingerprint.is_empty()) {
            let (cert, key) = tls_served_files(&listen, app, tls);
            wanted.insert(cert);
            wanted.insert(key);
        }
    }
    let mut removed = Vec::new();
    for name in stale_copies(dir, &names, &wanted, proxy_files) {
        let path = dir.join(&name);
        if std::fs::remove_file(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// The copies (`*.crt`, `*.key`, a left-over `*.tmp`) of `names` in `dir` that are neither
/// `wanted` nor named in a proxy file's text (pure).
fn stale_copies(
    dir: &Path,
    names: &[String],
    wanted: &BTreeSet<String>,
    proxy_files: &BTreeMap<String, String>,
) -> Vec<String> {
    names
        .iter()
        .filter(|name| {
            [".crt", ".key", ".crt.tmp", ".key.tmp"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
        })
        .filter(|name| {
            let path = dir.join(name).display().to_string();
            let named = |p: &str| wanted.contains(p) || proxy_files.values().any(|t| t.contains(p));
            match path.strip_suffix(".tmp") {
                // A temporary file outlives its write only when berth died mid-write.
                Some(_) => true,
                None => !named(&path),
            }
        })
        .cloned()
        .collect()
}

fn list(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_copies_are_the_ones_nothing_names() {
        let dir = Path::new("/state/tls");
        let names: Vec<String> = [
            "web-aaaa.crt",
            "web-aaaa.key",
            "web-bbbb.crt",
            "web-bbbb.key",
            "gone-cccc.crt",
            "gone-cccc.key",
            "web-dddd.crt.tmp",
            "README",
        ]
        .map(String::from)
        .to_vec();
        // The desired state names bbbb; the config on disk still names aaaa.
        let wanted = BTreeSet::from([
            "/state/tls/web-bbbb.crt".to_string(),
            "/state/tls/web-bbbb.key".to_string(),
        ]);
        let files = BTreeMap::from([(
            "web.conf".to_string(),
            "ssl_certificate /state/tls/web-aaaa.crt;\nssl_certificate_key /state/tls/web-aaaa.key;"
                .to_string(),
        )]);
        let stale = stale_copies(dir, &names, &wanted, &files);
        assert_eq!(
            stale,
            ["gone-cccc.crt", "gone-cccc.key", "web-dddd.crt.tmp"]
        );
    }

    #[test]
    fn allowed_dirs_must_be_absolute_and_normalized() {
        assert!(parse_allowed_dir("--allow-tls-dir", "/etc/berth/tls").is_ok());
        for bad in [
            "etc/tls",
            "/etc/../tls",
            "/etc//tls",
            "/etc/tls/",
            "/etc/./tls",
        ] {
            let e = parse_allowed_dir("--allow-tls-dir", bad).unwrap_err();
            assert!(
                e.contains("--allow-tls-dir") && e.contains("absolute"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_path_outside_the_allowed_dirs_is_refused_before_reading() {
        let settings = TlsSettings {
            allowed_dirs: vec![PathBuf::from("/srv/tls")],
            ..TlsSettings::default()
        };
        let tls = RouteTls {
            cert_file: "/etc/shadow".into(),
            key_file: "/srv/tls/k.pem".into(),
            ..RouteTls::default()
        };
        let (field, message) = check(&tls, &settings, 0).unwrap_err();
        assert_eq!(field, "certFile");
        assert!(message.contains("--allow-tls-dir (/srv/tls)"), "{message}");
        let (_, none) = check(&tls, &TlsSettings::default(), 0).unwrap_err();
        assert!(none.contains("start berth with --allow-tls-dir"), "{none}");
    }
}
