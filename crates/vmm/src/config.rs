//! What a VM is made of: the configuration the CLI flags and the JSON file both produce.
//!
//! The same struct is parsed from `--config FILE.json` (serde) and built from flags, then
//! checked once by [`VmConfig::validate`] before anything is created, so bad input fails
//! with one message and leaves nothing half-built.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Command line given to the guest when none is configured. `reboot=k` makes a Linux guest
/// reboot through the i8042 reset line, which is how the VMM learns the guest is done;
/// `pci=off` because there is no PCI bus, devices are on virtio-mmio.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// Largest vCPU count: APIC ids are one byte in the MP table and the IOAPIC takes the id
/// after the last vCPU.
pub const MAX_VCPUS: u8 = 254;

/// How the VMM enters an ELF kernel. A bzImage always uses the Linux 64-bit boot protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BootProtocol {
    /// The Linux 64-bit boot protocol (boot params pointer in rsi), as Firecracker does.
    #[default]
    Linux,
    /// The PVH entry point named by the ELF note XEN_ELFNOTE_PHYS32_ENTRY (32-bit protected
    /// mode, `hvm_start_info` pointer in ebx).
    Pvh,
}

impl FromStr for BootProtocol {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "linux" => Ok(BootProtocol::Linux),
            "pvh" => Ok(BootProtocol::Pvh),
            other => Err(format!(
                "unknown boot protocol {other:?} (expected linux or pvh)"
            )),
        }
    }
}

/// A virtio-blk disk backed by a raw file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

impl FromStr for DiskConfig {
    type Err = String;
    /// `PATH[,ro]`
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (path, read_only) = match s.rsplit_once(',') {
            Some((p, "ro")) => (p, true),
            Some((p, "rw")) => (p, false),
            Some((_, opt)) => return Err(format!("unknown disk option {opt:?} (expected ro)")),
            None => (s, false),
        };
        if path.is_empty() {
            return Err("empty disk path".into());
        }
        Ok(DiskConfig {
            path: path.into(),
            read_only,
        })
    }
}

/// A virtio-net device backed by a host tap interface.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetConfig {
    pub tap: String,
    /// Guest MAC address `aa:bb:cc:dd:ee:ff`; one is derived from the device index if absent.
    #[serde(default)]
    pub mac: Option<String>,
}

impl FromStr for NetConfig {
    type Err = String;
    /// `tap=NAME[,mac=MAC]`
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut tap = None;
        let mut mac = None;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("tap", v)) if !v.is_empty() => tap = Some(v.to_string()),
                Some(("mac", v)) => mac = Some(v.to_string()),
                _ => {
                    return Err(format!(
                        "bad net option {part:?} (expected tap=NAME[,mac=MAC])"
                    ))
                }
            }
        }
        let tap = tap.ok_or_else(|| "missing tap=NAME".to_string())?;
        Ok(NetConfig { tap, mac })
    }
}

/// A virtio-vsock device whose host side is a Unix socket (Firecracker's hybrid vsock).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockConfig {
    /// The guest's context id (3 or more: 0-2 are reserved).
    pub cid: u64,
    /// Host connects here and writes `CONNECT <port>\n`; guest-initiated connections to port P
    /// go to `<uds>_P`.
    pub uds: PathBuf,
}

impl FromStr for VsockConfig {
    type Err = String;
    /// `CID,uds=PATH`
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let (cid, rest) = s
            .split_once(',')
            .ok_or_else(|| "expected CID,uds=PATH".to_string())?;
        let cid: u64 = cid
            .parse()
            .map_err(|_| format!("bad vsock CID {cid:?} (expected a number)"))?;
        let uds = rest
            .strip_prefix("uds=")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| format!("bad vsock option {rest:?} (expected uds=PATH)"))?;
        Ok(VsockConfig {
            cid,
            uds: uds.into(),
        })
    }
}

/// Everything a VM is built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// bzImage or ELF vmlinux.
    pub kernel: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line; `virtio_mmio.device=` entries are appended by the VMM.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    #[serde(default = "default_cpus")]
    pub cpus: u8,
    #[serde(default = "default_memory")]
    pub memory_mib: u64,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub net: Vec<NetConfig>,
    #[serde(default)]
    pub vsock: Option<VsockConfig>,
    #[serde(default)]
    pub rng: bool,
    /// Serial console output file; stdout (and stdin as input) when absent.
    #[serde(default)]
    pub console: Option<PathBuf>,
    #[serde(default)]
    pub boot_protocol: BootProtocol,
    /// The control socket (pause, resume, status, snapshot, shutdown: docs/vm-api.md).
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// Track the pages the guest and the devices write (KVM's dirty log and the guest memory
    /// bitmaps), which diff snapshots need; off by default, so a VM that takes none pays
    /// nothing.
    #[serde(default)]
    pub track_dirty_pages: bool,
    /// Give the VM KVM's in-kernel i8254 PIT, for guests that calibrate their clocks against
    /// it (kernels without kvmclock). Off by default: see `kvm::vm::create_irqchip`.
    #[serde(default)]
    pub pit: bool,
}

fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}
fn default_cpus() -> u8 {
    1
}
fn default_memory() -> u64 {
    128
}

