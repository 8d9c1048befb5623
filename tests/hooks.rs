//! Lifecycle hooks: when each runs, in which namespace, with what state on
//! stdin, and what a failing or slow hook does.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::json;

/// A hook that appends "<name> <status> <pid> <hostname>" to `log` (hostname
/// shows whether it ran in the container's UTS namespace).
fn hook(log: &Path, name: &str) -> serde_json::Value {
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!(
            "read -r state; s=$(echo \"$state\" | sed 's/.*\"status\":\"\\([a-z]*\\)\".*/\\1/'); \
             p=$(echo \"$state\" | sed 's/.*\"pid\":\\([0-9]*\\).*/\\1/'); echo \"{name} $s $p $(hostname) $HOOKENV\" >> {log}",
            log = log.display())],
        "env": ["HOOKENV=set", "PATH=/usr/bin:/bin"]
    })
}

#[test]
fn all_six_hooks_run_in_order_with_state() {
    let rt = Rt::new();
    let mut b = Bundle::new("hooks", &["sleep", "60"]);
    let log = b.dir.join("hooks.log");
    // The log must be reachable from the container namespace too
    // (createContainer runs there before pivot_root, startContainer after).
    let shared = b.share("/hooklog");
    let inside = shared.join("hooks.log");
    let mut sc = hook(Path::new("/hooklog/hooks.log"), "startContainer");
    sc["path"] = "/bin/sh".into();
    b.config["hooks"] = json!({
        "prestart": [hook(&log, "prestart")],
        "createRuntime": [hook(&log, "createRuntime")],
        "createContainer": [hook(&log, "createContainer")],
        "startContainer": [sc],
        "poststart": [hook(&log, "poststart")],
        "poststop": [hook(&log, "poststop")],
    });
    b.config["hostname"] = "inbox".into();
    b.save();
    let id = unique("hooks");
    ok(&rt.create(&id, &b));
    let pid = rt.state(&id)["pid"].as_i64().unwrap().to_string();
    let host = fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    let l = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = l.lines().collect();
    assert_eq!(lines.len(), 3, "{l}");
    assert_eq!(lines[0], format!("prestart creating {pid} {host} set"));
    assert_eq!(lines[1], format!("createRuntime creating {pid} {host} set"));
    // createContainer runs in the container's namespaces (its hostname is not
    // set yet at that point, but the UTS namespace is already its own).
    assert!(
        lines[2].starts_with(&format!("createContainer creating {pid} ")),
        "{l}"
    );
    assert!(!inside.exists(), "startContainer ran before start");

    ok(&rt.run(&["start", &id]));
    assert_eq!(
        fs::read_to_string(&inside).unwrap(),
        format!("startContainer created {pid} inbox set\n")
    );
    let l = fs::read_to_string(&log).unwrap();
    assert_eq!(
        l.lines().nth(3),
        Some(format!("poststart running {pid} {host} set").as_str()),
        "{l}"
    );

    ok(&rt.run(&["delete", "--force", &id]));
    let l = fs::read_to_string(&log).unwrap();
    assert!(
        l.lines().nth(4).unwrap().starts_with("poststop stopped "),
        "{l}"
    );
}

#[test]
fn a_failing_create_hook_fails_create_and_leaves_nothing() {
    for kind in ["prestart", "createRuntime", "createContainer"] {
        let rt = Rt::new();
        let mut b = Bundle::new("badhook", &["true"]);
        let after = b.dir.join("poststop.log");
        // The lifecycle goes on with the destruction and the poststop hooks.
        b.config["hooks"] = json!({
            kind: [{"path": "/bin/sh", "args": ["sh", "-c", "echo nope >&2; exit 4"]}],
            "poststop": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", after.display())]}],
        });
        b.save();
        let id = unique("badhook");
        let e = fails(&rt.create(&id, &b));
        assert!(
            e.contains(&format!("hooks.{kind}[0]")) && e.contains("status 4") && e.contains("nope"),
            "{e}"
        );
        assert!(!rt.root.join(&id).exists(), "{kind}: state left behind");
        assert!(
            cgroup_dirs_named(&id).is_empty(),
            "{kind}: cgroup left behind"
        );
        let st: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&after).unwrap()).unwrap();
        assert_eq!(st["status"], "stopped", "{kind}: {st}");
        assert_eq!(st["id"], id.as_str());
    }
}

