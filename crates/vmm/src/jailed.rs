//! A VM whose VMM runs jailed: the default of `bulkhead vm run`.
//!
//! The calling process becomes the supervisor: it creates the VM's cgroup, clones the VMM
//! into the jail's namespaces, connects guest vsock connections for it (the jailed VMM reaches
//! no path), waits for it, and removes the cgroup and the vsock socket file at the end. The
//! child builds the VM exactly as an unjailed VMM does ([`Vm::new_with`], or
//! [`Vm::restore_with`] for a snapshot: every file, device and socket opened by path, guest
//! memory mapped from the snapshot's memory file, as root), then confines itself
//! ([`jail::Inside::confine`]) and runs the VM with one seccomp filter per thread
//! ([`crate::syscalls`]), each installed by the thread on itself before its first instruction
//! of work. A restored VM gets exactly the jail a booted one does.
//!
//! With an API socket the VMM writes snapshots into descriptors its clients pass; its
//! RLIMIT_FSIZE then leaves room for them (guest RAM plus [`SNAPSHOT_FILE_ROOM`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jail::{broker, CgroupPlan, Confined, Exit, Jail};

use crate::config::VmConfig;
use crate::devices::virtio::vsock::HostConnector;
use crate::error::{Error, Result};
use crate::snapshot::Restore;
use crate::syscalls::{ThreadFilters, ThreadHooks, ThreadKind};
use crate::vm::{Confinement, Vm};

/// How the VM is jailed (the rest follows from its config).
#[derive(Clone, Debug)]
pub struct JailOptions {
    /// The VM's id: its cgroup is `<cgroup_parent>/vm-<id>`.
    pub id: String,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_parent: String,
    /// CFS quota in microseconds per 100 ms period; `None`: no CPU limit.
    pub cpu_quota: Option<i64>,
    /// Descriptors of the caller's the VMM keeps (a log file); every other is closed.
    pub keep_fds: Vec<std::os::fd::RawFd>,
}

/// The VMM's own memory beyond guest RAM. Measured (memory.max_usage_in_bytes of the VM's
/// cgroup, test guest with every device, 1-4 vCPUs, 48-512 MiB): 1.0-2.3 MiB beyond the guest
/// RAM it touched, 0.5-1.6 MiB of it KVM's kernel allocations (vCPU state, page tables). On
/// cgroup v1 the pages the VMM touched before its placement completed stay charged to the
/// supervisor's cgroup, so that is a lower bound; the limit leaves a wide margin for a Linux
/// guest (host page cache of its disk I/O, vsock buffers, a shadow-paging KVM's page tables).
/// A VMM over the limit is killed by the cgroup's OOM killer, never the host's other work.
pub const OVERHEAD_BASE: u64 = 48 << 20;
/// Per vCPU: its thread's stack, kvm_run page, and KVM's per-vCPU kernel structures.
pub const OVERHEAD_PER_VCPU: u64 = 4 << 20;
/// KVM's page tables (and a shadow-paging KVM's shadow pages) grow with guest RAM.
pub const OVERHEAD_RAM_DIVISOR: u64 = 64;

/// The memory limit of the VM's cgroup: guest RAM plus the VMM's overhead.
pub fn memory_limit(config: &VmConfig) -> u64 {
    let ram = config.memory_mib << 20;
    ram + OVERHEAD_BASE + OVERHEAD_PER_VCPU * u64::from(config.cpus) + ram / OVERHEAD_RAM_DIVISOR
}

/// Room beyond guest RAM that RLIMIT_FSIZE leaves a VMM with an API socket: the memory file's
/// header page and the state file (tens of KiB per vCPU).
pub const SNAPSHOT_FILE_ROOM: u64 = 64 << 20;

/// The pids limit: one task per vCPU, the event loop, the main thread, and a margin.
pub fn pids_limit(config: &VmConfig) -> i64 {
    i64::from(config.cpus) + 2 + 4
}

/// Descriptors the VMM may open once running, besides those it has: the event loop's epoll
/// descriptor and transient ones; with vsock, its connections (a guest past this limit gets
/// resets, the host side's connects are refused).
pub fn nofile_headroom(config: &VmConfig) -> u64 {
    let api = if config.api_socket.is_some() {
        // Its connections, and the two files of a snapshot request.
        crate::api::server::MAX_CONNECTIONS as u64 + 2
    } else {
        0
    };
    32 + if config.vsock.is_some() { 1024 } else { 0 } + api
}

