//! The lifecycle of runtime.md driven through the CLI: create / start / state /
//! kill / delete / run / list, the state machine's refusals, and locking.

mod common;

use std::fs;
use std::time::Duration;

use common::*;

/// A foreground `run` in the background of the test.
fn spawn_run(rt: &Rt, b: &Bundle, id: &str, stdout: std::process::Stdio) -> std::process::Child {
    rt.track(id);
    rt.cmd()
        .args(["run", "--bundle"])
        .arg(&b.dir)
        .arg(id)
        .stdout(stdout)
        .spawn()
        .unwrap()
}

#[test]
fn run_passes_stdout_and_exit_code() {
    let rt = Rt::new();
    let b = Bundle::new("run", &["sh", "-c", "echo hello from $(hostname); exit 7"]);
    let id = unique("run");
    let (code, out, err) = rt.run_container(&id, &b);
    assert_eq!(code, 7, "stderr: {err}");
    assert_eq!(out, "hello from bulkhead\n");
    // run deletes the container when it exits.
    assert!(!rt.root.join(&id).exists());
    assert!(cgroup_dirs_named(&id).is_empty());
}

#[test]
fn run_reports_a_signal_as_128_plus_signo() {
    let rt = Rt::new();
    // The init of a pid namespace ignores signals it has no handler for
    // (pid_namespaces(7)); SIGKILL from the runtime's namespace is forced.
    let b = Bundle::new("sig", &["sleep", "60"]);
    let id = unique("sig");
    rt.track(&id);
    let mut child = spawn_run(&rt, &b, &id, std::process::Stdio::null());
    for _ in 0..500 {
        if rt.run(&["state", &id]).status.success() && rt.status(&id) == "running" {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ok(&rt.run(&["kill", &id, "KILL"]));
    assert_eq!(child.wait().unwrap().code(), Some(128 + 9));
    assert!(!rt.root.join(&id).exists());
}

#[test]
fn create_blocks_until_start_then_runs() {
    let rt = Rt::new();
    let mut b = Bundle::new(
        "block",
        &["sh", "-c", "echo started > /shared/mark; sleep 60"],
    );
    let shared = b.share("/shared");
    let id = unique("block");
    let pidfile = b.dir.join("pid");
    ok(&rt.create_with_pid_file(&id, &b, &pidfile));
    let st = rt.state(&id);
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], id.as_str());
    assert_eq!(
        st["bundle"],
        b.dir.canonicalize().unwrap().to_str().unwrap()
    );
    let pid = st["pid"].as_i64().unwrap();
    assert_eq!(fs::read_to_string(&pidfile).unwrap(), pid.to_string());
    assert!(alive(pid));
    // Blocked before exec: the user program has not run, and the init is
    // still the runtime (not sh).
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !shared.join("mark").exists(),
        "the program ran before start"
    );
    assert_ne!(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "sh"
    );

    ok(&rt.run(&["start", &id]));
    assert_eq!(rt.status(&id), "running");
    for _ in 0..200 {
        if shared.join("mark").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        fs::read_to_string(shared.join("mark")).unwrap(),
        "started\n"
    );
    assert_eq!(
        rt.state(&id)["pid"].as_i64().unwrap(),
        pid,
        "same process, now executing sh"
    );
}

#[test]
fn state_machine_refusals() {
    let rt = Rt::new();
    let b = Bundle::new("sm", &["sleep", "60"]);
    let id = unique("sm");
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    // start on a running container fails
    let e = fails(&rt.run(&["start", &id]));
    assert!(e.contains("it is running"), "{e}");
    // delete on a running container fails without --force, and changes nothing
    let e = fails(&rt.run(&["delete", &id]));
    assert!(e.contains("it is running"), "{e}");
    assert_eq!(rt.status(&id), "running");
    // kill -> stopped
    ok(&rt.run(&["kill", &id, "KILL"]));
    rt.wait_status(&id, "stopped");
    assert_eq!(rt.state(&id)["pid"], 0);
    // kill of a stopped container fails clearly; start too
    let e = fails(&rt.run(&["kill", &id]));
    assert!(e.contains("it is stopped"), "{e}");
    let e = fails(&rt.run(&["start", &id]));
    assert!(e.contains("it is stopped"), "{e}");
    ok(&rt.run(&["delete", &id]));
    let e = fails(&rt.run(&["state", &id]));
    assert!(e.contains("does not exist"), "{e}");
    assert!(cgroup_dirs_named(&id).is_empty(), "cgroup left behind");
}

