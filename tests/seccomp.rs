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

/// Busybox under a seccomp profile (`None`: the one `spec` wrote) with a tmpfs /tmp: the
/// filter is on, a shell, ls, wc and a file write work; then `more` runs. Returns the lines
/// after the first three.
fn busybox_under(name: &str, profile: Option<serde_json::Value>, more: &str) -> Vec<String> {
    let script = format!(
        "grep Seccomp: /proc/self/status; ls /bin | wc -l; echo x > /tmp/f && cat /tmp/f; {more}"
    );
    let out = sh_ok(name, &script, |b| {
        match profile {
            Some(p) => b.config["linux"]["seccomp"] = p,
            None => assert!(
                b.config["linux"]["seccomp"].is_object(),
                "spec wrote no profile"
            ),
        }
        b.config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}));
    });
    let l: Vec<&str> = out.lines().collect();
    assert_eq!(l[0].split_whitespace().nth(1), Some("2"), "{out}");
    assert!(l[1].parse::<u32>().unwrap() > 100, "{out}");
    assert_eq!(l[2], "x");
    l[3..].iter().map(|s| s.to_string()).collect()
}

#[test]
fn podmans_default_profile_runs_busybox() {
    let caps: Vec<String> = oci_caps();
    let sc = seccomp::profile::load_containers_profile(
        std::path::Path::new(seccomp::profile::PODMAN_PROFILE_PATH),
        &caps,
    )
    .expect("podman's profile (scripts/deps.sh installs podman)");
    busybox_under(
        "podman-profile",
        Some(serde_json::to_value(&sc).unwrap()),
        "",
    );
}

/// The bounding set of a `bulkhead spec` bundle.
fn oci_caps() -> Vec<String> {
    oci::SPEC_CAPS.iter().map(|s| s.to_string()).collect()
}

#[test]
fn spec_default_profile_runs_busybox_and_refuses_user_namespaces() {
    let l = busybox_under(
        "default-profile",
        None,
        "mkdir /tmp/d && cd /tmp/d && ps >/dev/null && echo ps-ok; \
         unshare -U true 2>&1; echo unshare=$?",
    );
    assert_eq!(l[0], "ps-ok", "{l:?}");
    assert!(l[1].contains("Operation not permitted"), "{l:?}");
    assert_eq!(l.last().unwrap(), "unshare=1", "{l:?}");
}

