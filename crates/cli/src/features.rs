//! `bulkhead features`: what this build implements, and nothing more.

use anyhow::Result;

pub fn document() -> oci::Features {
    let yes = oci::Enabled { enabled: true };
    let no = oci::Enabled { enabled: false };
    oci::Features {
        oci_version_min: oci::OCI_VERSION_MIN.into(),
        oci_version_max: oci::OCI_VERSION.into(),
        hooks: [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ]
        .map(String::from)
        .to_vec(),
        mount_options: container::mounts::known_options(),
        linux: oci::LinuxFeatures {
            namespaces: oci::NamespaceType::ALL
                .iter()
                .map(|n| n.spec_name().to_string())
                .collect(),
            capabilities: container::capabilities::known_names(),
            cgroup: oci::CgroupFeatures {
                v1: true,
                v2: true,
                systemd: false,
                systemd_user: false,
                rdma: true,
            },
            seccomp: seccomp::features(),
            apparmor: yes.clone(),
            selinux: yes,
            intel_rdt: no.clone(),
            mount_extensions: oci::MountExtensions { idmap: no.clone() },
            net_devices: no,
        },
        annotations: [(
            "io.github.bulkhead.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        )]
        .into_iter()
        .chain(
            ROOTLESS
                .iter()
                .map(|(k, v)| (format!("org.bulkhead.rootless{k}"), v.to_string())),
        )
        .collect(),
        potentially_unsafe_config_annotations: Vec::new(),
    }
}

/// What works for an unprivileged caller (a user, or root of a user namespace as under
/// rootless podman), and what does not: the features document has no field for it, so it
/// goes in annotations (`org.bulkhead.rootless*`), as runc puts its extras there.
const ROOTLESS: [(&str, &str); 8] = [
    ("", "true"),
    (
        ".state",
        "$XDG_RUNTIME_DIR/bulkhead without --root (else /run/user/UID/bulkhead, else /tmp/bulkhead-UID)",
    ),
    (
        ".idmap",
        "the caller's own uid and gid map directly (setgroups is then denied: no additionalGids); wider maps through newuidmap/newgidmap and the caller's /etc/subuid and /etc/subgid ranges",
    ),
    (
        ".cgroup",
        "used where delegated (a cgroup v2 subtree the caller may write): limits there, pause, ps, update, events; left out where not writable (every cgroup v1 hierarchy): without resources the container runs in the caller's cgroup (kill --all goes through its pid namespace; pause, ps, update and events fail, saying why), with resources needing such a hierarchy create fails",
    ),
    (
        ".devices",
        "linux.devices and the default devices bind-mounted from the host (no mknod in a user namespace); device cgroup rules ignored",
    ),
    (
        ".sysfs",
        "a fresh sysfs with a network namespace of the container's own, else the host's /sys bound read-only",
    ),
    (
        ".unsupported",
        "hard rlimits above the caller's, oomScoreAdj below the caller's, limits in cgroup v1 or in an undelegated cgroup v2, device cgroup rules, the systemd cgroup driver",
    ),
    (
        ".sandbox",
        "sandbox makes a user namespace mapping the caller to itself (--map-root: to root); --memory, --cpus and --pids only in a delegated cgroup v2 subtree",
    ),
];

pub fn print() -> Result<i32> {
    println!("{}", serde_json::to_string_pretty(&document())?);
    Ok(0)
}
