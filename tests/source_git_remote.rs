//! The git source over the transports users point berth at, against real servers the tests
//! start on 127.0.0.1 free ports with every file in a temp dir: Debian's `sshd` (own config,
//! host key and authorized_keys, key-only root login) and `git http-backend` behind a
//! private nginx with TLS (a CA and server certificates made with the openssl CLI) and basic
//! auth, through `fcgiwrap` on a unix socket. Cases: good credentials sync the right
//! commit; a wrong key, a wrong token, an unknown or changed host key, an untrusted or
//! expired certificate each give a clear error naming the remote while the last synced
//! commit keeps being served; a busy repository's mirror is compacted. Every server is a
//! child process stopped by pid in a Drop guard.

mod git_servers;
mod support;

use berth::source::compact::{mirror_stats, MAX_LOOSE, MAX_PACKS};
use berth::source::{GitConfig, Source, SourceConfig, SourceError};
use git_servers::{git, keygen, make_certs, run, HttpsServer, Repo, SshServer, TOKEN};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Syncs and returns the error (panics when the sync succeeds).
async fn sync_error(source: &Arc<Source>) -> SourceError {
    match source.sync().await {
        Ok(changed) => panic!("the sync succeeded (changed: {changed}), expected a refusal"),
        Err(e) => {
            eprintln!("refused: {e}");
            e
        }
    }
}

/// Asserts the source still serves `revision` and says it is degraded.
async fn keeps_serving(source: &Arc<Source>, revision: &str) {
    assert_eq!(source.snapshot().await.unwrap().revision, revision);
    let status = source.status();
    assert_eq!(status.revision.as_deref(), Some(revision));
    assert!(status.degraded.is_some(), "{status:?}");
    assert!(status.failures >= 1, "{status:?}");
}

// ---------------------------------------------------------------------------------------
// ssh

#[tokio::test]
async fn ssh_deploy_key_syncs_and_a_wrong_key_keeps_the_last_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SshServer::start(tmp.path());
    let first = server.repo.commit("image: v1\n");
    // Hashed names, as `ssh-keyscan -H` (and HashKnownHosts) write them.
    let known_hosts = tmp.path().join("known_hosts");
    let scanned = run(
        "ssh-keyscan",
        &[
            "-H",
            "-t",
            "ed25519",
            "-p",
            &server.port.to_string(),
            "127.0.0.1",
        ],
        tmp.path(),
    );
    assert!(scanned.starts_with("|1|"), "{scanned}");
    std::fs::write(&known_hosts, format!("{scanned}\n")).unwrap();
    let source = Source::new(SourceConfig::Git(server.config(&known_hosts)));

    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(snapshot.revision, first);
    assert_eq!(
        snapshot.files,
        vec![(PathBuf::from("web.yaml"), "image: v1\n".to_string())]
    );

    // The deploy key is replaced by one the server does not know.
    let second = server.repo.commit("image: v2\n");
    let key = tmp.path().join("client_key");
    let good_key = std::fs::read(&key).unwrap();
    let stranger = keygen(tmp.path(), "stranger_key");
    std::fs::copy(&stranger, &key).unwrap();
    let error = sync_error(&source).await;
    assert!(matches!(error, SourceError::SshAuth { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(
        text.contains("check --git-ssh-key and that the deploy key is added to the repository"),
        "{text}"
    );
    keeps_serving(&source, &first).await;

    // The right key again: the next sync catches up.
    std::fs::write(&key, good_key).unwrap();
    assert!(source.sync().await.unwrap());
    assert_eq!(source.snapshot().await.unwrap().revision, second);
    assert_eq!(source.status().degraded, None);
}

#[tokio::test]
async fn ssh_unknown_or_changed_host_keys_are_refused_with_the_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SshServer::start(tmp.path());
    let first = server.repo.commit("image: v1\n");
    let known_hosts = tmp.path().join("known_hosts");
    let host = format!("[127.0.0.1]:{}", server.port);

    // No entry for the host (the file does not even exist).
    let source = Source::new(SourceConfig::Git(server.config(&known_hosts)));
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::UnknownHostKey { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&host), "{text}");
    assert!(text.contains(&server.host_fingerprint), "{text}");
    assert!(text.contains("--git-known-hosts"), "{text}");
    assert!(text.contains(&server.url()), "{text}");
    assert_eq!(source.status().revision, None);

    // The host listed with another key: refused as a changed key, naming the line.
    let impostor = keygen(tmp.path(), "impostor_key");
    let impostor_pub = std::fs::read_to_string(impostor.with_extension("pub")).unwrap();
    let impostor_pub = impostor_pub
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    std::fs::write(
        &known_hosts,
        format!("# other hosts\nexample.org {impostor_pub}\n{host} {impostor_pub}\n"),
    )
    .unwrap();
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::HostKeyMismatch { line: 3, .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&server.host_fingerprint),
        "{error}"
    );

    // Listed (plain name, among other patterns): synced.
    std::fs::write(
        &known_hosts,
        format!("example.org,{host} {}\n", server.host_key_pub),
    )
    .unwrap();
    assert!(source.sync().await.unwrap());
    assert_eq!(source.snapshot().await.unwrap().revision, first);

    // The key changes under a synced source: refused, the last commit is kept.
    server.repo.commit("image: v2\n");
    std::fs::write(&known_hosts, format!("{host} {impostor_pub}\n")).unwrap();
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::HostKeyMismatch { .. }),
        "{error:?}"
    );
    keeps_serving(&source, &first).await;
}

