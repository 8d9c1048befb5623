//! Bad input: each case must give a one-line error naming the problem, exit
//! non-zero, and leave nothing behind (state directory, cgroup, process).

mod common;

use std::fs;
use std::os::unix::process::CommandExt;

use common::*;
use serde_json::json;

/// Live processes with `needle` as one whole argument (a container ID: another test's ID
/// that merely starts with it does not count).
fn processes_mentioning(needle: &str) -> Vec<String> {
    live_cmdlines()
        .into_iter()
        .filter(|(_, args)| args.iter().any(|a| a == needle))
        .map(|(pid, args)| format!("{pid}: {}", args.join(" ")))
        .collect()
}

#[test]
fn the_leftover_process_check_sees_a_whole_argument_only() {
    let id = unique("procscan");
    // `sh -c CMD NAME`: NAME is the shell's $0, one whole argument of its command line (the
    // shell stays: its last command is a builtin, so it does not exec `sleep` in its place).
    let mut child = std::process::Command::new("sh")
        .args(["-c", "sleep 30; exit 0", &id])
        .process_group(0)
        .spawn()
        .unwrap();
    // The shell's command line is readable only once its exec has set it up, which may be
    // after `spawn` returns (the parent resumes as the new program is loaded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut found = processes_mentioning(&id);
    while found.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
        found = processes_mentioning(&id);
    }
    let prefix = processes_mentioning(&id[..id.len() - 1]);
    // The whole group: the shell and its `sleep`.
    // SAFETY: kill(2) of the process group this test just created.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    // The shell, and for a moment its child before that execs `sleep`.
    assert!(!found.is_empty(), "the process was not found");
    assert!(prefix.is_empty(), "{prefix:?}");
}

/// Run `create` with a config edited by `edit` (or raw text) and check the
/// error and the absence of leftovers.
fn expect_clean_failure(name: &str, id: &str, setup: impl FnOnce(&mut Bundle), want: &[&str]) {
    let rt = Rt::new();
    let mut b = Bundle::new(name, &["sleep", "60"]);
    setup(&mut b);
    let out = rt.create(id, &b);
    let e = fails(&out);
    assert_eq!(e.trim_end().lines().count(), 1, "{name}: not one line: {e}");
    for w in want {
        assert!(e.contains(w), "{name}: {w:?} missing in: {e}");
    }
    if !id.is_empty() && !id.contains('/') && !id.contains("..") {
        assert!(
            !rt.root.join(id).exists(),
            "{name}: state directory left behind"
        );
        assert!(
            cgroup_dirs_named(id).is_empty(),
            "{name}: cgroup left behind"
        );
        assert!(
            processes_mentioning(id).is_empty(),
            "{name}: process left behind: {:?}",
            processes_mentioning(id)
        );
    }
    // The state root holds nothing else either.
    if let Ok(rd) = fs::read_dir(&rt.root) {
        assert_eq!(
            rd.count(),
            0,
            "{name}: something was left in the state root"
        );
    }
}

#[test]
fn malformed_json() {
    expect_clean_failure(
        "json",
        &unique("json"),
        |b| {
            fs::write(
                b.dir.join("config.json"),
                "{\"ociVersion\": \"1.0.0\", \"process\": ",
            )
            .unwrap();
        },
        &["config.json", "EOF while parsing"],
    );
}

#[test]
fn wrong_types() {
    expect_clean_failure(
        "types",
        &unique("types"),
        |b| {
            b.config["process"]["user"]["uid"] = "root".into();
            b.save();
        },
        &["process.user.uid", "invalid type"],
    );
    expect_clean_failure(
        "types2",
        &unique("types2"),
        |b| {
            b.config["mounts"] = json!({"not": "an array"});
            b.save();
        },
        &["mounts", "invalid type"],
    );
}

#[test]
fn unknown_namespace_type() {
    expect_clean_failure(
        "nstype",
        &unique("nstype"),
        |b| {
            b.config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "bogus"}));
            b.save();
        },
        &["linux.namespaces[6].type", "unknown variant `bogus`"],
    );
}

