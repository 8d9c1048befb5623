//! The root filesystem: read-only root, mounts and their options, devices,
//! masked and read-only paths, sysctl, --no-pivot, and symlinks that try to
//! lead mounts out of the rootfs.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};

use common::*;
use serde_json::json;

fn push_mount(b: &mut Bundle, m: serde_json::Value) {
    b.config["mounts"].as_array_mut().unwrap().push(m);
}

#[test]
fn readonly_root_and_writable_tmpfs() {
    let out = sh_ok(
        "ro",
        "touch /x 2>/dev/null && echo root-writable || echo root-ro; touch /scratch/y && echo tmp-ok; \
         grep ' /scratch ' /proc/mounts",
        |b| {
            push_mount(
                b,
                json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "noexec", "size=2m", "mode=751"]}),
            )
        },
    );
    assert!(out.contains("root-ro") && out.contains("tmp-ok"), "{out}");
    let line = out.lines().find(|l| l.contains(" /scratch ")).unwrap();
    assert!(
        line.contains("nosuid") && line.contains("noexec") && line.contains("size=2048k"),
        "{line}"
    );
    assert!(line.contains("mode=751"), "{line}");
}

#[test]
fn writable_root_when_not_readonly() {
    let out = sh_ok("rw", "touch /created-inside && echo ok", |b| {
        b.config["root"]["readonly"] = false.into()
    });
    assert_eq!(out, "ok\n");
}

