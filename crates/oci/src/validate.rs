//! Rules of the spec that types alone cannot express, checked before any
//! system state is created. Every error names the offending field.

use std::collections::HashSet;

use crate::linux::{Linux, NamespaceType, SeccompAction};
use crate::{Error, Process, Result, Spec};

/// rlimit names of setrlimit(2), in the spelling the spec uses.
pub const RLIMIT_NAMES: [&str; 16] = [
    "RLIMIT_AS",
    "RLIMIT_CORE",
    "RLIMIT_CPU",
    "RLIMIT_DATA",
    "RLIMIT_FSIZE",
    "RLIMIT_LOCKS",
    "RLIMIT_MEMLOCK",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_NOFILE",
    "RLIMIT_NPROC",
    "RLIMIT_RSS",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
    "RLIMIT_SIGPENDING",
    "RLIMIT_STACK",
];

const PROPAGATIONS: [&str; 8] = [
    "private",
    "rprivate",
    "slave",
    "rslave",
    "shared",
    "rshared",
    "unbindable",
    "runbindable",
];

/// A container ID is used as a directory name under the state root: it must be a
/// single, plain path component (runc's rule: `[\w+.-]+`, not `.` or `..`).
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |msg: &str| Error::Invalid {
        file: "container ID".into(),
        field: format!("{id:?}"),
        msg: msg.into(),
    };
    if id.is_empty() {
        return Err(bad("must not be empty"));
    }
    if id == "." || id == ".." {
        return Err(bad("must not be '.' or '..'"));
    }
    if id.len() > 200 {
        return Err(bad("longer than 200 bytes"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.')))
    {
        return Err(bad(&format!(
            "contains {c:?}; only letters, digits and _ + - . are allowed"
        )));
    }
    if id.starts_with('.') {
        // Names starting with a dot are the runtime's own (e.g. .sandbox).
        return Err(bad("must not start with '.'"));
    }
    Ok(())
}

fn is_abs(p: &str) -> bool {
    p.starts_with('/')
}

fn has_dotdot(p: &str) -> bool {
    p.split('/').any(|c| c == "..")
}

/// Validate a whole config before anything is created.
pub fn validate(spec: &Spec) -> Result<()> {
    if !spec.oci_version.starts_with("1.") {
        return Err(Error::invalid(
            "ociVersion",
            format!(
                "{:?} is not a 1.x version (this runtime implements {})",
                spec.oci_version,
                crate::OCI_VERSION
            ),
        ));
    }
    match &spec.root {
        None => return Err(Error::invalid("root", "is required on linux")),
        Some(r) if r.path.is_empty() => return Err(Error::invalid("root.path", "is empty")),
        Some(_) => {}
    }
    match &spec.process {
        None => return Err(Error::invalid("process", "is required to run a container")),
        Some(p) => validate_process(p, "process")?,
    }
    if spec.annotations.contains_key("") {
        return Err(Error::invalid("annotations", "a key is an empty string"));
    }
    let linux = spec.linux();
    validate_namespaces(&linux)?;
    let has_new = |t| linux.new_namespace(t);
    let has_ns = |t| linux.namespace(t).is_some();

    if spec.hostname.as_deref().is_some_and(|h| !h.is_empty()) && !has_ns(NamespaceType::Uts) {
        return Err(Error::invalid(
            "hostname",
            "setting a hostname needs a uts namespace in linux.namespaces",
        ));
    }
    if spec.domainname.as_deref().is_some_and(|h| !h.is_empty()) && !has_ns(NamespaceType::Uts) {
        return Err(Error::invalid(
            "domainname",
            "setting a domainname needs a uts namespace in linux.namespaces",
        ));
    }

    for (i, m) in spec.mounts.iter().enumerate() {
        if !is_abs(&m.destination) {
            return Err(Error::invalid(
                format!("mounts[{i}].destination"),
                format!("{:?} is not an absolute path", m.destination),
            ));
        }
        if has_dotdot(&m.destination) {
            return Err(Error::invalid(
                format!("mounts[{i}].destination"),
                format!("{:?} contains '..'", m.destination),
            ));
        }
        if (!m.uid_mappings.is_empty() || !m.gid_mappings.is_empty())
            && !m.options.iter().any(|o| o == "idmap" || o == "ridmap")
        {
            return Err(Error::invalid(
                format!("mounts[{i}]"),
                "uidMappings/gidMappings need the idmap or ridmap option",
            ));
        }
    }

    if let Some(hooks) = &spec.hooks {
        for (name, list) in hooks.by_name() {
            for (i, h) in list.iter().enumerate() {
                if !is_abs(&h.path) {
                    return Err(Error::invalid(
                        format!("hooks.{name}[{i}].path"),
                        format!("{:?} is not an absolute path", h.path),
                    ));
                }
                if h.timeout.is_some_and(|t| t <= 0) {
                    return Err(Error::invalid(
                        format!("hooks.{name}[{i}].timeout"),
                        "must be greater than zero",
                    ));
                }
            }
        }
    }

    // User namespace mappings.
    if has_new(NamespaceType::User) {
        if linux.uid_mappings.is_empty() || linux.gid_mappings.is_empty() {
            return Err(Error::invalid(
                "linux.uidMappings",
                "a new user namespace needs uidMappings and gidMappings",
            ));
        }
    } else if !linux.uid_mappings.is_empty() || !linux.gid_mappings.is_empty() {
        return Err(Error::invalid(
            "linux.uidMappings",
            "uid/gid mappings are only valid with a new user namespace",
        ));
    }
    for (field, maps) in [
        ("linux.uidMappings", &linux.uid_mappings),
        ("linux.gidMappings", &linux.gid_mappings),
    ] {
        for (i, m) in maps.iter().enumerate() {
            if m.size == 0 {
                return Err(Error::invalid(
                    format!("{field}[{i}].size"),
                    "must not be 0",
                ));
            }
        }
    }

    // Time namespace offsets.
    if !linux.time_offsets.is_empty() && !has_new(NamespaceType::Time) {
        return Err(Error::invalid(
            "linux.timeOffsets",
            "offsets need a new time namespace in linux.namespaces",
        ));
    }
    for (clock, off) in &linux.time_offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(Error::invalid(
                format!("linux.timeOffsets.{clock}"),
                "unknown clock (expected monotonic or boottime)",
            ));
        }
        if off.nanosecs >= 1_000_000_000 {
            return Err(Error::invalid(
                format!("linux.timeOffsets.{clock}.nanosecs"),
                "must be below 1000000000",
            ));
        }
    }

    for (i, d) in linux.devices.iter().enumerate() {
        if !matches!(d.typ.as_str(), "c" | "b" | "u" | "p") {
            return Err(Error::invalid(
                format!("linux.devices[{i}].type"),
                format!("{:?} is not one of c, b, u, p", d.typ),
            ));
        }
        if !is_abs(&d.path) || has_dotdot(&d.path) {
            return Err(Error::invalid(
                format!("linux.devices[{i}].path"),
                format!("{:?} is not an absolute path without '..'", d.path),
            ));
        }
        if d.major < 0 || d.minor < 0 {
            return Err(Error::invalid(
                format!("linux.devices[{i}]"),
                "major and minor must not be negative",
            ));
        }
    }

    if let Some(p) = &linux.cgroups_path {
        if has_dotdot(p) {
            return Err(Error::invalid(
                "linux.cgroupsPath",
                format!("{p:?} contains '..'"),
            ));
        }
    }

    if let Some(prop) = &linux.rootfs_propagation {
        if !PROPAGATIONS.contains(&prop.as_str()) {
            return Err(Error::invalid(
                "linux.rootfsPropagation",
                format!("{prop:?} is not one of {}", PROPAGATIONS.join(", ")),
            ));
        }
    }

    for (field, list) in [
        ("linux.maskedPaths", &linux.masked_paths),
        ("linux.readonlyPaths", &linux.readonly_paths),
    ] {
        for (i, p) in list.iter().enumerate() {
            if !is_abs(p) || has_dotdot(p) {
                return Err(Error::invalid(
                    format!("{field}[{i}]"),
                    format!("{p:?} is not an absolute path without '..'"),
                ));
            }
        }
    }

    for key in linux.sysctl.keys() {
        validate_sysctl(key, &linux)?;
    }

    if let Some(p) = &linux.personality {
        if p.domain != "LINUX" && p.domain != "LINUX32" {
            return Err(Error::invalid(
                "linux.personality.domain",
                format!("{:?} is not LINUX or LINUX32", p.domain),
            ));
        }
        if let Some(f) = p.flags.first() {
            return Err(Error::invalid(
                "linux.personality.flags",
                format!("{f:?}: the spec defines no personality flags"),
            ));
        }
    }

    if let Some(mp) = &linux.memory_policy {
        const MODES: [&str; 7] = [
            "MPOL_DEFAULT",
            "MPOL_BIND",
            "MPOL_INTERLEAVE",
            "MPOL_WEIGHTED_INTERLEAVE",
            "MPOL_PREFERRED",
            "MPOL_PREFERRED_MANY",
            "MPOL_LOCAL",
        ];
        const FLAGS: [&str; 3] = [
            "MPOL_F_NUMA_BALANCING",
            "MPOL_F_RELATIVE_NODES",
            "MPOL_F_STATIC_NODES",
        ];
        if !MODES.contains(&mp.mode.as_str()) {
            return Err(Error::invalid(
                "linux.memoryPolicy.mode",
                format!("{:?} is not one of {}", mp.mode, MODES.join(", ")),
            ));
        }
        if let Some(f) = mp.flags.iter().find(|f| !FLAGS.contains(&f.as_str())) {
            return Err(Error::invalid(
                "linux.memoryPolicy.flags",
                format!("{f:?} is not one of {}", FLAGS.join(", ")),
            ));
        }
        let needs_nodes = !matches!(mp.mode.as_str(), "MPOL_DEFAULT" | "MPOL_LOCAL");
        if needs_nodes && mp.nodes.as_deref().unwrap_or("").is_empty() {
            return Err(Error::invalid(
                "linux.memoryPolicy.nodes",
                format!("mode {} needs a node list", mp.mode),
            ));
        }
    }

    if linux.intel_rdt.is_some() {
        return Err(Error::invalid(
            "linux.intelRdt",
            "Intel RDT (resctrl) is not implemented by bulkhead",
        ));
    }
    if !linux.net_devices.is_empty() {
        return Err(Error::invalid(
            "linux.netDevices",
            "moving network devices into the container is not implemented by bulkhead",
        ));
    }

    if let Some(res) = &linux.resources {
        for (i, d) in res.devices.iter().enumerate() {
            if let Some(t) = &d.typ {
                if !matches!(t.as_str(), "a" | "c" | "b") {
                    return Err(Error::invalid(
                        format!("linux.resources.devices[{i}].type"),
                        format!("{t:?} is not one of a, c, b"),
                    ));
                }
            }
            if let Some(a) = &d.access {
                if a.is_empty() || a.chars().any(|c| !matches!(c, 'r' | 'w' | 'm')) {
                    return Err(Error::invalid(
                        format!("linux.resources.devices[{i}].access"),
                        format!("{a:?} is not a combination of r, w, m"),
                    ));
                }
            }
        }
    }

    if let Some(sc) = &linux.seccomp {
        let uses_notify = sc.default_action == SeccompAction::Notify
            || sc
                .syscalls
                .iter()
                .any(|s| s.action == SeccompAction::Notify);
        if sc.default_action == SeccompAction::Notify {
            return Err(Error::invalid(
                "linux.seccomp.defaultAction",
                "SCMP_ACT_NOTIFY cannot be the default action (the runtime itself would block)",
            ));
        }
        if uses_notify && sc.listener_path.as_deref().unwrap_or("").is_empty() {
            return Err(Error::invalid(
                "linux.seccomp.listenerPath",
                "SCMP_ACT_NOTIFY is used but no listenerPath is set",
            ));
        }
        if sc.listener_metadata.is_some() && sc.listener_path.is_none() {
            return Err(Error::invalid(
                "linux.seccomp.listenerMetadata",
                "is set but listenerPath is not",
            ));
        }
        if let Some(p) = &sc.listener_path {
            if !is_abs(p) {
                return Err(Error::invalid(
                    "linux.seccomp.listenerPath",
                    format!("{p:?} is not an absolute path"),
                ));
            }
        }
        for (i, s) in sc.syscalls.iter().enumerate() {
            if s.names.is_empty() {
                return Err(Error::invalid(
                    format!("linux.seccomp.syscalls[{i}].names"),
                    "is empty",
                ));
            }
            if s.errno_ret.is_some()
                && !matches!(s.action, SeccompAction::Errno | SeccompAction::Trace)
            {
                return Err(Error::invalid(
                    format!("linux.seccomp.syscalls[{i}].errnoRet"),
                    "is only valid with SCMP_ACT_ERRNO or SCMP_ACT_TRACE",
                ));
            }
            for (j, a) in s.args.iter().enumerate() {
                if a.index > 5 {
                    return Err(Error::invalid(
                        format!("linux.seccomp.syscalls[{i}].args[{j}].index"),
                        format!(
                            "{} is out of range (syscalls have 6 arguments, 0-5)",
                            a.index
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Checks for a `process` object (from config.json or an exec process.json).
pub fn validate_process(p: &Process, field: &str) -> Result<()> {
    if p.args.is_empty() || p.args[0].is_empty() {
        return Err(Error::invalid(
            format!("{field}.args"),
            "must name a program",
        ));
    }
    if !is_abs(&p.cwd) {
        return Err(Error::invalid(
            format!("{field}.cwd"),
            format!("{:?} is not an absolute path", p.cwd),
        ));
    }
    for (i, e) in p.env.iter().enumerate() {
        if !e.contains('=') {
            return Err(Error::invalid(
                format!("{field}.env[{i}]"),
                format!("{e:?} is not of the form NAME=value"),
            ));
        }
    }
    let mut seen = HashSet::new();
    for (i, r) in p.rlimits.iter().enumerate() {
        if !RLIMIT_NAMES.contains(&r.typ.as_str()) {
            return Err(Error::invalid(
                format!("{field}.rlimits[{i}].type"),
                format!("{:?} is not a known rlimit", r.typ),
            ));
        }
        if !seen.insert(r.typ.as_str()) {
            return Err(Error::invalid(
                format!("{field}.rlimits[{i}].type"),
                format!("{} is listed twice", r.typ),
            ));
        }
        if r.soft > r.hard {
            return Err(Error::invalid(
                format!("{field}.rlimits[{i}]"),
                format!(
                    "{}: soft limit {} exceeds hard limit {}",
                    r.typ, r.soft, r.hard
                ),
            ));
        }
    }
    if let Some(caps) = &p.capabilities {
        for (set, list) in [
            ("bounding", &caps.bounding),
            ("effective", &caps.effective),
            ("inheritable", &caps.inheritable),
            ("permitted", &caps.permitted),
            ("ambient", &caps.ambient),
        ] {
            for (i, c) in list.iter().flatten().enumerate() {
                let body = c.strip_prefix("CAP_").unwrap_or("");
                if body.is_empty()
                    || !body
                        .chars()
                        .all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '_')
                {
                    return Err(Error::invalid(
                        format!("{field}.capabilities.{set}[{i}]"),
                        format!("{c:?} is not a capability name (CAP_...)"),
                    ));
                }
            }
        }
    }
    if let Some(s) = &p.scheduler {
        const POLICIES: [&str; 7] = [
            "SCHED_OTHER",
            "SCHED_FIFO",
            "SCHED_RR",
            "SCHED_BATCH",
            "SCHED_ISO",
            "SCHED_IDLE",
            "SCHED_DEADLINE",
        ];
        if !POLICIES.contains(&s.policy.as_str()) {
            return Err(Error::invalid(
                format!("{field}.scheduler.policy"),
                format!("{:?} is not one of {}", s.policy, POLICIES.join(", ")),
            ));
        }
        if !(-20..=19).contains(&s.nice) {
            return Err(Error::invalid(
                format!("{field}.scheduler.nice"),
                format!("{} is outside -20..19", s.nice),
            ));
        }
    }
    if let Some(io) = &p.io_priority {
        if !matches!(
            io.class.as_str(),
            "IOPRIO_CLASS_RT" | "IOPRIO_CLASS_BE" | "IOPRIO_CLASS_IDLE"
        ) {
            return Err(Error::invalid(
                format!("{field}.ioPriority.class"),
                format!(
                    "{:?} is not IOPRIO_CLASS_RT, IOPRIO_CLASS_BE or IOPRIO_CLASS_IDLE",
                    io.class
                ),
            ));
        }
        if io.priority > 7 {
            return Err(Error::invalid(
                format!("{field}.ioPriority.priority"),
                format!("{} is outside 0..7", io.priority),
            ));
        }
    }
    Ok(())
}

fn validate_namespaces(linux: &Linux) -> Result<()> {
    let mut seen = HashSet::new();
    for (i, ns) in linux.namespaces.iter().enumerate() {
        if !seen.insert(ns.typ) {
            return Err(Error::invalid(
                format!("linux.namespaces[{i}]"),
                format!("namespace type {} is listed twice", ns.typ),
            ));
        }
        if let Some(p) = &ns.path {
            if !is_abs(p) {
                return Err(Error::invalid(
                    format!("linux.namespaces[{i}].path"),
                    format!("{p:?} is not an absolute path"),
                ));
            }
        }
    }
    Ok(())
}

/// Only namespaced sysctls may be set, and only when the container has the
/// namespace that scopes them (otherwise the write would change the host).
fn validate_sysctl(key: &str, linux: &Linux) -> Result<()> {
    let field = format!("linux.sysctl.{key}");
    let need = |t: NamespaceType, what: &str| -> Result<()> {
        if linux.namespace(t).is_some() {
            Ok(())
        } else {
            Err(Error::invalid(
                field.clone(),
                format!("{what} sysctls need a {t} namespace in linux.namespaces"),
            ))
        }
    };
    if key.contains("..") || key.starts_with('/') || key.starts_with('.') {
        return Err(Error::invalid(field.clone(), "is not a sysctl name"));
    }
    let ipc_keys = [
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if ipc_keys.contains(&key) || key.starts_with("fs.mqueue.") {
        return need(NamespaceType::Ipc, "IPC");
    }
    if key.starts_with("net.") {
        return need(NamespaceType::Network, "network");
    }
    if key == "kernel.hostname" || key == "kernel.domainname" {
        return need(NamespaceType::Uts, "UTS");
    }
    Err(Error::invalid(
        field,
        "is not a namespaced sysctl; setting it would change the host",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_json;

    fn base() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.2.0",
            "root": {"path": "rootfs"},
            "process": {"args": ["sh"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        })
    }

    fn check(v: serde_json::Value) -> std::result::Result<(), String> {
        let spec: Spec =
            from_json(v.to_string().as_bytes(), "config.json").map_err(|e| e.to_string())?;
        validate(&spec).map_err(|e| e.to_string())
    }

    #[test]
    fn base_is_valid() {
        check(base()).unwrap();
    }

    #[test]
    fn ids() {
        for ok in ["a", "abc-1.2_3+x", "A"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "../x", "a/b", "a b", "x\0", ".sandbox"] {
            let e = validate_id(bad).unwrap_err().to_string();
            assert!(e.starts_with("container ID"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn relative_mount_destination_is_relative_to_root() {
        let mut v = base();
        v["mounts"] =
            serde_json::json!([{"destination": "tmp/x", "type": "tmpfs", "source": "tmpfs"}]);
        let spec: Spec = from_json(v.to_string().as_bytes(), "config.json").unwrap();
        assert_eq!(spec.mounts[0].destination, "/tmp/x");
        validate(&spec).unwrap();
    }

    #[test]
    fn field_rules_of_the_spec() {
        let cases: [(&str, serde_json::Value, &str); 12] = [
            ("/annotations", serde_json::json!({"": "x"}), "annotations"),
            (
                "/process/rlimits",
                serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 1}, {"type": "RLIMIT_NOFILE", "soft": 2, "hard": 2}]),
                "listed twice",
            ),
            ("/ociVersion", serde_json::json!("2.0.0"), "ociVersion"),
            ("/root", serde_json::Value::Null, "root"),
            ("/process", serde_json::Value::Null, "process"),
            ("/process/cwd", serde_json::json!("rel"), "process.cwd"),
            ("/process/args", serde_json::json!([]), "process.args"),
            (
                "/hooks",
                serde_json::json!({"poststop": [{"path": "/bin/true", "timeout": 0}]}),
                "hooks.poststop[0].timeout",
            ),
            (
                "/linux/maskedPaths",
                serde_json::json!(["proc/kcore"]),
                "linux.maskedPaths[0]",
            ),
            (
                "/linux/namespaces",
                serde_json::json!([{"type": "mount"}, {"type": "network", "path": "run/netns/x"}]),
                "linux.namespaces[1].path",
            ),
            (
                "/linux/seccomp",
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}),
                "linux.seccomp.syscalls[0].names",
            ),
            (
                "/linux/seccomp",
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_LOG", "errnoRet": 1}]}),
                "errnoRet",
            ),
        ];
        for (ptr, value, want) in cases {
            let mut v = base();
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            let p = if parent.is_empty() {
                &mut v
            } else {
                v.pointer_mut(parent).unwrap()
            };
            if value.is_null() {
                p.as_object_mut().unwrap().remove(key);
            } else {
                p[key] = value;
            }
            let e = check(v).unwrap_err();
            assert!(e.contains(want), "{ptr}: {e}");
        }
    }

    #[test]
    fn listener_metadata_needs_a_listener_path() {
        let mut v = base();
        v["linux"]["seccomp"] =
            serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerMetadata": "x"});
        let e = check(v).unwrap_err();
        assert!(e.contains("linux.seccomp.listenerMetadata"), "{e}");
    }

    #[test]
    fn duplicate_namespace() {
        let mut v = base();
        v["linux"]["namespaces"] = serde_json::json!([{"type": "pid"}, {"type": "pid"}]);
        let e = check(v).unwrap_err();
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn hostname_needs_uts() {
        let mut v = base();
        v["hostname"] = "x".into();
        assert!(check(v.clone()).unwrap_err().contains("uts namespace"));
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "uts"}));
        check(v).unwrap();
    }

    #[test]
    fn userns_needs_mappings_and_mappings_need_userns() {
        let mut v = base();
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "user"}));
        assert!(check(v.clone()).unwrap_err().contains("uidMappings"));
        let m = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        v["linux"]["uidMappings"] = m.clone();
        v["linux"]["gidMappings"] = m.clone();
        check(v).unwrap();
        let mut w = base();
        w["linux"]["uidMappings"] = m.clone();
        w["linux"]["gidMappings"] = m;
        assert!(check(w)
            .unwrap_err()
            .contains("only valid with a new user namespace"));
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        let mut v = base();
        v["linux"]["sysctl"] = serde_json::json!({"vm.swappiness": "10"});
        assert!(check(v.clone())
            .unwrap_err()
            .contains("not a namespaced sysctl"));
        v["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
        assert!(check(v.clone()).unwrap_err().contains("network namespace"));
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "network"}));
        check(v).unwrap();
    }

    #[test]
    fn rlimits() {
        let mut v = base();
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]);
        assert!(check(v.clone()).unwrap_err().contains("exceeds hard limit"));
        v["process"]["rlimits"] =
            serde_json::json!([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 5}]);
        assert!(check(v).unwrap_err().contains("not a known rlimit"));
    }

    #[test]
    fn cgroups_path_with_dotdot() {
        let mut v = base();
        v["linux"]["cgroupsPath"] = "/a/../../b".into();
        assert!(check(v).unwrap_err().contains("linux.cgroupsPath"));
    }

    #[test]
    fn hooks_need_absolute_paths() {
        let mut v = base();
        v["hooks"] = serde_json::json!({"prestart": [{"path": "hook.sh"}]});
        assert!(check(v).unwrap_err().contains("hooks.prestart[0].path"));
    }

    #[test]
    fn seccomp_rules() {
        let mut v = base();
        v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]});
        assert!(check(v.clone()).unwrap_err().contains("listenerPath"));
        v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_BOGUS"});
        let e = check(v.clone()).unwrap_err();
        assert!(
            e.contains("linux.seccomp.defaultAction") && e.contains("unknown variant"),
            "{e}"
        );
        v["linux"]["seccomp"] = serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]});
        assert!(check(v).unwrap_err().contains("out of range"));
    }

    #[test]
    fn unimplemented_features_are_refused_not_ignored() {
        let mut v = base();
        v["linux"]["intelRdt"] = serde_json::json!({"closID": "x"});
        assert!(check(v.clone()).unwrap_err().contains("linux.intelRdt"));
        v["linux"].as_object_mut().unwrap().remove("intelRdt");
        v["linux"]["netDevices"] = serde_json::json!({"eth0": {}});
        assert!(check(v).unwrap_err().contains("linux.netDevices"));
    }

    #[test]
    fn time_offsets_need_time_namespace() {
        let mut v = base();
        v["linux"]["timeOffsets"] = serde_json::json!({"monotonic": {"secs": 10}});
        assert!(check(v.clone()).unwrap_err().contains("time namespace"));
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"type": "time"}));
        check(v.clone()).unwrap();
        v["linux"]["timeOffsets"] = serde_json::json!({"realtime": {"secs": 10}});
        assert!(check(v).unwrap_err().contains("unknown clock"));
    }
}