#[test]
fn a_hook_that_times_out_fails() {
    let rt = Rt::new();
    let mut b = Bundle::new("slowhook", &["true"]);
    b.config["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    b.save();
    let id = unique("slowhook");
    let e = fails(&rt.create(&id, &b));
    assert!(e.contains("timed out after 1s"), "{e}");
    assert!(!rt.root.join(&id).exists());
}

#[test]
fn a_failing_start_container_hook_fails_start() {
    let rt = Rt::new();
    let mut b = Bundle::new("badstart", &["true"]);
    b.config["hooks"] = json!({"startContainer": [{"path": "/bin/false"}]});
    b.save();
    let id = unique("badstart");
    ok(&rt.create(&id, &b));
    let e = fails(&rt.run(&["start", &id]));
    assert!(e.contains("hooks.startContainer[0]"), "{e}");
    rt.wait_status(&id, "stopped");
}

#[test]
fn failing_poststart_and_poststop_hooks_only_warn() {
    let rt = Rt::new();
    let mut b = Bundle::new("warnhook", &["sleep", "60"]);
    b.config["hooks"] =
        json!({"poststart": [{"path": "/bin/false"}], "poststop": [{"path": "/bin/false"}]});
    b.save();
    let id = unique("warnhook");
    ok(&rt.create(&id, &b));
    let out = rt.run(&["start", &id]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("hooks.poststart[0]"));
    assert_eq!(rt.status(&id), "running");
    let out = rt.run(&["delete", "--force", &id]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("hooks.poststop[0]"));
    assert!(!rt.root.join(&id).exists());
}

#[test]
fn two_hooks_of_every_kind_in_lifecycle_order_when_the_process_exits_at_once() {
    let rt = Rt::new();
    let mut b = Bundle::new("hookorder", &["true"]);
    // One host file for all: the host hooks and createContainer (in the
    // container's mount namespace, before pivot_root) write it by its host
    // path, startContainer (after pivot_root) through a bind mount.
    let shared = b.share("/hooklog");
    let log = shared.join("order.log");
    let line = |path: &Path, name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("echo {name} >> {}", path.display())]});
    let inside = Path::new("/hooklog/order.log");
    // Every kind, in lifecycle order.
    let kinds: Vec<&str> = oci::Hooks::default()
        .by_name()
        .iter()
        .map(|(k, _)| *k)
        .collect();
    let mut hooks = serde_json::Map::new();
    for &kind in &kinds {
        let p = if kind == "startContainer" {
            inside
        } else {
            &log
        };
        hooks.insert(
            kind.into(),
            json!([line(p, &format!("{kind}-1")), line(p, &format!("{kind}-2"))]),
        );
    }
    b.config["hooks"] = hooks.into();
    b.save();
    let (code, out, err) = rt.run_container(&unique("hookorder"), &b);
    assert_eq!(code, 0, "{out} {err}");
    let got = fs::read_to_string(&log).unwrap();
    let want: Vec<String> = kinds
        .iter()
        .flat_map(|k| [format!("{k}-1"), format!("{k}-2")])
        .collect();
    assert_eq!(got.lines().collect::<Vec<_>>(), want, "{got}");
}

#[test]
fn start_container_hooks_get_the_process_environment_unless_they_have_their_own() {
    let rt = Rt::new();
    let mut b = Bundle::new("hookenv", &["true"]);
    let shared = b.share("/hooklog");
    b.config["process"]["env"] = json!(["PATH=/bin", "FROMSPEC=yes"]);
    let script = |name: &str| {
        format!("echo \"{name} FROMSPEC=$FROMSPEC ONLY=$ONLY HOME=$HOME\" >> /hooklog/env.log")
    };
    b.config["hooks"] = json!({"startContainer": [
        {"path": "/bin/sh", "args": ["sh", "-c", script("inherit")]},
        {"path": "/bin/sh", "args": ["sh", "-c", script("own")], "env": ["ONLY=1"]},
        {"path": "/bin/sh", "args": ["sh", "-c", script("empty")], "env": []},
    ]});
    b.save();
    let (code, out, err) = rt.run_container(&unique("hookenv"), &b);
    assert_eq!(code, 0, "{out} {err}");
    let got = fs::read_to_string(shared.join("env.log")).unwrap();
    assert_eq!(
        got,
        "inherit FROMSPEC=yes ONLY= HOME=/root\nown FROMSPEC= ONLY=1 HOME=\nempty FROMSPEC= ONLY= HOME=\n"
    );
}

#[test]
fn runtime_hooks_without_env_get_the_runtimes_environment() {
    // The spec is silent; runc runs such a hook with its own environment.
    let rt = Rt::new();
    let mut b = Bundle::new("hookrtenv", &["true"]);
    let log = b.dir.join("rtenv.log");
    b.config["hooks"] = json!({"createRuntime": [
        {"path": "/bin/sh", "args": ["sh", "-c", format!("echo \"$BH_TEST_VAR\" >> {}", log.display())]},
    ]});
    b.save();
    let id = unique("hookrtenv");
    rt.track(&id);
    let out = output(
        rt.cmd()
            .env("BH_TEST_VAR", "from-the-engine")
            .args(["run", "--bundle"])
            .arg(&b.dir)
            .arg(&id),
    );
    ok(&out);
    assert_eq!(fs::read_to_string(&log).unwrap(), "from-the-engine\n");
}