/// The runtime adds no filter of its own: a config without `linux.seccomp` (what an engine
/// passes when it wants none) runs unfiltered.
#[test]
fn a_config_without_seccomp_runs_unfiltered() {
    let out = sh_ok("no-seccomp", "grep Seccomp: /proc/self/status", |b| {
        b.config["linux"].as_object_mut().unwrap().remove("seccomp");
    });
    assert_eq!(out.split_whitespace().nth(1), Some("0"), "{out}");
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

/// Exactly what Debian's busybox-static needs for `sh -c true` (strace), and
/// execve to start it. Nothing newer: no close_range, clone3, openat2,
/// faccessat2, rseq (glibc tolerates its EPERM).
const BUSYBOX_TRUE: [&str; 17] = [
    "arch_prctl",
    "brk",
    "execve",
    "exit_group",
    "getpid",
    "getppid",
    "getrandom",
    "getuid",
    "mprotect",
    "newfstatat",
    "prctl",
    "prlimit64",
    "readlink",
    "rt_sigaction",
    "set_robust_list",
    "set_tid_address",
    "uname",
];

fn minimal_profile() -> serde_json::Value {
    for newer in ["close_range", "clone3", "openat2", "faccessat2", "rseq"] {
        assert!(!BUSYBOX_TRUE.contains(&newer), "{newer}");
    }
    json!({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
           "syscalls": [{"names": BUSYBOX_TRUE, "action": "SCMP_ACT_ALLOW"}]})
}

#[test]
fn a_minimal_errno_profile_starts_with_and_without_no_new_privileges() {
    for nnp in [true, false] {
        let (code, out, err) = sh("minimal", "true", |b| {
            b.config["linux"]["seccomp"] = minimal_profile();
            b.config["process"]["noNewPrivileges"] = nnp.into();
        });
        assert_eq!(code, 0, "noNewPrivileges {nnp}: {out} {err}");
        assert!(err.is_empty(), "noNewPrivileges {nnp}: {err}");
    }
    // The profile does bite: anything outside it fails (ls needs openat...).
    let (code, _, _) = sh("minimal-bites", "ls / >/dev/null", |b| {
        b.config["linux"]["seccomp"] = minimal_profile();
    });
    assert_ne!(code, 0);
}

#[test]
fn exec_with_a_minimal_errno_profile_with_and_without_no_new_privileges() {
    for nnp in [true, false] {
        let rt = Rt::new();
        // A created container: its init waits before execve, not yet filtered
        // (it could not wait under this profile), and exec is allowed in it.
        let mut b = Bundle::new("minexec", &["sh", "-c", "true"]);
        b.config["linux"]["seccomp"] = minimal_profile();
        b.config["process"]["noNewPrivileges"] = nnp.into();
        b.save();
        let id = unique("minexec");
        ok(&rt.create(&id, &b));
        let out = rt.run(&["exec", &id, "sh", "-c", "true"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "noNewPrivileges {nnp}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = rt.run(&["exec", &id, "sh", "-c", "ls / >/dev/null"]);
        assert_ne!(out.status.code(), Some(0), "the filter applies to exec");
    }
}

#[test]
fn without_no_new_privileges_the_program_gets_exactly_its_capabilities() {
    // The filter needs CAP_SYS_ADMIN without no_new_privs; the runtime holds
    // it until execve, which must drop it: a non-root process keeps only its
    // ambient set, root its bounding set.
    let script = "grep -E '^Cap(Prm|Eff|Bnd|Amb):' /proc/self/status";
    let setup = |b: &mut Bundle| {
        b.config["linux"]["seccomp"] = profile(
            "SCMP_ACT_ALLOW",
            json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]),
        );
        b.config["process"]["noNewPrivileges"] = false.into();
    };
    let out = sh_ok("capsroot", script, setup);
    let field = |out: &str, name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:\t")))
            .unwrap()
            .to_string()
    };
    let bounding = field(&out, "CapBnd");
    assert_eq!(field(&out, "CapEff"), bounding, "{out}");
    assert_eq!(field(&out, "CapPrm"), bounding, "{out}");
    assert_eq!(u64::from_str_radix(&bounding, 16).unwrap() & (1 << 21), 0);

    let out = sh_ok("capsuser", script, |b| {
        setup(b);
        b.config["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        let caps = json!(["CAP_NET_BIND_SERVICE"]);
        for set in ["inheritable", "permitted", "effective", "ambient"] {
            b.config["process"]["capabilities"][set] = caps.clone();
        }
    });
    for set in ["CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(field(&out, set), "0000000000000400", "{set}: {out}");
    }
}

/// A seccomp agent written from runtime-spec's text (config-linux.md,
/// "seccomp" and "The Container Process State"), with nothing of bulkhead's:
/// accept a connection on listenerPath, read the container process state (JSON,
/// possibly in several pieces) and the fds named in `fds` (SCM_RIGHTS, first
/// piece) until the runtime closes the connection, as it must.
fn agent_accept(l: &UnixListener) -> (serde_json::Value, std::os::fd::OwnedFd) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let (conn, _) = l.accept().unwrap();
    // Fail rather than hang if the runtime never closes the connection.
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut text = Vec::new();
    let mut fds = Vec::new();
    loop {
        let mut buf = [0u8; 4096];
        let mut cbuf = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: a zeroed msghdr pointing at our buffers, filled by recvmsg.
        let n = unsafe {
            let mut m: libc::msghdr = std::mem::zeroed();
            m.msg_iov = &mut iov;
            m.msg_iovlen = 1;
            m.msg_control = cbuf.as_mut_ptr().cast();
            m.msg_controllen = std::mem::size_of_val(&cbuf);
            let n = libc::recvmsg(conn.as_raw_fd(), &mut m, 0);
            let mut c = libc::CMSG_FIRSTHDR(&m);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let count = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                    let data = libc::CMSG_DATA(c) as *const i32;
                    for i in 0..count {
                        fds.push(std::ptr::read_unaligned(data.add(i)));
                    }
                }
                c = libc::CMSG_NXTHDR(&m, c);
            }
            n
        };
        assert!(n >= 0, "recvmsg: {}", std::io::Error::last_os_error());
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n as usize]);
    }
    let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
    let names = v["fds"].as_array().unwrap();
    assert_eq!(names.len(), fds.len(), "{v}");
    let i = names
        .iter()
        .position(|n| n == "seccompFd")
        .expect("seccompFd");
    // SAFETY: the fd came to us with SCM_RIGHTS; we own it now.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fds[i]) };
    (v, fd)
}

