//! Crash consistency: a runtime killed (SIGKILL) at any moment leaves nothing
//! that `delete --force` of the IDs `list` shows cannot clean — no state
//! entry, no cgroup directory in any hierarchy, no mount, no process — and a
//! killed `sandbox` leaves nothing at all. The kill delays are random, from
//! a seed printed by each test: `BULKHEAD_CRASH_SEED=N cargo test --test
//! crash` repeats a run.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// splitmix64: a small seeded generator (no dependency for one test file).
struct Rng(u64);

impl Rng {
    fn seeded(test: &str) -> Rng {
        let seed = std::env::var("BULKHEAD_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        println!("{test}: seed {seed} (BULKHEAD_CRASH_SEED={seed} repeats this run)");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A delay in [0, max_ms] milliseconds, with microsecond resolution.
    fn delay(&mut self, max_ms: u64) -> Duration {
        Duration::from_micros(self.next() % (max_ms * 1000 + 1))
    }
}

/// Spawn `cmd` (stdio to /dev/null: a container init inherits it), SIGKILL
/// it after `delay`, and reap it.
fn kill_after(cmd: &mut Command, delay: Duration) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

/// Does `text`, cut at separators, contain one of `ids` as a whole word?
fn names_any(text: &str, ids: &BTreeSet<String>) -> Option<String> {
    text.split(['\0', '/', ' ', ':', '\n', '\t', '='])
        .find(|w| ids.contains(*w))
        .map(String::from)
}

/// Live processes whose command line or cgroup names one of `ids`.
/// Zombies are skipped: they hold nothing but a pid, and reaping them is
/// their parent's business (pid 1's, for orphans).
fn processes_naming(ids: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i64>().ok()) else {
            continue;
        };
        if !alive(pid) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        for text in [&*cmdline, &*cgroup] {
            if let Some(id) = names_any(text, ids) {
                found.push(format!(
                    "pid {pid} ({}) names {id}",
                    cmdline.replace('\0', " ")
                ));
                break;
            }
        }
    }
    found
}

/// Everything of `ids` still on the host, and any entry left in the state
/// root. Processes get a bounded grace to finish exiting (a SIGKILLed
/// process is gone within microseconds; a leaked one stays forever).
fn leftovers(root: &Path, ids: &BTreeSet<String>) -> Vec<String> {
    let mut v = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let p = processes_naming(ids);
        if p.is_empty() || Instant::now() > deadline {
            v.extend(p);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    v.extend(
        cgroup_dirs_where(|n| ids.contains(n))
            .iter()
            .map(|d| format!("cgroup {}", d.display())),
    );
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_s = root.display().to_string();
    for line in mi.lines() {
        if line.contains(&root_s) || names_any(line, ids).is_some() {
            v.push(format!("mount: {line}"));
        }
    }
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            v.push(format!("state entry {}", e.path().display()));
        }
    }
    v
}

/// Run `n` commands (`cmd` makes the one for an ID), each SIGKILLed after a
/// random delay in [0, max_ms]: the IDs, and "id@delay" for messages.
fn kill_many(
    rng: &mut Rng,
    n: usize,
    max_ms: u64,
    prefix: &str,
    mut cmd: impl FnMut(&str) -> Command,
) -> (BTreeSet<String>, Vec<String>) {
    let mut ids = BTreeSet::new();
    let mut delays = Vec::new();
    for _ in 0..n {
        let id = unique(prefix);
        let d = rng.delay(max_ms);
        kill_after(&mut cmd(&id), d);
        delays.push(format!("{id}@{}us", d.as_micros()));
        ids.insert(id);
    }
    (ids, delays)
}

/// Print where the kills landed (they are random: a reader of a failure,
/// or of a run that never hit a phase, wants to know).
fn summarize(test: &str, ids: &BTreeSet<String>, listed: &[(String, String)]) {
    let created = listed.iter().filter(|(_, s)| s == "created").count();
    println!(
        "{test}: {} killed before claiming the ID, {} during create (stopped), {created} after",
        ids.len() - listed.len(),
        listed.len() - created
    );
}