/// The late rlimits of the VMM (from what it has open once built), with RLIMIT_FSIZE raised
/// for snapshots when it has an API socket.
fn late_rlimits(config: &VmConfig) -> jail::Result<Vec<oci::Rlimit>> {
    let mut limits = jail::rlimits::for_open_files(nofile_headroom(config))?;
    if config.api_socket.is_some() {
        let room = (config.memory_mib << 20) + SNAPSHOT_FILE_ROOM;
        for l in limits.iter_mut().filter(|l| l.typ == "RLIMIT_FSIZE") {
            l.soft = l.soft.max(room);
            l.hard = l.hard.max(room);
        }
    }
    Ok(limits)
}

/// What the jailed VMM runs.
pub enum Source<'a> {
    /// Boot a VM from its config.
    Boot(&'a VmConfig),
    /// Restore a checked snapshot; its console and API socket are the restorer's.
    Restore {
        snapshot: &'a Restore,
        console: Option<PathBuf>,
        api_socket: Option<PathBuf>,
        resume: bool,
    },
}

impl Source<'_> {
    /// The configuration the VM runs with.
    pub fn config(&self) -> VmConfig {
        match self {
            Source::Boot(c) => (*c).clone(),
            Source::Restore {
                snapshot,
                console,
                api_socket,
                ..
            } => {
                let mut c = snapshot.state.config.clone();
                c.console = console.clone();
                c.api_socket = api_socket.clone();
                c
            }
        }
    }

    fn build(&self, confined: Confinement) -> crate::Result<Vm> {
        match self {
            Source::Boot(c) => Vm::new_with(c, Some(confined)),
            Source::Restore {
                snapshot,
                console,
                api_socket,
                resume,
            } => Vm::restore_with(
                snapshot,
                console.clone(),
                api_socket.clone(),
                *resume,
                Some(confined),
            ),
        }
    }
}

/// The jail of a VM.
pub fn jail_for(config: &VmConfig, opts: &JailOptions) -> Jail {
    let mut j = Jail::new(format!("vm-{}", opts.id));
    j.keep_fds = opts.keep_fds.clone();
    j.uid = opts.uid;
    j.gid = opts.gid;
    j.cgroup = Some(CgroupPlan {
        parent: opts.cgroup_parent.clone(),
        memory: Some(memory_limit(config) as i64),
        pids: Some(pids_limit(config)),
        cpu_quota: opts.cpu_quota,
    });
    j
}

/// What the supervisor knows once the jail is complete.
pub struct Ready<'a> {
    pub pid: i32,
    pub jail: &'a Jail,
    /// The cgroup path (the v2 one, or the v1 one).
    pub cgroup: Option<&'a str>,
}

