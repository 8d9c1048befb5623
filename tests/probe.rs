//! The breakout-probe battery against bulkhead's defaults: a container made from `bulkhead
//! spec` and `bulkhead sandbox` (host root and --rootfs) let no probe through, asserted probe
//! by probe; runc with its own default spec lets some through (the battery bites); and
//! loosened isolation (all capabilities, no seccomp, nothing masked, no pivot_root) shows
//! each probe able to report ALLOWED inside a container.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use probe::{Outcome, Report};
use serde_json::json;

/// Every probe, by name: a probe that disappears from the battery fails these tests.
const PROBES: [&str; 42] = [
    "mount-proc",
    "mount-cgroup",
    "mount-tmpfs",
    "fsopen",
    "write-sysrq-trigger",
    "write-core-pattern",
    "write-sys-kernel",
    "write-cgroup-procs",
    "read-kcore",
    "read-dev-mem",
    "read-kallsyms",
    "load-module",
    "mknod-block-device",
    "open-dev-kvm",
    "socket-raw",
    "socket-packet",
    "unshare-user",
    "unshare-mount",
    "unshare-pid",
    "unshare-net",
    "unshare-ipc",
    "unshare-uts",
    "unshare-cgroup",
    "unshare-time",
    "clone-newuser",
    "clone3-newuser",
    "keyctl-session",
    "add-key",
    "bpf-map",
    "perf-event-open",
    "userfaultfd",
    "io-uring-setup",
    "open-by-handle-at",
    "kexec-load",
    "reboot",
    "ptrace-pid1",
    "chroot-escape",
    "host-pids-visible",
    "leaked-fds",
    "no-new-privs-off",
    "seccomp-off",
    "cap-sys-admin",
];

fn parse(what: &str, stdout: &str, stderr: &str) -> Report {
    serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("{what}: no JSON report ({e}):\n{stdout}\nstderr: {stderr}"))
}

/// Every probe ran, none got through; a probe that could not be attempted names a limit of
/// this kernel (never something the isolation did).
fn assert_nothing_allowed(what: &str, r: &Report) {
    println!("{what}:\n{}", r.table());
    let names: Vec<&str> = r.probes.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, PROBES, "{what}: the battery's probes");
    for name in PROBES {
        let f = r.get(name).unwrap();
        match f.result {
            Outcome::Blocked => {}
            Outcome::NotApplicable => assert!(
                f.detail.starts_with("this kernel"),
                "{what}: {name} not applicable for a reason other than the kernel: {}",
                f.detail
            ),
            Outcome::Allowed => panic!("{what}: {name} was ALLOWED: {}", f.detail),
        }
    }
    assert_eq!(r.allowed, 0, "{what}");
}

fn assert_allowed(what: &str, r: &Report, names: &[&str]) {
    println!("{what}:\n{}", r.table());
    for name in names {
        let f = r
            .get(name)
            .unwrap_or_else(|| panic!("{what}: no probe {name}"));
        assert_eq!(f.result, Outcome::Allowed, "{what}: {name}: {}", f.detail);
    }
}

/// A bundle from `bulkhead spec` whose process is the battery (`extra` args appended),
/// with the test's bulkhead binary at /bulkhead.
fn probe_bundle(name: &str, extra: &[&str]) -> Bundle {
    let mut args = vec!["/bulkhead", "probe", "--format", "json"];
    args.extend_from_slice(extra);
    let mut b = Bundle::new(name, &args);
    let mounts = probe::compare::probe_mounts(&b.rootfs(), Path::new(bin())).unwrap();
    b.config["mounts"].as_array_mut().unwrap().extend(mounts);
    b.save();
    b
}

