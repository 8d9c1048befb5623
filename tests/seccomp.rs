//! seccomp through the runtime: podman's default profile runs busybox, and
//! each kind of rule bites inside a real container.

mod common;

use std::io::Read;
use std::os::unix::net::UnixListener;

use common::*;
use serde_json::json;

fn profile(default: &str, syscalls: serde_json::Value) -> serde_json::Value {
    json!({"defaultAction": default, "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"], "syscalls": syscalls})
}

#[test]
fn podmans_default_profile_runs_busybox() {
    let caps: Vec<String> = oci_caps();
    let sc = seccomp::profile::load_containers_profile(
        std::path::Path::new(seccomp::profile::PODMAN_PROFILE_PATH),
        &caps,
    )
    .expect("podman's profile (scripts/deps.sh installs podman)");
    let out = sh_ok(
        "podman-profile",
        "grep Seccomp: /proc/self/status; ls /bin | wc -l; echo x > /tmp/f && cat /tmp/f",
        |b| {
            b.config["linux"]["seccomp"] = serde_json::to_value(&sc).unwrap();
            b.config["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
        },
    );
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0].split_whitespace().nth(1), Some("2"), "{out}");
    assert!(l[1].parse::<u32>().unwrap() > 100, "{out}");
    assert_eq!(l[2], "x");
}

fn oci_caps() -> Vec<String> {
    oci::DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
}

#[test]
fn errno_rule_makes_mkdir_fail_with_eperm() {
    let out = sh_ok(
        "errno",
        "mkdir /tmp/d 2>&1; echo rc=$?; ls / >/dev/null && echo ls-ok",
        |b| {
            b.config["linux"]["seccomp"] = profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]),
            );
            b.config["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
        },
    );
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("rc=1") && out.contains("ls-ok"), "{out}");
}

#[test]
fn errno_without_errnoret_defaults_to_eperm_and_custom_errno_works() {
    let out = sh_ok("errno2", "mkdir /tmp/d 2>&1; rmdir /tmp 2>&1; true", |b| {
        b.config["linux"]["seccomp"] = profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"},
                   {"names": ["rmdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]),
        );
    });
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("Function not implemented"), "{out}");
}

#[test]
fn kill_action_kills() {
    let (code, out, _) = sh("kill", "echo before; mkdir /x; echo after", |b| {
        b.config["linux"]["seccomp"] = profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS"}]),
        );
    });
    // sh runs mkdir in a child: the child dies of SIGSYS, sh goes on.
    assert_eq!(code, 0);
    assert!(out.contains("before") && out.contains("after"), "{out}");
    let (code, _, _) = sh("kill2", "exec mkdir /x", |b| {
        b.config["linux"]["seccomp"] = profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL"}]),
        );
    });
    assert_eq!(code, 128 + libc::SIGSYS, "the process must die of SIGSYS");
}

#[test]
fn argument_rules_bite() {
    // personality(0xffffffff) (a query) is allowed; any other value is refused.
    let out = sh_ok(
        "args",
        "setarch linux32 true 2>&1; echo rc=$?; uname -m",
        |b| {
            b.config["linux"]["seccomp"] = profile(
                "SCMP_ACT_ALLOW",
                json!([{"names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                    "args": [{"index": 0, "value": 4294967295u64, "op": "SCMP_CMP_NE"}]}]),
            );
        },
    );
    assert!(
        out.contains("rc=1") || out.contains("Operation not permitted"),
        "{out}"
    );
    assert!(out.contains("x86_64"), "{out}");
}

#[test]
fn notify_delivers_to_the_listener_which_answers() {
    // A listener (this test) receives the notify fd and state, then answers
    // the container's mkdir with a fake success, which the container sees.
    let dir = std::env::temp_dir().join(unique("bh-notify"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let agent = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        // Receive the message and the fd.
        let mut buf = vec![0u8; 16384];
        let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut cmsg = rustix::net::RecvAncillaryBuffer::new(&mut space);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let r = rustix::net::recvmsg(&conn, &mut iov, &mut cmsg, rustix::net::RecvFlags::empty())
            .unwrap();
        let mut fd = None;
        for m in cmsg.drain() {
            if let rustix::net::RecvAncillaryMessage::ScmRights(fds) = m {
                fd = fds.into_iter().next();
            }
        }
        let mut text = String::from_utf8_lossy(&buf[..r.bytes]).into_owned();
        let mut rest = String::new();
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(200)));
        let _ = conn.read_to_string(&mut rest);
        text.push_str(&rest);
        let fd = fd.expect("notify fd");
        // Answer one notification: mkdir "succeeds" with value 0.
        let n = seccomp::notify::receive(std::os::fd::AsFd::as_fd(&fd)).unwrap();
        seccomp::notify::respond(std::os::fd::AsFd::as_fd(&fd), n.id, 0, 0, false).unwrap();
        (text, n.data.nr)
    });
    let out = sh_ok(
        "notify",
        "mkdir /nowhere && echo mkdir-said-ok; test -d /nowhere || echo but-no-dir",
        |b| {
            b.config["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "listenerPath": sock,
                "listenerMetadata": "meta-42",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
            });
        },
    );
    let (msg, nr) = agent.join().unwrap();
    assert!(
        out.contains("mkdir-said-ok") && out.contains("but-no-dir"),
        "{out}"
    );
    let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
    assert_eq!(v["fds"], json!(["seccompFd"]));
    assert_eq!(v["metadata"], "meta-42");
    assert_eq!(v["state"]["status"], "created");
    assert!(
        nr == libc::SYS_mkdir as u32 || nr == libc::SYS_mkdirat as u32,
        "{nr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_profiles_fail_before_anything_starts() {
    let rt = Rt::new();
    for (name, sc, want) in [
        (
            "badaction",
            json!({"defaultAction": "SCMP_ACT_BOGUS"}),
            "unknown variant `SCMP_ACT_BOGUS`",
        ),
        (
            "badarch",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}),
            "unknown variant `SCMP_ARCH_Z80`",
        ),
        (
            "badarg",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "out of range",
        ),
        (
            "badop",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_SORTOF"}]}]}),
            "unknown variant `SCMP_CMP_SORTOF`",
        ),
        (
            "notsocket",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/etc/hostname", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}),
            "is not a Unix socket",
        ),
    ] {
        let mut b = Bundle::new(name, &["true"]);
        b.config["linux"]["seccomp"] = sc;
        b.save();
        let id = unique(name);
        let e = fails(&rt.create(&id, &b));
        assert!(e.contains(want), "{name}: {e}");
        assert_eq!(e.trim_end().lines().count(), 1, "{name}: {e}");
        assert!(!rt.root.join(&id).exists(), "{name}: state left behind");
    }
}
