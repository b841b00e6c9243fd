//! Whom a git remote must prove to be before berth fetches from it: an ssh server's host key
//! is looked up in a known_hosts file (OpenSSH format, hashed `|1|salt|hash` names too, parsed
//! by `ssh-key`), an https server's certificate is checked for its validity period and, when
//! `--git-ca-file` is given, verified against that CA with OpenSSL (the library libgit2 itself
//! uses). Both run inside git2's `certificate_check` callback for one fetch, so the CA applies
//! to this source only (libgit2's `set_ssl_cert_file` would be process-global). A refusal is
//! recorded here because libgit2 replaces the callback's error message with its own.
//! Must not touch: the mirror, the network, libgit2's process-global options.

use super::{HostKey, SourceError};
use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use git2::cert::Cert;
use git2::CertificateCheckStatus;
use hmac::{Hmac, Mac};
use openssl::asn1::Asn1Time;
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::{X509StoreContext, X509};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

/// Why a remote was not trusted (recorded by the callback, turned into a `SourceError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No known_hosts entry for the host has the key it presented.
    UnknownHostKey {
        key: HostKey,
        /// Key types the file does list for this host (another algorithm was negotiated).
        other_types: Vec<String>,
    },
    /// An entry for the host has another key of the same type (or the key is `@revoked`).
    HostKeyMismatch {
        key: HostKey,
        line: usize,
        revoked: bool,
    },
    /// The known_hosts file exists but cannot be read.
    KnownHostsUnreadable { path: PathBuf, message: String },
    /// The certificate's validity period does not include now.
    CertificateExpired { host: String, detail: String },
    /// The certificate does not chain to the `--git-ca-file` CA (or names another host).
    CertificateUntrusted { host: String, detail: String },
    /// The `--git-ca-file` cannot be read or holds no PEM certificate.
    CaFile { path: PathBuf, message: String },
}

/// What one fetch trusts: the known_hosts file and the extra CA, plus the ssh port (libgit2
/// hands the callback the host name only).
#[derive(Debug, Clone)]
pub struct RemoteTrust {
    known_hosts: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    ssh_port: u16,
    refusal: Arc<Mutex<Option<Refusal>>>,
}

impl RemoteTrust {
    /// `known_hosts: None` means no file: every ssh host is unknown and refused.
    pub fn new(known_hosts: Option<PathBuf>, ca_file: Option<PathBuf>, url: &str) -> RemoteTrust {
        RemoteTrust {
            known_hosts,
            ca_file,
            ssh_port: ssh_port(url),
            refusal: Arc::new(Mutex::new(None)),
        }
    }

    /// The refusal the last callback recorded, if any.
    pub fn refusal(&self) -> Option<Refusal> {
        self.refusal.lock().expect("refusal lock").clone()
    }

    /// The `certificate_check` callback body: `Ok` when trusted by berth's own check,
    /// `Passthrough` to let libgit2 decide (system CAs), `Err` to refuse.
    pub fn check(
        &self,
        cert: &Cert<'_>,
        host: &str,
    ) -> Result<CertificateCheckStatus, git2::Error> {
        let verdict = if let Some(hostkey) = cert.as_hostkey() {
            match hostkey.hostkey() {
                Some(raw) => self.check_host_key(host, raw),
                None => Err(Refusal::UnknownHostKey {
                    key: HostKey {
                        host: lookup_name(host, self.ssh_port),
                        key_type: "unknown".into(),
                        fingerprint: hostkey
                            .hash_sha256()
                            .map(fingerprint_of_hash)
                            .unwrap_or_default(),
                        known_hosts: self.known_hosts_label(),
                    },
                    other_types: Vec::new(),
                }),
            }
        } else if let Some(x509) = cert.as_x509() {
            self.check_certificate(host, x509.data())
        } else {
            Ok(CertificateCheckStatus::CertificatePassthrough)
        };
        match verdict {
            Ok(status) => Ok(status),
            Err(refusal) => {
                let message = refusal.to_string();
                *self.refusal.lock().expect("refusal lock") = Some(refusal);
                Err(git2::Error::from_str(&message))
            }
        }
    }

    fn known_hosts_label(&self) -> String {
        match &self.known_hosts {
            Some(path) => path.display().to_string(),
            None => "no known_hosts file (~/.ssh/known_hosts does not exist)".to_string(),
        }
    }

