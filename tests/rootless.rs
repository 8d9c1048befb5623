//! bulkhead for an unprivileged user, run as a real user each test makes
//! (tests/common/user.rs): the OCI runtime on a busybox bundle from
//! `bulkhead spec --rootless` (state in the user's XDG_RUNTIME_DIR, no
//! cgroup unless one is delegated, multi-id maps through newuidmap), and
//! `bulkhead sandbox` in a user namespace of its own. Rootless podman is in
//! tests/engines.rs.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::user::User;
use common::*;

fn text(out: &Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `bulkhead ARGS...` as the user: (exit code, stdout, stderr).
fn bh(u: &User, args: &[&str]) -> (i32, String, String) {
    text(&output(&mut u.bulkhead(args)))
}

/// Like [`bh`], asserting success; returns stdout.
#[track_caller]
fn bh_ok(u: &User, args: &[&str]) -> String {
    let (code, out, err) = bh(u, args);
    assert_eq!(code, 0, "bulkhead {args:?} as {}: {err}", u.name);
    out
}

/// A busybox bundle of the user's, its config written by `bulkhead spec
/// --rootless` run as the user, then `edit`ed (not interactive, running `args`).
fn user_bundle(u: &User, args: &[&str], edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = u.home.join(unique("bundle"));
    busybox_rootfs(&dir.join("rootfs"));
    ok(&output(
        Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", u.uid, u.gid))
            .arg(&dir),
    ));
    bh_ok(
        u,
        &["spec", "--rootless", "--bundle", &dir.to_string_lossy()],
    );
    let path = dir.join("config.json");
    let mut c: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        c["linux"]["uidMappings"][0]["hostID"], u.uid,
        "spec --rootless maps the caller"
    );
    c["process"]["terminal"] = false.into();
    c["process"]["args"] = serde_json::json!(args);
    edit(&mut c);
    fs::write(&path, serde_json::to_string_pretty(&c).unwrap()).unwrap();
    dir
}

/// Poll (bounded) until `f` holds; a test that waits never measures time.
#[track_caller]
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn status(u: &User, id: &str) -> String {
    let (code, out, _) = bh(u, &["state", id]);
    if code != 0 {
        return "gone".into();
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["status"].as_str().unwrap().to_string()
}

/// Nothing of the user's is left: no state under its runtime directory and
/// (once the reaper and exiting processes are gone) no process.
#[track_caller]
fn assert_nothing_left(u: &User) {
    assert!(
        u.state_entries().is_empty(),
        "left in {}/bulkhead: {:?}",
        u.run.display(),
        u.state_entries()
    );
    wait_until(&format!("no process of {} left", u.name), || {
        u.processes().is_empty()
    });
}

#[test]
fn runtime_lifecycle_as_a_user() {
    let u = User::new("oci");
    let script = "trap 'exit 3' TERM; while :; do sleep 0.1; done";
    let b = user_bundle(&u, &["sh", "-c", script], |_| {});
    let bundle = b.to_string_lossy().into_owned();
    // No --root: the state lives in the user's XDG_RUNTIME_DIR.
    bh_ok(&u, &["run", "--detach", "--bundle", &bundle, "c1"]);
    assert!(u.run.join("bulkhead/c1/state.json").exists());
    assert_eq!(status(&u, "c1"), "running");
    let list = bh_ok(&u, &["list"]);
    let row = list.lines().find(|l| l.starts_with("c1 ")).unwrap();
    assert!(row.ends_with(&u.name), "OWNER is the user: {row}");
    // exec joins the container's user namespace (the caller is its root).
    let out = bh_ok(
        &u,
        &[
            "exec",
            "c1",
            "sh",
            "-c",
            "id; cat /proc/self/uid_map; cat /proc/1/cmdline",
        ],
    );
    assert!(out.starts_with("uid=0(root) gid=0(root)"), "{out}");
    let map: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(map, ["0", &u.uid.to_string(), "1"], "{out}");
    assert!(
        out.contains("while :"),
        "exec is in the init's pid namespace: {out}"
    );
    // No cgroup hierarchy is writable by the user here: no freezer.
    let (code, _, err) = bh(&u, &["pause", "c1"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no cgroup") && err.contains("unprivileged"),
        "{err}"
    );
    bh_ok(&u, &["kill", "c1", "TERM"]);
    wait_until("c1 stopped", || status(&u, "c1") == "stopped");
    bh_ok(&u, &["delete", "c1"]);
    assert_eq!(status(&u, "c1"), "gone");
    // A foreground run passes the exit code through.
    let b2 = user_bundle(&u, &["sh", "-c", "echo hello; exit 7"], |_| {});
    let (code, out, err) = bh(&u, &["run", "--bundle", &b2.to_string_lossy(), "c2"]);
    assert_eq!((code, out.as_str()), (7, "hello\n"), "{err}");
    assert_nothing_left(&u);
    // Without XDG_RUNTIME_DIR (and no /run/user/UID): /tmp/bulkhead-UID, the user's alone.
    let fallback = PathBuf::from(format!("/tmp/bulkhead-{}", u.uid));
    let out = output(u.bulkhead(&["list", "-q"]).env_remove("XDG_RUNTIME_DIR"));
    let meta = fs::metadata(&fallback);
    let _ = fs::remove_dir_all(&fallback);
    ok(&out);
    let meta = meta.unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.uid(), meta.mode() & 0o777), (u.uid, 0o700));
}

