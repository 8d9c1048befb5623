//! End-to-end tests with real engines: Debian 12's podman 4.3 and
//! containerd 1.6 (through `ctr` and the io.containerd.runc.v2 shim) drive the
//! runtime. Every case runs twice: `bulkhead::CASE` with bulkhead and
//! `runc::CASE` with runc, which checks the test itself.
//!
//! Everything is private to one test: a podman store (root, runroot, tmpdir,
//! containers.conf, storage.conf, cgroup parent), or a containerd (root,
//! state, sockets, namespace), and the busybox image built here from Debian's
//! busybox-static (no registry is reachable). Engine commands run under
//! `timeout 120`. podman and containerd missing is a failure, not a skip:
//! scripts/deps.sh installs them.

mod common;
mod engines_support;

use std::fs;
use std::process::Stdio;

use common::unique;
use engines_support::*;

macro_rules! engine_tests {
    (both: [$($name:ident),* $(,)?] $(,)?) => {
        mod bulkhead {
            $( #[test] fn $name() { super::$name(&super::Runtime::bulkhead()) } )*
        }
        mod runc {
            $( #[test] fn $name() { super::$name(&super::Runtime::runc()) } )*
        }
    };
}

engine_tests! {
    both: [
        podman_run_rm_prints_and_exits_with_the_code,
        podman_detached_exec_stop_start_kill_rm,
        podman_tty_run_and_exec_from_a_pty,
        podman_limits_take_effect_inside,
        podman_pause_unpause_top_stats_restart,
        podman_update_changes_limits,
        podman_exec_failures_map_to_126_and_127,
        podman_pod_members_share_namespaces,
        podman_sdnotify_container_forwards_ready,
        podman_run_options_reach_the_container,
        podman_init_healthcheck_preserve_fds,
        ctr_run_rm_prints_and_exits_with_the_code,
        ctr_detached_exec_ps_pause_kill,
        ctr_foreground_run_killed_returns_137,
        ctr_tty_run_and_exec_from_a_pty,
        ctr_limits_take_effect,
        podman_kill_of_a_paused_container,
        ctr_kill_of_a_paused_task,
        podman_probe_sees_the_engines_own_profile,
        rootless_podman_run_exec_stop,
    ],
}

/// Drive a shell on a pty of `size` (rows, cols): `tty` must print a
/// /dev/pts path and `stty size` the pty's size; `exit code` must come back
/// as the command's exit code.
fn tty_session(cmd: std::process::Command, size: (u16, u16), code: i32, what: &str) {
    let (pty, mut child) = Pty::spawn(cmd, size.0, size.1);
    let at = pty.expect("# ", 0, &mut child);
    pty.type_in("tty; stty size\n");
    pty.expect("/dev/pts/", at, &mut child);
    pty.expect(&format!("{} {}", size.0, size.1), at, &mut child);
    pty.type_in(&format!("exit {code}\n"));
    let got = wait_child(&mut child, what);
    assert_eq!(got, code, "terminal output:\n{:?}", pty.text());
}

/// Split stdout into lines (owned, for assert_eq! against arrays).
fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_string).collect()
}