#[test]
fn delete_of_a_created_container_kills_its_init() {
    let rt = Rt::new();
    let b = Bundle::new("delc", &["true"]);
    let id = unique("delc");
    ok(&rt.create(&id, &b));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    ok(&rt.run(&["delete", &id]));
    for _ in 0..100 {
        if !alive(pid) {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(pid));
    assert!(!rt.root.join(&id).exists());
}

#[test]
fn delete_force_and_kill_all() {
    let rt = Rt::new();
    let b = Bundle::new("force", &["sh", "-c", "sleep 60 & sleep 60 & wait"]);
    let id = unique("force");
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    // The cgroup holds sh and its two children.
    let procs = || -> Vec<i64> {
        let d = cgroup_dirs_named(&id)
            .into_iter()
            .find(|d| d.to_string_lossy().contains("/pids/"))
            .unwrap();
        fs::read_to_string(d.join("cgroup.procs"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    for _ in 0..200 {
        if procs().len() == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let all = procs();
    assert_eq!(all.len(), 3, "{all:?}");
    ok(&rt.run(&["kill", "--all", &id, "TERM"]));
    rt.wait_status(&id, "stopped");
    for p in &all {
        for _ in 0..100 {
            if !alive(*p) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(*p), "{p} survived kill --all");
    }
    ok(&rt.run(&["delete", &id]));

    let id2 = unique("force2");
    ok(&rt.create(&id2, &b));
    ok(&rt.run(&["start", &id2]));
    let pid2 = rt.state(&id2)["pid"].as_i64().unwrap();
    assert_ne!(pid, pid2);
    ok(&rt.run(&["delete", "--force", &id2]));
    assert!(!alive(pid2));
    assert!(!rt.root.join(&id2).exists());
    assert!(cgroup_dirs_named(&id2).is_empty());
    // --force on a container that does not exist is not an error (runc).
    ok(&rt.run(&["delete", "--force", &id2]));
}

#[test]
fn list_table_and_json() {
    let rt = Rt::new();
    let b = Bundle::new("list", &["sleep", "60"]);
    let (a, c) = (unique("lista"), unique("listb"));
    ok(&rt.create(&a, &b));
    ok(&rt.create(&c, &b));
    ok(&rt.run(&["start", &c]));
    let json: serde_json::Value =
        serde_json::from_str(&ok(&rt.run(&["list", "--format", "json"]))).unwrap();
    let arr = json.as_array().unwrap();
    assert_eq!(arr.len(), 2);
    let find = |id: &str| arr.iter().find(|x| x["id"] == id).unwrap().clone();
    assert_eq!(find(&a)["status"], "created");
    assert_eq!(find(&c)["status"], "running");
    let table = ok(&rt.run(&["list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATUS"));
    assert!(lines
        .iter()
        .any(|l| l.starts_with(&a) && l.contains("created")));
    assert!(lines
        .iter()
        .any(|l| l.starts_with(&c) && l.contains("running")));
    let quiet = ok(&rt.run(&["list", "-q"]));
    assert_eq!(quiet.lines().count(), 2);
}

#[test]
fn concurrent_commands_on_one_id_serialise() {
    let rt = Rt::new();
    let b = Bundle::new("race", &["sleep", "60"]);
    let id = unique("race");
    // Four creates of one ID at once: exactly one wins.
    rt.track(&id);
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| output(rt.cmd().args(["create", "--bundle"]).arg(&b.dir).arg(&id))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let wins = outs.iter().filter(|o| o.status.success()).count();
    assert_eq!(wins, 1, "{outs:?}");
    for o in outs.iter().filter(|o| !o.status.success()) {
        assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    }
    // Four starts at once: exactly one starts it, the others see it running.
    let outs: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| s.spawn(|| output(rt.cmd().args(["start", &id]))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        outs.iter().filter(|o| o.status.success()).count(),
        1,
        "{outs:?}"
    );
    assert_eq!(rt.status(&id), "running");
    // The state file is intact.
    let st = rt.state(&id);
    assert!(st["pid"].as_i64().unwrap() > 0);
}

#[test]
fn detached_run_and_pause_resume() {
    let rt = Rt::new();
    let b = Bundle::new("det", &["sleep", "60"]);
    let id = unique("det");
    rt.track(&id);
    ok(&output(
        rt.cmd()
            .args(["run", "--detach", "--bundle"])
            .arg(&b.dir)
            .arg(&id),
    ));
    assert_eq!(rt.status(&id), "running");
    ok(&rt.run(&["pause", &id]));
    assert_eq!(rt.status(&id), "paused");
    let fz = cgroup_dirs_named(&id)
        .into_iter()
        .find(|d| d.to_string_lossy().contains("/freezer/"))
        .unwrap();
    assert_eq!(
        fs::read_to_string(fz.join("freezer.state")).unwrap().trim(),
        "FROZEN"
    );
    let e = fails(&rt.run(&["pause", &id]));
    assert!(e.contains("paused"), "{e}");
    ok(&rt.run(&["resume", &id]));
    assert_eq!(rt.status(&id), "running");
    ok(&rt.run(&["delete", "--force", &id]));
}

#[test]
fn foreground_run_forwards_signals() {
    let rt = Rt::new();
    // The container traps TERM and exits 42: the runtime must forward it.
    let b = Bundle::new(
        "fwd",
        &[
            "sh",
            "-c",
            "trap 'exit 42' TERM; echo ready; while true; do sleep 0.05; done",
        ],
    );
    let id = unique("fwd");
    rt.track(&id);
    let mut child = spawn_run(&rt, &b, &id, std::process::Stdio::piped());
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    std::io::Read::read_exact(&mut out, &mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42));
}
