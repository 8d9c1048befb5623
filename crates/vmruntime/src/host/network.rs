//! A VM-backed container's network, carried into its VM the way Kata does it ("tcfilter").
//!
//! An engine (podman's netavark, a CNI plugin, `ip netns`) makes the container a network
//! namespace holding one interface (a veth of a bridge, usually) with an IPv4 address and a
//! default route, and names it in the config (`linux.namespaces`, `network` with a `path`).
//! The VM takes that interface's identity:
//! - in the namespace, bulkhead makes a tap device for the hypervisor ([`TAP`]: QEMU gets
//!   its descriptor, the builtin VMM, started inside the namespace, opens it by name);
//! - two tc redirects join the tap and the interface (`mirred egress redirect` on each one's
//!   ingress): every frame arriving on one leaves through the other, so the namespace's own
//!   stack sees none of them and the guest is the endpoint;
//! - the guest's virtio-net interface gets the interface's MAC address (the hypervisor sets
//!   it), and its IPv4 address, MTU and default route (the agent sets them:
//!   [`crate::protocol::GuestNetwork`]); the container shares the guest's network namespace.
//!
//! What is not carried, and says so: IPv6 addresses (the guest kernel is IPv4-only; a
//! warning), routes other than the default one and the interface's own network (a
//! warning); a namespace with two interfaces or only IPv6 is refused. A namespace with no
//! interface but loopback (`--network none`) carries nothing: the container gets a private
//! namespace in the guest. The tap dies with the last descriptor to it (the hypervisor's);
//! the monitor removes the interface's redirect when the VM is gone (a monitor killed by
//! SIGKILL leaves it, pointing at no device, until the next VM in that namespace replaces
//! it or the engine removes the namespace).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use crate::error::{msg, Context, Result};
use crate::host::backend::find_program;
use crate::netif;
use crate::protocol::GuestNetwork;

/// The tap's name in the container's network namespace. One VM per namespace: a second
/// one finds the name taken (EBUSY) and is refused.
pub const TAP: &str = "bhvm0";

/// The network of one VM, prepared in the container's namespace.
pub struct Network {
    netns: OwnedFd,
    iface: String,
    /// The interface's MAC address, for the guest's interface.
    pub mac: String,
    /// What the agent sets in the guest.
    pub guest: GuestNetwork,
    /// The tap, when made here (for QEMU, which takes its descriptor).
    pub tap: Option<OwnedFd>,
    /// What is not carried into the guest.
    pub warnings: Vec<String>,
    redirected: bool,
}

/// Look into the network namespace at `path` and, with `make_tap`, make the tap there. None:
/// the namespace holds no interface but loopback.
pub fn prepare(path: &Path, make_tap: bool) -> Result<Option<Network>> {
    let netns: OwnedFd = std::fs::File::open(path)
        .ctx(|| format!("open the network namespace {}", path.display()))?
        .into();
    // Its interface's traffic goes to the VM: never the host's own (the runtime's, or
    // init's, should they differ).
    let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let this = id(path);
    if this.is_some()
        && [
            "/proc/thread-self/ns/net",
            "/proc/self/ns/net",
            "/proc/1/ns/net",
        ]
        .iter()
        .any(|h| id(Path::new(h)) == this)
    {
        return Err(msg(format!(
            "network namespace {}: the host's own, whose network a VM cannot take over",
            path.display()
        )));
    }
    let _inside = netif::Inside::enter(netns.as_fd())?;
    let (v4, v6) = netif::interfaces()?;
    let iface = match v4.as_slice() {
        [] if v6.is_empty() => return Ok(None),
        [] => {
            return Err(msg(format!(
                "network namespace {}: {} has only IPv6 addresses, and the VM's guest kernel is IPv4-only",
                path.display(),
                v6.join(", ")
            )))
        }
        [one] => one.clone(),
        more => {
            return Err(msg(format!(
                "network namespace {}: {} interfaces with an IPv4 address ({}); a VM-backed container takes one",
                path.display(),
                more.len(),
                more.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    let mut warnings = Vec::new();
    if !v6.is_empty() {
        warnings.push(format!(
            "network namespace {}: the IPv6 addresses of {} are not carried into the VM (its kernel is IPv4-only)",
            path.display(),
            v6.join(", ")
        ));
    }
    let mut gateway = None;
    for r in netif::routes()? {
        let own_network = r.gateway.is_none()
            && r.prefix == iface.prefix
            && u32::from(r.dst) == u32::from(iface.address) & prefix_mask(r.prefix);
        match (r.dev == iface.name, r.prefix, r.gateway) {
            (true, 0, Some(g)) => gateway = Some(g),
            (true, _, _) if own_network => {}
            _ => warnings.push(format!(
                "network namespace {}: the route to {}/{} on {} is not carried into the VM",
                path.display(),
                r.dst,
                r.prefix,
                r.dev
            )),
        }
    }
    let mtu = netif::mtu(&iface.name)?;
    let mac = netif::mac(&iface.name)?;
    if netif::exists(TAP)? {
        return Err(msg(format!(
            "network namespace {}: it holds {TAP} already (one VM per network namespace: is another VM-backed container using it?)",
            path.display()
        )));
    }
    let tap = if make_tap {
        Some(netif::create_tap(TAP).map_err(|e| {
            msg(format!(
                "network namespace {}: {e} (one VM per network namespace: is another VM-backed container using it?)",
                path.display()
            ))
        })?)
    } else {
        None
    };
    Ok(Some(Network {
        guest: GuestNetwork {
            address: format!("{}/{}", iface.address, iface.prefix),
            gateway: gateway.map(|g| g.to_string()),
            mtu,
        },
        netns,
        iface: iface.name,
        mac,
        tap,
        warnings,
        redirected: false,
    }))
}

fn prefix_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl Network {
    /// The namespace, for a hypervisor that makes the tap itself and so must start inside.
    pub fn netns(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }

    /// Join the tap (it exists by now, whoever made it) and the interface: the tap up with
    /// the interface's MTU, and a redirect on each one's ingress to the other.
    pub fn redirect(&mut self) -> Result<()> {
        let _inside = netif::Inside::enter(self.netns.as_fd())?;
        netif::set_mtu(TAP, self.guest.mtu)?;
        netif::set_up(TAP)?;
        // A redirect a killed monitor left behind goes first (the tap it named is gone).
        let _ = tc(&["qdisc", "del", "dev", &self.iface, "ingress"]);
        self.redirected = true;
        for (from, to) in [(self.iface.as_str(), TAP), (TAP, self.iface.as_str())] {
            tc(&["qdisc", "add", "dev", from, "ingress"])?;
            tc(&[
                "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match",
                "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
            ])?;
        }
        Ok(())
    }

    /// Remove the interface's redirect (the tap's goes with the tap).
    pub fn teardown(&mut self) {
        if !std::mem::take(&mut self.redirected) {
            return;
        }
        let res = netif::Inside::enter(self.netns.as_fd())
            .and_then(|_inside| tc(&["qdisc", "del", "dev", &self.iface, "ingress"]));
        if let Err(e) = res {
            tracing::warn!("remove the VM's redirect from {}: {e}", self.iface);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Run tc(8) (iproute2) in this thread's network namespace.
fn tc(args: &[&str]) -> Result<()> {
    let prog = find_program("tc").ok_or_else(|| {
        msg("tc (iproute2) not found: a VM-backed container's network needs it (scripts/deps.sh installs iproute2)")
    })?;
    let out = Command::new(&prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ctx(|| format!("run {}", prog.display()))?;
    if !out.status.success() {
        return Err(msg(format!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
