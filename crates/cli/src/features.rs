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
        .collect(),
        potentially_unsafe_config_annotations: Vec::new(),
    }
}

pub fn print() -> Result<i32> {
    println!("{}", serde_json::to_string_pretty(&document())?);
    Ok(0)
}
