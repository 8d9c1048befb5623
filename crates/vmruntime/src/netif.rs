//! Network interfaces of the calling thread's network namespace, through the kernel's
//! classic interface ioctls (IPv4 only, as the guest kernel is): what the host side reads
//! of a container's network namespace and the tap it makes there, and what the agent sets
//! on the guest's interface. Both ends run single-threaded code without `ip` at hand (the
//! guest holds no program but bulkhead), so these few calls replace it.

use std::ffi::CStr;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{msg, Context, Result};

/// An interface with an IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Iface {
    pub name: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
}

/// The calling thread's network namespace, as getifaddrs(3) sees it: the interfaces with
/// an IPv4 address (loopback excluded), and the names of those with a global IPv6 one.
pub fn interfaces() -> Result<(Vec<Ipv4Iface>, Vec<String>)> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "getifaddrs".into());
    }
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, alive until freeifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a NUL-terminated name owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        if ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0 {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of its family's size.
        match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: an AF_INET address is a sockaddr_in; the netmask (same family)
                // too when present.
                let (addr, mask) = unsafe {
                    let a = *(ifa.ifa_addr as *const libc::sockaddr_in);
                    let m = (!ifa.ifa_netmask.is_null())
                        .then(|| (*(ifa.ifa_netmask as *const libc::sockaddr_in)).sin_addr);
                    (a.sin_addr, m)
                };
                let prefix = mask.map_or(32, |m| u32::from_be(m.s_addr).count_ones() as u8);
                v4.push(Ipv4Iface {
                    name,
                    address: Ipv4Addr::from(u32::from_be(addr.s_addr)),
                    prefix,
                });
            }
            libc::AF_INET6 => {
                // SAFETY: an AF_INET6 address is a sockaddr_in6.
                let a = unsafe { *(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                // Link-local addresses (fe80::/10) every interface gets are not a network.
                if ip.segments()[0] & 0xffc0 != 0xfe80 && !v6.contains(&name) {
                    v6.push(name);
                }
            }
            _ => {}
        }
    }
    // SAFETY: the list getifaddrs returned, freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok((v4, v6))
}

/// An IPv4 route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dev: String,
    pub dst: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

/// The IPv4 routes of the calling thread's network namespace (/proc/self/net/route shows
/// the reader's namespace).
pub fn routes() -> Result<Vec<Route>> {
    let text = std::fs::read_to_string("/proc/self/net/route")
        .ctx(|| "read /proc/self/net/route".into())?;
    Ok(parse_routes(&text))
}

fn parse_routes(text: &str) -> Vec<Route> {
    // Addresses in the kernel's byte order, printed as host-order hex (little-endian here).
    let addr = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dst, gw, mask) = (addr(f.get(1)?)?, addr(f.get(2)?)?, addr(f.get(7)?)?);
            let prefix = u32::from(mask).count_ones() as u8;
            Some(Route {
                dev: f[0].to_string(),
                dst,
                prefix,
                gateway: (!gw.is_unspecified()).then_some(gw),
            })
        })
        .collect()
}

/// The calling thread in another network namespace until dropped.
pub struct Inside {
    home: OwnedFd,
}

impl Inside {
    pub fn enter(netns: BorrowedFd<'_>) -> Result<Inside> {
        let home = rustix::fs::open(
            "/proc/thread-self/ns/net",
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .ctx(|| "open /proc/thread-self/ns/net".into())?;
        setns(netns).ctx(|| "enter a network namespace".into())?;
        Ok(Inside { home })
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        if let Err(e) = setns(self.home.as_fd()) {
            // Nothing of bulkhead's needs its first network namespace (its sockets are
            // paths), but say it.
            tracing::warn!("return to the original network namespace: {e}");
        }
    }
}

fn setns(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    rustix::thread::move_into_link_name_space(fd, Some(rustix::thread::LinkNameSpaceType::Network))
        .map_err(Into::into)
}

/// Whether an interface of that name exists (in the calling thread's namespace).
pub fn exists(name: &str) -> Result<bool> {
    ifreq(name)?;
    Ok(if_ioctl(name, libc::SIOCGIFINDEX, |_| {}, "look the interface up").is_ok())
}

fn inet_socket() -> Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| "socket(AF_INET)".into());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(name: &str) -> Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(msg(format!("bad interface name {name:?}")));
    }
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

/// ioctl(2) on `fd` with `req` and the struct ifreq `r`, `what` naming it in errors.
fn ioctl(fd: &OwnedFd, req: libc::c_ulong, r: &mut libc::ifreq, what: &str) -> Result<()> {
    // SAFETY: the interface ioctls read and write one struct ifreq, which `r` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req as _, r as *mut libc::ifreq) } < 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| what.to_string());
    }
    Ok(())
}

