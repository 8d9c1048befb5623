//! `bulkhead inspect`: the isolation layers of a sandbox, of a container
//! made from a runc-style bundle, of the test process itself, and of a
//! sandbox seen from inside — each checked against /proc by the test.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn inspect_json(rt: &Rt, target: &[&str]) -> Value {
    let mut args = vec!["inspect", "--format", "json"];
    args.extend_from_slice(target);
    let out = ok(&rt.run(&args));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn status_field(pid: i64, name: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn ns_inode(pid: &str, kind: &str) -> u64 {
    let l = fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let s = l.to_string_lossy();
    s[kind.len() + 2..s.len() - 1].parse().unwrap()
}

/// The statuses of the nine layers, by name.
fn layer_statuses(r: &Value) -> Vec<(String, String)> {
    [
        "namespaces",
        "cgroup",
        "seccomp",
        "capabilities",
        "no_new_privs",
        "ids",
        "lsm",
        "root",
        "vm",
    ]
    .iter()
    .map(|l| (l.to_string(), r[l]["status"].as_str().unwrap().to_string()))
    .collect()
}

/// Everything the report says that /proc can confirm about `pid`.
fn check_against_proc(r: &Value, pid: i64) {
    assert_eq!(r["pid"], pid);
    for n in r["namespaces"]["items"].as_array().unwrap() {
        let kind = n["kind"].as_str().unwrap();
        assert_eq!(
            n["inode"].as_u64().unwrap(),
            ns_inode(&pid.to_string(), kind),
            "{kind}"
        );
        let private = n["share"] == "private";
        if let Some(h) = n["host_inode"].as_u64() {
            assert_eq!(private, n["inode"].as_u64().unwrap() != h, "{kind}");
        }
    }
    assert_eq!(
        r["seccomp"]["mode"].as_u64().unwrap().to_string(),
        status_field(pid, "Seccomp")
    );
    assert_eq!(
        r["seccomp"]["filters"].as_u64().unwrap().to_string(),
        status_field(pid, "Seccomp_filters")
    );
    for (set, field) in [
        ("bounding", "CapBnd"),
        ("effective", "CapEff"),
        ("permitted", "CapPrm"),
    ] {
        let mask = r["capabilities"]["sets"][set]["mask"].as_u64().unwrap();
        assert_eq!(format!("{mask:016x}"), status_field(pid, field), "{set}");
        assert_eq!(
            r["capabilities"]["sets"][set]["names"]
                .as_array()
                .unwrap()
                .len() as u32,
            mask.count_ones()
        );
    }
    assert_eq!(
        r["no_new_privs"]["value"].as_bool().unwrap(),
        status_field(pid, "NoNewPrivs") == "1"
    );
    let mounts = fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(r["root"]["mount_count"].as_u64().unwrap() as usize, mounts);
    let root = fs::metadata(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(r["root"]["root"]["ino"].as_u64().unwrap(), root.ino());
    let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(
        r["ids"]["uid_map"].as_array().unwrap().len(),
        uid_map.lines().count()
    );
    let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let paths: Vec<&str> = r["cgroup"]["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["path"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = cg
        .lines()
        .map(|l| l.splitn(3, ':').nth(2).unwrap())
        .collect();
    assert_eq!(paths, want);
    let summary = &r["summary"];
    let in_force = layer_statuses(r)
        .iter()
        .filter(|(l, _)| r[l.as_str()]["in_force"] == true)
        .count();
    assert_eq!(summary["in_force"].as_u64().unwrap() as usize, in_force);
    assert_eq!(summary["total"], 9);
}

/// Does this process have the host's view of every layer? (Where a test
/// harness runs confined, the expectations follow what /proc says.)
fn host_expectations(pid: i64) -> Vec<(String, String)> {
    let init_ns = [
        ("cgroup", 0xEFFF_FFFB_u64),
        ("ipc", 0xEFFF_FFFF),
        ("pid", 0xEFFF_FFFC),
        ("time", 0xEFFF_FFFA),
        ("user", 0xEFFF_FFFD),
        ("uts", 0xEFFF_FFFE),
    ];
    let ns_host = init_ns
        .iter()
        .all(|(k, i)| ns_inode(&pid.to_string(), k) == *i);
    let host_caps = status_field(1, "CapBnd");
    let mut v = vec![
        ("namespaces", if ns_host { "host" } else { "private" }),
        (
            "seccomp",
            if status_field(pid, "Seccomp") == status_field(1, "Seccomp") {
                "host"
            } else {
                "filtered"
            },
        ),
        (
            "capabilities",
            if status_field(pid, "CapBnd") == host_caps {
                "host"
            } else {
                "reduced"
            },
        ),
        (
            "no_new_privs",
            if status_field(pid, "NoNewPrivs") == "0" {
                "host"
            } else {
                "set"
            },
        ),
        (
            "ids",
            if fs::read_to_string(format!("/proc/{pid}/uid_map"))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                == ["0", "0", "4294967295"]
            {
                "host"
            } else {
                "mapped"
            },
        ),
        ("lsm", "host"),
        ("root", "host"),
        ("vm", "host"),
    ];
    v.insert(1, ("cgroup", "host"));
    v.into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn the_test_process_itself_is_host_in_every_layer() {
    let rt = Rt::new();
    let me = std::process::id() as i64;
    let r = inspect_json(&rt, &["--pid", &me.to_string()]);
    check_against_proc(&r, me);
    let want = host_expectations(me);
    if want.iter().any(|(_, s)| s != "host") {
        eprintln!("note: this test process is itself confined ({want:?}); checking that instead");
    }
    // The cgroup layer: the test process may sit in a cgroup with limits.
    let mut got = layer_statuses(&r);
    if r["cgroup"]["in_force"] == true {
        eprintln!(
            "note: the test process runs under cgroup limits: {}",
            r["cgroup"]["limits"]
        );
        got[1].1 = "host".into();
    }
    assert_eq!(got, want, "{r}");
    // The reference is pid 1, read from the initial pid namespace.
    assert_eq!(r["reference"]["pid"], 1);
    // --self reports on the bulkhead process: a child of this one, alike.
    let s = inspect_json(&rt, &["--self"]);
    assert_ne!(s["pid"], me);
    assert_eq!(s["comm"], "bulkhead");
    let mut got = layer_statuses(&s);
    if s["cgroup"]["in_force"] == true {
        got[1].1 = "host".into();
    }
    assert_eq!(got, want);
    // The table says the same in words.
    let table = ok(&rt.run(&["inspect", "--pid", &me.to_string()]));
    assert!(table.contains("LAYER"), "{table}");
    if want.iter().all(|(_, s)| s == "host") && r["cgroup"]["in_force"] == false {
        assert!(
            table.contains("\nsummary: 0 of 9 layers in force\n"),
            "{table}"
        );
    }
}

#[test]
fn a_sandbox_seen_from_the_host() {
    let rt = Rt::new();
    let id = unique("insp-sb");
    rt.track(&id);
    let mut child = rt
        .cmd()
        .args(["sandbox", "--name", &id, "--memory", "64m", "--pids", "32"])
        .args(["--cpus", "0.5", "--", "sleep", "60"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut pid = 0;
    for _ in 0..1000 {
        let out = rt.run(&["state", &id]);
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["status"] == "running" {
                pid = v["pid"].as_i64().unwrap();
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pid > 0, "the sandbox never ran");
    let r = inspect_json(&rt, &[&id]);
    check_against_proc(&r, pid);
    assert_eq!(r["container"]["id"], id.as_str());
    assert_eq!(r["container"]["status"], "running");
    let share = |k: &str| {
        r["namespaces"]["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == k)
            .unwrap()["share"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for k in ["cgroup", "ipc", "mnt", "net", "pid", "uts"] {
        assert_eq!(share(k), "private", "{k}");
    }
    for k in ["user", "time"] {
        assert_eq!(share(k), "host", "{k}");
    }
    assert_eq!(r["cgroup"]["status"], "limited");
    assert_eq!(
        r["cgroup"]["limits"]["memory"]["value"].as_f64(),
        Some(64.0 * 1024.0 * 1024.0)
    );
    assert_eq!(r["cgroup"]["limits"]["pids"]["value"].as_f64(), Some(32.0));
    assert_eq!(r["cgroup"]["limits"]["cpu"]["value"].as_f64(), Some(0.5));
    // The limit files named are the ones that hold the values.
    let mem_file = r["cgroup"]["limits"]["memory"]["set_by"].as_str().unwrap();
    let v: u64 = fs::read_to_string(mem_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(v, 64 << 20);
    assert!(mem_file.contains(&id), "{mem_file}");
    assert_eq!(r["seccomp"]["status"], "filtered");
    assert_eq!(r["capabilities"]["status"], "reduced");
    // The sandbox's set: docker's 14 without NET_RAW.
    assert_eq!(
        r["capabilities"]["sets"]["bounding"]["mask"].as_u64(),
        Some(0xa80405fb)
    );
    assert!(r["capabilities"]["dropped"]
        .as_array()
        .unwrap()
        .contains(&"CAP_SYS_ADMIN".into()));
    assert_eq!(r["no_new_privs"]["status"], "set");
    assert_eq!(r["ids"]["status"], "host");
    // The host's root filesystem, through another mount, read-only.
    assert_eq!(r["root"]["status"], "host root ro");
    let host_root = fs::metadata("/").unwrap();
    assert_eq!(r["root"]["root"]["ino"].as_u64(), Some(host_root.ino()));
    assert_eq!(r["root"]["root_mount"]["read_only"], true);
    assert_ne!(
        r["root"]["root"]["mnt_id"],
        r["root"]["host_root"]["mnt_id"]
    );
    assert_eq!(r["vm"]["in_force"], false);
    let layers: Vec<&str> = r["summary"]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let want = vec![
        "namespaces",
        "cgroup",
        "seccomp",
        "capabilities",
        "no_new_privs",
        "root",
    ];
    assert_eq!(layers, want);
    let table = ok(&rt.run(&["inspect", &id]));
    assert!(
        table.contains(&format!("summary: {} of 9 layers in force: ", want.len())),
        "{table}"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(child.wait().unwrap().code(), Some(130));
}

#[test]
fn a_bundle_container_seen_from_the_host() {
    let rt = Rt::new();
    let b = Bundle::new("insp", &["sleep", "60"]);
    let id = unique("insp-bundle");
    ok(&rt.create(&id, &b));
    // Created: the init waits before execve; its namespaces and root are in
    // place, its privileges not yet dropped.
    let r = inspect_json(&rt, &[&id]);
    assert_eq!(r["container"]["status"], "created");
    assert_eq!(r["namespaces"]["private"], 6);
    ok(&rt.run(&["start", &id]));
    rt.wait_status(&id, "running");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let r = inspect_json(&rt, &[&id]);
    check_against_proc(&r, pid);
    assert_eq!(r["comm"], "sleep");
    assert_eq!(r["namespaces"]["private"], 6);
    assert_eq!(r["namespaces"]["status"], "private");
    // The default spec sets no limits, and bulkhead's seccomp profile.
    assert_eq!(r["cgroup"]["status"], "host");
    assert!(r["cgroup"]["cgroups"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["path"].as_str().unwrap().ends_with(&id)));
    assert_eq!(r["seccomp"]["status"], "filtered");
    assert_eq!(r["capabilities"]["status"], "reduced");
    assert_eq!(r["no_new_privs"]["status"], "set");
    // Its own root: the bundle's rootfs, read-only (root.readonly).
    assert_eq!(r["root"]["status"], "own root");
    let rootfs = fs::metadata(b.rootfs()).unwrap();
    assert_eq!(r["root"]["root"]["ino"].as_u64(), Some(rootfs.ino()));
    assert_eq!(r["root"]["root_mount"]["read_only"], true);
    assert_eq!(
        r["summary"]["layers"],
        serde_json::json!([
            "namespaces",
            "seccomp",
            "capabilities",
            "no_new_privs",
            "root"
        ])
    );
    // --pid gives the same report, without the container part.
    let p = inspect_json(&rt, &["--pid", &pid.to_string()]);
    assert!(p.get("container").is_none());
    assert_eq!(p["summary"], r["summary"]);
    ok(&rt.run(&["delete", "--force", &id]));
}

#[test]
fn a_container_in_a_user_namespace_is_mapped() {
    let rt = Rt::new();
    let mut b = Bundle::new("insp-userns", &["sleep", "60"]);
    b.add_namespace("user", None);
    let m = serde_json::json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    b.config["linux"]["uidMappings"] = m.clone();
    b.config["linux"]["gidMappings"] = m;
    b.save();
    let id = unique("insp-userns");
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    rt.wait_status(&id, "running");
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let r = inspect_json(&rt, &[&id]);
    check_against_proc(&r, pid);
    assert_eq!(r["namespaces"]["private"], 7);
    assert_eq!(r["ids"]["status"], "mapped");
    assert_eq!(
        r["ids"]["uid_map"],
        serde_json::json!([{"inside": 0, "outside": 200000, "count": 65536}])
    );
    // The process's ids as the host sees them.
    assert_eq!(r["ids"]["uids"][0], 200000);
    assert!(r["summary"]["layers"]
        .as_array()
        .unwrap()
        .contains(&"user ids".into()));
    ok(&rt.run(&["delete", "--force", &id]));
}

#[test]
fn inspect_self_inside_a_sandbox() {
    let rt = Rt::new();
    // The binary must be reachable inside: the host root is, read-only, but a
    // checkout under /tmp would be hidden by the sandbox's private /tmp.
    let bin_dir = std::path::Path::new(bin())
        .parent()
        .unwrap()
        .display()
        .to_string();
    let bind = format!("{bin_dir}:{bin_dir}:ro");
    let (code, out, err) = {
        let o = output(rt.cmd().args([
            "sandbox",
            "--memory",
            "64m",
            "--bind",
            &bind,
            "--",
            bin(),
            "inspect",
            "--self",
            "--format",
            "json",
        ]));
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(0), "stderr: {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    // pid 1 of its own pid namespace; no host process to compare with.
    assert_eq!(r["pid"], 1);
    assert!(r["reference"]["pid"].is_null());
    let kernel = (
        r["reference"]["kernel"][0].as_u64().unwrap(),
        r["reference"]["kernel"][1].as_u64().unwrap(),
    );
    for n in r["namespaces"]["items"].as_array().unwrap() {
        let kind = n["kind"].as_str().unwrap();
        let want = match kind {
            "user" | "time" => "host",
            // Without fixed numbers for the initial net and mnt namespaces
            // (before 6.18) nothing inside can tell.
            "net" | "mnt" if kernel < (6, 18) => "unknown",
            _ => "private",
        };
        assert_eq!(n["share"], want, "{kind}");
    }
    assert_eq!(r["cgroup"]["status"], "limited");
    assert_eq!(
        r["cgroup"]["limits"]["memory"]["value"].as_f64(),
        Some(64.0 * 1024.0 * 1024.0)
    );
    assert_eq!(r["seccomp"]["status"], "filtered");
    assert_eq!(r["capabilities"]["status"], "reduced");
    assert_eq!(r["no_new_privs"]["status"], "set");
    assert_eq!(r["root"]["status"], "read-only");
    assert_eq!(r["vm"]["in_force"], false);
}

#[test]
fn bad_targets_fail_cleanly() {
    let rt = Rt::new();
    // An ID that does not exist.
    let e = fails(&rt.run(&["inspect", "no-such-container"]));
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("\"no-such-container\" does not exist"), "{e}");
    assert!(!rt.root.join("no-such-container").exists());
    // A pid that is gone.
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let gone = c.id();
    c.wait().unwrap();
    let e = fails(&rt.run(&["inspect", "--pid", &gone.to_string()]));
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains(&format!("pid {gone}: no such process")), "{e}");
    let e = fails(&rt.run(&["inspect", "--pid", "0"]));
    assert!(e.contains("not a process id"), "{e}");
    // A stopped container has no process.
    let b = Bundle::new("insp-stop", &["true"]);
    let id = unique("insp-stop");
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    rt.wait_status(&id, "stopped");
    let e = fails(&rt.run(&["inspect", &id]));
    assert!(e.contains("is stopped"), "{e}");
    ok(&rt.run(&["delete", &id]));
    // No target at all: a usage error.
    let out = rt.run(&["inspect"]);
    assert!(!out.status.success());
}