fn run_bundle(b: &Bundle, name: &str, runtime_args: &[&str]) -> Report {
    let rt = Rt::new();
    let id = unique(name);
    rt.track(&id);
    let out = output(
        rt.cmd()
            .args(["run"])
            .args(runtime_args)
            .args(["--bundle"])
            .arg(&b.dir)
            .arg(&id),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{name}: {stderr}");
    parse(name, &stdout, &stderr)
}

fn sandbox_probe(args: &[&str]) -> Report {
    let rt = Rt::new();
    // The binary's directory, bound at its own path: a checkout under /tmp would otherwise be
    // hidden by the sandbox's private /tmp.
    let bin_dir = Path::new(bin()).parent().unwrap().display().to_string();
    let bind = format!("{bin_dir}:{bin_dir}:ro");
    let out = output(
        rt.cmd()
            .arg("sandbox")
            .args(["--bind", &bind])
            .args(args)
            .args(["--", bin(), "probe", "--format", "json"]),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "sandbox {args:?}: {stderr}");
    parse("sandbox", &stdout, &stderr)
}

#[test]
fn spec_default_lets_nothing_through() {
    let b = probe_bundle("probe-spec", &[]);
    // A host-side marker next to the rootfs, for the chroot escape to look for.
    let marker = b.dir.join("marker");
    fs::write(&marker, "host\n").unwrap();
    let mut b = b;
    b.config["process"]["args"]
        .as_array_mut()
        .unwrap()
        .extend([json!("--marker"), json!(marker)]);
    b.save();
    let r = run_bundle(&b, "probe-spec", &[]);
    assert_nothing_allowed("bulkhead spec", &r);
}

#[test]
fn sandbox_on_the_host_root_lets_nothing_through() {
    let r = sandbox_probe(&[]);
    assert_nothing_allowed("bulkhead sandbox", &r);
}

#[test]
fn sandbox_with_a_rootfs_lets_nothing_through() {
    let dir = std::env::temp_dir().join(unique("bh-probe-rootfs"));
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs);
    let binds: Vec<String> = probe::compare::probe_mounts(&rootfs, Path::new(bin()))
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}:{}:ro",
                m["source"].as_str().unwrap(),
                m["destination"].as_str().unwrap()
            )
        })
        .collect();
    let mut args = vec!["--rootfs".to_string(), rootfs.display().to_string()];
    for b in &binds {
        args.extend(["--bind".to_string(), b.clone()]);
    }
    let rt = Rt::new();
    let out = output(rt.cmd().arg("sandbox").args(&args).args([
        "--",
        "/bulkhead",
        "probe",
        "--format",
        "json",
    ]));
    let _ = fs::remove_dir_all(&dir);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "sandbox --rootfs: {stderr}");
    assert_nothing_allowed(
        "bulkhead sandbox --rootfs",
        &parse("rootfs", &stdout, &stderr),
    );
}

/// What runc's own default spec (`runc spec`: 3 capabilities, no seccomp) lets through on
/// these machines (kernel 6.18, perf_event_paranoid 2, unprivileged_bpf_disabled 2,
/// unprivileged_userfaultfd 0 but user-mode-only faults allowed, no Yama): 10 probes. The
/// same run checks `probe --compare` end to end, bulkhead's column included.
#[test]
fn runc_default_spec_lets_probes_through() {
    if !Path::new("/usr/sbin/runc").exists() && !Path::new("/usr/bin/runc").exists() {
        eprintln!("skipped: runc is not installed (scripts/deps.sh installs it)");
        return;
    }
    let out = output(std::process::Command::new(bin()).args([
        "probe",
        "--compare",
        "runc",
        "--format",
        "json",
    ]));
    let text = ok(&out);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cols = v["runtimes"].as_array().unwrap();
    assert_eq!(cols.len(), 2, "{text}");
    assert_eq!(cols[0]["runtime"], "bulkhead");
    assert_eq!(cols[1]["runtime"], "runc");
    let report = |c: &serde_json::Value| -> Report {
        serde_json::from_value(c["report"].clone())
            .unwrap_or_else(|e| panic!("{}: {e}: {}", c["runtime"], c["error"]))
    };
    assert_nothing_allowed("bulkhead (compare)", &report(&cols[0]));
    let runc = report(&cols[1]);
    let allowed: Vec<&str> = runc
        .probes
        .iter()
        .filter(|f| f.result == Outcome::Allowed)
        .map(|f| f.name.as_str())
        .collect();
    println!(
        "runc's default spec: {} probes allowed: {allowed:?}",
        allowed.len()
    );
    assert_eq!(
        allowed,
        [
            "unshare-user",
            "clone-newuser",
            "clone3-newuser",
            "keyctl-session",
            "add-key",
            "perf-event-open",
            "userfaultfd",
            "io-uring-setup",
            "ptrace-pid1",
            "seccomp-off",
        ],
        "{}",
        runc.table()
    );
}

/// Every capability and no seccomp: the probes that need only privilege report ALLOWED
/// from inside a sandbox, so the zeros above are the isolation's doing.
#[test]
fn loosened_sandbox_shows_allowed_probes() {
    let r = sandbox_probe(&["--cap-add", "all", "--seccomp-profile", "unconfined"]);
    // Still held back by what the flags leave in place: the masks and read-only mounts
    // (kernel files), the device cgroup and the fresh /dev (devices), pivot_root, the pid
    // namespace, closed descriptors, no_new_privs; and what this kernel lacks.
    let kept = [
        "write-sysrq-trigger",
        "write-core-pattern",
        "write-sys-kernel",
        "write-cgroup-procs",
        "read-kcore",
        "read-dev-mem",
        "read-kallsyms",
        "load-module",
        "mknod-block-device",
        "open-dev-kvm",
        "kexec-load",
        "chroot-escape",
        "host-pids-visible",
        "leaked-fds",
        "no-new-privs-off",
    ];
    let want: Vec<&str> = PROBES.into_iter().filter(|p| !kept.contains(p)).collect();
    assert_eq!(want.len(), 27);
    assert_allowed(
        "sandbox --cap-add all --seccomp-profile unconfined",
        &r,
        &want,
    );
    // The default profile still refuses user namespaces and the exploit-prone interfaces
    // when every capability is given.
    let r = sandbox_probe(&["--cap-add", "all"]);
    println!("sandbox --cap-add all:\n{}", r.table());
    for name in [
        "unshare-user",
        "clone-newuser",
        "clone3-newuser",
        "keyctl-session",
        "add-key",
        "bpf-map",
        "perf-event-open",
        "userfaultfd",
        "io-uring-setup",
        "open-by-handle-at",
        "kexec-load",
        "reboot",
        "load-module",
        "seccomp-off",
    ] {
        let f = r.get(name).unwrap();
        assert_eq!(f.result, Outcome::Blocked, "{name}: {}", f.detail);
    }
    assert_eq!(r.get("mount-tmpfs").unwrap().result, Outcome::Allowed);
}

