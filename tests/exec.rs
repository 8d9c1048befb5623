//! exec, terminals (console socket and the runtime's own relay), preserved
//! descriptors and sd_notify — the runtime features engines use.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

/// A running container with `sleep 60` (and podman's seccomp profile).
fn running(rt: &Rt, name: &str, seccomp: bool) -> (Bundle, String, i64) {
    let mut b = Bundle::new(name, &["sleep", "60"]);
    if seccomp {
        let caps: Vec<String> = oci::SPEC_CAPS.iter().map(|s| s.to_string()).collect();
        let sc = seccomp::profile::load_containers_profile(
            std::path::Path::new(seccomp::profile::PODMAN_PROFILE_PATH),
            &caps,
        )
        .unwrap();
        b.config["linux"]["seccomp"] = serde_json::to_value(sc).unwrap();
        b.save();
    }
    let id = unique(name);
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    (b, id, pid)
}

#[test]
fn exec_joins_namespaces_cgroup_and_seccomp() {
    let rt = Rt::new();
    let (_b, id, pid) = running(&rt, "exec", true);
    let out = ok(&rt.run(&[
        "exec", &id, "sh", "-c",
        "for t in pid net mnt ipc uts cgroup; do stat -L -c %i /proc/self/ns/$t; done; grep -E '^(Seccomp|NoNewPrivs|CapEff):' /proc/self/status; \
         cat /proc/self/cgroup | grep pids; hostname",
    ]));
    let l: Vec<&str> = out.lines().collect();
    for (i, t) in ["pid", "net", "mnt", "ipc", "uts", "cgroup"]
        .iter()
        .enumerate()
    {
        let want = fs::metadata(format!("/proc/{pid}/ns/{t}")).unwrap().ino();
        assert_eq!(
            l[i].parse::<u64>().unwrap(),
            want,
            "{t} namespace differs: {out}"
        );
    }
    assert!(out.contains("Seccomp:\t2"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    // The spec's set: AUDIT_WRITE, KILL, NET_BIND_SERVICE.
    assert!(out.contains("CapEff:\t0000000020000420"), "{out}");
    // Inside its cgroup namespace, the exec'd process is at the container's root.
    assert!(out.lines().any(|x| x.ends_with(":pids:/")), "{out}");
    assert!(out.trim_end().ends_with("bulkhead"), "{out}");
}

#[test]
fn exec_env_replaces_a_variable_of_the_process_env() {
    let rt = Rt::new();
    let mut b = Bundle::new("execenv", &["sleep", "60"]);
    b.config["process"]["env"] = json!(["PATH=/bin", "K=from_spec", "KEEP=1"]);
    b.save();
    let id = unique("execenv");
    ok(&rt.create(&id, &b));
    ok(&rt.run(&["start", &id]));
    // One entry per name, the later wins: --env over process.env...
    let out = ok(&rt.run(&[
        "exec",
        "--env",
        "K=from_cli",
        "--env",
        "NEW=2",
        &id,
        "sh",
        "-c",
        "echo $K; env | grep -c '^K='; echo $KEEP $NEW",
    ]));
    assert_eq!(
        out,
        "from_cli
1
1 2
"
    );
    // ...and within one --process file.
    let pj = b.dir.join("process.json");
    fs::write(
        &pj,
        json!({"args": ["sh", "-c", "echo $A; env | grep -c '^A='"], "cwd": "/",
        "env": ["A=first", "PATH=/bin", "A=second"], "user": {"uid": 0, "gid": 0}})
        .to_string(),
    )
    .unwrap();
    let out = ok(&rt.run(&["exec", "--process", pj.to_str().unwrap(), &id]));
    assert_eq!(
        out,
        "second
1
"
    );
}

#[test]
fn exec_exit_codes_user_env_cwd_and_errors() {
    let rt = Rt::new();
    let (_b, id, _) = running(&rt, "exec2", false);
    let out = rt.run(&["exec", &id, "sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = ok(&rt.run(&[
        "exec",
        "--user",
        "1000:1000",
        "-g",
        "44",
        "--env",
        "X=y",
        "--cwd",
        "/tmp",
        &id,
        "sh",
        "-c",
        "id -u; id -G; echo $X; pwd",
    ]));
    assert_eq!(out, "1000\n1000 44\ny\n/tmp\n");
    let e = fails(&rt.run(&["exec", &id, "no-such-program"]));
    assert!(e.contains("executable file not found"), "{e}");
    let e = fails(&rt.run(&["exec", "no-such-container", "true"]));
    assert!(e.contains("does not exist"), "{e}");
    // A --process file is the whole process.
    let pj = std::env::temp_dir()
        .join(unique("bh-process"))
        .with_extension("json");
    fs::write(&pj, json!({"args": ["sh", "-c", "echo from-process-json $A"], "cwd": "/", "env": ["A=1", "PATH=/bin"], "user": {"uid": 0, "gid": 0}}).to_string()).unwrap();
    let out = ok(&rt.run(&["exec", "--process", pj.to_str().unwrap(), &id]));
    assert_eq!(out, "from-process-json 1\n");
    fs::remove_file(&pj).unwrap();
    // A stopped container refuses exec.
    ok(&rt.run(&["kill", &id, "KILL"]));
    rt.wait_status(&id, "stopped");
    let e = fails(&rt.run(&["exec", &id, "true"]));
    assert!(e.contains("it is stopped"), "{e}");
}

#[test]
fn exec_detach_pid_file_and_preserved_fds() {
    let rt = Rt::new();
    let (_b, id, _) = running(&rt, "exec3", false);
    let pidfile = std::env::temp_dir().join(unique("bh-exec-pid"));
    ok(&rt.run(&[
        "exec",
        "--detach",
        "--pid-file",
        pidfile.to_str().unwrap(),
        &id,
        "sleep",
        "30",
    ]));
    let pid: i64 = fs::read_to_string(&pidfile).unwrap().parse().unwrap();
    assert!(alive(pid));
    let procs = cgroup_dirs_named(&id)
        .into_iter()
        .find(|d| d.to_string_lossy().contains("/pids/"))
        .unwrap();
    let members = fs::read_to_string(procs.join("cgroup.procs")).unwrap();
    assert!(
        members.lines().any(|l| l == pid.to_string()),
        "exec'd process not in the container's cgroup: {members}"
    );
    fs::remove_file(&pidfile).unwrap();
    // fd 3 passed with --preserve-fds 1; nothing else leaks.
    let data = std::env::temp_dir().join(unique("bh-exec-fd"));
    fs::write(&data, "through fd 3\n").unwrap();
    let script = format!(
        "exec 3<{} 7</etc/hostname; exec {} --root {} exec --preserve-fds 1 {id} sh -c 'cat <&3; ls /proc/self/fd | sort -n | tr \"\\n\" \" \"'",
        data.display(),
        bin(),
        rt.root.display()
    );
    let out = ok(&output(Command::new("sh").args(["-c", &script])));
    assert!(out.starts_with("through fd 3\n"), "{out}");
    let fds: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&fds[..4], &["0", "1", "2", "3"], "{out}");
    assert!(!fds.contains(&"7"), "an unpreserved fd leaked: {out}");
    fs::remove_file(&data).unwrap();
}

