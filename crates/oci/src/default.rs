//! The default configuration written by `bulkhead spec` (the shape of
//! `runc spec`): a busybox-friendly, unprivileged-by-default container.

use crate::*;

/// The capabilities of a container made by `bulkhead spec`: runc's `spec` set, the least a
/// shell needs to signal its own processes, bind low ports and write audit records.
pub const SPEC_CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];

/// docker's default set (runc's libcontainer documents the same 14): what a root process
/// needs to act as an image's root (chown, setuid, mknod...). `bulkhead sandbox` starts from
/// it.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Kernel interfaces a container's root can read (or write, where a mount is not read-only)
/// that reach past the container: hidden behind /dev/null (files) or an empty read-only tmpfs
/// (directories). Chosen by reading every file of /proc and /sys/kernel as root without
/// capabilities in a container on a 6.x kernel; paths a kernel lacks are skipped.
pub const MASKED_PATHS: [&str; 19] = [
    // Physical memory: an ELF image of it (kcore needs CAP_SYS_RAWIO, masked all the same),
    // and the flags, map counts and memory cgroup of every physical page (readable by uid 0
    // without any capability: physical addresses for Rowhammer-style attacks).
    "/proc/kcore",
    "/proc/kpagecount",
    "/proc/kpageflags",
    "/proc/kpagecgroup",
    // Kernel layout and heap: symbol addresses (zero without CAP_SYSLOG, but the symbol
    // list itself), physical addresses of ioremap areas, slab caches and their fill (heap
    // grooming).
    "/proc/kallsyms",
    "/proc/vmallocinfo",
    "/proc/slabinfo",
    // The keyrings are not namespaced: keys and per-user key quotas of the whole host.
    "/proc/keys",
    "/proc/key-users",
    // Timers and scheduler state of every host CPU (addresses of timer callbacks).
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    // Hardware the container has no business driving: ACPI, sound, SCSI hosts.
    "/proc/acpi",
    "/proc/asound",
    "/proc/scsi",
    // Firmware tables (ACPI tables, DMI, the physical memory map) and CPU energy counters
    // (a power side channel).
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    // The kernel itself: vmcoreinfo (a physical address), boot_params, BTF type
    // information, every slab cache, reboot and IRQ settings, mm tunables.
    "/sys/kernel",
];

/// Kernel interfaces left readable but never writable (/sys is mounted read-only as a
/// whole): sysctls, the sysrq trigger, IRQ affinities, bus and filesystem settings.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mount(dest: &str, typ: &str, source: &str, opts: &[&str]) -> Mount {
    Mount {
        destination: dest.into(),
        typ: Some(typ.into()),
        source: Some(source.into()),
        options: opts.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A complete default spec. `rootless`: add a user namespace mapping the
/// calling user to root, and drop what an unprivileged user cannot do.
pub fn default_spec(rootless: Option<(u32, u32)>) -> Spec {
    let caps = strings(&SPEC_CAPS);
    let mut namespaces: Vec<Namespace> = [
        NamespaceType::Pid,
        NamespaceType::Network,
        NamespaceType::Ipc,
        NamespaceType::Uts,
        NamespaceType::Mount,
        NamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|typ| Namespace { typ, path: None })
    .collect();
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &[]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ];
    let mut linux = Linux {
        masked_paths: strings(&MASKED_PATHS),
        readonly_paths: strings(&READONLY_PATHS),
        resources: Some(Resources {
            devices: vec![DeviceRule {
                allow: false,
                typ: None,
                major: None,
                minor: None,
                access: Some("rwm".into()),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    if let Some((uid, gid)) = rootless {
        namespaces.push(Namespace {
            typ: NamespaceType::User,
            path: None,
        });
        linux.uid_mappings = vec![IdMapping {
            container_id: 0,
            host_id: uid,
            size: 1,
        }];
        linux.gid_mappings = vec![IdMapping {
            container_id: 0,
            host_id: gid,
            size: 1,
        }];
        // No cgroup settings (runc's rootless spec has none): an unprivileged user can
        // limit resources only in a delegated cgroup v2 subtree, and has no device cgroup.
        linux.resources = None;
        // sysfs stays: the container's own network namespace lets its user namespace
        // mount one (without it, the runtime binds the host's /sys read-only instead).
        // No /sys/fs/cgroup: without a cgroup of its own the container would only see
        // the caller's.
        mounts.retain(|m| m.destination != "/sys/fs/cgroup");
        for m in &mut mounts {
            m.options.retain(|o| o != "gid=5");
        }
    }
    linux.namespaces = namespaces;
    Spec {
        oci_version: OCI_VERSION.into(),
        process: Some(Process {
            terminal: true,
            user: User::default(),
            args: strings(&["sh"]),
            env: strings(&[
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm",
            ]),
            cwd: "/".into(),
            capabilities: Some(Capabilities {
                bounding: Some(caps.clone()),
                effective: Some(caps.clone()),
                inheritable: None,
                permitted: Some(caps),
                ambient: None,
            }),
            rlimits: vec![Rlimit {
                typ: "RLIMIT_NOFILE".into(),
                hard: 1024,
                soft: 1024,
            }],
            no_new_privileges: true,
            ..Default::default()
        }),
        root: Some(Root {
            path: "rootfs".into(),
            readonly: true,
        }),
        hostname: Some("bulkhead".into()),
        mounts,
        linux: Some(linux),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        validate(&default_spec(None)).unwrap();
        validate(&default_spec(Some((1000, 1000)))).unwrap();
        let s = default_spec(None);
        let text = serde_json::to_string(&s).unwrap();
        let back: Spec = from_json(text.as_bytes(), "x").unwrap();
        assert_eq!(back, s);
    }
}