/// The `CapEff` mask from /proc/self/status text.
fn cap_eff(status: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap_or_else(|| panic!("no CapEff in {status:?}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

// ===========================================================================
// podman
// ===========================================================================

/// The runtime applies the config the engine wrote, never bulkhead's own defaults: under
/// podman the probe battery shows podman's seccomp profile and capabilities, which let user
/// namespaces and keyrings through (bulkhead's default profile refuses both), the same with
/// bulkhead as with runc.
fn podman_probe_sees_the_engines_own_profile(rt: &Runtime) {
    let p = Podman::new(rt);
    let bin = common::bin();
    let mut args: Vec<String> = vec!["--rm".into(), "-v".into(), format!("{bin}:/bulkhead:ro")];
    if probe::compare::is_dynamic(std::path::Path::new(bin)) {
        for d in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
            if std::path::Path::new(d).exists() {
                args.extend(["-v".into(), format!("{d}:{d}:ro")]);
            }
        }
    }
    args.extend([IMAGE, "/bulkhead", "probe", "--format", "json"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = p.run(&args);
    let r: probe::Report =
        serde_json::from_str(o.code(0)).unwrap_or_else(|e| panic!("no JSON report: {e}\n{o}"));
    println!("{}", r.table());
    let result = |name: &str| r.get(name).unwrap().result;
    assert_eq!(result("seccomp-off"), probe::Outcome::Blocked);
    assert_eq!(result("unshare-user"), probe::Outcome::Allowed);
    assert_eq!(result("keyctl-session"), probe::Outcome::Allowed);
    assert_eq!(result("cap-sys-admin"), probe::Outcome::Blocked);
}

fn podman_run_rm_prints_and_exits_with_the_code(rt: &Runtime) {
    let p = Podman::new(rt);
    // --runtime NAME, NAME defined in containers.conf [engine.runtimes].
    let o = p.run(&[
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo hi; echo to-stderr >&2; exit 3",
    ]);
    assert_eq!(o.code(3), "hi\n");
    assert!(o.stderr.contains("to-stderr"), "{o}");

    // --runtime /absolute/path
    let mut c = p.cmd_with_runtime(&rt.path);
    c.arg("run")
        .args(p.run_flags())
        .args(["--rm", IMAGE, "sh", "-c", "echo by-path; exit 4"]);
    assert_eq!(run_cmd(&mut c, None).code(4), "by-path\n");

    // -i: stdin reaches the container.
    let input = p.dir.join("input");
    fs::write(&input, "line one\nline two\n").unwrap();
    let o = p.run_in(
        &["--rm", "-i", IMAGE, "sh", "-c", "wc -l; exit 5"],
        Some(&input),
    );
    assert_eq!(o.code(5).trim(), "2");

    // --rm removed them all.
    assert_eq!(p.all_containers(), Vec::<String>::new());
}

/// Rootless podman: an unprivileged user's podman runs the runtime as root of
/// the user namespace it made from the user's subordinate ranges.
fn rootless_podman_run_exec_stop(rt: &Runtime) {
    let p = RootlessPodman::new(rt);
    let flags: Vec<&str> = ["--network", "none"].into_iter().chain(ULIMITS).collect();
    let run = |args: &[&str]| {
        let mut a = vec!["run"];
        a.extend_from_slice(&flags);
        a.extend_from_slice(args);
        p.podman(&a)
    };
    // run --rm: output and exit code pass through; inside, root maps to the user.
    let o = run(&[
        "--rm",
        IMAGE,
        "sh",
        "-c",
        "echo hi; cat /proc/self/uid_map; exit 3",
    ]);
    let out = o.code(3);
    let l = lines(out);
    assert_eq!(l[0], "hi", "{o}");
    let first: Vec<&str> = l[1].split_whitespace().collect();
    assert_eq!(first, ["0", &p.user.uid.to_string(), "1"], "{o}");
    assert!(l.len() > 2, "the subordinate range is mapped too: {o}");
    // run -d, exec, stop (SIGTERM reaches a trap), rm.
    let name = unique("bh-rootless");
    let script = "trap 'exit 0' TERM; while true; do sleep 0.1; done";
    run(&["-d", "--name", &name, IMAGE, "sh", "-c", script]).ok();
    assert_eq!(
        p.podman(&["inspect", "--format", "{{.OCIRuntime}}", &name])
            .ok()
            .trim(),
        rt.name
    );
    let id = p
        .podman(&["inspect", "--format", "{{.Id}}", &name])
        .ok()
        .trim()
        .to_string();
    if rt.name == "bulkhead" {
        // Run unprivileged, bulkhead keeps its state in the user's runtime directory.
        assert_eq!(p.user.state_entries(), std::slice::from_ref(&id));
    }
    let o = p.podman(&[
        "exec",
        &name,
        "sh",
        "-c",
        "echo in; id -u; cat /proc/1/cmdline",
    ]);
    let out = o.ok();
    assert!(out.starts_with("in\n0\n"), "{o}");
    assert!(
        out.contains("while true"),
        "exec joins the init's pid namespace: {o}"
    );
    p.podman(&["stop", "--time", "20", &name]).ok();
    assert_eq!(
        p.podman(&["inspect", "--format", "{{.State.ExitCode}}", &name])
            .ok()
            .trim(),
        "0",
        "the trap ran: stop delivered SIGTERM"
    );
    p.podman(&["rm", &name]).ok();
    if rt.name == "bulkhead" {
        assert!(
            p.user.state_entries().is_empty(),
            "left: {:?}",
            p.user.state_entries()
        );
    }
}

fn podman_detached_exec_stop_start_kill_rm(rt: &Runtime) {
    let p = Podman::new(rt);
    let name = unique("bh-detached");
    let script = "trap 'echo got-term; exit 0' TERM; echo started; \
                  while true; do sleep 0.1; done";
    let id = p
        .run(&["-d", "--name", &name, IMAGE, "sh", "-c", script])
        .ok()
        .trim()
        .to_string();
    assert_eq!(id.len(), 64, "not a container ID: {id:?}");
    p.wait_status(&name, "running");
    let pid: i64 = p.inspect(&name, "{{.State.Pid}}").parse().unwrap();
    assert!(alive(pid), "init pid {pid} is not alive");
    // The runtime under test made it.
    assert_eq!(p.inspect(&name, "{{.OCIRuntime}}"), rt.name);
    assert!(rt.knows(&id), "{} does not know container {id}", rt.name);

    // exec: output and exit code.
    let o = p.podman(&["exec", &name, "sh", "-c", "echo in-exec; exit 5"]);
    assert_eq!(o.code(5), "in-exec\n");
    // exec: user, working directory, environment.
    let o = p.podman(&[
        "exec",
        "--user",
        "1000:1000",
        "--workdir",
        "/tmp",
        "--env",
        "FOO=bar",
        &name,
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $FOO",
    ]);
    assert_eq!(lines(o.ok()), ["1000", "1000", "/tmp", "bar"]);
    // exec joins the container's namespaces.
    let o = p.podman(&[
        "exec",
        &name,
        "sh",
        "-c",
        "readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt",
    ]);
    let host: Vec<String> = ["pid", "mnt"]
        .iter()
        .map(|ns| {
            fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(lines(o.ok()), host);
    // exec -d: the process keeps running in the container.
    p.podman(&["exec", "-d", &name, "sleep", "1000"]).ok();
    wait_for("the detached exec to run", || {
        let o = p.podman(&["exec", &name, "ps", "-o", "args"]);
        o.ok().contains("sleep 1000").then_some(())
    });
    assert!(p.podman(&["logs", &name]).ok().contains("started"));

    // stop: SIGTERM reaches the trap, which exits 0.
    p.podman(&["stop", "--time", "20", &name]).ok();
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "exited");
    assert_eq!(p.inspect(&name, "{{.State.ExitCode}}"), "0");
    assert!(!alive(pid), "init {pid} survived podman stop");
    assert!(p.podman(&["logs", &name]).ok().contains("got-term"));

    // start again, then kill (SIGKILL): exit code 137.
    p.podman(&["start", &name]).ok();
    p.wait_status(&name, "running");
    p.podman(&["kill", &name]).ok();
    assert_eq!(p.podman(&["wait", &name]).ok().trim(), "137");

    p.podman(&["rm", &name]).ok();
    assert_eq!(p.all_containers(), Vec::<String>::new());
    assert!(
        !rt.knows(&id),
        "{} still knows {id} after podman rm",
        rt.name
    );
}

fn podman_tty_run_and_exec_from_a_pty(rt: &Runtime) {
    let p = Podman::new(rt);
    // run -it: an interactive shell on a terminal of 33 rows x 111 columns.
    let mut c = p.cmd();
    c.arg("run")
        .args(p.run_flags())
        .args(["-it", "--rm", IMAGE, "sh"]);
    tty_session(c, (33, 111), 6, "podman run -it");

    // exec -it into a detached container.
    let name = unique("bh-tty");
    p.run(&["-d", "--name", &name, IMAGE, "sleep", "1000"]).ok();
    let mut c = p.cmd();
    c.args(["exec", "-it", &name, "sh"]);
    tty_session(c, (20, 70), 7, "podman exec -it");
    p.podman(&["rm", "--force", "--time", "0", &name]).ok();
}

fn podman_limits_take_effect_inside(rt: &Runtime) {
    let p = Podman::new(rt);
    let probe = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; \
                 grep CapEff /proc/self/status; \
                 if touch /probe 2>/dev/null; then echo root-rw; else echo root-ro; fi; \
                 touch /tmp/f; if chown 1000 /tmp/f 2>/dev/null; then echo chown-ok; else echo chown-denied; fi";
    let limited = [
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "--cap-drop",
        "all",
        "--read-only",
    ];
    let mut args = vec!["--rm"];
    args.extend(limited);
    args.extend([IMAGE, "sh", "-c", probe]);
    let o = p.run(&args);
    assert_eq!(
        lines(o.ok()),
        [
            "67108864",
            "50",
            "CapEff:\t0000000000000000",
            "root-ro",
            "chown-denied"
        ]
    );

    // Without the options the same probe sees other values: the checks above
    // are not vacuous.
    let o = p.run(&["--rm", IMAGE, "sh", "-c", probe]);
    let l = lines(o.ok());
    assert_ne!(l[0], "67108864", "{o}");
    assert_ne!(l[1], "50", "{o}");
    assert_ne!(cap_eff(&l[2]), 0, "{o}");
    assert_eq!(l[3..], ["root-rw", "chown-ok"], "{o}");

    // The limits are enforced, not only written: forks beyond pids.max fail
    // (in a subshell: a failed fork is fatal to a non-interactive sh)...
    let o = p.run(&[
        "--rm",
        "--pids-limit",
        "10",
        IMAGE,
        "sh",
        "-c",
        "(for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 5 & done) 2>&1; echo loop-done",
    ]);
    let out = o.ok();
    assert!(out.contains("can't fork"), "{o}");
    assert!(out.ends_with("loop-done\n"), "{o}");
    // ... and an allocation above memory.limit_in_bytes is OOM-killed (there
    // is no swap here), a smaller one is not.
    let o = p.run(&[
        "--rm",
        "--memory",
        "64m",
        IMAGE,
        "sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=100M count=1 2>/dev/null; echo big=$?; \
         dd if=/dev/zero of=/dev/null bs=10M count=1 2>/dev/null; echo small=$?",
    ]);
    assert_eq!(lines(o.ok()), ["big=137", "small=0"]);
}

fn podman_pause_unpause_top_stats_restart(rt: &Runtime) {
    let p = Podman::new(rt);
    let name = unique("bh-pause");
    p.run(&[
        "-d",
        "--name",
        &name,
        IMAGE,
        "sh",
        "-c",
        "echo started; while true; do sleep 0.1; done",
    ])
    .ok();
    p.wait_status(&name, "running");
    let pid: i64 = p.inspect(&name, "{{.State.Pid}}").parse().unwrap();
    let freezer = v1_cgroup_dir(pid, "freezer").join("freezer.state");

    p.podman(&["pause", &name]).ok();
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "paused");
    assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    p.podman(&["unpause", &name]).ok();
    assert_eq!(p.inspect(&name, "{{.State.Status}}"), "running");
    assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "THAWED");
    assert_eq!(
        p.podman(&["exec", &name, "echo", "thawed"]).ok(),
        "thawed\n"
    );

    // top and stats read the container's processes and cgroups.
    let top = p.podman(&["top", &name, "pid", "args"]);
    assert!(top.ok().contains("sh -c echo started"), "{top}");
    let pids = p.podman(&["stats", "--no-stream", "--format", "{{.PIDs}}", &name]);
    assert!(pids.ok().trim().parse::<u32>().unwrap() >= 1, "{pids}");

    // restart: a new init, the log shows a second start.
    p.podman(&["restart", "--time", "0", &name]).ok();
    p.wait_status(&name, "running");
    let pid2: i64 = p.inspect(&name, "{{.State.Pid}}").parse().unwrap();
    assert_ne!(pid, pid2);
    assert!(!alive(pid));
    wait_for("the second start in the log", || {
        let logs = p.podman(&["logs", &name]);
        (logs.ok().matches("started").count() == 2).then_some(())
    });
    p.podman(&["rm", "--force", "--time", "0", &name]).ok();
    assert!(!alive(pid2));
}

fn podman_update_changes_limits(rt: &Runtime) {
    let p = Podman::new(rt);
    let name = unique("bh-update");
    p.run(&[
        "-d", "--name", &name, "--memory", "200m", IMAGE, "sleep", "1000",
    ])
    .ok();
    let read =
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us";
    let o = p.podman(&["exec", &name, "sh", "-c", read]);
    assert_eq!(lines(o.ok()), ["209715200", "-1"]);
    // podman update calls `RUNTIME update --resources FILE ID`.
    p.podman(&["update", "--memory", "100m", "--cpus", "0.5", &name])
        .ok();
    let o = p.podman(&["exec", &name, "sh", "-c", read]);
    assert_eq!(lines(o.ok()), ["104857600", "50000"]);
    p.podman(&["rm", "--force", "--time", "0", &name]).ok();
}

fn podman_exec_failures_map_to_126_and_127(rt: &Runtime) {
    // podman maps the runtime's error text to 127 (not found) and 126
    // (cannot be executed), as docker does.
    let p = Podman::new(rt);
    let o = p.run(&["--rm", IMAGE, "/nonexistent"]);
    o.code(127);
    assert!(o.stderr.contains("/nonexistent"), "{o}");
    let o = p.run(&["--rm", IMAGE, "/etc/passwd"]);
    o.code(126);
    assert!(o.stderr.contains("/etc/passwd"), "{o}");

    let name = unique("bh-execfail");
    p.run(&["-d", "--name", &name, IMAGE, "sleep", "1000"]).ok();
    let o = p.podman(&["exec", &name, "/nonexistent"]);
    o.code(127);
    assert!(o.stderr.contains("/nonexistent"), "{o}");
    p.podman(&["exec", &name, "/etc/passwd"]).code(126);
    // The container is unaffected.
    assert_eq!(p.podman(&["exec", &name, "echo", "fine"]).ok(), "fine\n");
    p.podman(&["rm", "--force", "--time", "0", &name]).ok();
    assert_eq!(p.all_containers(), Vec::<String>::new());
}

fn podman_pod_members_share_namespaces(rt: &Runtime) {
    let p = Podman::new(rt);
    let pod = unique("bh-pod");
    // The infra container (catatonit) runs with the runtime too.
    p.podman(&[
        "pod",
        "create",
        "--name",
        &pod,
        "--network",
        "none",
        "--cgroup-parent",
        &p.cgroup_parent,
    ])
    .ok();
    let member = unique("bh-member");
    p.run(&[
        "-d", "--pod", &pod, "--name", &member, IMAGE, "sleep", "1000",
    ])
    .ok();
    let probe = "readlink /proc/self/ns/ipc; readlink /proc/self/ns/uts; hostname";
    let a = p.podman(&["exec", &member, "sh", "-c", probe]);
    let b = p.run(&["--rm", "--pod", &pod, IMAGE, "sh", "-c", probe]);
    assert_eq!(a.ok(), b.ok());
    assert_eq!(lines(a.ok())[2], pod, "{a}");
    let alone = p.run(&["--rm", IMAGE, "sh", "-c", probe]);
    assert_ne!(lines(alone.ok())[0], lines(a.ok())[0], "{alone}");
    let status = p.podman(&["pod", "ps", "--format", "{{.Name}} {{.Status}}"]);
    assert_eq!(status.ok().trim(), format!("{pod} Running"));
    p.podman(&["pod", "stop", "--time", "0", &pod]).ok();
    p.podman(&["pod", "rm", &pod]).ok();
    assert_eq!(p.all_containers(), Vec::<String>::new());
}

fn podman_sdnotify_container_forwards_ready(rt: &Runtime) {
    let p = Podman::new(rt);
    let sock = NotifySocket::new(&p.dir);
    let name = unique("bh-notify");
    // busybox has no systemd-notify; `logger` sends one datagram to /dev/log,
    // pointed here at $NOTIFY_SOCKET. Its second line is READY=1.
    let mut c = p.cmd();
    c.env("NOTIFY_SOCKET", &sock.path)
        .arg("run")
        .args(p.run_flags())
        .args([
            "-d",
            "--sdnotify=container",
            "--name",
            &name,
            IMAGE,
            "sh",
            "-c",
            "ln -sf \"$NOTIFY_SOCKET\" /dev/log && logger -t x \"$(printf 'y\\nREADY=1')\"; \
             sleep 1000",
        ]);
    run_cmd(&mut c, None).ok();
    let got = sock.until("READY=1");
    assert!(
        got.iter().any(|d| d.lines().any(|l| l == "READY=1")),
        "no READY=1 reached NOTIFY_SOCKET; datagrams: {got:?}"
    );
    p.podman(&["rm", "--force", "--time", "0", &name]).ok();
}

fn podman_run_options_reach_the_container(rt: &Runtime) {
    let p = Podman::new(rt);
    let check = |opts: &[&str], script: &str| -> Vec<String> {
        let mut args = vec!["--rm"];
        args.extend(opts);
        args.extend([IMAGE, "sh", "-c", script]);
        lines(p.run(&args).ok())
    };
    assert_eq!(
        check(
            &[
                "--user",
                "1000:1000",
                "--workdir",
                "/tmp",
                "--hostname",
                "hh",
                "--env",
                "A=b"
            ],
            "id -u; id -g; pwd; hostname; echo $A"
        ),
        ["1000", "1000", "/tmp", "hh", "b"]
    );
    // podman's default seccomp profile applies; no_new_privs only on request.
    let status = "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d ' \\t'";
    assert_eq!(check(&[], status), ["NoNewPrivs:0", "Seccomp:2"]);
    assert_eq!(
        check(&["--security-opt", "no-new-privileges"], status),
        ["NoNewPrivs:1", "Seccomp:2"]
    );
    assert_eq!(
        check(&["--security-opt", "seccomp=unconfined"], status),
        ["NoNewPrivs:0", "Seccomp:0"]
    );
    // --privileged adds CAP_SYS_ADMIN (bit 21), absent by default.
    let sys_admin = 1u64 << 21;
    let caps = |opts: &[&str]| cap_eff(&check(opts, "grep CapEff /proc/self/status")[0]);
    assert_eq!(caps(&[]) & sys_admin, 0);
    assert_eq!(caps(&["--privileged"]) & sys_admin, sys_admin);
    // Mounts: a tmpfs with a size, a read-only bind of a host directory.
    let host = p.dir.join("vol");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("f"), "from-host\n").unwrap();
    let vol = format!("{}:/vol:ro", host.display());
    assert_eq!(
        check(
            &["--tmpfs", "/scratch:size=1m", "--volume", &vol],
            "grep ' /scratch ' /proc/mounts | cut -d' ' -f3; df -k /scratch | tail -n 1 | \
             tr -s ' ' | cut -d' ' -f2; cat /vol/f; \
             if touch /vol/g 2>/dev/null; then echo vol-rw; else echo vol-ro; fi"
        ),
        ["tmpfs", "1024", "from-host", "vol-ro"]
    );
    // Kernel knobs and limits of the process spec.
    assert_eq!(
        check(
            &[
                "--sysctl",
                "kernel.msgmax=12345",
                "--oom-score-adj",
                "100",
                "--shm-size",
                "8m",
                "--cpus",
                "0.5",
                "--cpu-shares",
                "512"
            ],
            "cat /proc/sys/kernel/msgmax /proc/self/oom_score_adj; \
             df -k /dev/shm | tail -n 1 | tr -s ' ' | cut -d' ' -f2; \
             cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.shares"
        ),
        ["12345", "100", "8192", "50000", "512"]
    );
    // A user namespace with a mapping.
    assert_eq!(
        check(
            &["--uidmap", "0:100000:65536", "--gidmap", "0:100000:65536"],
            "tr -s ' ' < /proc/self/uid_map; tr -s ' ' < /proc/self/gid_map; id -u"
        ),
        [" 0 100000 65536", " 0 100000 65536", "0"]
    );
}

fn podman_init_healthcheck_preserve_fds(rt: &Runtime) {
    let p = Podman::new(rt);
    // --init: podman's catatonit is pid 1, the command its child.
    let o = p.run(&[
        "--rm",
        "--init",
        IMAGE,
        "sh",
        "-c",
        "cat /proc/1/comm; echo $$",
    ]);
    assert_eq!(lines(o.ok())[0], "podman-init", "{o}");
    assert_ne!(lines(o.ok())[1], "1", "{o}");

    // healthcheck run execs the check in the container.
    let name = unique("bh-health");
    p.run(&[
        "-d",
        "--name",
        &name,
        "--health-cmd",
        "test -e /tmp/ok",
        "--health-interval",
        "0",
        IMAGE,
        "sleep",
        "1000",
    ])
    .ok();
    p.podman(&["healthcheck", "run", &name]).code(1);
    p.podman(&["exec", &name, "touch", "/tmp/ok"]).ok();
    p.podman(&["healthcheck", "run", &name]).ok();
    assert_eq!(p.inspect(&name, "{{.State.Health.Status}}"), "healthy");

    // --preserve-fds 1: our fd 3 reaches the container (run) and an exec.
    let file = p.dir.join("fd3");
    fs::write(&file, "through-fd-3\n").unwrap();
    let with_fd3 = |args: &[&str]| {
        let f = fs::File::open(&file).unwrap();
        let mut c = p.cmd();
        c.args(args);
        let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut c, move || {
                // dup2 onto itself would keep FD_CLOEXEC: clear it instead.
                let r = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = run_cmd(&mut c, None);
        drop(f);
        o
    };
    let mut args = vec!["run".to_string()];
    args.extend(p.run_flags());
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--rm", "--preserve-fds", "1", IMAGE, "sh", "-c", "cat <&3"]);
    assert_eq!(with_fd3(&args).ok(), "through-fd-3\n");
    let o = with_fd3(&["exec", "--preserve-fds", "1", &name, "sh", "-c", "cat <&3"]);
    assert_eq!(o.ok(), "through-fd-3\n");
    p.podman(&["rm", "--force", "--time", "0", &name]).ok();
}

fn podman_kill_of_a_paused_container(rt: &Runtime) {
    let p = Podman::new(rt);
    let name = unique("bh-killpaused");
    p.run(&["-d", "--name", &name, IMAGE, "sleep", "1000"]).ok();
    p.wait_status(&name, "running");
    p.podman(&["pause", &name]).ok();
    // SIGKILL to a paused container: runc thaws it after signalling.
    p.podman(&["kill", &name]).ok();
    p.wait_status(&name, "exited");
    assert_eq!(p.inspect(&name, "{{.State.ExitCode}}"), "137");
    p.podman(&["rm", &name]).ok();
}

// ===========================================================================
// containerd
// ===========================================================================

fn ctr_run_rm_prints_and_exits_with_the_code(rt: &Runtime) {
    let c = Containerd::new(rt);
    let id = unique("bh-run");
    let o = c.run(
        &["--rm"],
        &id,
        &["sh", "-c", "echo hi from ctr; echo to-stderr >&2; exit 4"],
    );
    assert_eq!(o.code(4), "hi from ctr\n");
    assert!(o.stderr.contains("to-stderr"), "{o}");
    assert_eq!(c.list("task"), Vec::<String>::new());
    assert_eq!(c.list("container"), Vec::<String>::new());

    // A runtime error reaches ctr through the shim (from the runtime's --log json).
    let bad = unique("bh-bad");
    let o = c.run(&["--rm"], &bad, &["/nonexistent"]);
    assert_ne!(o.code, 0, "{o}");
    assert!(o.stderr.contains("/nonexistent"), "{o}");
    assert_eq!(c.list("task"), Vec::<String>::new());
}

fn ctr_detached_exec_ps_pause_kill(rt: &Runtime) {
    let c = Containerd::new(rt);
    let id = unique("bh-detached");
    c.run(
        &["-d"],
        &id,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        ],
    )
    .ok();
    let pid = c.wait_task_status(&id, "RUNNING");
    assert!(alive(pid));
    // The runtime under test made it.
    assert!(
        rt.knows_in(Some(&c.runtime_root()), &id),
        "{} does not know task {id}",
        rt.name
    );

    // task exec: output and exit code; options; namespaces.
    let o = c.exec(&["--exec-id", "e1", &id, "sh", "-c", "echo in-exec; exit 5"]);
    assert_eq!(o.code(5), "in-exec\n");
    let o = c.exec(&[
        "--exec-id",
        "e2",
        "--cwd",
        "/tmp",
        "--user",
        "1000",
        &id,
        "sh",
        "-c",
        "id -u; pwd",
    ]);
    assert_eq!(lines(o.ok()), ["1000", "/tmp"]);
    let o = c.exec(&["--exec-id", "e3", &id, "readlink", "/proc/self/ns/pid"]);
    let host = fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert_eq!(o.ok().trim(), host.to_string_lossy());

    // task ps calls `RUNTIME ps --format json ID`.
    let ps = c.ctr(&["task", "ps", &id]);
    let pids: Vec<i64> = ps
        .ok()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(pids.contains(&pid), "{ps}");

    // pause / resume.
    let freezer = v1_cgroup_dir(pid, "freezer").join("freezer.state");
    c.ctr(&["task", "pause", &id]).ok();
    assert_eq!(c.task(&id).unwrap().1, "PAUSED");
    assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    c.ctr(&["task", "resume", &id]).ok();
    assert_eq!(c.task(&id).unwrap().1, "RUNNING");
    assert_eq!(fs::read_to_string(&freezer).unwrap().trim(), "THAWED");

    // kill (SIGTERM): the trap exits 0.
    c.ctr(&["task", "kill", "--signal", "SIGTERM", &id]).ok();
    c.wait_task_status(&id, "STOPPED");
    let o = c.ctr(&["task", "delete", &id]);
    o.ok();
    assert!(!o.stderr.contains("non-zero exit code"), "{o}");
    c.ctr(&["container", "delete", &id]).ok();
    assert!(!alive(pid));
    assert!(!rt.knows_in(Some(&c.runtime_root()), &id));

    // kill -s SIGKILL: the exit status is 137.
    let id = unique("bh-killed");
    c.run(&["-d"], &id, &["sleep", "1000"]).ok();
    c.wait_task_status(&id, "RUNNING");
    c.ctr(&["task", "kill", "--signal", "SIGKILL", &id]).ok();
    c.wait_task_status(&id, "STOPPED");
    let o = c.ctr(&["task", "delete", &id]);
    o.ok();
    assert!(o.stderr.contains("exit code 137"), "{o}");
    c.ctr(&["container", "delete", &id]).ok();

    // kill --all: every process of the container dies.
    let id = unique("bh-killall");
    c.run(
        &["-d"],
        &id,
        &["sh", "-c", "sleep 1000 & sleep 1000 & wait"],
    )
    .ok();
    c.wait_task_status(&id, "RUNNING");
    let all: Vec<i64> = wait_for("three processes in the task", || {
        let ps = c.ctr(&["task", "ps", &id]);
        let v: Vec<i64> = ps
            .ok()
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        (v.len() == 3).then_some(v)
    });
    c.ctr(&["task", "kill", "--all", "--signal", "SIGKILL", &id])
        .ok();
    c.wait_task_status(&id, "STOPPED");
    for p in &all {
        wait_for(&format!("pid {p} to die"), || (!alive(*p)).then_some(()));
    }
    c.ctr(&["task", "delete", &id]).ok();
    c.ctr(&["container", "delete", &id]).ok();
    assert_eq!(c.list("container"), Vec::<String>::new());
}

fn ctr_foreground_run_killed_returns_137(rt: &Runtime) {
    let c = Containerd::new(rt);
    let id = unique("bh-fg");
    let log = c.dir.join("fg.out");
    let mut child = c
        .run_cmd(&["--rm"], &id, &["sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    c.wait_task_status(&id, "RUNNING");
    c.ctr(&["task", "kill", "--signal", "SIGKILL", &id]).ok();
    let code = wait_child(&mut child, "ctr run");
    assert_eq!(
        code,
        137,
        "ctr run output: {}",
        fs::read_to_string(&log).unwrap()
    );
    wait_for("--rm to remove the container", || {
        c.list("container").is_empty().then_some(())
    });
}

fn ctr_tty_run_and_exec_from_a_pty(rt: &Runtime) {
    let c = Containerd::new(rt);
    let id = unique("bh-tty");
    // run -t: the shim passes --console-socket and relays the pty.
    tty_session(
        c.run_cmd(&["-t", "--rm"], &id, &["sh"]),
        (20, 70),
        6,
        "ctr run -t",
    );

    // task exec -t
    let id = unique("bh-ttyexec");
    c.run(&["-d"], &id, &["sleep", "1000"]).ok();
    c.wait_task_status(&id, "RUNNING");
    let mut cmd = c.cmd();
    cmd.args(["task", "exec", "--fifo-dir"])
        .arg(c.dir.join("fifo"))
        .args(["-t", "--exec-id", "t1", &id, "sh"]);
    tty_session(cmd, (25, 90), 7, "ctr task exec -t");
    c.ctr(&["task", "kill", "--signal", "SIGKILL", &id]).ok();
    c.wait_task_status(&id, "STOPPED");
    c.ctr(&["task", "delete", &id]).ok();
    c.ctr(&["container", "delete", &id]).ok();
}

fn ctr_limits_take_effect(rt: &Runtime) {
    let c = Containerd::new(rt);
    let limited = unique("bh-limited");
    c.run(
        &[
            "-d",
            "--memory-limit",
            "67108864",
            "--cap-drop",
            "CAP_CHOWN",
            "--cap-drop",
            "CAP_KILL",
            "--read-only",
        ],
        &limited,
        &["sleep", "1000"],
    )
    .ok();
    let free = unique("bh-free");
    c.run(&["-d"], &free, &["sleep", "1000"]).ok();
    let pid = c.wait_task_status(&limited, "RUNNING");
    let free_pid = c.wait_task_status(&free, "RUNNING");

    // ctr's default spec mounts no cgroupfs in the container: read the
    // memory limit on the host, and through the shim (`ctr task metrics`).
    let limit = |pid: i64| {
        fs::read_to_string(v1_cgroup_dir(pid, "memory").join("memory.limit_in_bytes"))
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(limit(pid), "67108864");
    assert_ne!(limit(free_pid), "67108864");
    let m = c.ctr(&["task", "metrics", &limited]);
    assert!(
        m.ok().lines().any(|l| {
            l.split_whitespace().collect::<Vec<_>>() == ["memory.limit_in_bytes", "67108864"]
        }),
        "{m}"
    );

    // Capabilities (of the init, pid 1) and the read-only root, seen from inside.
    let status = |id: &str| {
        let o = c.exec(&["--exec-id", "p", id, "cat", "/proc/1/status"]);
        o.ok().to_string()
    };
    let (chown, kill) = (1u64 << 0, 1u64 << 5); // CAP_CHOWN, CAP_KILL
    let caps = cap_eff(&status(&limited));
    assert_eq!(caps & (chown | kill), 0, "CapEff {caps:x}");
    let free_caps = cap_eff(&status(&free));
    assert_eq!(
        free_caps & (chown | kill),
        chown | kill,
        "CapEff {free_caps:x}"
    );
    assert_eq!(caps, free_caps & !(chown | kill));
    let ro = "if touch /probe2 2>/dev/null; then echo root-rw; else echo root-ro; fi";
    let o = c.exec(&["--exec-id", "r", &limited, "sh", "-c", ro]);
    assert_eq!(o.ok(), "root-ro\n");
    let o = c.exec(&["--exec-id", "r", &free, "sh", "-c", ro]);
    assert_eq!(o.ok(), "root-rw\n");
}

fn ctr_kill_of_a_paused_task(rt: &Runtime) {
    let c = Containerd::new(rt);
    let id = unique("bh-killpaused");
    c.run(&["-d"], &id, &["sleep", "1000"]).ok();
    c.wait_task_status(&id, "RUNNING");
    c.ctr(&["task", "pause", &id]).ok();
    c.wait_task_status(&id, "PAUSED");
    c.ctr(&["task", "kill", "--signal", "SIGKILL", &id]).ok();
    c.wait_task_status(&id, "STOPPED");
    let o = c.ctr(&["task", "delete", &id]);
    o.ok();
    assert!(o.stderr.contains("exit code 137"), "{o}");
    c.ctr(&["container", "delete", &id]).ok();
}