impl VmConfig {
    /// A config with defaults for everything but the kernel.
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        VmConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline: default_cmdline(),
            cpus: default_cpus(),
            memory_mib: default_memory(),
            disks: Vec::new(),
            net: Vec::new(),
            vsock: None,
            rng: false,
            console: None,
            boot_protocol: BootProtocol::default(),
            api_socket: None,
            track_dirty_pages: false,
            pit: false,
        }
    }

    /// Reads a JSON config file; unknown fields are errors so typos do not go unnoticed.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::File {
            what: "VM config",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| Error::ConfigFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Checks every field that can be checked without creating anything.
    pub fn validate(&self) -> Result<()> {
        if self.cpus == 0 {
            return Err(Error::config("cpus", "must be at least 1"));
        }
        if self.cpus > MAX_VCPUS {
            return Err(Error::config(
                "cpus",
                format!(
                    "{} is more than the {MAX_VCPUS} this VMM supports",
                    self.cpus
                ),
            ));
        }
        if self.memory_mib < crate::memory::MIN_MEMORY_MIB {
            return Err(Error::config(
                "memory",
                format!(
                    "{} MiB is less than the minimum of {} MiB",
                    self.memory_mib,
                    crate::memory::MIN_MEMORY_MIB
                ),
            ));
        }
        let host_mib = host_memory_mib()?;
        if self.memory_mib > host_mib {
            return Err(Error::config(
                "memory",
                format!(
                    "{} MiB is more than the host has ({host_mib} MiB)",
                    self.memory_mib
                ),
            ));
        }
        check_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        self.validate_devices()?;
        if self.cmdline.contains('\0') {
            return Err(Error::Cmdline("contains a NUL byte".into()));
        }
        Ok(())
    }

    /// The size of each disk file (config order), as a snapshot records them.
    pub fn disk_sizes(&self) -> Vec<u64> {
        self.disks
            .iter()
            .map(|d| std::fs::metadata(&d.path).map_or(0, |m| m.len()))
            .collect()
    }

    /// Checks the devices' host side and the control socket (also before a restore, where
    /// the kernel and boot settings no longer matter).
    pub fn validate_devices(&self) -> Result<()> {
        for disk in &self.disks {
            check_file("disk", &disk.path)?;
        }
        for (i, net) in self.net.iter().enumerate() {
            if net.tap.is_empty() || net.tap.len() >= libc::IFNAMSIZ {
                return Err(Error::config(
                    format!("net[{i}].tap"),
                    format!("{:?} is not a valid interface name", net.tap),
                ));
            }
            if let Some(mac) = &net.mac {
                parse_mac(mac).map_err(|r| Error::config(format!("net[{i}].mac"), r))?;
            }
        }
        if let Some(vsock) = &self.vsock {
            if vsock.cid < 3 || vsock.cid > u64::from(u32::MAX) {
                return Err(Error::config(
                    "vsock.cid",
                    format!("{} is reserved or too large (use 3..2^32-1)", vsock.cid),
                ));
            }
            check_socket_dir("vsock.uds", &vsock.uds)?;
        }
        if let Some(api) = &self.api_socket {
            check_socket_dir("api_socket", api)?;
        }
        Ok(())
    }
}

/// A socket path must be in an existing directory.
fn check_socket_dir(field: &str, path: &Path) -> Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => Err(Error::config(
            field,
            format!("directory {} does not exist", dir.display()),
        )),
        _ => Ok(()),
    }
}

fn check_file(what: &'static str, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() || m.file_type().is_block_device() => Ok(()),
        Ok(_) => Err(Error::File {
            what,
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        }),
        Err(source) => Err(Error::File {
            what,
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `aa:bb:cc:dd:ee:ff` to bytes.
pub fn parse_mac(s: &str) -> std::result::Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"));
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        *byte = u8::from_str_radix(part, 16)
            .map_err(|_| format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))?;
    }
    Ok(mac)
}

/// Host RAM from /proc/meminfo (MemTotal), the ceiling for a guest's memory.
fn host_memory_mib() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(|source| Error::File {
        what: "host memory info",
        path: "/proc/meminfo".into(),
        source,
    })?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kib| kib / 1024)
        .ok_or_else(|| Error::config("memory", "cannot read MemTotal from /proc/meminfo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_spec() {
        let d: DiskConfig = "/a/b.img,ro".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("/a/b.img"));
        assert!(d.read_only);
        let d: DiskConfig = "x.img".parse().unwrap();
        assert!(!d.read_only);
        assert!("x.img,rx".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn net_and_vsock_spec() {
        let n: NetConfig = "tap=tap0,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(n.tap, "tap0");
        assert_eq!(parse_mac(n.mac.as_deref().unwrap()).unwrap()[5], 1);
        assert!("tap=".parse::<NetConfig>().is_err());
        let v: VsockConfig = "3,uds=/tmp/v.sock".parse().unwrap();
        assert_eq!((v.cid, v.uds), (3, PathBuf::from("/tmp/v.sock")));
        assert!("x,uds=/a".parse::<VsockConfig>().is_err());
        assert!("3,path=/a".parse::<VsockConfig>().is_err());
    }

    #[test]
    fn json_defaults_and_unknown_fields() {
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k"}"#).unwrap();
        assert_eq!(c, VmConfig::new("/k"));
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "cpu": 2}"#).is_err());
        // No PIT unless asked for; a non-boolean is refused.
        assert!(!c.pit);
        let c: VmConfig = serde_json::from_str(r#"{"kernel": "/k", "pit": true}"#).unwrap();
        assert!(c.pit);
        assert!(serde_json::from_str::<VmConfig>(r#"{"kernel": "/k", "pit": "yes"}"#).is_err());
    }

    #[test]
    fn validate_rejects_zero_cpus_and_huge_memory() {
        let exe = std::env::current_exe().unwrap();
        let mut c = VmConfig::new(&exe);
        c.cpus = 0;
        assert!(c.validate().unwrap_err().to_string().contains("cpus"));
        c.cpus = 1;
        c.memory_mib = 1 << 40;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("more than the host"));
        c.memory_mib = 64;
        c.validate().unwrap();
        c.disks.push("/nonexistent/disk.img".parse().unwrap());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/disk.img"));
    }
}