#[test]
fn runtime_kill_all_reaches_every_process_without_a_cgroup() {
    let u = User::new("kill");
    // pid 1 ignores TERM (no handler); its child does not.
    let b = user_bundle(&u, &["sh", "-c", "sleep 1000 & exec sleep 1001"], |_| {});
    bh_ok(&u, &["run", "-d", "--bundle", &b.to_string_lossy(), "k1"]);
    let count = |arg: &str| {
        u.processes()
            .iter()
            .filter(|p| {
                fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.split('\0').any(|a| a == arg))
            })
            .count()
    };
    wait_until("both sleeps run", || {
        count("1000") == 1 && count("1001") == 1
    });
    bh_ok(&u, &["kill", "--all", "k1", "TERM"]);
    wait_until("the child sleep got TERM", || count("1000") == 0);
    assert_eq!(count("1001"), 1, "pid 1 ignores TERM");
    bh_ok(&u, &["kill", "--all", "k1", "KILL"]);
    wait_until("k1 stopped", || status(&u, "k1") == "stopped");
    bh_ok(&u, &["delete", "k1"]);
    assert_nothing_left(&u);
}

#[test]
fn runtime_pause_in_a_delegated_cgroup() {
    let mut u = User::new("deleg");
    let Some(dir) = u.delegate_cgroup() else {
        eprintln!("skipped: no cgroup2 hierarchy is mounted, so none can be delegated");
        return;
    };
    let b = user_bundle(&u, &["sleep", "1000"], |_| {});
    bh_ok(&u, &["run", "-d", "--bundle", &b.to_string_lossy(), "p1"]);
    // The container's cgroup is made in the delegated subtree (the runtime's own
    // cgroup there); the v1 hierarchies are left out.
    let cg = dir.join("p1");
    assert!(cg.is_dir(), "{} was not made", cg.display());
    let pid = status_pid(&u, "p1");
    let procs = fs::read_to_string(cg.join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|l| l == pid.to_string()), "{procs}");
    bh_ok(&u, &["pause", "p1"]);
    assert_eq!(status(&u, "p1"), "paused");
    assert_eq!(fs::read_to_string(cg.join("cgroup.freeze")).unwrap(), "1\n");
    bh_ok(&u, &["resume", "p1"]);
    assert_eq!(status(&u, "p1"), "running");
    let ps = bh_ok(&u, &["ps", "--format", "json", "p1"]);
    assert!(ps.contains(&pid.to_string()), "{ps}");
    bh_ok(&u, &["kill", "--all", "p1", "KILL"]);
    wait_until("p1 stopped", || status(&u, "p1") == "stopped");
    bh_ok(&u, &["delete", "p1"]);
    assert!(!cg.exists(), "delete removes the container's cgroup");
    assert_nothing_left(&u);
}

