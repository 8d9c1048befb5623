//! Namespaces: every type created new, and joined by path.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;

fn host_ns(t: &str) -> u64 {
    fs::metadata(format!("/proc/self/ns/{t}")).unwrap().ino()
}

#[test]
fn new_namespaces_are_private() {
    let out = sh_ok(
        "ns",
        "echo pid=$$; for t in net mnt ipc uts cgroup pid; do echo $t=$(stat -L -c %i /proc/self/ns/$t); done; \
         ip link | grep -c '^[0-9]'; cat /sys/class/net/lo/flags; cat /proc/self/cgroup | head -1",
        |_| {},
    );
    assert!(out.contains("pid=1\n"), "{out}");
    for t in ["net", "mnt", "ipc", "uts", "cgroup", "pid"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{t}=")))
            .unwrap();
        let inside: u64 = line[t.len() + 1..].parse().unwrap();
        assert_ne!(inside, host_ns(t), "{t} namespace is the host's");
    }
    // Only loopback in a new network namespace, brought up (as runc does).
    assert!(out.lines().any(|l| l == "1"), "{out}");
    let flags = out.lines().find(|l| l.starts_with("0x")).unwrap();
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is down: {out}");
    // A cgroup namespace rooted at the container's cgroup.
    assert!(out.trim_end().ends_with(":/"), "{out}");
}

#[test]
fn uts_hostname_and_domainname() {
    let out = sh_ok("uts", "hostname; cat /proc/sys/kernel/domainname", |b| {
        b.config["hostname"] = "box1".into();
        b.config["domainname"] = "example.test".into();
    });
    assert_eq!(out, "box1\nexample.test\n");
}

#[test]
fn user_namespace_with_mappings() {
    let out = sh_ok(
        "user",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/f && stat -c %u /tmp/f",
        |b| {
            b.add_namespace("user", None);
            let m = serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            b.config["linux"]["uidMappings"] = m.clone();
            b.config["linux"]["gidMappings"] = m;
            // Writable scratch space owned by the container's root.
            b.config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]}));
            // The device cgroup cannot be set up from inside, and sysfs of the host's
            // net namespace... we keep the network namespace, so sysfs mounts fine.
        },
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"]
    );
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "200000", "65536"]
    );
    assert_eq!(lines[2], "0");
    assert_eq!(lines[3], "0");
}