    fn check_host_key(&self, host: &str, raw: &[u8]) -> Result<CertificateCheckStatus, Refusal> {
        let key = HostKey {
            host: lookup_name(host, self.ssh_port),
            key_type: key_type_of_blob(raw),
            fingerprint: fingerprint_of_hash(&Sha256::digest(raw).into()),
            known_hosts: self.known_hosts_label(),
        };
        let text = match &self.known_hosts {
            None => String::new(),
            Some(path) => match std::fs::read_to_string(path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    return Err(Refusal::KnownHostsUnreadable {
                        path: path.clone(),
                        message: e.to_string(),
                    })
                }
            },
        };
        let mut listed = false;
        let mut mismatch = None;
        let mut other_types = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // A line ssh-key cannot parse (an algorithm it does not know) matches nothing.
            let Ok(entry) = Entry::from_str(line) else {
                continue;
            };
            if matches!(entry.marker(), Some(Marker::CertAuthority)) {
                continue;
            }
            if !host_matches(entry.host_patterns(), &key.host) {
                continue;
            }
            let known = entry.public_key().to_bytes().unwrap_or_default();
            let revoked = matches!(entry.marker(), Some(Marker::Revoked));
            // A revoked key is refused wherever else it is listed (as OpenSSH does).
            if known == raw && revoked {
                return Err(Refusal::HostKeyMismatch {
                    key,
                    line: index + 1,
                    revoked: true,
                });
            }
            if known == raw {
                listed = true;
                continue;
            }
            if revoked {
                continue;
            }
            let entry_type = key_type_of_blob(&known);
            if entry_type == key.key_type {
                mismatch.get_or_insert(index + 1);
            } else if !other_types.contains(&entry_type) {
                other_types.push(entry_type);
            }
        }
        if listed {
            return Ok(CertificateCheckStatus::CertificateOk);
        }
        Err(match mismatch {
            Some(line) => Refusal::HostKeyMismatch {
                key,
                line,
                revoked: false,
            },
            None => Refusal::UnknownHostKey { key, other_types },
        })
    }

    fn check_certificate(&self, host: &str, der: &[u8]) -> Result<CertificateCheckStatus, Refusal> {
        let untrusted = |detail: String| Refusal::CertificateUntrusted {
            host: host.to_string(),
            detail,
        };
        let leaf =
            X509::from_der(der).map_err(|e| untrusted(format!("unreadable certificate: {e}")))?;
        let now = Asn1Time::days_from_now(0).map_err(|e| untrusted(e.to_string()))?;
        if leaf.not_after() < now {
            return Err(Refusal::CertificateExpired {
                host: host.to_string(),
                detail: format!("it expired on {}", leaf.not_after()),
            });
        }
        if leaf.not_before() > now {
            return Err(Refusal::CertificateExpired {
                host: host.to_string(),
                detail: format!("it is not valid before {}", leaf.not_before()),
            });
        }
        let Some(ca_file) = &self.ca_file else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let cas = load_ca_file(ca_file)?;
        match verify_with(&cas, &leaf, host) {
            Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
            // Not signed by the extra CA: the system CAs may still trust it (libgit2 decides),
            // and if they do not, this reason is the one reported.
            Err(detail) => {
                *self.refusal.lock().expect("refusal lock") = Some(untrusted(format!(
                    "{detail} (checked against {} and the system CAs)",
                    ca_file.display()
                )));
                Ok(CertificateCheckStatus::CertificatePassthrough)
            }
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownHostKey { key, .. } => write!(
                f,
                "unknown ssh host key of {}: {} {}",
                key.host, key.key_type, key.fingerprint
            ),
            Refusal::HostKeyMismatch { key, line, .. } => write!(
                f,
                "ssh host key of {} ({} {}) does not match known_hosts line {line}",
                key.host, key.key_type, key.fingerprint
            ),
            Refusal::KnownHostsUnreadable { path, message } => {
                write!(f, "cannot read {}: {message}", path.display())
            }
            Refusal::CertificateExpired { host, detail } => {
                write!(f, "tls certificate of {host}: {detail}")
            }
            Refusal::CertificateUntrusted { host, detail } => {
                write!(f, "tls certificate of {host} not trusted: {detail}")
            }
            Refusal::CaFile { path, message } => write!(
                f,
                "cannot use the CA file {}: {message}; pass a PEM file holding the CA certificate to --git-ca-file",
                path.display()
            ),
        }
    }
}

impl Refusal {
    /// The error for the fetch of `url` (redacted) that failed with `source` after this.
    pub fn into_error(self, url: String, source: git2::Error) -> SourceError {
        match self {
            Refusal::UnknownHostKey { key, other_types } => SourceError::UnknownHostKey {
                url,
                key: Box::new(key),
                other: if other_types.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; the file lists only {} keys for it",
                        other_types.join(", ")
                    )
                },
                source,
            },
            Refusal::HostKeyMismatch { key, line, revoked } => SourceError::HostKeyMismatch {
                url,
                key: Box::new(key),
                what: if revoked {
                    "is marked @revoked in"
                } else {
                    "does not match the key in"
                },
                line,
                source,
            },
            Refusal::KnownHostsUnreadable { path, message } => {
                SourceError::KnownHosts { url, path, message }
            }
            Refusal::CertificateExpired { detail, .. } => SourceError::CertificateExpired {
                url,
                detail,
                source,
            },
            Refusal::CertificateUntrusted { detail, .. } => SourceError::CertificateUntrusted {
                url,
                detail,
                source,
            },
            Refusal::CaFile { path, message } => SourceError::CaFile { url, path, message },
        }
    }
}