/// A container with nothing masked or read-only, every capability, no seccomp and no device
/// policy (what `--privileged` gives): the kernel-file and device probes get through. The
/// writes only write back current values.
#[test]
fn privileged_container_lets_the_file_probes_through() {
    let mut b = probe_bundle("probe-priv", &[]);
    // Every capability this test process holds (it may lack some the kernel knows).
    let held = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let all: Vec<String> = container::capabilities::known_names()
        .into_iter()
        .enumerate()
        .filter(|(bit, _)| held & (1 << bit) != 0)
        .map(|(_, n)| n)
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    b.add_caps(&all);
    let linux = &mut b.config["linux"];
    linux["maskedPaths"] = json!([]);
    linux["readonlyPaths"] = json!([]);
    linux["resources"]["devices"] = json!([{"allow": true, "access": "rwm"}]);
    linux.as_object_mut().unwrap().remove("seccomp");
    for m in b.config["mounts"].as_array_mut().unwrap() {
        if m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup" {
            m["options"].as_array_mut().unwrap().retain(|o| o != "ro");
        }
    }
    b.config["process"]["noNewPrivileges"] = false.into();
    b.save();
    let r = run_bundle(&b, "probe-priv", &[]);
    assert_allowed(
        "privileged bundle",
        &r,
        &[
            "write-core-pattern",
            "write-sys-kernel",
            "write-cgroup-procs",
            "read-kallsyms",
            "mknod-block-device",
            "no-new-privs-off",
            "seccomp-off",
            "cap-sys-admin",
        ],
    );
}

/// A plain chroot (what chroot(8) gives, no mount namespace) is climbed out of: the probe
/// reaches the host-side marker. A container's root cannot be left that way, with
/// pivot_root or with --no-pivot (the rootfs is moved over the namespace's root mount, so
/// ".." finds no mount point above it).
#[test]
fn chroot_escape_is_detected_in_a_plain_chroot() {
    let dir = std::env::temp_dir().join(unique("bh-probe-chroot"));
    let rootfs = dir.join("rootfs");
    busybox_rootfs(&rootfs);
    let marker = dir.join("marker");
    fs::write(&marker, "host\n").unwrap();
    let mut script = String::new();
    for m in probe::compare::probe_mounts(&rootfs, Path::new(bin())).unwrap() {
        let (src, dst) = (
            m["source"].as_str().unwrap(),
            m["destination"].as_str().unwrap(),
        );
        script += &format!("mount --rbind {src} {}{dst} && ", rootfs.display());
    }
    script += &format!(
        "chroot {} /bulkhead probe --only chroot-escape --format json --marker {}",
        rootfs.display(),
        marker.display()
    );
    // The binds live in a private mount namespace of unshare(1), gone when it exits.
    let out = output(std::process::Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    let _ = fs::remove_dir_all(&dir);
    let text = ok(&out);
    let r = parse("chroot", &text, &String::from_utf8_lossy(&out.stderr));
    assert_eq!(r.probes.len(), 1);
    let f = r.get("chroot-escape").unwrap();
    assert_eq!(f.result, Outcome::Allowed, "{}", f.detail);
    assert!(
        f.detail.contains("marker") && f.detail.contains("is visible"),
        "{}",
        f.detail
    );
    // A container made with --no-pivot keeps the probe in.
    let mut b = probe_bundle("probe-nopivot", &["--only", "chroot-escape"]);
    // The workload needs chroot: the spec's set leaves CAP_SYS_CHROOT out.
    b.add_caps(&["CAP_SYS_CHROOT"]);
    let r = run_bundle(&b, "probe-nopivot", &["--no-pivot"]);
    let f = r.get("chroot-escape").unwrap();
    assert_eq!(f.result, Outcome::Blocked, "{}", f.detail);
    assert!(f.detail.contains("chroot is permitted"), "{}", f.detail);
}