/// `list --format json`: (id, status) of every container.
fn list(rt: &Rt) -> Vec<(String, String)> {
    let out = ok(&rt.run(&["list", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `delete --force` of every listed container, checking that `list` shows
/// every directory of the state root and only our IDs; returns the listing.
fn delete_all_listed(rt: &Rt, ids: &BTreeSet<String>) -> Vec<(String, String)> {
    let listed = list(rt);
    let entries: BTreeSet<String> = fs::read_dir(&rt.root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    let shown: BTreeSet<String> = listed.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(shown, entries, "list does not show every state directory");
    assert!(shown.is_subset(ids), "{shown:?}");
    for (id, _) in &listed {
        ok(&rt.run(&["delete", "--force", id]));
    }
    listed
}

#[test]
fn killed_creates_leave_nothing_after_delete_force() {
    let rt = Rt::new();
    let b = Bundle::new("crash", &["true"]);
    let mut rng = Rng::seeded("killed_creates");
    let (ids, delays) = kill_many(&mut rng, 50, 30, "kc", |id| rt.create_cmd(id, &b));
    let listed = delete_all_listed(&rt, &ids);
    summarize("killed_creates", &ids, &listed);
    // Every create is dead: none can be `creating` any more.
    for (id, status) in &listed {
        assert!(
            status == "stopped" || status == "created",
            "{id} is {status}; delays {delays:?}"
        );
    }
    let l = leftovers(&rt.root, &ids);
    assert!(
        l.is_empty(),
        "left behind: {l:#?}\nlisted: {listed:?}\ndelays: {delays:?}"
    );
}

/// On a pure-v1 host the init starts outside every container cgroup (no
/// CLONE_INTO_CGROUP): its pid is recorded for `delete`. Here a pure-v1 view
/// is a private mount namespace with the cgroup2 mount unmounted, entered by
/// each killed create (`unshare` executes the runtime, so the kill hits it).
#[test]
fn killed_creates_on_pure_v1_leave_nothing_after_delete_force() {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let Some(v2) = info
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .map(|l| l.split(' ').nth(4).unwrap().to_string())
    else {
        println!("SKIP: no cgroup2 mount: this host is pure v1, which killed_creates covers");
        return;
    };
    if v2 == "/sys/fs/cgroup" {
        println!("SKIP: pure cgroup v2 host: there is no v1 view to test");
        return;
    }
    let rt = Rt::new();
    let b = Bundle::new("crash-v1", &["true"]);
    let mut rng = Rng::seeded("killed_creates_v1");
    let (ids, delays) = kill_many(&mut rng, 20, 40, "kv", |id| {
        rt.track(id);
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!("umount {v2} && exec \"$0\" \"$@\""))
            .arg(bin())
            .arg("--root")
            .arg(&rt.root)
            .args(["create", "--bundle"])
            .arg(&b.dir)
            .arg(id);
        c
    });
    let listed = delete_all_listed(&rt, &ids);
    summarize("killed_creates_v1", &ids, &listed);
    let l = leftovers(&rt.root, &ids);
    assert!(
        l.is_empty(),
        "left behind: {l:#?}\nlisted: {listed:?}\ndelays: {delays:?}"
    );
}

/// The slow path: a new user namespace with a joined one makes the init a
/// grandchild (double fork into the new pid namespace), which must die with
/// the runtime too.
#[test]
fn killed_double_forking_creates_leave_nothing_after_delete_force() {
    let holders = Rt::new();
    let hb = Bundle::new("crash-netholder", &["sleep", "600"]);
    let holder = unique("netholder");
    ok(&holders.create(&holder, &hb));
    let pid = holders.state(&holder)["pid"].as_i64().unwrap();
    let rt = Rt::new();
    let mut b = Bundle::new("crash-dfork", &["true"]);
    b.add_namespace("user", None);
    b.add_namespace("network", Some(&format!("/proc/{pid}/ns/net")));
    let m = serde_json::json!([{"containerID": 0, "hostID": 300000, "size": 65536}]);
    b.config["linux"]["uidMappings"] = m.clone();
    b.config["linux"]["gidMappings"] = m;
    b.save();
    let mut rng = Rng::seeded("killed_double_forks");
    let (ids, delays) = kill_many(&mut rng, 20, 40, "kd", |id| rt.create_cmd(id, &b));
    let listed = delete_all_listed(&rt, &ids);
    summarize("killed_double_forks", &ids, &listed);
    let l = leftovers(&rt.root, &ids);
    assert!(
        l.is_empty(),
        "left behind: {l:#?}\nlisted: {listed:?}\ndelays: {delays:?}"
    );
}

#[test]
fn killed_foreground_runs_leave_nothing_after_delete_force() {
    let rt = Rt::new();
    let b = Bundle::new("crash-run", &["sleep", "600"]);
    let mut rng = Rng::seeded("killed_runs");
    let (ids, delays) = kill_many(&mut rng, 20, 60, "kr", |id| {
        rt.track(id);
        let mut c = rt.cmd();
        c.args(["run", "--bundle"]).arg(&b.dir).arg(id);
        c
    });
    let listed = delete_all_listed(&rt, &ids);
    let l = leftovers(&rt.root, &ids);
    assert!(
        l.is_empty(),
        "left behind: {l:#?}\nlisted: {listed:?}\ndelays: {delays:?}"
    );
}

/// A create blocked in its createContainer hook is `creating`; once killed
/// it is `stopped` (its init died with it), and a plain `delete` removes it.
#[test]
fn a_create_in_progress_is_creating_and_a_killed_one_stopped() {
    let rt = Rt::new();
    let mut b = Bundle::new("creating", &["true"]);
    let id = unique("cr");
    let mark = b.dir.join("hook-ran");
    // The hook runs in the init, in the container's pid namespace: it dies
    // with the init. Its command line names the ID so that leftovers see it.
    b.config["hooks"] = serde_json::json!({"createContainer": [{
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("touch {}; sleep 600; true", mark.display()), id],
    }]});
    b.save();
    let mut create = rt
        .create_cmd(&id, &b)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !mark.exists() {
        assert!(Instant::now() < deadline, "the hook never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    let st = rt.state(&id);
    assert_eq!(st["status"], "creating", "{st}");
    assert_eq!(
        list(&rt),
        vec![(id.clone(), "creating".to_string())],
        "list while the create runs"
    );
    let ids = BTreeSet::from([id.clone()]);
    assert!(!processes_naming(&ids).is_empty(), "the hook runs");
    let _ = create.kill();
    let _ = create.wait();
    // The hook can only end before its 600 s if the init (pid 1 of its pid
    // namespace) died: with its create, before any delete.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !processes_naming(&ids).is_empty() {
        assert!(Instant::now() < deadline, "the init outlived its create");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(rt.status(&id), "stopped");
    let e = fails(&rt.run(&["start", &id]));
    assert!(e.contains("it is stopped"), "{e}");
    // Stopped: no --force needed.
    ok(&rt.run(&["delete", &id]));
    let l = leftovers(&rt.root, &ids);
    assert!(l.is_empty(), "left behind: {l:#?}");
}

/// `exec --detach --pid-file` killed at random points: no half-made exec
/// process stays in the container, and every process that runs there
/// besides the init is one the engine was told of (its pid file).
#[test]
fn killed_execs_leave_only_recorded_processes() {
    let rt = Rt::new();
    let b = Bundle::new("crash-exec", &["sleep", "600"]);
    let id = unique("ke");
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    let init = rt.state(&id)["pid"].as_i64().unwrap();
    let ns = fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    let mut rng = Rng::seeded("killed_execs");
    let mut delays = Vec::new();
    let mut pid_files = Vec::new();
    for i in 0..30 {
        let pf = b.dir.join(format!("exec-{i}.pid"));
        let d = rng.delay(30);
        kill_after(
            rt.cmd()
                .args(["exec", "--detach", "--pid-file"])
                .arg(&pf)
                .args([&id, "sleep", "600"]),
            d,
        );
        delays.push(d.as_micros());
        pid_files.push(pf);
    }
    // The container's processes other than its init.
    let in_container = || -> Vec<(i64, String)> {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
            .filter(|&p| p != init && alive(p))
            .filter(|p| fs::read_link(format!("/proc/{p}/ns/pid")).ok().as_ref() == Some(&ns))
            .map(|p| {
                let comm = fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                (p, comm.trim().to_string())
            })
            .collect()
    };
    // A half-made exec is the runtime's clone (comm "bulkhead"); one that
    // lost its runtime dies within microseconds, a leaked one never.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut procs = in_container();
    while procs.iter().any(|(_, c)| c != "sleep") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        procs = in_container();
    }
    assert!(
        procs.iter().all(|(_, c)| c == "sleep"),
        "half-made exec processes: {procs:?}; delays (us) {delays:?}"
    );
    let recorded: BTreeSet<i64> = pid_files
        .iter()
        .filter_map(|pf| fs::read_to_string(pf).ok()?.trim().parse().ok())
        .collect();
    for (p, _) in &procs {
        assert!(
            recorded.contains(p),
            "exec process {p} is in no pid file ({recorded:?}); delays (us) {delays:?}"
        );
    }
    ok(&rt.run(&["delete", "--force", &id]));
    for (p, _) in &procs {
        assert!(!alive(*p), "exec process {p} survived delete --force");
    }
    let l = leftovers(&rt.root, &BTreeSet::from([id]));
    assert!(l.is_empty(), "left behind: {l:#?}");
}

/// 50 sandboxes killed at random points of their life (setup, running):
/// their reapers leave nothing — no `.sandbox/<id>`, state, cgroup, mount
/// or process — without anyone calling `delete`.
#[test]
fn killed_sandboxes_leave_nothing() {
    let rt = Rt::new();
    let mut rng = Rng::seeded("killed_sandboxes");
    let (ids, delays) = kill_many(&mut rng, 50, 80, "ks", |id| {
        let mut c = rt.cmd();
        c.current_dir("/")
            .args(["sandbox", "--name", id, "--", "sleep", "600"]);
        c
    });
    // The reapers work after their sandbox died: wait (bounded) until no
    // process names an ID any more (a reaper's command line does).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !processes_naming(&ids).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let l = leftovers(&rt.root, &ids);
    assert!(l.is_empty(), "left behind: {l:#?}\ndelays: {delays:?}");
}
