//! runtime-spec requirements that no feature-focused test file covers: the
//! rows of docs/conformance.md that point here.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use common::*;
use serde_json::json;

#[test]
fn state_has_every_field_and_unknown_properties_are_ignored() {
    let rt = Rt::new();
    let mut b = Bundle::new("state", &["sleep", "60"]);
    b.config["annotations"] = json!({"com.example.key": "value", "org.example.empty": ""});
    // Properties this runtime does not know, at several levels.
    b.config["com.example.extension"] = json!({"anything": [1, 2]});
    b.config["process"]["com.example.field"] = json!(true);
    b.config["linux"]["com.example.field"] = json!("x");
    b.save();
    let id = unique("state");
    ok(&rt.create(&id, &b));
    let st = rt.state(&id);
    assert_eq!(st["ociVersion"], oci::OCI_VERSION);
    assert_eq!(st["id"], id.as_str());
    assert_eq!(st["status"], "created");
    assert!(st["pid"].as_i64().unwrap() > 0);
    assert_eq!(
        st["bundle"],
        b.dir.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(
        st["annotations"],
        json!({"com.example.key": "value", "org.example.empty": ""})
    );
}

#[test]
fn changes_to_config_json_after_create_have_no_effect() {
    let rt = Rt::new();
    let mut b = Bundle::new(
        "frozen",
        &[
            "sh",
            "-c",
            "echo original > /shared/out; hostname > /shared/host",
        ],
    );
    let shared = b.share("/shared");
    b.config["hostname"] = "before".into();
    b.save();
    let id = unique("frozen");
    ok(&rt.create(&id, &b));
    b.config["process"]["args"] = json!(["sh", "-c", "echo changed > /shared/out"]);
    b.config["hostname"] = "after".into();
    b.save();
    ok(&rt.run(&["start", &id]));
    rt.wait_status(&id, "stopped");
    assert_eq!(
        fs::read_to_string(shared.join("out")).unwrap(),
        "original\n"
    );
    assert_eq!(fs::read_to_string(shared.join("host")).unwrap(), "before\n");
}

#[test]
fn operations_need_an_id_and_an_existing_container() {
    let rt = Rt::new();
    for op in ["state", "start", "kill", "delete", "create"] {
        let e = fails(&rt.run(&[op]));
        assert!(!e.is_empty(), "{op} without an ID");
    }
    let missing = unique("missing");
    for args in [
        vec!["state", missing.as_str()],
        vec!["start", missing.as_str()],
        vec!["kill", missing.as_str(), "TERM"],
        vec!["delete", missing.as_str()],
    ] {
        let e = fails(&rt.run(&args));
        assert!(e.contains("does not exist"), "{args:?}: {e}");
    }
}

#[test]
fn start_twice_kill_created_and_reuse_an_id() {
    let rt = Rt::new();
    let b = Bundle::new("twice", &["sleep", "60"]);
    let id = unique("twice");
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    // A second start fails and changes nothing.
    fails(&rt.run(&["start", &id]));
    assert_eq!(rt.status(&id), "running");
    assert_eq!(rt.state(&id)["pid"].as_i64().unwrap(), pid);
    assert!(alive(pid));
    ok(&rt.run(&["delete", "--force", &id]));
    // The ID is free again; a created container can be signalled.
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["kill", &id, "KILL"]));
    rt.wait_status(&id, "stopped");
    ok(&rt.run(&["delete", &id]));
    assert!(!rt.root.join(&id).exists());
}

/// A cgroup directory made by the test in the pids hierarchy, removed on drop.
struct OwnCgroup(std::path::PathBuf);

impl Drop for OwnCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn delete_removes_only_what_create_made() {
    let rt = Rt::new();
    let parent = unique("bh-conf-parent");
    let own = OwnCgroup(Path::new("/sys/fs/cgroup/pids").join(&parent));
    fs::create_dir(&own.0).unwrap();
    let mut b = Bundle::new("onlyours", &["true"]);
    let shared = b.share("/shared");
    fs::write(shared.join("keep"), "x").unwrap();
    b.config["linux"]["cgroupsPath"] = format!("/{parent}/c").into();
    b.save();
    let (code, _, err) = rt.run_container(&unique("onlyours"), &b);
    assert_eq!(code, 0, "{err}");
    assert!(!own.0.join("c").exists(), "the container's cgroup is left");
    assert!(
        own.0.is_dir(),
        "a cgroup the container did not create was removed"
    );
    assert_eq!(fs::read_to_string(shared.join("keep")).unwrap(), "x");
    // Hierarchies where bulkhead made the parent itself lose it again.
    for d in cgroup_dirs_named(&parent) {
        if d != own.0 {
            panic!("{} left behind", d.display());
        }
    }
}