/// The `berth` binary wires the flags: `plan --observed-empty` (source only, no Docker)
/// over ssh with `--git-ssh-key` and `--git-known-hosts`; an unknown host fails the command
/// with the fingerprint; a CA file or known_hosts file that is not there fails at start.
#[test]
fn berth_plan_over_ssh_uses_the_key_and_known_hosts_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let server = SshServer::start(tmp.path());
    let web = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/apps/web.yaml"
    ))
    .unwrap();
    server.repo.commit(&web);
    let known_hosts = tmp.path().join("known_hosts");
    let berth = |known_hosts: &Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args([
                "plan",
                "--observed-empty",
                "--git",
                &server.url(),
                "--git-ssh-key",
            ])
            .arg(tmp.path().join("client_key"))
            .arg("--git-known-hosts")
            .arg(known_hosts)
            .arg("--state-dir")
            .arg(tmp.path().join("state"))
            .args(extra)
            .env("RUST_LOG", "error")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    std::fs::write(&known_hosts, "").unwrap();
    let (code, text) = berth(&known_hosts, &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains(&server.host_fingerprint), "{text}");

    let host = format!("[127.0.0.1]:{}", server.port);
    std::fs::write(&known_hosts, format!("{host} {}\n", server.host_key_pub)).unwrap();
    let (code, text) = berth(&known_hosts, &[]);
    assert_eq!(code, Some(2), "a plan with changes: {text}");
    assert!(text.contains("web"), "{text}");

    let (code, text) = berth(&tmp.path().join("missing"), &[]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("--git-known-hosts"), "{text}");
    let missing_ca = tmp.path().join("missing-ca.pem");
    let (code, text) = berth(
        &known_hosts,
        &["--git-ca-file", missing_ca.to_str().unwrap()],
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot use the CA file"), "{text}");
}
// ---------------------------------------------------------------------------------------
// https