/// The certificates of a PEM CA file (checked at start by `berth` and at every fetch).
pub fn load_ca_file(path: &Path) -> Result<Vec<X509>, Refusal> {
    let refuse = |message: String| Refusal::CaFile {
        path: path.to_path_buf(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| refuse(e.to_string()))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| refuse(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(refuse("it holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// OpenSSL verification of `leaf` for `host` with every certificate of the CA file as a
/// trust anchor (partial chains allowed, so the file may hold an intermediate).
fn verify_with(cas: &[X509], leaf: &X509, host: &str) -> Result<(), String> {
    let err = |e: openssl::error::ErrorStack| e.to_string();
    let mut builder = X509StoreBuilder::new().map_err(err)?;
    for ca in cas {
        builder.add_cert(ca.clone()).map_err(err)?;
    }
    builder
        .set_flags(X509VerifyFlags::PARTIAL_CHAIN)
        .map_err(err)?;
    let mut param = openssl::x509::verify::X509VerifyParam::new().map_err(err)?;
    match host.trim_matches(['[', ']']).parse::<IpAddr>() {
        Ok(ip) => param.set_ip(ip).map_err(err)?,
        Err(_) => param.set_host(host).map_err(err)?,
    }
    builder.set_param(&param).map_err(err)?;
    let store = builder.build();
    let chain = Stack::new().map_err(err)?;
    let mut context = X509StoreContext::new().map_err(err)?;
    let result = context
        .init(&store, leaf, &chain, |c| {
            let ok = c.verify_cert()?;
            Ok((ok, c.error()))
        })
        .map_err(err)?;
    match result {
        (true, _) => Ok(()),
        (false, error) => Err(error.error_string().to_string()),
    }
}

/// The port of an ssh URL (22 for scp-like `user@host:path` and URLs without one).
pub fn ssh_port(url: &str) -> u16 {
    let Some((_, rest)) = url.split_once("://") else {
        return 22;
    };
    let authority = rest.split('/').next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => host_port.rsplit_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// The name OpenSSH looks up: `host`, or `[host]:port` on a port other than 22.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.trim_matches(['[', ']']);
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `SHA256:<base64 without padding>`, as `ssh-keygen -l` and OpenSSH's prompts print it.
pub fn fingerprint_of_hash(hash: &[u8; 32]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(hash))
}

/// The algorithm name a public key blob starts with (`ssh-ed25519`, ...).
fn key_type_of_blob(blob: &[u8]) -> String {
    let name = blob
        .get(..4)
        .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .and_then(|len| blob.get(4..4 + len));
    match name.and_then(|n| std::str::from_utf8(n).ok()) {
        Some(name) => name.to_string(),
        None => "unknown".to_string(),
    }
}

/// Does an entry's host field name `lookup`? Hashed names compare HMAC-SHA1(salt, lookup);
/// plain lists match OpenSSH's way: `*`/`?` globs, and a matching `!pattern` vetoes.
pub fn host_matches(patterns: &HostPatterns, lookup: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(lookup.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(patterns) => {
            let lookup = lookup.to_ascii_lowercase();
            let mut matched = false;
            for pattern in patterns {
                let (negated, pattern) = match pattern.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, pattern.as_str()),
                };
                if glob(pattern.to_ascii_lowercase().as_bytes(), lookup.as_bytes()) {
                    if negated {
                        return false;
                    }
                    matched = true;
                }
            }
            matched
        }
    }
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_lookup_names() {
        assert_eq!(ssh_port("ssh://git@example.org:2222/a.git"), 2222);
        assert_eq!(ssh_port("ssh://git@example.org/a.git"), 22);
        assert_eq!(ssh_port("ssh://git@[::1]:2200/a.git"), 2200);
        assert_eq!(ssh_port("ssh://[::1]/a.git"), 22);
        assert_eq!(ssh_port("git@example.org:org/a.git"), 22);
        assert_eq!(lookup_name("example.org", 22), "example.org");
        assert_eq!(lookup_name("127.0.0.1", 2222), "[127.0.0.1]:2222");
    }

    #[test]
    fn plain_patterns_globs_and_negation() {
        let p =
            |list: &[&str]| HostPatterns::Patterns(list.iter().map(|s| s.to_string()).collect());
        assert!(host_matches(&p(&["example.org", "other"]), "example.org"));
        assert!(host_matches(&p(&["*.example.org"]), "git.example.org"));
        assert!(host_matches(&p(&["[127.0.0.1]:2222"]), "[127.0.0.1]:2222"));
        assert!(!host_matches(&p(&["127.0.0.1"]), "[127.0.0.1]:2222"));
        assert!(!host_matches(
            &p(&["*.example.org", "!bad.example.org"]),
            "bad.example.org"
        ));
        assert!(host_matches(&p(&["gi?.example.org"]), "GIT.example.org"));
    }

    #[test]
    fn hashed_names_match_what_ssh_keygen_wrote() {
        // `ssh-keygen -H` of a line for example.org (OpenSSH 9.2).
        let line = "|1|MsKYkzNOydWRXGtneu8KSD4VMQg=|keyRkix8vgg/CjjZQAN9QTEJpcA= ssh-ed25519 \
                    AAAAC3NzaC1lZDI1NTE5AAAAIG1J7gtZTIrVdq682iAe9+dNFuecB/yzfXOhmib+zHQ7";
        let entry = Entry::from_str(line).unwrap();
        assert!(matches!(
            entry.host_patterns(),
            HostPatterns::HashedName { .. }
        ));
        assert!(host_matches(entry.host_patterns(), "example.org"));
        assert!(!host_matches(entry.host_patterns(), "example.com"));
        assert!(!host_matches(entry.host_patterns(), "[example.org]:2222"));
    }

    fn blob(public: &str) -> Vec<u8> {
        ssh_key::PublicKey::from_openssh(public)
            .unwrap()
            .to_bytes()
            .unwrap()
    }

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1J7gtZTIrVdq682iAe9+dNFuecB/yzfXOhmib+zHQ7";
    const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBBBppVLAb+0RhHH/sQbxPveedIBiHicwyB4DKhTlEFNhSoG4yYn936C66F0aPPhwepy1Y7ld6k8CLeMlVvIMOXA=";

    fn trust_with(lines: &str) -> (tempfile::TempDir, RemoteTrust) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        std::fs::write(&path, lines).unwrap();
        let trust = RemoteTrust::new(Some(path), None, "ssh://git@example.org:2222/a.git");
        (dir, trust)
    }

    /// The verdict on the ed25519 key presented by example.org (ok is always `CertificateOk`).
    fn verdict(trust: &RemoteTrust) -> Result<(), Refusal> {
        trust.check_host_key("example.org", &blob(ED)).map(|_| ())
    }

    #[test]
    fn host_key_verdicts() {
        let host = "[example.org]:2222";
        let (_d, trust) = trust_with(&format!("{host} {ED}\n"));
        assert_eq!(verdict(&trust), Ok(()));
        // Listed on port 22 only: another host as far as OpenSSH is concerned.
        let (_d, trust) = trust_with(&format!("example.org {ED}\n"));
        let refused = verdict(&trust).unwrap_err();
        assert!(
            matches!(refused, Refusal::UnknownHostKey { .. }),
            "{refused:?}"
        );
        // Revoked, wherever else it is listed.
        let (_d, trust) = trust_with(&format!("{host} {ED}\n@revoked * {ED}\n"));
        let refused = verdict(&trust).unwrap_err();
        assert!(
            matches!(
                refused,
                Refusal::HostKeyMismatch {
                    line: 2,
                    revoked: true,
                    ..
                }
            ),
            "{refused:?}"
        );
        // Only an ecdsa key listed, ed25519 presented: unknown, saying what is listed.
        let (_d, trust) = trust_with(&format!("# comment\n\n{host} {ECDSA}\n"));
        match verdict(&trust).unwrap_err() {
            Refusal::UnknownHostKey { key, other_types } => {
                assert_eq!(key.key_type, "ssh-ed25519");
                assert_eq!(key.host, host);
                assert_eq!(other_types, vec!["ecdsa-sha2-nistp256".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        // No file at all: every host is unknown.
        let trust = RemoteTrust::new(None, None, "ssh://example.org/a.git");
        let refused = verdict(&trust).unwrap_err();
        assert!(refused.to_string().contains("example.org"), "{refused}");
    }

    #[test]
    fn key_type_is_read_from_the_blob() {
        let mut blob = 11u32.to_be_bytes().to_vec();
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 1, 7]);
        assert_eq!(key_type_of_blob(&blob), "ssh-ed25519");
        assert_eq!(key_type_of_blob(&[0, 0]), "unknown");
    }
}
