//! From an OCI config to a VM: which backend, image, memory and CPUs (annotations
//! `run.bulkhead.vm.*`), and the config as the guest gets it. Everything here is checked
//! before anything exists on the host, so a config a VM cannot run fails `create` with one
//! line naming the field.
//!
//! What changes on the way into the guest:
//! - bind mounts of host **files** travel with the create request (the guest cannot see the
//!   host's files); host **directories** are exported over 9p when the caller asks for it
//!   (`sandbox --vm`, QEMU only); otherwise an **empty** one becomes a tmpfs (podman's
//!   /dev/shm) and others are refused;
//! - the root is a disk made from `root.path`, or with [`Overrides::host_root`] the host's
//!   own root, read-only over 9p (QEMU only);
//! - a network namespace joined by `path` (an engine's network) is carried into the VM
//!   ([`crate::host::network`]: a tap joined to its interface, the interface's address in
//!   the guest), or, with no interface but loopback in it, becomes a private one in the
//!   guest; no network namespace at all (the host's network) is refused, as is joining
//!   other namespaces by path (they are the host's);
//! - hooks (they would run on the host against a process in the guest) and a seccomp
//!   `listenerPath` (a host socket) are refused.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{msg, Result};
use crate::host::backend::{Accel, Backend, Share, HOST_ROOT_TAG};
use crate::image::GuestImage;
use crate::protocol::{annotations as ann, BindFile, RootfsDisk, SharedDir, NINEP_OPTIONS};

/// Guest RAM when the config sets no memory limit.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// Guest RAM above the container's memory limit, for the guest kernel and the agent.
const MEMORY_HEADROOM_MIB: u64 = 64;
/// How long the guest may take to say hello; generous because an emulating KVM takes
/// ~20 s to boot our guest and CI machines are shared.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest bind-mounted host file copied into the guest.
const MAX_BIND_FILE: u64 = 1 << 20;
/// Most host directories exported to one guest: each is a virtio-mmio device, and QEMU's
/// microvm has 24 transports for the disk, the agent's port and these.
const MAX_SHARED_DIRS: usize = 16;

/// A container's VM, decided.
#[derive(Debug, Clone)]
pub struct VmPlan {
    pub backend: Backend,
    pub image: GuestImage,
    pub memory_mib: u64,
    pub cpus: u8,
    pub boot_timeout: Duration,
    pub disk_max: u64,
    /// The host directory that becomes the root filesystem disk.
    pub rootfs: PathBuf,
    /// The config for the guest.
    pub spec: oci::Spec,
    pub bind_files: Vec<BindFile>,
    /// Host directories the guest mounts over 9p: the protocol's entry, the host path.
    pub shared_dirs: Vec<(SharedDir, PathBuf)>,
    /// The network namespace the config joins, whose network the VM takes over.
    pub netns: Option<PathBuf>,
    /// The guest's root is the host's, over 9p; `rootfs` becomes no disk.
    pub host_root: bool,
    /// QEMU's accelerator.
    pub accel: Accel,
}

impl VmPlan {
    /// What QEMU exports over 9p.
    pub fn shares(&self) -> Vec<Share> {
        let root = self.host_root.then(|| Share {
            tag: HOST_ROOT_TAG.into(),
            path: "/".into(),
            readonly: true,
        });
        let dirs = self.shared_dirs.iter().map(|(d, path)| Share {
            tag: d.tag.clone(),
            path: path.clone(),
            readonly: d.readonly,
        });
        root.into_iter().chain(dirs).collect()
    }

    /// How the agent mounts the container's root.
    pub fn rootfs_mount(&self) -> RootfsDisk {
        if self.host_root {
            RootfsDisk {
                device: HOST_ROOT_TAG.into(),
                fstype: "9p".into(),
                options: Some(NINEP_OPTIONS.into()),
            }
        } else {
            RootfsDisk {
                device: "/dev/vda".into(),
                fstype: "ext4".into(),
                options: None,
            }
        }
    }
}

