//! What isolates a process, read from the kernel's own accounts in /proc and
//! compared with the host: the layers of a container recipe, one module each.
//!
//! | layer | module | read from |
//! | --- | --- | --- |
//! | namespaces | [`namespaces`] | `/proc/PID/ns/*` (inode numbers) |
//! | cgroup | [`cgroup`] | `/proc/PID/cgroup`, the cgroup files (v1 and v2) |
//! | seccomp | [`seccomp`] | `/proc/PID/status` `Seccomp`, `Seccomp_filters`; the same per thread (`task/TID/status`) |
//! | capabilities | [`capabilities`] | `/proc/PID/status` `Cap*` |
//! | no_new_privs | [`nnp`] | `/proc/PID/status` `NoNewPrivs` |
//! | user ids | [`ids`] | `/proc/PID/uid_map`, `gid_map`, `status` |
//! | LSM | [`lsm`] | `/proc/PID/attr/current`, `/proc/PID/attr/apparmor/current` |
//! | root | [`root`] | statx of `/proc/PID/root` (mount id), `/proc/PID/mountinfo` |
//! | VM | [`vm`] | CPUID, `/proc/cpuinfo`, DMI, `/sys/hypervisor` |
//!
//! ## Architecture notes
//! - **What "host" means.** The host is what a process has when nothing
//!   isolates it. For namespaces that is the kernel's *initial* namespaces,
//!   recognised by the fixed inode numbers the kernel gives them (uapi
//!   `linux/nsfs.h`: ipc, uts, user, pid, cgroup and time since 3.8/5.6; net
//!   and mnt since 6.18). Where no fixed number exists (net and mnt before
//!   6.18) the namespace is compared with pid 1's. For the other layers the
//!   reference is pid 1 — the host's init — *when the inspector runs in the
//!   initial pid namespace*; inside a container pid 1 is the container's own
//!   init, so there the reference is an unrestricted process (no seccomp, no
//!   no_new_privs, every capability the kernel knows, identity id maps, no
//!   limits) and the report says so ([`Reference`]). That way `inspect --self`
//!   run inside a sandbox still tells what is in force, instead of comparing
//!   the sandbox with itself.
//! - Values that cannot be read (another process's `/proc/PID/root` needs
//!   ptrace access) are reported as unknown with the reason, never guessed.
//! - The target is checked before and after reading (its start time in
//!   `/proc/PID/stat`): a process that exits or whose pid is reused during the
//!   inspection is an error, not a report mixing two processes.
//! - The library gathers facts; formatting (table, JSON) is the CLI's job.
//!   Every type serialises with serde for `--format json`.

pub mod capabilities;
pub mod cgroup;
pub mod ids;
pub mod lsm;
pub mod namespaces;
pub mod nnp;
pub mod proc;
pub mod root;
pub mod seccomp;
pub mod vm;

use std::path::PathBuf;

use serde::Serialize;

use proc::Proc;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("pid {0}: no such process")]
    NoProcess(i32),
    #[error("pid {0}: the process has exited (zombie)")]
    Zombie(i32),
    #[error("pid {0} exited during the inspection")]
    Exited(i32),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

/// What the process is compared with.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    /// The host process used as reference (pid 1 of the inspector's view,
    /// when the inspector runs in the initial pid namespace).
    pub pid: Option<i32>,
    /// Its command name.
    pub comm: Option<String>,
    /// The reference in words, for the report's header.
    pub description: String,
    /// The running kernel (major, minor).
    pub kernel: (u32, u32),
}

/// The host as the inspector can see it.
pub struct Host {
    pub reference: Reference,
    /// pid 1, when it is the host's init.
    pub proc: Option<Proc>,
    /// The inspector itself (some host values can only be read from it).
    pub inspector: Proc,
}

impl Host {
    /// Work out the reference from where the inspector runs.
    pub fn detect() -> Host {
        let kernel = kernel_version();
        let inspector = Proc::new(std::process::id() as i32);
        let in_initial_pidns =
            namespaces::inode(&inspector, "pid").ok() == Some(namespaces::PID_NS_INIT_INO);
        if in_initial_pidns {
            let p1 = Proc::new(1);
            let comm = p1.comm().ok();
            Host {
                reference: Reference {
                    pid: Some(1),
                    description: format!(
                        "the kernel's initial namespaces; pid 1 ({}) for the other layers",
                        comm.as_deref().unwrap_or("?")
                    ),
                    comm,
                    kernel,
                },
                proc: Some(p1),
                inspector,
            }
        } else {
            Host {
                reference: Reference {
                    pid: None,
                    comm: None,
                    description: "no host process is visible (the inspector runs in a child pid namespace): \
                        namespaces are compared with the kernel's initial-namespace numbers, the other layers \
                        with an unrestricted process"
                        .into(),
                    kernel,
                },
                proc: None,
                inspector,
            }
        }
    }
}

/// The full report on one process.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pid: i32,
    pub comm: String,
    pub reference: Reference,
    pub namespaces: namespaces::Layer,
    pub cgroup: cgroup::Layer,
    pub seccomp: seccomp::Layer,
    pub capabilities: capabilities::Layer,
    pub no_new_privs: nnp::Layer,
    pub ids: ids::Layer,
    pub lsm: lsm::Layer,
    pub root: root::Layer,
    pub vm: vm::Layer,
    pub summary: Summary,
}