#[test]
fn console_size_is_ignored_without_a_terminal() {
    let out = sh_ok("consolesize", "echo ok", |b| {
        b.config["process"]["terminal"] = false.into();
        b.config["process"]["consoleSize"] = json!({"height": 10, "width": 20});
    });
    assert_eq!(out, "ok\n");
}

#[test]
fn oom_score_adj_is_left_alone_when_unset() {
    let rt = Rt::new();
    let b = Bundle::new("oom", &["cat", "/proc/self/oom_score_adj"]);
    let id = unique("oom");
    rt.track(&id);
    let mut cmd = rt.cmd();
    cmd.args(["run", "--bundle"]).arg(&b.dir).arg(&id);
    // SAFETY: the closure only writes a /proc file of the new process.
    unsafe {
        cmd.pre_exec(|| fs::write("/proc/self/oom_score_adj", "7"));
    }
    assert_eq!(ok(&output(&mut cmd)), "7\n");
}

#[test]
fn unknown_capabilities_are_a_warning_not_an_error() {
    let (code, out, err) = sh("capwarn", "grep CapBnd /proc/self/status", |b| {
        b.config["process"]["capabilities"]["bounding"] =
            json!(["CAP_KILL", "CAP_FROM_A_FUTURE_KERNEL"]);
    });
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("CAP_FROM_A_FUTURE_KERNEL"), "{err}");
    assert_eq!(out.trim(), "CapBnd:\t0000000000000020");
}

#[test]
fn mounts_in_order_remount_relative_destination_and_bundle_relative_source() {
    let mut b = Bundle::new("mountorder", &["true"]);
    fs::create_dir_all(b.dir.join("rel-src")).unwrap();
    fs::write(b.dir.join("rel-src/mark"), "from the bundle\n").unwrap();
    let out = {
        let m = b.config["mounts"].as_array_mut().unwrap();
        m.push(json!({"destination": "/a", "type": "tmpfs", "source": "tmpfs"}));
        // Nested in the previous one: only works in this order.
        m.push(json!({"destination": "/a/b", "type": "tmpfs", "source": "tmpfs"}));
        // Relative destination (deprecated): relative to "/"; remount: new
        // flags for what the previous entry mounted.
        m.push(json!({"destination": "a/b", "type": "tmpfs", "source": "tmpfs", "options": ["remount", "ro"]}));
        m.push(json!({"destination": "/rel", "type": "bind", "source": "rel-src", "options": ["rbind", "ro"]}));
        b.save();
        let rt = Rt::new();
        b.config["process"]["args"] = json!(["sh", "-c",
            "touch /a/ok && echo a-writable; touch /a/b/no 2>/dev/null || echo b-readonly; \
             awk '$5 == \"/a/b\" {split($6, o, \",\"); print $5, o[1]}' /proc/self/mountinfo; cat /rel/mark"]);
        b.save();
        let (code, out, err) = rt.run_container(&unique("mountorder"), &b);
        assert_eq!(code, 0, "{err}");
        out
    };
    assert_eq!(out, "a-writable\nb-readonly\n/a/b ro\nfrom the bundle\n");
}