/// Settings a caller gives beside the config (`sandbox --vm` flags); annotations win.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub backend: Option<Backend>,
    pub image: Option<PathBuf>,
    /// The guest's root is the host's root, read-only over 9p, rather than a disk made from
    /// `root.path` (`sandbox --vm` without `--rootfs`). QEMU only.
    pub host_root: bool,
    /// Bind mounts of host directories are exported to the guest over 9p rather than
    /// refused (`sandbox --vm --bind`). QEMU only.
    pub share_dirs: bool,
}

/// Why the builtin VMM cannot do what 9p does.
const NO_9P: &str =
    "needs the qemu backend: the builtin VMM has no 9p or virtio-fs device to share host files with";

fn get<'a>(a: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    a.get(k).map(String::as_str)
}

fn parse_num(a: &BTreeMap<String, String>, k: &str, min: u64, max: u64) -> Result<Option<u64>> {
    let Some(v) = get(a, k) else { return Ok(None) };
    let n: u64 = v
        .trim()
        .parse()
        .map_err(|_| msg(format!("annotation {k}={v:?}: not a number")))?;
    if !(min..=max).contains(&n) {
        return Err(msg(format!(
            "annotation {k}={n}: out of range {min}..={max}"
        )));
    }
    Ok(Some(n))
}

fn parse_duration(a: &BTreeMap<String, String>, k: &str) -> Result<Option<Duration>> {
    let Some(v) = get(a, k) else { return Ok(None) };
    let t = v.trim();
    let secs = t.strip_suffix('s').unwrap_or(t);
    let n: f64 = secs
        .parse()
        .ok()
        .filter(|n: &f64| *n > 0.0 && n.is_finite())
        .ok_or_else(|| {
            msg(format!(
                "annotation {k}={v:?}: expected seconds, e.g. 30 or 2.5s"
            ))
        })?;
    Ok(Some(Duration::from_secs_f64(n)))
}

fn host_memory_mib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(u64::MAX, |kib| kib / 1024)
}

/// Decide the VM for `spec` (already validated by oci::validate); `rootfs` is the bundle's
/// root directory. `cache` is where images live.
pub fn plan(spec: &oci::Spec, rootfs: &Path, over: &Overrides, cache: &Path) -> Result<VmPlan> {
    let a = &spec.annotations;
    for k in a.keys() {
        if k.starts_with("run.bulkhead.vm") && !ann::ALL.contains(&k.as_str()) {
            return Err(msg(format!(
                "annotation {k}: unknown (known: {})",
                ann::ALL.join(", ")
            )));
        }
    }
    let backend = match get(a, ann::BACKEND) {
        Some(b) => Backend::parse(b)?,
        None => over.backend.unwrap_or_else(Backend::host_default),
    };
    backend.check()?;
    let accel = match get(a, ann::ACCEL) {
        Some(x) => Accel::parse(x)?,
        None => Accel::host_default(),
    };
    if backend == Backend::Qemu {
        accel.check()?;
    } else if a.contains_key(ann::ACCEL) {
        return Err(msg(format!(
            "annotation {}: for the qemu backend only",
            ann::ACCEL
        )));
    }
    if over.host_root && backend == Backend::Builtin {
        return Err(msg(format!(
            "the host's root as the VM's root {NO_9P} (use the qemu backend, or a root filesystem directory)"
        )));
    }
    let image_dir = get(a, ann::IMAGE).map(PathBuf::from).or(over.image.clone());
    let image = GuestImage::resolve(image_dir.as_deref(), cache)?;
    let limit_mib = spec
        .linux
        .as_ref()
        .and_then(|l| l.resources.as_ref())
        .and_then(|r| r.memory.as_ref())
        .and_then(|m| m.limit)
        .filter(|l| *l > 0)
        .map(|l| (l as u64).div_ceil(1 << 20));
    let host_mib = host_memory_mib();
    let memory_mib = match parse_num(a, ann::MEMORY, 64, host_mib)? {
        Some(m) => m,
        None => limit_mib
            .map(|l| (l + MEMORY_HEADROOM_MIB).max(DEFAULT_MEMORY_MIB))
            .unwrap_or(DEFAULT_MEMORY_MIB)
            .min(host_mib),
    };
    let cpus = parse_num(a, ann::CPUS, 1, 32)?.unwrap_or(1) as u8;
    let boot_timeout = parse_duration(a, ann::BOOT_TIMEOUT)?.unwrap_or(DEFAULT_BOOT_TIMEOUT);
    let disk_max = parse_num(a, ann::DISK_MAX, 1, 1 << 20)?
        .map(|m| m << 20)
        .unwrap_or(crate::disk::DEFAULT_MAX_BYTES);
    let GuestSpec {
        spec,
        bind_files,
        shared_dirs,
        netns,
    } = guest_spec(spec, over.share_dirs)?;
    if (over.host_root || !shared_dirs.is_empty()) && image.kernel_lacks("CONFIG_9P_FS") {
        return Err(msg(format!(
            "the guest image {} has a kernel without 9p (CONFIG_9P_FS), which sharing host files needs: rebuild the kernel (guest/build-kernel.sh) and the image (bulkhead vm image build)",
            image.dir.display()
        )));
    }
    if let (Some((d, _)), Backend::Builtin) = (shared_dirs.first(), backend) {
        let dst = &spec.mounts[d.mount].destination;
        return Err(msg(format!(
            "mounts[{}] ({dst}): sharing a host directory {NO_9P}",
            d.mount
        )));
    }
    Ok(VmPlan {
        backend,
        image,
        memory_mib,
        cpus,
        boot_timeout,
        disk_max,
        rootfs: rootfs.to_path_buf(),
        spec,
        bind_files,
        shared_dirs,
        netns,
        host_root: over.host_root,
        accel,
    })
}

