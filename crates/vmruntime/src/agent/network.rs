//! The guest's side of the container's network: the one virtio-net interface gets the
//! address, MTU and default route the host read from the container's network namespace
//! (its MAC address the hypervisor set already), and loopback comes up. The container then
//! runs in this, the guest's own network namespace.

use std::net::Ipv4Addr;

use crate::error::{msg, Context, Result};
use crate::netif;
use crate::protocol::GuestNetwork;

/// Configure the guest's interface as `n` says.
pub fn configure(n: &GuestNetwork) -> Result<()> {
    let (address, prefix) = parse_cidr(&n.address)?;
    let iface = the_interface()?;
    netif::set_up("lo")?;
    netif::set_mtu(&iface, n.mtu)?;
    netif::set_ipv4(&iface, address, prefix)?;
    netif::set_up(&iface)?;
    if let Some(g) = &n.gateway {
        let gw: Ipv4Addr = g
            .parse()
            .map_err(|_| msg(format!("network: bad gateway {g:?}")))?;
        netif::add_default_route(gw)?;
    }
    Ok(())
}

/// The config's network sysctls (`net.*`) are for the container's network namespace, which
/// is the guest's own once the container's network was carried in: written here, and taken
/// out of the config (the container library writes sysctls only into namespaces of the
/// container's own, and refuses network ones without one).
pub fn apply_net_sysctls(spec: &mut oci::Spec) -> Result<()> {
    let Some(linux) = spec.linux.as_mut() else {
        return Ok(());
    };
    let keys: Vec<String> = linux
        .sysctl
        .keys()
        .filter(|k| k.starts_with("net."))
        .cloned()
        .collect();
    for key in keys {
        let value = linux.sysctl.remove(&key).unwrap_or_default();
        // The host validated the name (no "..", not absolute).
        let path = std::path::Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, &value)
            .ctx(|| format!("linux.sysctl.{key}: write {value:?} to {}", path.display()))?;
    }
    Ok(())
}

/// Bring loopback up in the network namespace of process `pid` (a container's own, new
/// one): engines give a container's namespace its loopback up, and so does `sandbox`.
pub fn loopback_up_in(pid: i32) -> Result<()> {
    let ns: std::os::fd::OwnedFd = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .ctx(|| format!("open /proc/{pid}/ns/net"))?
        .into();
    let _inside = netif::Inside::enter(std::os::fd::AsFd::as_fd(&ns))?;
    netif::set_up("lo")
}

/// `a.b.c.d/n`.
fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || {
        msg(format!(
            "network: bad address {s:?} (expected a.b.c.d/prefix)"
        ))
    };
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
    Ok((addr, prefix))
}

/// The guest's one network interface besides loopback (the kernel named it; the
/// hypervisor gave exactly one).
fn the_interface() -> Result<String> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/class/net")
        .ctx(|| "read /sys/class/net".into())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(msg(
            "network: the guest has no network interface (is CONFIG_VIRTIO_NET in its kernel?)",
        )),
        _ => Err(msg(format!(
            "network: the guest has {} interfaces ({}), expected one",
            names.len(),
            names.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            parse_cidr("10.88.0.5/16").unwrap(),
            (Ipv4Addr::new(10, 88, 0, 5), 16)
        );
        for bad in ["10.88.0.5", "10.88.0.5/33", "x/8", "fe80::1/64"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }
}
