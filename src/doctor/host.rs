//! Facts about the host `doctor` runs on: is it a container, does it see a real network card, may
//! it bind a socket to an interface (see "Doctor" in docs/behaviour.md).

use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use super::facts::{Bind, Host};

/// Bit of CAP_NET_RAW in the capability sets of /proc/self/status.
const CAP_NET_RAW: u32 = 13;

/// Gathers [`Host`] from the files containers leave and from /sys/class/net.
pub fn gather() -> Host {
    let marker = ["/.dockerenv", "/run/.containerenv"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(String::from);
    let container = marker
        .or_else(|| {
            let cgroup = std::fs::read_to_string("/proc/1/cgroup").ok()?;
            container_cgroup(&cgroup).map(|c| format!("/proc/1/cgroup names {c}"))
        })
        .or_else(|| {
            let kind = std::env::var("container").ok().filter(|v| !v.is_empty())?;
            Some(format!("container={kind} in the environment"))
        });
    let physical_nic = interfaces()
        .iter()
        .any(|i| i != "lo" && Path::new("/sys/class/net").join(i).join("device").exists());
    Host {
        container,
        physical_nic,
    }
}

/// The container runtime a cgroup listing names, if any.
fn container_cgroup(cgroup: &str) -> Option<&'static str> {
    ["docker", "kubepods", "containerd", "libpod", "lxc"]
        .into_iter()
        .find(|kind| cgroup.lines().any(|l| l.contains(kind)))
}

/// The network interfaces, sorted.
pub fn interfaces() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether the effective capabilities in a /proc/PID/status text hold CAP_NET_RAW.
fn has_net_raw(status: &str) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_NET_RAW) != 0)
}

/// Tries what the proxy does at start with `--interface`: a UDP socket bound to it.
pub fn try_bind(interface: &str) -> Bind {
    let attempt = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .and_then(|s| s.bind_device(Some(interface.as_bytes())));
    match attempt {
        Ok(()) => Bind::Works,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Bind::NoSuchDevice {
            existing: interfaces(),
        },
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Bind::Denied {
            cap_net_raw: std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| has_net_raw(&s)),
        },
        Err(e) => Bind::Other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_cap_eff() {
        let root = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(has_net_raw(root), Some(true));
        let only_net_raw = "CapEff:\t0000000000002000\n";
        assert_eq!(has_net_raw(only_net_raw), Some(true));
        let none = "CapEff:\t0000000000000000\nCapBnd:\t000001ffffffffff\n";
        assert_eq!(has_net_raw(none), Some(false));
        assert_eq!(has_net_raw("Name:\tx\n"), None);
        assert_eq!(has_net_raw("CapEff:\tzz\n"), None);
    }

    #[test]
    fn container_cgroups_are_recognised() {
        assert_eq!(
            container_cgroup("0::/system.slice/docker-3f2a.scope\n"),
            Some("docker")
        );
        assert_eq!(
            container_cgroup("12:pids:/kubepods/besteffort/pod1\n"),
            Some("kubepods")
        );
        assert_eq!(container_cgroup("0::/\n"), None);
        assert_eq!(container_cgroup("0::/init.scope\n"), None);
    }

    #[test]
    fn a_missing_interface_is_named_as_such() {
        match try_bind("nosuchif0") {
            Bind::NoSuchDevice { existing } => assert!(existing.iter().any(|i| i == "lo")),
            // Without the right to bind at all (an old kernel, no CAP_NET_RAW), that is the answer.
            Bind::Denied { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}