/// Build (or restore) and run the VM in its jail; `on_ready` runs in the supervisor once every
/// layer is in force. Bad input fails before the cgroup exists; whatever fails later removes
/// the cgroup and the socket files (vsock, API).
pub fn run(
    source: &Source<'_>,
    opts: &JailOptions,
    on_ready: &mut dyn FnMut(&Ready<'_>),
) -> Result<Exit> {
    let config = &source.config();
    match source {
        Source::Boot(c) => c.validate()?,
        Source::Restore { .. } => config.validate_devices()?,
    }
    let filters = ThreadFilters::compile().map_err(jail::Error::from)?;
    let broker = match &config.vsock {
        Some(_) => Some(broker::pair()?),
        None => None,
    };
    let mut j = jail_for(config, opts);
    if let Some((_, client)) = &broker {
        j.keep_fds.push(client.raw_fd());
    }
    // The snapshot's memory file was opened (and checked) here, in the supervisor: the VMM
    // maps it from this descriptor.
    if let Source::Restore { snapshot, .. } = source {
        j.keep_fds.push(snapshot.mem_file.as_raw_fd());
    }
    let socket_before = config.vsock.as_ref().and_then(|v| socket_id(&v.uds));
    let api_before = config.api_socket.as_deref().and_then(socket_id);
    let prepared = j.prepare()?;
    let (server, client) = match broker {
        Some((s, c)) => (Some(s), Some(c)),
        None => (None, None),
    };
    let mut child = prepared.spawn(move |inside| {
        let connector = client.map(|c| Box::new(Brokered(c)) as Box<dyn HostConnector>);
        let vm = source
            .build(Confinement {
                vsock_connector: connector,
            })
            .map_err(|e| e.to_string())?;
        let late = late_rlimits(config).map_err(|e| e.to_string())?;
        let confined = inside.confine(&late).map_err(|e| e.to_string())?;
        let report = vm
            .run_with(Arc::new(Confine { filters, confined }))
            .map_err(|e| e.to_string())?;
        eprintln!("{report}");
        Ok(0)
    })?;
    let broker_thread = match (server, &config.vsock) {
        (Some(s), Some(v)) => {
            let uds = v.uds.clone();
            Some(
                s.serve(move |req| connect_guest_port(&uds, req))
                    .map_err(Error::sys("spawn the vsock broker thread"))?,
            )
        }
        _ => None,
    };
    let res = child.wait_ready().map_err(Error::from).map(|()| {
        let p = child.prepared();
        on_ready(&Ready {
            pid: child.pid(),
            jail: p.jail(),
            cgroup: p.cgroup().map(|c| c.path.as_str()),
        })
    });
    let end = match res {
        Ok(()) => child.wait().map_err(Error::from),
        Err(e) => {
            drop(child);
            Err(e)
        }
    };
    if let Some(t) = broker_thread {
        let _ = t.join();
    }
    if let Some(v) = &config.vsock {
        remove_our_socket(&v.uds, socket_before);
    }
    if let Some(p) = &config.api_socket {
        remove_our_socket(p, api_before);
    }
    end
}

/// Guest connections to host port P, connected by the supervisor to `<uds>_P`. The request is
/// the port number alone, so a VMM that has been taken over can reach nothing but those
/// listeners.
fn connect_guest_port(uds: &Path, req: &[u8]) -> std::io::Result<OwnedFd> {
    let port: [u8; 4] = req
        .try_into()
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let path = format!("{}_{}", uds.display(), u32::from_le_bytes(port));
    Ok(UnixStream::connect(path)?.into())
}

/// The jailed VMM's side of [`connect_guest_port`].
struct Brokered(broker::Client);

impl HostConnector for Brokered {
    fn connect(&self, port: u32) -> std::io::Result<UnixStream> {
        self.0.request(&port.to_le_bytes()).map(UnixStream::from)
    }
}

/// Each thread installs its own filter; the jail is complete when all have.
struct Confine {
    filters: ThreadFilters,
    confined: Confined,
}

impl ThreadHooks for Confine {
    fn enter(&self, kind: ThreadKind) -> std::result::Result<(), String> {
        // Per-thread state std initialises lazily with a syscall the filter would refuse: the
        // hash keys of HashMap (getrandom), used by the vCPU's exit bookkeeping.
        let _ = std::collections::hash_map::RandomState::new();
        self.filters
            .get(kind)
            .install()
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn all_entered(&self) -> std::result::Result<(), String> {
        self.confined.complete().map_err(|e| e.to_string())
    }
}

/// (device, inode) of the socket at `path`, if one is there.
fn socket_id(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::symlink_metadata(path).ok()?;
    m.file_type().is_socket().then(|| (m.dev(), m.ino()))
}

/// The jailed VMM cannot remove the socket files it bound (vsock, API): remove one if it is
/// the VMM's (a socket that was there before and is still the same file stays).
fn remove_our_socket(path: &Path, before: Option<(u64, u64)>) {
    if let Some(now) = socket_id(path) {
        if Some(now) != before {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_the_config() {
        let mut c = VmConfig::new("k");
        c.memory_mib = 128;
        c.cpus = 2;
        assert_eq!(
            memory_limit(&c),
            (128 << 20) + OVERHEAD_BASE + 2 * OVERHEAD_PER_VCPU + (2 << 20)
        );
        assert_eq!(pids_limit(&c), 8);
        assert_eq!(nofile_headroom(&c), 32);
        c.vsock = Some(crate::VsockConfig {
            cid: 3,
            uds: "/tmp/x".into(),
        });
        assert_eq!(nofile_headroom(&c), 1056);
        let j = jail_for(
            &c,
            &JailOptions {
                id: "0123456789ab".into(),
                uid: 1000,
                gid: 1000,
                cgroup_parent: "/bulkhead".into(),
                cpu_quota: None,
                keep_fds: Vec::new(),
            },
        );
        assert_eq!(j.name, "vm-0123456789ab");
        assert_eq!(j.cgroup.unwrap().pids, Some(8));
    }

    #[test]
    fn the_broker_only_connects_port_numbers() {
        let dir = std::env::temp_dir().join(format!("vmm-broker-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let uds = dir.join("v.sock");
        let _l = std::os::unix::net::UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
        assert!(connect_guest_port(&uds, &5000u32.to_le_bytes()).is_ok());
        assert!(connect_guest_port(&uds, &5001u32.to_le_bytes()).is_err());
        assert!(connect_guest_port(&uds, b"/etc/passwd").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