fn is_bind(m: &oci::Mount) -> bool {
    m.typ.as_deref() == Some("bind") || m.options.iter().any(|o| o == "bind" || o == "rbind")
}

/// What the guest gets of a config.
#[derive(Debug)]
pub struct GuestSpec {
    /// The config for the guest (its network namespace private, no path).
    pub spec: oci::Spec,
    /// Host files bind-mounted by the config, copied in.
    pub bind_files: Vec<BindFile>,
    /// Host directories exported over 9p: the protocol's entry and the host path.
    pub shared_dirs: Vec<(SharedDir, PathBuf)>,
    /// The network namespace the config joined.
    pub netns: Option<PathBuf>,
}

/// The config as the guest gets it, the host files it needs, (with `share_dirs`) the host
/// directories it mounts over 9p, and the network namespace it joined (see the module
/// notes).
pub fn guest_spec(spec: &oci::Spec, share_dirs: bool) -> Result<GuestSpec> {
    let mut spec = spec.clone();
    if let Some(h) = &spec.hooks {
        let any = [
            &h.prestart,
            &h.create_runtime,
            &h.create_container,
            &h.start_container,
            &h.poststart,
            &h.poststop,
        ]
        .iter()
        .any(|v| !v.is_empty());
        if any {
            return Err(msg(
                "hooks: not supported in a VM-backed container (they would run on the host, the container in the guest)",
            ));
        }
    }
    let mut netns = None;
    let linux = spec.linux.get_or_insert_with(Default::default);
    if !linux
        .namespaces
        .iter()
        .any(|n| n.typ == oci::NamespaceType::Network)
    {
        return Err(msg(
            "linux.namespaces: no network namespace, i.e. the host's network, which a VM cannot share: give the container a network namespace (a new one, or an engine's by path)",
        ));
    }
    for (i, ns) in linux.namespaces.iter_mut().enumerate() {
        let Some(path) = &ns.path else { continue };
        if ns.typ == oci::NamespaceType::Network {
            netns = Some(PathBuf::from(path));
            ns.path = None;
        } else {
            return Err(msg(format!(
                "linux.namespaces[{i}]: joining the host's {} namespace {path} is not possible from inside a VM",
                ns.typ.proc_name()
            )));
        }
    }
    if linux
        .seccomp
        .as_ref()
        .is_some_and(|s| s.listener_path.is_some())
    {
        return Err(msg(
            "linux.seccomp.listenerPath: a host socket cannot receive notifications from inside a VM",
        ));
    }
    let mut files = Vec::new();
    let mut shared = Vec::new();
    let mut total = 0u64;
    for (i, m) in spec.mounts.iter_mut().enumerate() {
        if !is_bind(m) {
            continue;
        }
        let src = m.source.clone().unwrap_or_default();
        let meta = fs::metadata(&src).map_err(|e| {
            msg(format!(
                "mounts[{i}] ({}): source {src}: {e}",
                m.destination
            ))
        })?;
        if meta.is_file() {
            if meta.len() > MAX_BIND_FILE {
                return Err(msg(format!(
                    "mounts[{i}] ({}): {src} is {} bytes; host files bound into a VM are copied, up to {MAX_BIND_FILE} bytes",
                    m.destination,
                    meta.len()
                )));
            }
            let bytes = fs::read(&src)
                .map_err(|e| msg(format!("mounts[{i}] ({}): read {src}: {e}", m.destination)))?;
            total += bytes.len() as u64;
            files.push(BindFile::new(i, meta.permissions().mode() & 0o7777, &bytes));
        } else if meta.is_dir() && share_dirs {
            if shared.len() == MAX_SHARED_DIRS {
                return Err(msg(format!(
                    "mounts[{i}] ({}): more than {MAX_SHARED_DIRS} host directories shared with one VM",
                    m.destination
                )));
            }
            let path = fs::canonicalize(&src).map_err(|e| {
                msg(format!(
                    "mounts[{i}] ({}): source {src}: {e}",
                    m.destination
                ))
            })?;
            let readonly = m.options.iter().any(|o| o == "ro" || o == "rro");
            let tag = format!("bind{i}");
            shared.push((
                SharedDir {
                    mount: i,
                    tag,
                    readonly,
                },
                path,
            ));
        } else if meta.is_dir() {
            let empty = fs::read_dir(&src)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                return Err(msg(format!(
                    "mounts[{i}] ({}): the host directory {src} cannot be shared with a VM-backed container (only files and empty directories can; `sandbox --vm` shares directories over 9p)",
                    m.destination
                )));
            }
            // An empty directory shared for writing (podman's /dev/shm): a fresh tmpfs.
            m.typ = Some("tmpfs".into());
            m.source = Some("tmpfs".into());
            m.options.retain(|o| {
                matches!(
                    o.as_str(),
                    "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "relatime" | "noatime"
                )
            });
            m.options
                .push(format!("mode={:o}", meta.permissions().mode() & 0o7777));
        } else {
            return Err(msg(format!(
                "mounts[{i}] ({}): {src} is neither a file nor a directory; it cannot be shared with a VM",
                m.destination
            )));
        }
    }
    if total > 4 * MAX_BIND_FILE {
        return Err(msg(format!(
            "mounts: {total} bytes of host files bound into the container; a VM takes at most {}",
            4 * MAX_BIND_FILE
        )));
    }
    Ok(GuestSpec {
        spec,
        bind_files: files,
        shared_dirs: shared,
        netns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> oci::Spec {
        oci::default_spec(None)
    }

    #[test]
    fn files_travel_empty_dirs_become_tmpfs_others_are_refused() {
        let dir = std::env::temp_dir().join(format!("bh-plan-{}", std::process::id()));
        fs::create_dir_all(dir.join("empty")).unwrap();
        fs::create_dir_all(dir.join("full")).unwrap();
        fs::write(dir.join("full/x"), "x").unwrap();
        fs::write(dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();
        fs::set_permissions(dir.join("empty"), fs::Permissions::from_mode(0o1777)).unwrap();
        let bind = |src: &Path, dst: &str| oci::Mount {
            destination: dst.into(),
            typ: Some("bind".into()),
            source: Some(src.display().to_string()),
            options: vec!["rbind".into(), "rw".into(), "nosuid".into()],
            ..Default::default()
        };
        let mut s = base();
        let n = s.mounts.len();
        s.mounts.push(bind(&dir.join("hosts"), "/etc/hosts"));
        s.mounts.push(bind(&dir.join("empty"), "/dev/shm"));
        let g = guest_spec(&s, false).unwrap();
        let files = &g.bind_files;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].mount, n);
        assert_eq!(files[0].bytes().unwrap(), b"127.0.0.1 localhost\n");
        let shm = &g.spec.mounts[n + 1];
        assert_eq!(shm.typ.as_deref(), Some("tmpfs"));
        assert_eq!(shm.options, ["rw", "nosuid", "mode=1777"]);
        // A directory with content cannot be shared.
        s.mounts.push(bind(&dir.join("full"), "/data"));
        let e = guest_spec(&s, false).unwrap_err().to_string();
        assert!(e.contains("/data") && e.contains("cannot be shared"), "{e}");
        // ...unless directories are exported over 9p: every one, empty or not, read-only
        // as its options say; files are still copied.
        let mut ro = bind(&dir.join("full"), "/ro");
        ro.options.push("rro".into());
        s.mounts.push(ro);
        let g = guest_spec(&s, true).unwrap();
        let files = &g.bind_files;
        assert_eq!(files.len(), 1);
        let shared: Vec<_> = g
            .shared_dirs
            .iter()
            .map(|(d, p)| (d.mount, d.tag.as_str(), d.readonly, p.clone()))
            .collect();
        assert_eq!(
            shared,
            [
                (
                    n + 1,
                    format!("bind{}", n + 1).as_str(),
                    false,
                    dir.join("empty")
                ),
                (
                    n + 2,
                    format!("bind{}", n + 2).as_str(),
                    false,
                    dir.join("full")
                ),
                (
                    n + 3,
                    format!("bind{}", n + 3).as_str(),
                    true,
                    dir.join("full")
                ),
            ]
        );
        // Shared mounts keep their bind type (the agent replaces the source).
        assert_eq!(g.spec.mounts[n + 1].typ.as_deref(), Some("bind"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_namespaces_hooks_and_listeners() {
        let mut s = base();
        let linux = s.linux.as_mut().unwrap();
        linux.namespaces.push(oci::Namespace {
            typ: oci::NamespaceType::Network,
            path: Some("/run/netns/x".into()),
        });
        let g = guest_spec(&s, false).unwrap();
        assert!(g
            .spec
            .linux
            .unwrap()
            .namespaces
            .iter()
            .all(|n| n.path.is_none()));
        assert_eq!(g.netns, Some(PathBuf::from("/run/netns/x")));
        // No network namespace: the host's network, which a VM cannot share.
        let mut s4 = base();
        s4.linux
            .as_mut()
            .unwrap()
            .namespaces
            .retain(|n| n.typ != oci::NamespaceType::Network);
        let e = guest_spec(&s4, false).unwrap_err().to_string();
        assert!(e.contains("the host's network"), "{e}");
        let mut s2 = base();
        s2.linux.as_mut().unwrap().namespaces.push(oci::Namespace {
            typ: oci::NamespaceType::Ipc,
            path: Some("/proc/1/ns/ipc".into()),
        });
        let e = guest_spec(&s2, false).unwrap_err().to_string();
        assert!(e.contains("ipc namespace"), "{e}");
        let mut s3 = base();
        s3.hooks = Some(oci::Hooks {
            poststop: vec![oci::Hook {
                path: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(guest_spec(&s3, false)
            .unwrap_err()
            .to_string()
            .contains("hooks"));
    }

    #[test]
    fn annotations_are_checked() {
        let mut a = BTreeMap::new();
        a.insert(ann::MEMORY.to_string(), "12x".to_string());
        assert!(parse_num(&a, ann::MEMORY, 64, 1024).is_err());
        a.insert(ann::MEMORY.to_string(), "32".to_string());
        assert!(parse_num(&a, ann::MEMORY, 64, 1024)
            .unwrap_err()
            .to_string()
            .contains("out of range"));
        a.insert(ann::BOOT_TIMEOUT.to_string(), "2.5s".to_string());
        assert_eq!(
            parse_duration(&a, ann::BOOT_TIMEOUT).unwrap(),
            Some(Duration::from_millis(2500))
        );
        a.insert(ann::BOOT_TIMEOUT.to_string(), "-1".to_string());
        assert!(parse_duration(&a, ann::BOOT_TIMEOUT).is_err());
    }
}