/// No device node and no sysfs can be made without privilege over the host's
/// namespaces: devices are the host's, bound; sysfs is fresh only with a
/// network namespace of the container's own, else the host's, read-only.
#[test]
fn runtime_binds_devices_and_sysfs() {
    let u = User::new("devsys");
    let script = "ls -ln /dev/null; ls /sys/class/net; touch /sys/x 2>&1; true";
    let host_nets = {
        let mut v: Vec<String> = fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    for own_net in [true, false] {
        let b = user_bundle(&u, &["sh", "-c", script], |c| {
            if !own_net {
                let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
                ns.retain(|n| n["type"] != "network");
            }
        });
        let (code, out, err) = bh(&u, &["run", "--bundle", &b.to_string_lossy(), "d1"]);
        assert_eq!(code, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        // The host's /dev/null, owned by a host root the namespace does not map.
        let null: Vec<&str> = lines[0].split_whitespace().collect();
        assert!(null[0].starts_with('c'), "{out}");
        assert_eq!(&null[2..6], ["65534", "65534", "1,", "3"], "{out}");
        let nets: Vec<&str> = lines[1..lines.len() - 1].to_vec();
        if own_net {
            assert_eq!(nets, ["lo"], "a fresh sysfs: {out}");
        } else {
            assert_eq!(nets, host_nets, "the host's /sys: {out}");
        }
        assert!(lines.last().unwrap().contains("Read-only"), "{out}");
    }
    assert_nothing_left(&u);
}

fn status_pid(u: &User, id: &str) -> i64 {
    let v: serde_json::Value = serde_json::from_str(&bh_ok(u, &["state", id])).unwrap();
    v["pid"].as_i64().unwrap()
}

#[test]
fn runtime_refuses_what_a_user_cannot_have() {
    let u = User::new("refuse");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 4] = [
        (
            "a pids limit",
            |c| c["linux"]["resources"] = serde_json::json!({"pids": {"limit": 10}}),
            "linux.resources.pids: cannot be applied: the pids cgroup hierarchy is not writable by this unprivileged runtime",
        ),
        (
            "a hard rlimit above the user's",
            |c| {
                c["process"]["rlimits"] =
                    serde_json::json!([{"type": "RLIMIT_NOFILE", "hard": 1u64 << 40, "soft": 1024}])
            },
            "hard limit 1099511627776 is above the runtime's own hard limit",
        ),
        (
            "a lower oomScoreAdj",
            |c| c["process"]["oomScoreAdj"] = (-500).into(),
            "process.oomScoreAdj -500: below the runtime's own value",
        ),
        (
            "supplementary groups",
            |c| c["process"]["user"]["additionalGids"] = serde_json::json!([5]),
            "setgroups is denied in this user namespace",
        ),
    ];
    for (what, edit, want) in cases {
        let b = user_bundle(&u, &["true"], edit);
        let (code, _, err) = bh(&u, &["run", "--bundle", &b.to_string_lossy(), "r1"]);
        assert_ne!(code, 0, "{what}: accepted");
        assert_eq!(err.lines().count(), 1, "{what}: not one line: {err}");
        assert!(err.contains(want), "{what}: want {want:?} in {err}");
        assert_nothing_left(&u);
    }
    // Raising oom_score_adj needs no privilege.
    let b = user_bundle(&u, &["cat", "/proc/self/oom_score_adj"], |c| {
        c["process"]["oomScoreAdj"] = 500.into()
    });
    let (code, out, err) = bh(&u, &["run", "--bundle", &b.to_string_lossy(), "r2"]);
    assert_eq!((code, out.as_str()), (0, "500\n"), "{err}");
    assert_nothing_left(&u);
}

/// The user's first subordinate range in `file`: (start, count).
fn sub_range(file: &str, name: &str) -> (u64, u64) {
    let text = fs::read_to_string(file).unwrap();
    let l = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} has no range in {file}"));
    let f: Vec<&str> = l.split(':').collect();
    (f[1].parse().unwrap(), f[2].parse().unwrap())
}