#[test]
fn hooks_resolve_and_run_where_the_spec_says() {
    let rt = Rt::new();
    let mut b = Bundle::new("hookwhere", &["sleep", "60"]);
    let log = b.dir.join("where.log");
    let rootfs = b.rootfs().canonicalize().unwrap();
    let rootfs = rootfs.display();
    let log_d = log.display();
    // createRuntime (runtime namespaces): the init's mounts are made, and it
    // has not pivoted yet (its mount table still names them by host path).
    let create_runtime = format!(
        "read -r s; p=$(echo \"$s\" | sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/'); \
         grep -q ' {rootfs}/proc ' /proc/$p/mountinfo && echo createRuntime-before-pivot >> {log_d}"
    );
    // createContainer: a program that exists only on the host (runtime
    // namespace path), run in the container's mount namespace, before pivot.
    let host_only = b.dir.join("host-only-hook");
    fs::write(
        &host_only,
        format!("#!/bin/sh\ngrep -q ' {rootfs}/proc ' /proc/self/mountinfo && echo createContainer-before-pivot >> {log_d}\n"),
    )
    .unwrap();
    fs::set_permissions(
        &host_only,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // startContainer: a program that exists only in the container.
    let shared = b.share("/hooklog");
    fs::write(
        b.rootfs().join("bin/container-only-hook"),
        "#!/bin/sh\necho startContainer-in-container >> /hooklog/where.log\n",
    )
    .unwrap();
    fs::set_permissions(
        b.rootfs().join("bin/container-only-hook"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // poststart: the program already runs; poststop: the cgroup is gone.
    let cg = unique("bh-conf-hooks");
    b.config["linux"]["cgroupsPath"] = format!("/{cg}").into();
    let poststart = format!(
        "read -r s; p=$(echo \"$s\" | sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/'); echo poststart-$(cat /proc/$p/comm) >> {log_d}"
    );
    let poststop =
        format!("test -d /sys/fs/cgroup/pids/{cg} || echo poststop-after-destroy >> {log_d}");
    b.config["hooks"] = json!({
        "createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", create_runtime]}],
        "createContainer": [{"path": host_only}],
        "startContainer": [{"path": "/bin/container-only-hook"}],
        "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", poststart]}],
        "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", poststop]}],
    });
    b.save();
    let id = unique("hookwhere");
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    ok(&rt.run(&["delete", "--force", &id]));
    let host = fs::read_to_string(&log).unwrap();
    let inside = fs::read_to_string(shared.join("where.log")).unwrap();
    assert_eq!(
        host,
        "createRuntime-before-pivot\ncreateContainer-before-pivot\npoststart-sleep\npoststop-after-destroy\n"
    );
    assert_eq!(inside, "startContainer-in-container\n");
}

#[test]
fn default_filesystems_and_inherited_namespaces() {
    // The default spec (bulkhead spec, as runc's) has /proc, /sys, /dev/pts,
    // /dev/shm; a namespace type it does not list is the runtime's.
    let out = sh_ok(
        "defaultfs",
        "awk '{print $2, $3}' /proc/mounts; stat -L -c 'net %i' /proc/self/ns/net",
        |b| {
            b.config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "network");
        },
    );
    for want in [
        "/proc proc",
        "/sys sysfs",
        "/dev/pts devpts",
        "/dev/shm tmpfs",
    ] {
        assert!(out.lines().any(|l| l == want), "{want} missing: {out}");
    }
    let host = fs::metadata("/proc/self/ns/net").unwrap().ino();
    assert!(out.contains(&format!("net {host}")), "{out}");
}

#[test]
fn id_mappings_leave_the_rootfs_ownership_alone() {
    let rt = Rt::new();
    let mut b = Bundle::new("nochown", &["true"]);
    b.add_namespace("user", None);
    let m = json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    b.config["linux"]["uidMappings"] = m.clone();
    b.config["linux"]["gidMappings"] = m;
    b.save();
    let owners = || -> Vec<(u32, u32)> {
        ["bin/busybox", "etc/passwd", "bin"]
            .iter()
            .map(|p| {
                let md = fs::symlink_metadata(b.rootfs().join(p)).unwrap();
                (md.uid(), md.gid())
            })
            .collect()
    };
    let before = owners();
    let (code, _, err) = rt.run_container(&unique("nochown"), &b);
    assert_eq!(code, 0, "{err}");
    let after = owners();
    assert_eq!(before, after);
}

#[test]
fn a_device_path_holding_another_file_is_an_error() {
    let rt = Rt::new();
    let mut b = Bundle::new("devclash", &["true"]);
    b.config["linux"]["devices"] =
        json!([{"path": "/etc/passwd", "type": "c", "major": 1, "minor": 3}]);
    b.save();
    let id = unique("devclash");
    let e = fails(&rt.create(&id, &b));
    assert!(
        e.contains("already exists and is not the requested device"),
        "{e}"
    );
    assert!(!rt.root.join(&id).exists());
}