#[tokio::test]
async fn https_token_with_the_ca_syncs_and_a_wrong_token_keeps_the_last_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HttpsServer::start(tmp.path(), "2");
    let first = server.repo.commit("image: v1\n");
    let config = server.config(Some(&server.ca), TOKEN);
    let env = config.token_env.clone().unwrap();
    let source = Source::new(SourceConfig::Git(config));

    let snapshot = source.snapshot().await.unwrap();
    assert_eq!(snapshot.revision, first);
    assert_eq!(snapshot.files[0].1, "image: v1\n");

    // The token is read at every fetch: a rotated-away token fails clearly.
    let second = server.repo.commit("image: v2\n");
    std::env::set_var(&env, "wrong-token");
    let error = sync_error(&source).await;
    assert!(matches!(error, SourceError::TokenAuth { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(text.contains(&format!("${env}")), "{text}");
    assert!(!text.contains("wrong-token"), "the token leaked: {text}");
    keeps_serving(&source, &first).await;

    std::env::set_var(&env, TOKEN);
    assert!(source.sync().await.unwrap());
    assert_eq!(source.snapshot().await.unwrap().revision, second);

    // Shallow fetches over https keep adding packs; the shallow mirror is compacted too and
    // goes on fetching.
    let mirror = server.config(None, TOKEN).mirror_dir();
    assert!(
        mirror.join("shallow").exists(),
        "network fetches are shallow"
    );
    for n in 0..MAX_PACKS + 2 {
        let revision = server.repo.commit(&format!("image: v{}\n", n + 3));
        assert!(source.sync().await.unwrap());
        assert_eq!(source.snapshot().await.unwrap().revision, revision);
        let stats = mirror_stats(&mirror);
        assert!(stats.packs <= MAX_PACKS, "fetch {n}: {stats:?}");
    }
    git(&mirror, &["fsck", "--no-progress", "--connectivity-only"]);
    std::env::remove_var(&env);
}

#[tokio::test]
async fn https_certificate_of_an_unknown_ca_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HttpsServer::start(tmp.path(), "2");
    server.repo.commit("image: v1\n");

    // No --git-ca-file: the system CAs do not know the test CA.
    let source = Source::new(SourceConfig::Git(server.config(None, TOKEN)));
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::CertificateUntrusted { .. }),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(text.contains(&server.url()), "{text}");
    assert!(text.contains("--git-ca-file"), "{text}");

    // A CA file with another CA: still refused, with OpenSSL's reason.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let other_ca = make_certs(&other, "2");
    let source = Source::new(SourceConfig::Git(server.config(Some(&other_ca), TOKEN)));
    let error = sync_error(&source).await;
    assert!(
        matches!(error, SourceError::CertificateUntrusted { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("issuer"), "{error}");

    // A CA file that is not PEM: said so, naming the file.
    let garbage = tmp.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let source = Source::new(SourceConfig::Git(server.config(Some(&garbage), TOKEN)));
    let error = sync_error(&source).await;
    assert!(matches!(error, SourceError::CaFile { .. }), "{error:?}");
    assert!(
        error.to_string().contains(&garbage.display().to_string()),
        "{error}"
    );
}

#[tokio::test]
async fn https_expired_certificate_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let server = HttpsServer::start(tmp.path(), "-1");
    server.repo.commit("image: v1\n");
    for ca in [Some(server.ca.as_path()), None] {
        let source = Source::new(SourceConfig::Git(server.config(ca, TOKEN)));
        let error = sync_error(&source).await;
        assert!(
            matches!(error, SourceError::CertificateExpired { .. }),
            "{error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("expired on"), "{text}");
        assert!(text.contains(&server.url()), "{text}");
        assert!(text.contains("renew the server's certificate"), "{text}");
    }
}

// ---------------------------------------------------------------------------------------
// compaction

#[tokio::test]
async fn busy_repository_mirror_is_compacted() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo::new(tmp.path().join("remote.git"), tmp.path().join("work"));
    let mut config = GitConfig::new(repo.bare.to_str().unwrap(), tmp.path().join("cache"));
    config.poll = Duration::from_secs(60);
    let mirror = config.mirror_dir();
    let source = Source::new(SourceConfig::Git(config));
    let mut peak = mirror_stats(&mirror);
    let mut compactions = 0;
    let mut previous = peak;
    for n in 0..3 * MAX_PACKS {
        let revision = repo.commit(&format!("image: v{n}\n"));
        source.sync().await.unwrap();
        assert_eq!(source.snapshot().await.unwrap().revision, revision);
        let stats = mirror_stats(&mirror);
        assert!(
            stats.packs <= MAX_PACKS && stats.loose <= MAX_LOOSE,
            "fetch {n}: the mirror was not compacted: {stats:?}"
        );
        if stats.packs + stats.loose < previous.packs + previous.loose {
            compactions += 1;
            eprintln!("fetch {n}: compacted {previous:?} -> {stats:?}");
        }
        peak.packs = peak.packs.max(stats.packs);
        peak.loose = peak.loose.max(stats.loose);
        previous = stats;
    }
    assert!(compactions >= 2, "{compactions} compactions, peak {peak:?}");
    // Every fetch added to the store (so without compaction it would have kept growing).
    assert!(peak.packs + peak.loose >= MAX_PACKS, "peak {peak:?}");
    // Compacted into one pack that git itself can still read the branch from.
    let head = git(&mirror, &["rev-parse", "refs/remotes/origin/main"]);
    assert_eq!(head, source.status().revision.unwrap());
    git(&mirror, &["fsck", "--no-progress", "--connectivity-only"]);
}