#[test]
fn runtime_maps_subordinate_ids_through_newuidmap() {
    let u = User::new("subid");
    let (su, _) = sub_range("/etc/subuid", &u.name);
    let (sg, _) = sub_range("/etc/subgid", &u.name);
    let maps = |own: u32, sub: u64| {
        serde_json::json!([
            {"containerID": 0, "hostID": own, "size": 1},
            {"containerID": 1, "hostID": sub, "size": 65536},
        ])
    };
    let script = "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; id -u; id -G";
    let b = user_bundle(&u, &["sh", "-c", script], |c| {
        c["linux"]["uidMappings"] = maps(u.uid, su);
        c["linux"]["gidMappings"] = maps(u.gid, sg);
        c["process"]["user"] =
            serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [100]});
    });
    let (code, out, err) = bh(&u, &["run", "--bundle", &b.to_string_lossy(), "m1"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (us, gs) = (su.to_string(), sg.to_string());
    assert_eq!(lines[1], ["1", us.as_str(), "65536"], "{out}");
    assert_eq!(lines[3], ["1", gs.as_str(), "65536"], "{out}");
    // newgidmap leaves setgroups allowed: supplementary groups work.
    assert_eq!(lines[4], ["allow"], "{out}");
    assert_eq!(
        lines[5],
        ["1000"],
        "a subordinate uid runs the process: {out}"
    );
    assert_eq!(lines[6], ["1000", "100"], "{out}");
    assert_nothing_left(&u);
}

/// `sandbox ARGS...` as the user (-T: plain streams).
fn sandbox(u: &User, args: &[&str]) -> (i32, String, String) {
    let mut a = vec!["sandbox", "-T"];
    a.extend_from_slice(args);
    bh(u, &a)
}

#[test]
fn sandbox_runs_a_command_as_the_user() {
    let u = User::new("sbid");
    let (code, out, err) = sandbox(&u, &["--", "id"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("uid={}({}) gid={}", u.uid, u.name, u.gid)),
        "{out}"
    );
    assert_nothing_left(&u);
    let (code, out, err) = sandbox(
        &u,
        &[
            "--map-root",
            "--",
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "0", "{out}");
    let map: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(map, ["0", &u.uid.to_string(), "1"]);
    let (code, _, _) = sandbox(&u, &["--", "sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    // Only the one id exists in the sandbox's user namespace.
    let (code, _, err) = sandbox(&u, &["--user", "0", "--", "true"]);
    assert_eq!(code, 125);
    assert!(err.contains("--user 0: uid 0 does not exist"), "{err}");
    assert_nothing_left(&u);
}

#[test]
fn sandbox_writes_only_to_its_tmpfs() {
    let u = User::new("sbro");
    let mine = u.home.join("written-by-the-sandbox");
    let script = format!(
        "touch {m} 2>&1; echo private > /tmp/f && cat /tmp/f",
        m = mine.display()
    );
    let (code, out, err) = sandbox(&u, &["--", "sh", "-c", &script]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(out.ends_with("private\n"), "{out}");
    assert!(!mine.exists(), "the sandbox wrote to the user's home");
    // The same write outside the sandbox works: the user owns that home.
    ok(&output(u.cmd("touch").arg(&mine)));
    assert!(mine.exists());
    assert_nothing_left(&u);
}

#[test]
fn sandbox_network_is_isolated() {
    let u = User::new("sbnet");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!("echo hi > /dev/tcp/127.0.0.1/{port}");
    let (code, out, err) = sandbox(
        &u,
        &[
            "--",
            "bash",
            "-c",
            &format!("ls /sys/class/net; cat /sys/class/net/lo/flags; {connect}"),
        ],
    );
    assert_ne!(
        code, 0,
        "the host's port was reached from --net none: {out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "lo", "only loopback: {out}");
    let flags = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up: {out}");
    assert!(err.contains("Connection refused"), "{err}");
    assert!(listener.accept().is_err(), "a connection arrived");
    // With the host's network the same command gets through: the check can fail.
    let (code, _, err) = sandbox(&u, &["--net", "host", "--", "bash", "-c", &connect]);
    assert_eq!(code, 0, "{err}");
    listener.set_nonblocking(false).unwrap();
    let (mut conn, _) = listener.accept().unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hi\n");
    assert_nothing_left(&u);
}

#[test]
fn sandbox_inspect_shows_the_user_namespace() {
    let u = User::new("sbins");
    let bin = u.bin.to_string_lossy().into_owned();
    let (code, out, err) = sandbox(&u, &["--", &bin, "inspect", "--self", "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let user_ns = v["namespaces"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "user")
        .unwrap();
    assert_eq!(user_ns["share"], "private", "{user_ns}");
    assert_eq!(v["ids"]["status"], "mapped", "{}", v["ids"]);
    assert_eq!(v["ids"]["in_force"], true);
    assert_eq!(v["ids"]["uid_map"][0]["outside"], u.uid);
    for layer in [
        "namespaces",
        "seccomp",
        "no_new_privs",
        "capabilities",
        "root",
    ] {
        assert_eq!(v[layer]["in_force"], true, "{layer}: {}", v[layer]);
    }
    assert_nothing_left(&u);
}

#[test]
fn sandbox_limits_need_a_delegated_cgroup() {
    let u = User::new("sblim");
    for (flag, value) in [("--memory", "64m"), ("--pids", "10"), ("--cpus", "0.5")] {
        let (code, _, err) = sandbox(&u, &[flag, value, "--", "true"]);
        assert_eq!(code, 125, "{flag}: {err}");
        assert!(
            err.contains(&format!("{flag}: cannot be applied"))
                && err.contains("not writable by this unprivileged runtime"),
            "{flag}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
        assert_nothing_left(&u);
    }
}

#[test]
fn a_killed_sandbox_is_cleaned_up_by_its_reaper() {
    let u = User::new("sbkill");
    let mut child = u
        .bulkhead(&["sandbox", "-T", "--name", "victim", "--", "sleep", "600"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the sandbox runs", || status(&u, "victim") == "running");
    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("the reaper removed everything", || {
        u.state_entries().is_empty() && u.processes().is_empty()
    });
}

#[test]
fn sandbox_gets_a_terminal() {
    let u = User::new("sbtty");
    let mut term = common::pty::Term::open(24, 80);
    let mut cmd = u.bulkhead(&["sandbox", "--", "sh", "-c", "tty; stty size; exit 3"]);
    let mut child = term.spawn(&mut cmd);
    term.expect("/dev/pts/");
    term.expect("24 80");
    assert_eq!(common::pty::exit_code(&mut child), 3);
    assert_nothing_left(&u);
}