#[test]
fn missing_rootfs() {
    expect_clean_failure(
        "norootfs",
        &unique("norootfs"),
        |b| {
            b.config["root"]["path"] = "no-such-rootfs".into();
            b.save();
        },
        &["root.path", "no-such-rootfs", "No such file"],
    );
}

#[test]
fn mount_destination_with_dotdot() {
    expect_clean_failure(
        "dotdotdest",
        &unique("dotdotdest"),
        |b| {
            b.config["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/tmp/../../etc", "type": "tmpfs", "source": "tmpfs"}));
            b.save();
        },
        &["mounts[7].destination", "contains '..'"],
    );
}

#[test]
fn bad_ids() {
    for (id, want) in [
        ("", "must not be empty"),
        ("a/b", "contains '/'"),
        ("..", "must not be '.' or '..'"),
        ("../x", "contains '/'"),
    ] {
        expect_clean_failure("badid", id, |_| {}, &["container ID", want]);
    }
}

#[test]
fn existing_id() {
    let rt = Rt::new();
    let b = Bundle::new("dup", &["sleep", "60"]);
    let id = unique("dup");
    ok(&rt.create(&id, &b));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let e = fails(&rt.create(&id, &b));
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1);
    // The first container is untouched.
    assert_eq!(rt.status(&id), "created");
    assert_eq!(rt.state(&id)["pid"].as_i64().unwrap(), pid);
    assert!(alive(pid));
}

#[test]
fn missing_hook_binary() {
    expect_clean_failure(
        "nohook",
        &unique("nohook"),
        |b| {
            b.config["hooks"] = json!({"createRuntime": [{"path": "/no/such/hook"}]});
            b.save();
        },
        &[
            "hooks.createRuntime[0].path",
            "/no/such/hook",
            "No such file",
        ],
    );
}

#[test]
fn missing_program_fails_create() {
    expect_clean_failure(
        "noprog",
        &unique("noprog"),
        |b| {
            b.config["process"]["args"] = json!(["no-such-program"]);
            b.save();
        },
        &["no-such-program", "executable file not found in $PATH"],
    );
}

#[test]
fn bad_values_deep_in_the_config() {
    expect_clean_failure(
        "badmountopt",
        &unique("badmountopt"),
        |b| {
            b.config["mounts"].as_array_mut().unwrap().push(json!({"destination": "/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=notanumber"]}));
            b.save();
        },
        &["mounts[7]", "/x"],
    );
    expect_clean_failure(
        "badsysctl",
        &unique("badsysctl"),
        |b| {
            b.config["linux"]["sysctl"] = json!({"vm.swappiness": "1"});
            b.save();
        },
        &["linux.sysctl.vm.swappiness", "not a namespaced sysctl"],
    );
    expect_clean_failure(
        "badcgpath",
        &unique("badcgpath"),
        |b| {
            b.config["linux"]["cgroupsPath"] = "/a/../../etc".into();
            b.save();
        },
        &["linux.cgroupsPath"],
    );
    expect_clean_failure(
        "nomountns",
        &unique("nomountns"),
        |b| {
            b.config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "mount");
            b.save();
        },
        &["mount namespace is required"],
    );
    expect_clean_failure(
        "selinux",
        &unique("selinux"),
        |b| {
            b.config["process"]["selinuxLabel"] = "system_u:system_r:container_t:s0".into();
            b.save();
        },
        &["process.selinuxLabel", "SELinux is not enabled"],
    );
}

#[test]
fn missing_bundle_and_console_socket() {
    let rt = Rt::new();
    let id = unique("nobundle");
    let e = fails(&output(rt.cmd().args([
        "create",
        "--bundle",
        "/no/such/bundle",
        &id,
    ])));
    assert!(e.contains("/no/such/bundle"), "{e}");
    let mut b = Bundle::new("tty", &["sh"]);
    b.config["process"]["terminal"] = true.into();
    b.save();
    let e = fails(&rt.create(&id, &b));
    assert!(e.contains("--console-socket is required"), "{e}");
    let e = fails(&output(
        rt.cmd()
            .args(["create", "--console-socket", "/no/such.sock", "--bundle"])
            .arg(&b.dir)
            .arg(&id),
    ));
    assert!(e.contains("console socket /no/such.sock"), "{e}");
    assert!(!rt.root.join(&id).exists());
}