fn host_uptime() -> f64 {
    fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn time_namespace_offsets_with_a_new_user_namespace() {
    // The time namespace then belongs to the container's user namespace, whose
    // root is host uid 200000: the offsets must still be written before the
    // init enters it, by a process privileged over that user namespace.
    let before = host_uptime();
    let out = sh_ok(
        "timeuser",
        "cat /proc/uptime; cat /proc/self/timens_offsets; id -u",
        |b| {
            b.add_namespace("user", None);
            b.add_namespace("time", None);
            let m = serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            b.config["linux"]["uidMappings"] = m.clone();
            b.config["linux"]["gidMappings"] = m;
            b.config["linux"]["timeOffsets"] =
                serde_json::json!({"boottime": {"secs": 864000, "nanosecs": 5}});
        },
    );
    let after = host_uptime();
    let uptime: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    // Bounded by the host's uptime read before and after, plus the offset.
    assert!(
        uptime >= before + 864000.0 - 0.01 && uptime <= after + 864000.0 + 0.01,
        "uptime {uptime}, host {before}..{after}"
    );
    assert!(out.contains("boottime") && out.contains("864000"), "{out}");
    assert_eq!(out.lines().last(), Some("0"), "{out}");
}

#[test]
fn time_namespace_offsets() {
    let out = sh_ok(
        "time",
        "cat /proc/uptime; cat /proc/self/timens_offsets",
        |b| {
            b.add_namespace("time", None);
            b.config["linux"]["timeOffsets"] =
                serde_json::json!({"boottime": {"secs": 86400}, "monotonic": {"secs": 3600}});
        },
    );
    let uptime: f64 = out.split_whitespace().next().unwrap().parse().unwrap();
    let host = host_uptime();
    assert!(uptime > host + 86000.0, "uptime {uptime} vs host {host}");
    assert!(out.contains("monotonic") && out.contains("3600"), "{out}");
}

#[test]
fn join_namespaces_by_path() {
    // A first container holds a network and an IPC namespace; a second joins them.
    let rt = Rt::new();
    let b1 = Bundle::new("holder", &["sleep", "60"]);
    let holder = unique("holder");
    ok(&rt.create(&holder, &b1));
    ok(&rt.run(&["start", &holder]));
    let pid = rt.state(&holder)["pid"].as_i64().unwrap();
    let net = fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino();
    let uts = fs::metadata(format!("/proc/{pid}/ns/uts")).unwrap().ino();

    let mut b2 = Bundle::new(
        "joiner",
        &[
            "sh",
            "-c",
            "stat -L -c %i /proc/self/ns/net /proc/self/ns/uts; hostname",
        ],
    );
    b2.add_namespace("network", Some(&format!("/proc/{pid}/ns/net")));
    b2.add_namespace("uts", Some(&format!("/proc/{pid}/ns/uts")));
    let (code, out, err) = rt.run_container(&unique("joiner"), &b2);
    assert_eq!(code, 0, "{err}");
    let inos: Vec<u64> = out.lines().take(2).map(|l| l.parse().unwrap()).collect();
    assert_eq!(inos, vec![net, uts]);
    // The joined UTS namespace carries the first container's hostname.
    assert_eq!(out.lines().nth(2), Some("bulkhead"));
}

#[test]
fn join_a_pid_namespace() {
    let rt = Rt::new();
    let b1 = Bundle::new("pidholder", &["sleep", "60"]);
    let holder = unique("pidholder");
    ok(&rt.create(&holder, &b1));
    ok(&rt.run(&["start", &holder]));
    let pid = rt.state(&holder)["pid"].as_i64().unwrap();
    let mut b2 = Bundle::new("pidjoin", &["sh", "-c", "ps -o pid,comm | grep -c sleep"]);
    b2.add_namespace("pid", Some(&format!("/proc/{pid}/ns/pid")));
    let (code, out, err) = rt.run_container(&unique("pidjoin"), &b2);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1", "the joiner sees the holder's sleep");
}

#[test]
fn a_path_of_the_wrong_type_is_an_error() {
    let rt = Rt::new();
    let mut b = Bundle::new("wrongns", &["true"]);
    b.add_namespace("ipc", Some("/proc/self/ns/net"));
    let id = unique("wrongns");
    let e = fails(&rt.create(&id, &b));
    assert!(e.contains("is not a ipc namespace"), "{e}");
    assert!(!rt.root.join(&id).exists());
}

#[test]
fn new_user_namespace_with_a_joined_namespace_double_forks() {
    // Joining a namespace owned by the host's user namespace and creating a
    // user namespace: the join must happen first, then the init is forked
    // into the new pid namespace (the runtime's slow path).
    let rt = Rt::new();
    let b1 = Bundle::new("netholder", &["sleep", "60"]);
    let holder = unique("netholder");
    ok(&rt.create(&holder, &b1));
    let pid = rt.state(&holder)["pid"].as_i64().unwrap();
    let net = fs::metadata(format!("/proc/{pid}/ns/net")).unwrap().ino();
    let mut b = Bundle::new(
        "dfork",
        &["sh", "-c", "echo $$; stat -L -c %i /proc/self/ns/net; cat /proc/self/uid_map; cat /sys/fs/cgroup/pids/cgroup.procs | wc -l"],
    );
    b.add_namespace("user", None);
    b.add_namespace("network", Some(&format!("/proc/{pid}/ns/net")));
    let m = serde_json::json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    b.config["linux"]["uidMappings"] = m.clone();
    b.config["linux"]["gidMappings"] = m;
    b.save();
    let (code, out, err) = rt.run_container(&unique("dfork"), &b);
    assert_eq!(code, 0, "{err}");
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0], "1", "{out}");
    assert_eq!(l[1].parse::<u64>().unwrap(), net);
    assert_eq!(
        l[2].split_whitespace().collect::<Vec<_>>(),
        ["0", "300000", "65536"]
    );
    // The init (and what it runs) is in the container's cgroup.
    assert!(l[3].trim().parse::<u32>().unwrap() >= 1, "{out}");
}