/// A mount on "/" covers the root filesystem: the mounts after it land in it,
/// and the container's root is it (runc's path-based joins give the same).
#[test]
fn a_mount_on_the_root_becomes_the_root() {
    let other = std::env::temp_dir().join(unique("bh-other-root"));
    busybox_rootfs(&other);
    fs::write(other.join("marker"), "other root\n").unwrap();
    let out = sh_ok(
        "onroot",
        "cat /marker; grep -c '^proc /proc ' /proc/mounts; touch /x 2>&1; true",
        |b| {
            let mounts = b.config["mounts"].as_array_mut().unwrap();
            mounts.insert(
                0,
                json!({"destination": "/", "type": "bind", "source": &other, "options": ["rbind", "ro"]}),
            );
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "other root", "{out}");
    assert_eq!(lines[1], "1", "/proc was mounted in the new root: {out}");
    assert!(lines[2].contains("Read-only"), "{out}");
    fs::remove_dir_all(&other).unwrap();
}

#[test]
fn bind_mounts_ro_rw_and_recursive_readonly() {
    let base = std::env::temp_dir().join(unique("bh-bind"));
    fs::create_dir_all(base.join("data/sub")).unwrap();
    fs::write(base.join("data/file"), "from host\n").unwrap();
    let out = sh_ok(
        "bind",
        "cat /ro/file; echo x > /ro/new 2>/dev/null || echo ro-refused; echo y > /rw/new && echo rw-ok; \
         echo w > /nonrec/sub/inner/new && echo nonrec-writable",
        |b| {
            let d = base.join("data");
            push_mount(b, json!({"destination": "/ro", "type": "bind", "source": d, "options": ["rbind", "ro"]}));
            push_mount(b, json!({"destination": "/rw", "type": "bind", "source": d, "options": ["rbind", "rw"]}));
            fs::create_dir_all(base.join("data/sub/inner")).unwrap();
            // Plain `ro` is not recursive: a mount below stays writable.
            push_mount(b, json!({"destination": "/nonrec", "type": "bind", "source": d, "options": ["rbind", "ro"]}));
            push_mount(b, json!({"destination": "/nonrec/sub/inner", "type": "tmpfs", "source": "tmpfs"}));
        },
    );
    assert!(out.starts_with("from host\n"), "{out}");
    for want in ["ro-refused", "rw-ok", "nonrec-writable"] {
        assert!(out.contains(want), "{want} missing: {out}");
    }
    assert_eq!(fs::read_to_string(base.join("data/new")).unwrap(), "y\n");
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn rro_applies_to_submounts_of_the_source() {
    // Build a host directory with a mount inside it, in a private mount
    // namespace of a helper process, then bind it recursively with rro.
    let base = std::env::temp_dir().join(unique("bh-rro"));
    fs::create_dir_all(base.join("src/inner")).unwrap();
    let b = Bundle::new(
        "rro",
        &[
            "sh",
            "-c",
            "echo a > /r/inner/f 2>/dev/null && echo inner-writable || echo inner-ro; \
        echo b > /r/f 2>/dev/null && echo top-writable || echo top-ro",
        ],
    );
    let rt = Rt::new();
    let mut cfg = b.config.clone();
    cfg["mounts"].as_array_mut().unwrap().push(json!({"destination": "/r", "type": "bind", "source": base.join("src"), "options": ["rbind", "rro"]}));
    fs::write(b.dir.join("config.json"), cfg.to_string()).unwrap();
    let id = unique("rro");
    rt.track(&id);
    // unshare -m: the tmpfs on src/inner exists only in this mount namespace,
    // where the runtime runs too.
    let script = format!(
        "mount -t tmpfs tmpfs {inner} && {bin} --root {root} run --bundle {bundle} {id}",
        inner = base.join("src/inner").display(),
        bin = bin(),
        root = rt.root.display(),
        bundle = b.dir.display(),
    );
    let out = output(std::process::Command::new("unshare").args([
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    let text = ok(&out);
    assert!(
        text.contains("inner-ro") && text.contains("top-ro"),
        "{text}"
    );
    fs::remove_dir_all(&base).unwrap();
}

#[test]
fn default_devices_symlinks_and_linux_devices() {
    let out = sh_ok(
        "dev",
        "for d in null zero full random urandom tty; do stat -c '%n %t:%T %a' /dev/$d; done; \
         readlink /dev/fd; readlink /dev/stdin; readlink /dev/ptmx; stat -c '%n %t:%T %a %u %g' /dev/fuse; \
         echo hi > /dev/null && head -c 4 /dev/zero | wc -c",
        |b| {
            b.config["linux"]["devices"] =
                json!([{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 384, "uid": 7, "gid": 8}]);
        },
    );
    for want in [
        "/dev/null 1:3 666",
        "/dev/zero 1:5 666",
        "/dev/full 1:7 666",
        "/dev/random 1:8 666",
        "/dev/urandom 1:9 666",
        "/dev/tty 5:0 666",
        "/proc/self/fd\n/proc/self/fd/0\npts/ptmx",
        "/dev/fuse a:e5 600 7 8",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }
    assert!(out.trim_end().ends_with('4'), "{out}");
}

#[test]
fn device_cgroup_denies_what_is_not_listed() {
    // mknod of a device that the allow list does not include: the node is
    // created (CAP_MKNOD) but cannot be opened (device cgroup).
    let out = sh_ok(
        "devcg",
        "mknod /dev/sda0 b 8 0; head -c1 /dev/sda0 >/dev/null 2>&1 && echo opened || echo denied; head -c1 /dev/urandom | wc -c",
        |_| {},
    );
    assert!(
        out.contains("denied") && out.trim_end().ends_with('1'),
        "{out}"
    );
}

#[test]
fn masked_and_readonly_paths() {
    let out = sh_ok(
        "mask",
        "wc -c < /proc/keys; echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo sys-writable || echo sys-ro; \
         ls /masked-dir | wc -l; cat /masked-file | wc -c",
        |b| {
            let masked = b.config["linux"]["maskedPaths"].as_array_mut().unwrap();
            masked.push("/masked-dir".into());
            masked.push("/masked-file".into());
            masked.push("/does/not/exist".into());
            fs::create_dir_all(b.rootfs().join("masked-dir/x")).unwrap();
            fs::write(b.rootfs().join("masked-file"), "secret").unwrap();
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, vec!["0", "sys-ro", "0", "0"], "{out}");
}

#[test]
fn sysctl_is_set_inside_only() {
    let host = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let out = sh_ok(
        "sysctl",
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
        |b| {
            b.config["linux"]["sysctl"] =
                json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"});
        },
    );
    assert_eq!(out, "1\n1234\n");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host
    );
}

#[test]
fn no_pivot_uses_move_and_chroot() {
    let rt = Rt::new();
    let b = Bundle::new(
        "nopivot",
        &[
            "sh",
            "-c",
            "ls /bin/busybox && head -1 /proc/self/mountinfo",
        ],
    );
    let id = unique("nopivot");
    rt.track(&id);
    let out = output(
        rt.cmd()
            .args(["run", "--no-pivot", "--bundle"])
            .arg(&b.dir)
            .arg(&id),
    );
    let text = ok(&out);
    assert!(text.starts_with("/bin/busybox\n"), "{text}");
}

#[test]
fn mount_destination_symlinks_stay_in_the_rootfs() {
    // The rootfs contains symlinks pointing at host paths; mounting "through"
    // them must land inside the rootfs, never on the host (CVE-2021-30465 class).
    let host_target = std::env::temp_dir().join(unique("bh-victim"));
    fs::create_dir_all(&host_target).unwrap();
    let before = fs::metadata(&host_target).unwrap().ino();
    let out = sh_ok(
        "symlink",
        "grep -c ' /evil' /proc/mounts; ls -d /evil-abs-target* 2>/dev/null | wc -l",
        |b| {
            symlink(&host_target, b.rootfs().join("evil")).unwrap();
            symlink("../../../../../../..", b.rootfs().join("up")).unwrap();
            push_mount(
                b,
                json!({"destination": "/evil/x", "type": "tmpfs", "source": "tmpfs"}),
            );
            push_mount(
                b,
                json!({"destination": "/up/evil-dotdot", "type": "tmpfs", "source": "tmpfs"}),
            );
        },
    );
    // Nothing was created or mounted at the host path.
    assert_eq!(
        fs::read_dir(&host_target).unwrap().count(),
        0,
        "the host directory was touched"
    );
    assert_eq!(fs::metadata(&host_target).unwrap().ino(), before);
    assert!(!std::path::Path::new("/evil-dotdot").exists());
    assert!(out.starts_with('1') || out.starts_with('2'), "{out}");
    fs::remove_dir_all(&host_target).unwrap();
}

/// The optional fields ("shared:N", "master:N", "unbindable") of the root
/// mount, as the container sees it, for `rootfsPropagation` = `value`. The
/// runtime runs in a private mount namespace of the test whose mounts are all
/// shared (`unshare --propagation shared`), so every value makes a visible
/// difference and nothing reaches the host's mount table.
fn root_propagation(value: &str) -> String {
    let rt = Rt::new();
    let mut b = Bundle::new(
        "prop",
        &["sh", "-c", "awk '$5 == \"/\"' /proc/self/mountinfo"],
    );
    b.config["linux"]["rootfsPropagation"] = value.into();
    b.save();
    let id = unique("prop");
    rt.track(&id);
    let out = output(
        std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "shared", bin(), "--root"])
            .arg(&rt.root)
            .args(["run", "--bundle"])
            .arg(&b.dir)
            .arg(&id),
    );
    let line = ok(&out);
    let fields: Vec<&str> = line.split_whitespace().collect();
    let sep = fields
        .iter()
        .position(|f| *f == "-")
        .expect("mountinfo line");
    assert!(sep >= 6, "{line}");
    fields[6..sep].join(" ")
}

#[test]
fn rootfs_propagation_every_value() {
    for value in ["shared", "rshared"] {
        let opt = root_propagation(value);
        assert!(
            opt.contains("shared:") && !opt.contains("master:"),
            "{value}: {opt}"
        );
    }
    for value in ["slave", "rslave"] {
        let opt = root_propagation(value);
        assert!(
            opt.contains("master:") && !opt.contains("shared:"),
            "{value}: {opt}"
        );
    }
    for value in ["private", "rprivate"] {
        let opt = root_propagation(value);
        assert!(opt.is_empty(), "{value}: {opt}");
    }
    for value in ["unbindable", "runbindable"] {
        let opt = root_propagation(value);
        assert_eq!(opt, "unbindable", "{value}");
    }
}

#[test]
fn cgroup_mount_shows_only_the_container() {
    let out = sh_ok(
        "cgmount",
        "ls /sys/fs/cgroup; cat /sys/fs/cgroup/pids/cgroup.procs | wc -l",
        |_| {},
    );
    for h in ["cpu", "memory", "pids", "devices", "freezer"] {
        assert!(out.lines().any(|l| l == h), "{h} missing: {out}");
    }
    // Only the container's own processes (sh, cat, wc) are in its cgroup.
    let n: usize = out.lines().last().unwrap().trim().parse().unwrap();
    assert!((1..=3).contains(&n), "{out}");
}
