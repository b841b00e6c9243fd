//! Pure: the mounts of a create body — the request's (named volume, bind, tmpfs) plus the
//! anonymous volumes carried over from the container it replaces — and how an anonymous
//! volume is recognised. No I/O; unit-tested without Docker.
//!
//! Must not touch: the engine.

use crate::runtime::{ContainerRequest, MountKind};
use bollard::models::{Mount, MountPoint, MountPointTypeEnum, MountTypeEnum};

/// An anonymous volume's name: 64 hex digits (what the engine generates for an image's
/// VOLUME or a `-v /path` without a name).
pub(super) fn is_anonymous_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The anonymous volumes of a container (also those carried over from an earlier one):
/// (volume name, destination path).
pub(super) fn anonymous_volumes(mounts: &[MountPoint]) -> Vec<(String, String)> {
    mounts
        .iter()
        .filter(|m| m.typ == Some(MountPointTypeEnum::VOLUME))
        .filter_map(|m| Some((m.name.clone()?, m.destination.clone()?)))
        .filter(|(name, _)| is_anonymous_name(name))
        .collect()
}

/// The engine's mounts for a request, plus `carried` anonymous volumes (name, path) of the
/// replaced container at every path the request does not mount itself.
pub(super) fn mounts(request: &ContainerRequest, carried: &[(String, String)]) -> Vec<Mount> {
    let mut out: Vec<Mount> = request
        .options
        .mounts
        .iter()
        .map(|m| {
            let (typ, source) = match &m.kind {
                MountKind::Volume(name) => (MountTypeEnum::VOLUME, Some(name.clone())),
                MountKind::Bind(path) => (MountTypeEnum::BIND, Some(path.clone())),
                MountKind::Tmpfs => (MountTypeEnum::TMPFS, None),
            };
            Mount {
                target: Some(m.target.clone()),
                source,
                typ: Some(typ),
                read_only: Some(m.read_only),
                ..Default::default()
            }
        })
        .collect();
    for (name, path) in carried {
        if request.options.mounts.iter().any(|m| m.target == *path) {
            continue;
        }
        out.push(Mount {
            target: Some(path.clone()),
            source: Some(name.clone()),
            typ: Some(MountTypeEnum::VOLUME),
            read_only: Some(false),
            ..Default::default()
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::mapping::tests::request;
    use super::super::mapping::{container_config, CpuLimit};
    use super::*;
    use crate::runtime::{ContainerOptions, HostPort, LogRotation, RequestMount};
    use std::collections::HashMap;

    #[test]
    fn workload_options_reach_the_create_body() {
        let mut r = request();
        r.options = ContainerOptions {
            entrypoint: Some(vec!["/bin/app".into()]),
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
            mounts: vec![
                RequestMount {
                    kind: MountKind::Volume("berth-web-data".into()),
                    target: "/data".into(),
                    read_only: false,
                },
                RequestMount {
                    kind: MountKind::Bind("/srv/media".into()),
                    target: "/media".into(),
                    read_only: true,
                },
                RequestMount {
                    kind: MountKind::Tmpfs,
                    target: "/tmp".into(),
                    read_only: false,
                },
            ],
            host_ports: vec![HostPort {
                container_port: 5432,
                host_port: 15432,
                host_ip: "127.0.0.1".into(),
                protocol: "udp",
            }],
            aliases: vec!["web".into()],
            stop_signal: Some("SIGINT".into()),
            log_rotation: Some(LogRotation {
                max_size_bytes: 10 << 20,
                max_files: 3,
            }),
            carry_volumes_from: None,
        };
        let anon = "a".repeat(64);
        let carried = vec![
            (anon.clone(), "/var/lib/db".to_string()),
            ("b".repeat(64), "/data".to_string()),
        ];
        let m = mounts(&r, &carried);
        let cfg = container_config(&r, HashMap::new(), CpuLimit::None, true, m);
        assert_eq!(cfg.entrypoint, Some(vec!["/bin/app".to_string()]));
        assert_eq!(cfg.working_dir.as_deref(), Some("/srv"));
        assert_eq!(cfg.user.as_deref(), Some("1000:1000"));
        assert_eq!(cfg.stop_signal.as_deref(), Some("SIGINT"));
        let net = cfg.networking_config.unwrap().endpoints_config;
        assert_eq!(net["berth"].aliases, Some(vec!["web".to_string()]));
        let host = cfg.host_config.unwrap();
        let mounts = host.mounts.unwrap();
        let targets: Vec<(&str, Option<&str>, Option<MountTypeEnum>)> = mounts
            .iter()
            .map(|m| (m.target.as_deref().unwrap(), m.source.as_deref(), m.typ))
            .collect();
        assert_eq!(
            targets,
            vec![
                ("/data", Some("berth-web-data"), Some(MountTypeEnum::VOLUME)),
                ("/media", Some("/srv/media"), Some(MountTypeEnum::BIND)),
                ("/tmp", None, Some(MountTypeEnum::TMPFS)),
                (
                    "/var/lib/db",
                    Some(anon.as_str()),
                    Some(MountTypeEnum::VOLUME)
                ),
            ],
            "a carried anonymous volume goes where the spec mounts nothing itself"
        );
        assert_eq!(mounts[1].read_only, Some(true));
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["max-size"], (10u64 << 20).to_string());
        let udp = host.port_bindings.unwrap()["5432/udp"].clone().unwrap();
        assert_eq!(udp[0].host_port.as_deref(), Some("15432"));
        assert_eq!(udp[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert!(is_anonymous_name(&anon) && !is_anonymous_name("berth-web-data"));
    }
}
