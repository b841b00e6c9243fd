//! The Debian package, end to end on this machine: `scripts/package.sh --dev --no-build`
//! packages the debug binary this test suite built (a release build takes minutes on 2
//! cores; the package's contents and scripts are the same), `dpkg -i` installs it, the
//! installed unit passes `systemd-analyze verify`, `berth --version` and `berth doctor`
//! (as the unit's user, with the installed config) pass, the unit's ExecStart with its
//! config serves examples/apps as the unit's user, `dpkg -r` stops berth's private nginx
//! and `dpkg --purge` removes config and state but keeps the containers and says so.
//! Slow-ish (~1 min: packaging and dpkg); refuses to run when berth is installed already.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{ensure_images, free_port, http_get, unique_name, DockerCleanup};

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        text(&out)
    );
    text(&out)
}

/// Purges the package if the test stops half way, so the machine is left as it was.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = run("dpkg", &["--purge", "berth"]);
    }
}

/// SIGTERMs the unit's berth if the test stops half way.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.id().to_string()])
                .status();
            let _ = self.0.wait();
        }
    }
}

/// The value of `Key=` in the unit (first occurrence).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn the_deb_installs_serves_examples_and_purges_cleanly() {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test installs a .deb with dpkg: run the suite as root (CI does)"
    );
    let installed = run("dpkg-query", &["-W", "-f=${Status}", "berth"]);
    assert!(
        !String::from_utf8_lossy(&installed.stdout).contains("installed"),
        "berth is installed on this machine: this test installs and purges its own package, \
         so remove it first (dpkg --purge berth)"
    );
    ensure_images();
    let root = env!("CARGO_MANIFEST_DIR");
    // Package what this suite built.
    let bin = Path::new(env!("CARGO_BIN_EXE_berth"));
    assert!(bin.ends_with("debug/berth"), "{}", bin.display());
    let out = Command::new(format!("{root}/scripts/package.sh"))
        .args(["--dev", "--no-build"])
        .current_dir(root)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "package.sh: {}", text(&out));
    let deb = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    assert!(
        deb.starts_with("target/debian/berth_") && deb.ends_with(".deb"),
        "{deb}"
    );
    let deb = format!("{root}/{deb}");
    let listing = ok("dpkg-deb", &["-c", &deb]);
    for path in [
        "./usr/bin/berth",
        "./etc/berth/berth.toml",
        "./lib/systemd/system/berth.service",
        "./usr/share/bash-completion/completions/berth",
        "./usr/share/zsh/vendor-completions/_berth",
        "./usr/share/fish/vendor_completions.d/berth.fish",
        "./usr/share/man/man1/berth.1.gz",
        "./usr/share/man/man1/berth-serve.1.gz",
        "./usr/share/doc/berth/examples/apps/web.yaml",
    ] {
        assert!(
            listing.contains(path),
            "{path} not in the package:\n{listing}"
        );
    }
    let info = ok("dpkg-deb", &["-I", &deb]);
    assert!(
        info.contains("Depends:") && info.contains("nginx"),
        "{info}"
    );
    assert!(info.contains("Recommends: libnginx-mod-http-lua"), "{info}");

    let instance = unique_name("deb");
    let _cleanup = DockerCleanup::new(&instance);
    let guard = Installed;
    let install = ok("dpkg", &["-i", &deb]);
    eprintln!("{install}");
    assert!(ok("id", &["-nG", "berth"])
        .split_whitespace()
        .any(|g| g == "docker"));
    let version = ok("/usr/bin/berth", &["--version"]);
    assert!(version.starts_with("berth "), "{version}");
    assert!(Path::new("/var/lib/berth").is_dir());
    ok(
        "systemd-analyze",
        &["verify", "--man=no", "/lib/systemd/system/berth.service"],
    );

    // The unit's command line, user, environment and working directory, without systemd.
    let unit = std::fs::read_to_string("/lib/systemd/system/berth.service").unwrap();
    let exec: Vec<&str> = unit_value(&unit, "ExecStart").split_whitespace().collect();
    let user = unit_value(&unit, "User");
    let (env_key, env_value) = unit_value(&unit, "Environment").split_once('=').unwrap();
    let workdir = unit_value(&unit, "WorkingDirectory");
    let listen = format!("127.0.0.1:{}", free_port());
    let api = format!("127.0.0.1:{}", free_port());
    let as_unit = |args: &[&str]| {
        // setpriv execs (no process in between), as systemd does: SIGTERM reaches berth.
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={user}"),
            &format!("--regid={user}"),
            "--init-groups",
            "--",
        ])
        .args(args)
        .current_dir(workdir)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env(env_key, env_value)
        // Free ports and this test's instance label: env wins over the config file.
        .env("BERTH_LISTEN", &listen)
        .env("BERTH_API_LISTEN", &api)
        .env("BERTH_INSTANCE", &instance);
        cmd
    };
    for app in ["web.yaml", "api.yaml", "worker.yaml"] {
        std::fs::copy(
            format!("/usr/share/doc/berth/examples/apps/{app}"),
            format!("/etc/berth/apps/{app}"),
        )
        .unwrap();
    }
    let doctor = as_unit(&["/usr/bin/berth", "doctor"]).output().unwrap();
    assert_eq!(doctor.status.code(), Some(0), "doctor: {}", text(&doctor));
    assert!(
        text(&doctor).contains("state-dir    /var/lib/berth is writable"),
        "{}",
        text(&doctor)
    );

    let log = tempfile::NamedTempFile::new().unwrap();
    let mut serve = Serving(
        as_unit(&exec)
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .unwrap(),
    );
    let serve = &mut serve.0;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let web = http_get(&listen, "/web/", None).map(|r| r.0).unwrap_or(0);
        let api_app = http_get(&listen, "/", Some("api.localhost"))
            .map(|r| r.0)
            .unwrap_or(0);
        if web == 200 && api_app == 200 {
            break;
        }
        if let Some(status) = serve.try_wait().unwrap() {
            panic!(
                "berth serve exited ({status}): {}",
                std::fs::read_to_string(log.path()).unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "examples/apps not served within 90 s: {}",
            std::fs::read_to_string(log.path()).unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The status API of the unit's berth lists the apps once its first pass is recorded.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = Command::new("/usr/bin/berth")
            .args(["status", "--api", &api])
            .output()
            .unwrap();
        if text(&status).contains("3 apps") {
            break;
        }
        assert!(Instant::now() < deadline, "berth status: {}", text(&status));
        std::thread::sleep(Duration::from_millis(200));
    }
    // doctor next to the running service: its ports are berth's own.
    let doctor = as_unit(&["/usr/bin/berth", "doctor"]).output().unwrap();
    let report = text(&doctor);
    assert_eq!(
        doctor.status.code(),
        Some(0),
        "doctor while serving: {report}"
    );
    assert!(
        report.contains("served by berth's private nginx"),
        "{report}"
    );
    assert!(
        report.contains("served by a running berth serve"),
        "{report}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status();
    let stopped = serve.wait().unwrap();
    assert!(
        stopped.success(),
        "{stopped}: {}",
        std::fs::read_to_string(log.path()).unwrap()
    );
    let nginx_pid: u32 = std::fs::read_to_string("/var/lib/berth/nginx/nginx.pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // dpkg -r: the binary goes, the private nginx is stopped, config and state stay.
    let removed = ok("dpkg", &["-r", "berth"]);
    assert!(
        removed.contains("stopped berth's private nginx"),
        "{removed}"
    );
    assert!(!Path::new("/usr/bin/berth").exists());
    assert!(Path::new("/etc/berth/berth.toml").exists());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !berth::proxy::exited(nginx_pid) {
        assert!(
            Instant::now() < deadline,
            "nginx {nginx_pid} still running after dpkg -r"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // dpkg --purge: config and state go; the containers stay, and it says so.
    let purged = ok("dpkg", &["--purge", "berth"]);
    assert!(
        purged.contains("containers, their volumes and the berth network were kept"),
        "{purged}"
    );
    assert!(!Path::new("/etc/berth").exists() && !Path::new("/var/lib/berth").exists());
    let kept = ok(
        "docker",
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=berth.instance={instance}"),
        ],
    );
    assert!(kept.lines().count() >= 3, "containers were removed: {kept}");
    drop(guard);
}