#[test]
fn a_listener_that_cannot_be_reached_fails_start() {
    let rt = Rt::new();
    let mut b = Bundle::new("deadagent", &["sh", "-c", "mkdir /x; sleep 60"]);
    // A socket file nobody listens on any more.
    let sock = b.dir.join("gone.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    b.save();
    let id = unique("deadagent");
    ok(&rt.create(&id, &b));
    let e = fails(&rt.run(&["start", &id]));
    assert!(
        e.contains("linux.seccomp.listenerPath") && e.contains("connect"),
        "{e}"
    );
    // The process could never be answered: it is gone.
    rt.wait_status(&id, "stopped");
}

#[test]
fn an_absolute_root_path() {
    let out = sh_ok("absroot", "echo ok", |b| {
        b.config["root"]["path"] = b.rootfs().canonicalize().unwrap().to_str().unwrap().into();
    });
    assert_eq!(out, "ok\n");
}

#[test]
fn mount_options_reach_the_kernel() {
    let out = sh_ok(
        "mountopts",
        "for d in /f1 /f2 /p1 /p2 /p3; do awk -v d=$d '$5 == d' /proc/self/mountinfo; done",
        |b| {
            let shared = b.dir.join("src");
            fs::create_dir_all(&shared).unwrap();
            let m = b.config["mounts"].as_array_mut().unwrap();
            m.push(
                json!({"destination": "/f1", "type": "tmpfs", "source": "tmpfs", "options":
                ["defaults", "ro", "nosuid", "nodev", "noexec", "sync", "dirsync", "noatime",
                 "nodiratime", "nosymfollow", "lazytime", "silent", "iversion", "mode=700"]}),
            );
            m.push(
                json!({"destination": "/f2", "type": "tmpfs", "source": "tmpfs", "options":
                ["ro", "rw", "nosuid", "suid", "dev", "exec", "async", "atime", "diratime",
                 "norelatime", "strictatime", "nolazytime", "loud", "noiversion", "symfollow"]}),
            );
            for (dest, prop) in [
                ("/p1", "rshared"),
                ("/p2", "runbindable"),
                ("/p3", "private"),
            ] {
                m.push(json!({"destination": dest, "type": "bind", "source": shared, "options": ["rbind", prop]}));
            }
        },
    );
    let line = |d: &str| {
        out.lines()
            .find(|l| l.split(' ').nth(4) == Some(d))
            .unwrap_or_else(|| panic!("{d} not mounted: {out}"))
            .to_string()
    };
    let (f1, f2) = (line("/f1"), line("/f2"));
    // Per-mount flags, then the superblock's (after " - ").
    let mnt = |l: &str| l.split(' ').nth(5).unwrap().to_string();
    let sb = |l: &str| l.rsplit(' ').next().unwrap().to_string();
    for want in [
        "ro",
        "nosuid",
        "nodev",
        "noexec",
        "noatime",
        "nodiratime",
        "nosymfollow",
    ] {
        assert!(mnt(&f1).split(',').any(|o| o == want), "{want}: {f1}");
    }
    for want in ["sync", "dirsync", "lazytime", "mode=700"] {
        assert!(sb(&f1).split(',').any(|o| o == want), "{want}: {f1}");
    }
    assert!(mnt(&f2).starts_with("rw"), "{f2}");
    for unwanted in [
        "nosuid",
        "nodev",
        "noexec",
        "noatime",
        "nodiratime",
        "relatime",
        "nosymfollow",
    ] {
        assert!(
            !mnt(&f2).split(',').any(|o| o == unwanted),
            "{unwanted}: {f2}"
        );
    }
    for unwanted in ["sync", "dirsync", "lazytime"] {
        assert!(
            !sb(&f2).split(',').any(|o| o == unwanted),
            "{unwanted}: {f2}"
        );
    }
    assert!(line("/p1").contains(" shared:"), "{out}");
    assert!(line("/p2").contains(" unbindable "), "{out}");
    let p3 = line("/p3");
    assert!(
        !p3.contains("shared:") && !p3.contains("master:") && !p3.contains("unbindable"),
        "{p3}"
    );
}