/// Receive the pty master sent over a console socket.
fn accept_master(l: &UnixListener) -> std::os::fd::OwnedFd {
    let (conn, _) = l.accept().unwrap();
    container::console::recv_fd(&conn, false)
        .unwrap()
        .expect("a pty master")
}

#[test]
fn terminal_over_a_console_socket() {
    let rt = Rt::new();
    let mut b = Bundle::new(
        "tty",
        &[
            "sh",
            "-c",
            "tty; stty size; stat -c 'console %t' /dev/console; read x; echo got:$x",
        ],
    );
    b.config["process"]["terminal"] = true.into();
    b.config["process"]["consoleSize"] = json!({"height": 33, "width": 101});
    b.save();
    let sock = b.dir.join("console.sock");
    let l = UnixListener::bind(&sock).unwrap();
    let id = unique("tty");
    rt.track(&id);
    let t = std::thread::spawn(move || accept_master(&l));
    ok(&output(
        rt.cmd()
            .args(["create", "--console-socket"])
            .arg(&sock)
            .arg("--bundle")
            .arg(&b.dir)
            .arg(&id),
    ));
    let master = t.join().unwrap();
    ok(&rt.run(&["start", &id]));
    let mut m = fs::File::from(master);
    m.write_all(b"hello\n").unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    // Read until the container's echo of our line (or the pty closes).
    for _ in 0..200 {
        match m.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
        if String::from_utf8_lossy(&out).contains("got:hello") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("/dev/pts/0"), "{text}");
    // /dev/console is the pty too (major 136, in hex).
    assert!(text.contains("console 88"), "{text}");
    assert!(text.contains("33 101"), "consoleSize not applied: {text}");
    assert!(text.contains("got:hello"), "{text}");
}