/// One interface ioctl on `name`, on a socket of its own: `fill` sets what the request
/// carries; returns the struct as the kernel left it.
fn if_ioctl(
    name: &str,
    req: libc::c_ulong,
    fill: impl FnOnce(&mut libc::ifreq),
    what: &str,
) -> Result<libc::ifreq> {
    let s = inet_socket()?;
    let mut r = ifreq(name)?;
    fill(&mut r);
    ioctl(&s, req, &mut r, what)?;
    Ok(r)
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(a).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size (16 bytes); the kernel reads it
    // by its family.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Bring interface `name` up.
pub fn set_up(name: &str) -> Result<()> {
    let what = format!("read the flags of {name}");
    let mut r = if_ioctl(name, libc::SIOCGIFFLAGS, |_| {}, &what)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { r.ifr_ifru.ifru_flags } | libc::IFF_UP as libc::c_short;
    r.ifr_ifru.ifru_flags = flags;
    let s = inet_socket()?;
    ioctl(&s, libc::SIOCSIFFLAGS, &mut r, &format!("bring {name} up"))
}

pub fn mtu(name: &str) -> Result<u32> {
    let what = format!("read the MTU of {name}");
    let r = if_ioctl(name, libc::SIOCGIFMTU, |_| {}, &what)?;
    // SAFETY: SIOCGIFMTU filled the mtu member of the union.
    Ok(unsafe { r.ifr_ifru.ifru_mtu } as u32)
}

pub fn set_mtu(name: &str, mtu: u32) -> Result<()> {
    let what = format!("set the MTU of {name} to {mtu}");
    let set = |r: &mut libc::ifreq| r.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    if_ioctl(name, libc::SIOCSIFMTU, set, &what).map(drop)
}

/// The hardware (MAC) address of `name`, as `aa:bb:cc:dd:ee:ff`.
pub fn mac(name: &str) -> Result<String> {
    let what = format!("read the MAC address of {name}");
    let r = if_ioctl(name, libc::SIOCGIFHWADDR, |_| {}, &what)?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { r.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(data[..6]
        .iter()
        .map(|b| format!("{:02x}", *b as u8))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Give `name` the IPv4 address `address/prefix`.
pub fn set_ipv4(name: &str, address: Ipv4Addr, prefix: u8) -> Result<()> {
    let set_addr = |r: &mut libc::ifreq| r.ifr_ifru.ifru_addr = sockaddr_in(address);
    let what = format!("set {address} on {name}");
    if_ioctl(name, libc::SIOCSIFADDR, set_addr, &what)?;
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0));
    let set_mask = |r: &mut libc::ifreq| r.ifr_ifru.ifru_netmask = sockaddr_in(mask);
    let what = format!("set netmask {mask} on {name}");
    if_ioctl(name, libc::SIOCSIFNETMASK, set_mask, &what).map(drop)
}

/// `struct rtentry` of <linux/route.h> (x86_64), which the libc crate has only for musl.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const _: () = assert!(std::mem::size_of::<RtEntry>() == 120);

/// Add the default route through `gateway` (reachable on a connected network).
pub fn add_default_route(gateway: Ipv4Addr) -> Result<()> {
    let s = inet_socket()?;
    let any = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: any,
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: any,
        rt_flags: (libc::RTF_UP | libc::RTF_GATEWAY) as libc::c_ushort,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: SIOCADDRT reads one struct rtentry, which `rt` is (layout checked above).
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCADDRT as _, &mut rt as *mut RtEntry) } < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| format!("add the default route via {gateway}"));
    }
    Ok(())
}

/// Make a tap device `name` (no packet information header) in the calling thread's network
/// namespace; it exists as long as a descriptor to it (this one, or the hypervisor's copy)
/// is open. EBUSY: a tap of that name is in use.
pub fn create_tap(name: &str) -> Result<OwnedFd> {
    let fd = rustix::fs::open(
        "/dev/net/tun",
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ctx(|| "open /dev/net/tun".into())?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    ioctl(
        &fd,
        libc::TUNSETIFF as libc::c_ulong,
        &mut r,
        &format!("create tap {name}"),
    )?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0100580A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    eth0\t0000580A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let route = |dst, prefix, gateway| Route {
            dev: "eth0".into(),
            dst,
            prefix,
            gateway,
        };
        assert_eq!(
            parse_routes(text),
            [
                route(Ipv4Addr::UNSPECIFIED, 0, Some(Ipv4Addr::new(10, 88, 0, 1))),
                route(Ipv4Addr::new(10, 88, 0, 0), 16, None),
            ]
        );
    }

    #[test]
    fn loopback_is_left_out_and_names_are_checked() {
        let (v4, _) = interfaces().unwrap();
        assert!(v4.iter().all(|i| i.name != "lo"), "{v4:?}");
        assert!(ifreq("a-name-far-too-long-for-ifnamsiz").is_err());
        assert!(set_up("").is_err());
    }
}