/// Answer the next notification on `fd` with "success, value 0"; returns the
/// syscall number, the pid that made it and that process's parent (read
/// while it waits for the answer).
fn agent_answer(fd: &std::os::fd::OwnedFd) -> (i32, i64, i64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the seccomp_notif structs are plain data; the kernel wants the
    // receive buffer zeroed.
    unsafe {
        let mut n: libc::seccomp_notif = std::mem::zeroed();
        let r = libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_RECV as _, &mut n);
        assert_eq!(r, 0, "NOTIF_RECV: {}", std::io::Error::last_os_error());
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", n.pid)).unwrap();
        let ppid: i64 = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let resp = libc::seccomp_notif_resp {
            id: n.id,
            val: 0,
            error: 0,
            flags: 0,
        };
        let r = libc::ioctl(fd.as_raw_fd(), libc::SECCOMP_IOCTL_NOTIF_SEND as _, &resp);
        assert_eq!(r, 0, "NOTIF_SEND: {}", std::io::Error::last_os_error());
        (n.data.nr, n.pid as i64, ppid)
    }
}

#[test]
fn a_listener_written_from_the_spec_gets_the_init_and_exec_states() {
    let rt = Rt::new();
    let dir = std::env::temp_dir().join(unique("bh-agent"));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("agent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let mut b = Bundle::new(
        "agent",
        &[
            "sh",
            "-c",
            "mkdir /nowhere && echo said-ok > /dev/null; sleep 60",
        ],
    );
    b.config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "meta & <more>",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    b.config["annotations"] = json!({"com.example.k": "v"});
    b.save();
    let id = unique("agent");
    ok(&rt.create(&id, &b));
    let pid = rt.state(&id)["pid"].as_i64().unwrap();
    let start = {
        let mut c = rt.cmd();
        c.args(["start", &id]);
        std::thread::spawn(move || output(&mut c))
    };
    let (v, fd) = agent_accept(&listener);
    assert_eq!(v["ociVersion"], oci::OCI_VERSION);
    assert_eq!(v["fds"], json!(["seccompFd"]));
    assert_eq!(v["pid"], pid);
    assert_eq!(v["metadata"], "meta & <more>");
    assert_eq!(v["state"]["id"], id.as_str());
    assert_eq!(v["state"]["pid"], pid);
    assert_eq!(v["state"]["status"], "created");
    assert_eq!(
        v["state"]["bundle"],
        b.dir.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(v["state"]["annotations"], json!({"com.example.k": "v"}));
    let (nr, _, parent) = agent_answer(&fd);
    assert!(
        nr == libc::SYS_mkdir as i32 || nr == libc::SYS_mkdirat as i32,
        "{nr}"
    );
    assert_eq!(parent, pid, "the container's sh runs mkdir in a child");
    ok(&start.join().unwrap());

    // An exec'd process gets its own filter, listener fd and message.
    let exec = {
        let mut c = rt.cmd();
        c.args(["exec", &id, "sh", "-c", "mkdir /again && echo exec-said-ok"]);
        std::thread::spawn(move || output(&mut c))
    };
    let (v, fd) = agent_accept(&listener);
    let (nr, _, parent) = agent_answer(&fd);
    assert!(
        nr == libc::SYS_mkdir as i32 || nr == libc::SYS_mkdirat as i32,
        "{nr}"
    );
    assert_eq!(v["pid"], parent, "the message names the exec'd process");
    assert_eq!(v["state"]["pid"], pid);
    assert_eq!(v["state"]["status"], "running");
    assert_eq!(ok(&exec.join().unwrap()), "exec-said-ok\n");
    std::fs::remove_dir_all(&dir).unwrap();
}