/// One line per layer: name, status word, in force.
#[derive(Debug, Clone, Serialize)]
pub struct LayerStatus {
    pub layer: &'static str,
    pub status: String,
    pub in_force: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// How many layers are in force.
    pub in_force: usize,
    pub total: usize,
    /// The layers in force, by name.
    pub layers: Vec<&'static str>,
    /// Layers whose status could not be determined.
    pub unknown: Vec<&'static str>,
}

impl Report {
    /// Every layer's status, in the recipe's order.
    pub fn layers(&self) -> Vec<LayerStatus> {
        let l = |layer, status: &str, in_force| LayerStatus {
            layer,
            status: status.to_string(),
            in_force,
        };
        vec![
            l(
                "namespaces",
                &self.namespaces.status,
                self.namespaces.in_force,
            ),
            l("cgroup", &self.cgroup.status, self.cgroup.in_force),
            l("seccomp", &self.seccomp.status, self.seccomp.in_force),
            l(
                "capabilities",
                &self.capabilities.status,
                self.capabilities.in_force,
            ),
            l(
                "no_new_privs",
                &self.no_new_privs.status,
                self.no_new_privs.in_force,
            ),
            l("user ids", &self.ids.status, self.ids.in_force),
            l("lsm", &self.lsm.status, self.lsm.in_force),
            l("root", &self.root.status, self.root.in_force),
            l("vm", &self.vm.status, self.vm.in_force),
        ]
    }
}

/// Inspect process `pid` (in the inspector's pid namespace).
pub fn inspect(pid: i32) -> Result<Report> {
    inspect_with(pid, &Host::detect())
}

pub fn inspect_with(pid: i32, host: &Host) -> Result<Report> {
    let p = Proc::new(pid);
    let (state, start) = p.stat().ok_or(Error::NoProcess(pid))?;
    if state == 'Z' || state == 'X' {
        return Err(Error::Zombie(pid));
    }
    let comm = p.comm().unwrap_or_default();
    let status = p.status().map_err(|e| gone_or(pid, e, p.path("status")))?;
    let host_status = host.proc.as_ref().and_then(|h| h.status().ok());

    let namespaces = namespaces::inspect(&p, host);
    let cgroup = cgroup::inspect(&p, host);
    let seccomp = seccomp::inspect(&status, host_status.as_ref(), seccomp::threads(&p));
    let capabilities = capabilities::inspect(&status, host_status.as_ref());
    let no_new_privs = nnp::inspect(&status, host_status.as_ref());
    let ids = ids::inspect(&p, &status);
    let lsm = lsm::inspect(&p, host);
    let root = root::inspect(&p, host, &namespaces);
    let vm = vm::inspect();

    // The same process from start to end, or no report.
    match p.stat() {
        Some((s, t)) if t == start && s != 'Z' && s != 'X' => {}
        _ => return Err(Error::Exited(pid)),
    }
    let mut r = Report {
        pid,
        comm,
        reference: host.reference.clone(),
        namespaces,
        cgroup,
        seccomp,
        capabilities,
        no_new_privs,
        ids,
        lsm,
        root,
        vm,
        summary: Summary {
            in_force: 0,
            total: 0,
            layers: Vec::new(),
            unknown: Vec::new(),
        },
    };
    let layers = r.layers();
    r.summary = Summary {
        in_force: layers.iter().filter(|l| l.in_force).count(),
        total: layers.len(),
        layers: layers
            .iter()
            .filter(|l| l.in_force)
            .map(|l| l.layer)
            .collect(),
        unknown: layers
            .iter()
            .filter(|l| l.status == "unknown")
            .map(|l| l.layer)
            .collect(),
    };
    Ok(r)
}

fn gone_or(pid: i32, e: std::io::Error, path: PathBuf) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
        Error::Exited(pid)
    } else {
        Error::Io { path, source: e }
    }
}

/// The running kernel's (major, minor), from uname.
pub fn kernel_version() -> (u32, u32) {
    let u = rustix::system::uname();
    parse_kernel_version(&u.release().to_string_lossy())
}

fn parse_kernel_version(s: &str) -> (u32, u32) {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    let major = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    let minor = it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.18.44-fc-v657"), (6, 18));
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), (6, 1));
        assert_eq!(parse_kernel_version("5.10"), (5, 10));
        assert_eq!(parse_kernel_version("garbage"), (0, 0));
    }

    #[test]
    fn a_missing_pid_is_an_error() {
        // pid_max is at most 2^22: this pid cannot exist.
        let e = inspect(i32::MAX).unwrap_err();
        assert!(matches!(e, Error::NoProcess(_)), "{e}");
        assert_eq!(e.to_string(), format!("pid {}: no such process", i32::MAX));
    }

    #[test]
    fn self_report_is_consistent_with_proc() {
        let me = std::process::id() as i32;
        let r = inspect(me).unwrap();
        assert_eq!(r.pid, me);
        assert_eq!(r.summary.total, 9);
        assert_eq!(
            r.summary.in_force,
            r.layers().iter().filter(|l| l.in_force).count()
        );
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}:")))
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!(r.seccomp.mode.to_string(), field("Seccomp"));
        assert_eq!(
            r.no_new_privs.value,
            field("NoNewPrivs") == "1",
            "NoNewPrivs"
        );
        assert_eq!(
            format!("{:016x}", r.capabilities.sets.bounding.mask),
            field("CapBnd")
        );
        for ns in &r.namespaces.items {
            let link = std::fs::read_link(format!("/proc/self/ns/{}", ns.kind)).unwrap();
            assert_eq!(
                link.to_string_lossy(),
                format!("{}:[{}]", ns.kind, ns.inode.unwrap())
            );
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count();
        assert_eq!(r.root.mount_count, Some(mounts));
    }
}