#[test]
fn foreground_run_and_exec_relay_the_terminal() {
    // `script` gives the runtime a pty as its stdio; the runtime then holds
    // the container's pty itself and relays it.
    let rt = Rt::new();
    let mut b = Bundle::new("relay", &["sh", "-c", "tty; echo relayed; exit 3"]);
    b.config["process"]["terminal"] = true.into();
    b.save();
    let id = unique("relay");
    rt.track(&id);
    let cmd = format!(
        "{} --root {} run --bundle {} {id}",
        bin(),
        rt.root.display(),
        b.dir.display()
    );
    let out = output(Command::new("timeout").args(["60", "script", "-qec", &cmd, "/dev/null"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/0") && text.contains("relayed"),
        "{text} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(3));

    let (_b2, id2, _) = running(&rt, "relay2", false);
    let cmd = format!(
        "{} --root {} exec -t {id2} sh -c 'tty; exit 4'",
        bin(),
        rt.root.display()
    );
    let out = output(Command::new("timeout").args(["60", "script", "-qec", &cmd, "/dev/null"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn sd_notify_is_relayed_to_the_engine() {
    // A static helper in the container sends READY=1 to $NOTIFY_SOCKET; the
    // runtime's start waits for it and tells our socket, with MAINPID.
    let rt = Rt::new();
    let b = Bundle::new(
        "notify",
        &["sh", "-c", "sleep 0.2; /bin/sd-notify && sleep 5"],
    );
    let src = b.dir.join("notify.c");
    fs::write(
        &src,
        r#"#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <stdlib.h>
int main(void) {
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p) return 2;
    int s = socket(AF_UNIX, SOCK_DGRAM, 0);
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strncpy(a.sun_path, p, sizeof a.sun_path - 1);
    return sendto(s, "READY=1", 7, 0, (struct sockaddr *)&a, sizeof a) < 0;
}
"#,
    )
    .unwrap();
    let st = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(b.rootfs().join("bin/sd-notify"))
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc is needed (scripts/deps.sh installs it)");
    b.save();
    let host = b.dir.join("host-notify.sock");
    let recv = std::os::unix::net::UnixDatagram::bind(&host).unwrap();
    recv.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let id = unique("notify");
    rt.track(&id);
    ok(&output(
        rt.cmd()
            .env("NOTIFY_SOCKET", &host)
            .args(["create", "--bundle"])
            .arg(&b.dir)
            .arg(&id),
    ));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    ok(&output(
        rt.cmd().env("NOTIFY_SOCKET", &host).args(["start", &id]),
    ));
    let mut buf = [0u8; 256];
    let n = recv.recv(&mut buf).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&buf[..n]),
        format!("READY=1\nMAINPID={pid}\n")
    );
}
