//! `route.tls` against the real Docker engine and the real private nginx: a CA and
//! certificates generated here with OpenSSL, fetched over HTTPS through berth's nginx with
//! that CA as the only root; `redirectHttp` answers 308; a renewed certificate on disk is
//! served after the next pass (one reload); an expired certificate and a mismatched key are
//! clear errors while the old certificate keeps serving; a path outside `--allow-tls-dir`
//! is refused; `berth validate` checks the same files with the same rule. Traffic only to
//! 127.0.0.1.

mod support;

use berth::reconcile::tls::TlsSettings;
use berth::reconcile::{self, Controller};
use berth::runtime::docker::DockerRuntime;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
use openssl::x509::{X509Name, X509};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use support::{free_port, http_get, Scene};

const HOST: &str = "tls.localhost";
const DAY: i64 = 86_400;

fn key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A certificate for `cn` valid from `from` to `until` (unix seconds), signed by `issuer`
/// (self-signed when None).
fn cert(
    cn: &str,
    serial: u32,
    subject_key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    (from, until): (i64, i64),
) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(subject_key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(from).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(until).unwrap())
        .unwrap();
    match issuer {
        None => {
            b.set_issuer_name(&name).unwrap();
            b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                .unwrap();
            b.sign(subject_key, MessageDigest::sha256()).unwrap();
        }
        Some((ca, ca_key)) => {
            b.set_issuer_name(ca.subject_name()).unwrap();
            let san = SubjectAlternativeName::new()
                .dns(cn)
                .build(&b.x509v3_context(Some(ca), None))
                .unwrap();
            b.append_extension(san).unwrap();
            b.sign(ca_key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

struct Ca {
    cert: X509,
    key: PKey<Private>,
}

impl Ca {
    fn new() -> Ca {
        let key = key();
        let cert = cert(
            "berth test ca",
            1,
            &key,
            None,
            (now() - DAY, now() + 30 * DAY),
        );
        Ca { cert, key }
    }

    /// Writes a leaf for HOST with `serial` and its key (`key` or a new one) into dir.
    fn leaf(&self, dir: &Path, serial: u32, valid: (i64, i64), key: Option<&PKey<Private>>) {
        let own = self::key();
        let subject = key.unwrap_or(&own);
        let leaf = cert(HOST, serial, subject, Some((&self.cert, &self.key)), valid);
        std::fs::write(dir.join("web.crt"), leaf.to_pem().unwrap()).unwrap();
        std::fs::write(
            dir.join("web.key"),
            subject.private_key_to_pem_pkcs8().unwrap(),
        )
        .unwrap();
    }
}

/// GET over HTTPS to 127.0.0.1:port with SNI HOST, the CA as the only root and the host
/// name checked: (status, body, served certificate serial, not_after).
fn https_get(port: u16, path: &str, ca: &X509) -> (u16, String, String, String) {
    let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
    builder.cert_store_mut().add_cert(ca.clone()).unwrap();
    let connector = builder.build();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut tls = connector.connect(HOST, tcp).expect("tls handshake");
    let served = tls.ssl().peer_certificate().expect("a served certificate");
    let serial = served
        .serial_number()
        .to_bn()
        .unwrap()
        .to_dec_str()
        .unwrap()
        .to_string();
    let not_after = served.not_after().to_string();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = tls.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body, serial, not_after)
}

fn spec(name: &str, host: &str, dir: &Path, redirect: bool) -> String {
    format!(
        r#"apiVersion: v1
kind: App
metadata:
  name: {name}
spec:
  type: http
  image: berth-demo:v1
  ports:
    - containerPort: 8080
  health:
    httpGet: {{ path: /healthz, port: 8080 }}
    intervalSeconds: 1
    timeoutSeconds: 1
    failureThreshold: 3
  replicas: 1
  termination:
    drainSeconds: 0
  route:
    host: {host}
    tls:
      certFile: {dir}/web.crt
      keyFile: {dir}/web.key
      redirectHttp: {redirect}
"#,
        dir = dir.display()
    )
}

struct Harness {
    ctl: Arc<Controller<DockerRuntime>>,
    scene: Scene,
    tls_port: u16,
}

impl Harness {
    async fn new(allowed: &Path) -> Harness {
        let scene = Scene::new("tls");
        let tls_port = free_port();
        let settings = berth::reconcile::Settings {
            tls: TlsSettings {
                listen_tls: format!("127.0.0.1:{tls_port}"),
                allowed_dirs: vec![allowed.to_path_buf()],
                copies: Some(scene.state.path().join("tls")),
            },
            ..scene.dir_settings()
        };
        let ctl = scene.controller_with(settings).await;
        Harness {
            ctl,
            scene,
            tls_port,
        }
    }

    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.scene.specs.path().join(file), text).unwrap();
    }

    async fn pass(&self) -> reconcile::PassReport {
        reconcile::run_pass(&self.ctl, "test").await.expect("pass")
    }

    fn issues(&self) -> Vec<String> {
        self.ctl
            .last_pass()
            .map(|p| p.issues.iter().map(|i| i.to_string()).collect())
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn tls_routes_serve_renew_and_refuse_bad_files() {
    let allowed = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let h = Harness::new(allowed.path()).await;
    let ca = Ca::new();
    let valid = (now() - DAY, now() + 10 * DAY);
    ca.leaf(allowed.path(), 11, valid, None);
    h.write("web.yaml", &spec("web", HOST, allowed.path(), false));

    let first = h.pass().await;
    assert_eq!(first.steps_failed, 0, "{first:?} {:?}", h.issues());
    let (status, body, serial, first_not_after) = https_get(h.tls_port, "/", &ca.cert);
    assert_eq!(
        (status, body.as_str(), serial.as_str()),
        (200, "v1\n", "11")
    );
    let plain = http_get(&format!("127.0.0.1:{}", h.scene.port), "/", Some(HOST)).unwrap();
    assert_eq!(plain, (200, "v1\n".to_string()), "plain http still serves");

    // redirectHttp: the plain server answers 308 to the TLS listener.
    h.write("web.yaml", &spec("web", HOST, allowed.path(), true));
    let redirect = h.pass().await;
    assert_eq!(redirect.steps_failed, 0, "{redirect:?}");
    let conf = std::fs::read_to_string(h.scene.state.path().join("nginx/conf.d/web.conf"))
        .or_else(|_| std::fs::read_to_string(h.scene.state.path().join("nginx/apps/web.conf")))
        .unwrap_or_default();
    let raw = raw_head(h.scene.port, "/some/page?x=1");
    assert!(raw.starts_with("HTTP/1.1 308"), "{raw}\n{conf}");
    assert!(
        raw.contains(&format!(
            "Location: https://{HOST}:{}/some/page?x=1",
            h.tls_port
        )),
        "{raw}"
    );

    // A renewed certificate on disk is served after the next pass, with one reload.
    ca.leaf(allowed.path(), 12, (now() - DAY, now() + 20 * DAY), None);
    let renewed = h.pass().await;
    assert_eq!(renewed.steps_failed, 0, "{renewed:?}");
    assert_eq!(renewed.reloads, 1, "{renewed:?}");
    let (status, _, serial, not_after) = https_get(h.tls_port, "/", &ca.cert);
    assert_eq!((status, serial.as_str()), (200, "12"));
    assert_ne!(not_after, first_not_after);

    // An expired certificate: a clear error naming the file and field; serial 12 serves on.
    ca.leaf(allowed.path(), 13, (now() - 3 * DAY, now() - DAY), None);
    let expired = h.pass().await;
    assert_eq!(expired.reloads, 0, "{expired:?}");
    let issues = h.issues();
    assert!(
        issues.iter().any(|i| i.starts_with("web.yaml:")
            && i.contains("spec.route.tls.certFile")
            && i.contains("expired on")),
        "{issues:?}"
    );
    let (status, _, serial, _) = https_get(h.tls_port, "/", &ca.cert);
    assert_eq!((status, serial.as_str()), (200, "12"));

    // A key that is not the certificate's: refused, serial 12 serves on.
    ca.leaf(allowed.path(), 14, valid, None);
    std::fs::write(
        allowed.path().join("web.key"),
        key().private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let mismatched = h.pass().await;
    assert_eq!(mismatched.reloads, 0, "{mismatched:?}");
    let issues = h.issues();
    assert!(
        issues
            .iter()
            .any(|i| i.contains("spec.route.tls.keyFile") && i.contains("is not the key")),
        "{issues:?}"
    );
    let (status, _, serial, _) = https_get(h.tls_port, "/", &ca.cert);
    assert_eq!((status, serial.as_str()), (200, "12"));

    // Fixed files are served again.
    ca.leaf(allowed.path(), 15, valid, None);
    h.pass().await;
    let (status, _, serial, _) = https_get(h.tls_port, "/", &ca.cert);
    assert_eq!((status, serial.as_str()), (200, "15"));

    // A certificate outside --allow-tls-dir is refused, naming the file, line and flag.
    ca.leaf(outside.path(), 16, valid, None);
    h.write(
        "other.yaml",
        &spec("other", "other.localhost", outside.path(), false),
    );
    h.pass().await;
    let issues = h.issues();
    assert!(
        issues.iter().any(|i| i.starts_with("other.yaml:2")
            && i.contains("spec.route.tls.certFile")
            && i.contains("--allow-tls-dir")),
        "{issues:?}"
    );
    let (_, _, serial, _) = https_get(h.tls_port, "/", &ca.cert);
    assert_eq!(serial, "15", "web is untouched");

    // The copies of the certificates renewed away (serials 11 and 12) are gone once no
    // config file names them: only the served pair is left in <state>/tls.
    h.pass().await;
    let mut copies: Vec<String> = std::fs::read_dir(h.scene.state.path().join("tls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    copies.sort();
    assert_eq!(copies.len(), 2, "{copies:?}");
    assert!(
        copies[0].starts_with("web-") && copies[0].ends_with(".crt"),
        "{copies:?}"
    );
    assert!(copies[1].ends_with(".key"), "{copies:?}");
    let (_, _, serial, _) = https_get(h.tls_port, "/", &ca.cert);
    assert_eq!(serial, "15", "still served after the old copies went");
}

/// The status line and headers of a plain GET with Host HOST.
fn raw_head(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).to_string()
}

fn berth_validate(args: &[&str]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .arg("validate")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run berth validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

/// `berth validate` reads and checks `route.tls` files as a pass does, with the same
/// `--allow-tls-dir` rule: a spec that would be refused by `serve` is refused here first.
#[test]
fn validate_checks_tls_files_like_a_pass() {
    let allowed = tempfile::tempdir().unwrap();
    let specs = tempfile::tempdir().unwrap();
    let ca = Ca::new();
    ca.leaf(allowed.path(), 21, (now() - DAY, now() + 10 * DAY), None);
    std::fs::write(
        specs.path().join("web.yaml"),
        spec("web", HOST, allowed.path(), false),
    )
    .unwrap();
    let specs_dir = specs.path().to_str().unwrap();
    let allow = allowed.path().to_str().unwrap();

    let (code, out) = berth_validate(&[specs_dir, "--allow-tls-dir", allow]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: 1 apps in 1 files are valid"), "{out}");

    // Without the operator's directory: refused, naming the file, the field and the flag.
    let (code, out) = berth_validate(&[specs_dir]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("web.yaml:")
            && out.contains("spec.route.tls.certFile")
            && out.contains("--allow-tls-dir"),
        "{out}"
    );

    // A key that is not the certificate's.
    std::fs::write(
        allowed.path().join("web.key"),
        key().private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let (code, out) = berth_validate(&[specs_dir, "--allow-tls-dir", allow]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("spec.route.tls.keyFile") && out.contains("is not the key"),
        "{out}"
    );

    // A relative directory is refused by the flag's own check.
    let (code, _) = berth_validate(&[specs_dir, "--allow-tls-dir", "certs"]);
    assert_eq!(code, 2, "clap usage error");
}
