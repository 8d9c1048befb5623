//! Filters installed for real: children (forked, or spawned with the filter installed right
//! before execve, as the container init does) make syscalls and we check what the kernel
//! did. Needs root for nothing but the no_new_privs-free install test (these hosts run the
//! tests as root).

use std::ffi::CString;
use std::io::Read as _;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

mod harness;

use harness::{errno, in_child, wait, End};
use seccomp::profile::{load_containers_profile, PODMAN_DEFAULT_CAPS, PODMAN_PROFILE_PATH};
use seccomp::{compile, notify, Filter};

fn profile(json: &str) -> oci::Seccomp {
    serde_json::from_str(json).unwrap()
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("seccomp-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// mkdir(2) as a raw syscall: Ok or the errno.
fn mkdir(path: &CString) -> Result<(), i32> {
    // SAFETY: a NUL-terminated path and a mode.
    let r = unsafe { libc::syscall(libc::SYS_mkdir, path.as_ptr(), 0o755) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

#[test]
fn errno_rule_makes_mkdir_fail_with_eperm() {
    let dir = TempDir::new("errno");
    let target = CString::new(dir.0.join("made").to_str().unwrap()).unwrap();
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO"}]}"#,
    ))
    .unwrap();
    let end = in_child(&f, || match mkdir(&target) {
        Err(libc::EPERM) => 0,
        Err(e) => e,
        Ok(()) => 99,
    });
    assert_eq!(end, End::Exit(0));
    assert!(!dir.0.join("made").exists());
    // The same binary, unfiltered, can.
    mkdir(&target).unwrap();

    // And through a real program: coreutils mkdir, the filter installed right before
    // execve as the container init does.
    let out = Command::new("mkdir")
        .arg(dir.0.join("by-mkdir"))
        .pre_exec_filter(&f)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Operation not permitted"), "{err}");
}

#[test]
fn kill_actions_kill_with_sigsys_even_with_a_handler() {
    for action in [
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL_PROCESS",
    ] {
        let f = compile(&profile(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["getppid"],"action":"{action}"}}]}}"#
        )))
        .unwrap();
        let end = in_child(&f, || {
            catch_sigsys();
            // SAFETY: getppid has no arguments.
            unsafe { libc::syscall(libc::SYS_getppid) };
            1
        });
        assert_eq!(end, End::Signal(libc::SIGSYS), "{action}");
    }
}

/// A SIGSYS handler that exits 77 for a seccomp trap (si_code SYS_SECCOMP), 78 otherwise.
fn catch_sigsys() {
    extern "C" fn on_sigsys(_: i32, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
        // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
        let code = unsafe { (*info).si_code };
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(if code == 1 { 77 } else { 78 }) };
    }
    // SAFETY: installing a handler with a zeroed (empty) mask.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut());
    }
}

#[test]
fn trap_delivers_sigsys_to_the_handler() {
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getppid"],"action":"SCMP_ACT_TRAP"}]}"#,
    ))
    .unwrap();
    let end = in_child(&f, || {
        catch_sigsys();
        // SAFETY: getppid has no arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
        1
    });
    assert_eq!(end, End::Exit(77));
    // Without a handler the trap kills (default disposition of SIGSYS).
    let end = in_child(&f, || {
        // SAFETY: getppid has no arguments.
        unsafe { libc::syscall(libc::SYS_getppid) };
        1
    });
    assert_eq!(end, End::Signal(libc::SIGSYS));
}

fn personality(p: u64) -> Result<i64, i32> {
    // SAFETY: personality takes an integer.
    let r = unsafe { libc::syscall(libc::SYS_personality, p) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

#[test]
fn argument_rules_bite() {
    // personality allowed only for the query value 0xffffffff.
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ERRNO",
        "args":[{"index":0,"value":4294967295,"op":"SCMP_CMP_NE"}]}]}"#,
    ))
    .unwrap();
    let end = in_child(&f, || {
        match (personality(0xffff_ffff), personality(8), personality(0)) {
            (Ok(_), Err(libc::EPERM), Err(libc::EPERM)) => 0,
            _ => 1,
        }
    });
    assert_eq!(end, End::Exit(0));

    // A 64-bit comparison on both halves: kill(pid, sig) refused when pid > 2^32 - 1 can
    // only be told apart by the high half.
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpriority"],"action":"SCMP_ACT_ERRNO","errnoRet":13,
        "args":[{"index":1,"value":4294967296,"op":"SCMP_CMP_GE"}]}]}"#,
    ))
    .unwrap();
    let end = in_child(&f, || {
        let call = |who: u64| {
            // SAFETY: getpriority takes two integers.
            let r = unsafe { libc::syscall(libc::SYS_getpriority, libc::PRIO_PROCESS, who) };
            if r < 0 {
                errno()
            } else {
                0
            }
        };
        // who = 2^32: refused by the filter; who = 0 (self): allowed.
        match (call(1 << 32), call(0)) {
            (13, 0) => 0,
            _ => 1,
        }
    });
    assert_eq!(end, End::Exit(0));
}

fn podman_filter() -> Option<Filter> {
    if !Path::new(PODMAN_PROFILE_PATH).exists() {
        println!("SKIPPED: {PODMAN_PROFILE_PATH} is missing (install podman or containers-common)");
        return None;
    }
    let caps: Vec<String> = PODMAN_DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let p = load_containers_profile(PODMAN_PROFILE_PATH.as_ref(), &caps).unwrap();
    Some(compile(&p).unwrap())
}

trait PreExecFilter {
    fn pre_exec_filter(&mut self, f: &Filter) -> &mut Self;
}

impl PreExecFilter for Command {
    /// Set no_new_privs and install the filter in the child right before execve.
    fn pre_exec_filter(&mut self, f: &Filter) -> &mut Self {
        let f = f.clone();
        // SAFETY: the closure makes a prctl and the seccomp syscall; install() does not
        // allocate when it succeeds.
        unsafe {
            self.pre_exec(move || {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                f.install().map_err(std::io::Error::other)?;
                Ok(())
            })
        }
    }
}

const WORKLOAD: &str = r#"set -e
d=$(mktemp -d)
mkdir "$d/a"
echo hello > "$d/a/f"
cat "$d/a/f"
ls -la "$d/a" > /dev/null
mv "$d/a/f" "$d/a/g"
ln -s g "$d/a/l"
readlink "$d/a/l"
chmod 600 "$d/a/g"
wc -c < "$d/a/g"
rm -r "$d"
echo piped | cat | tr a-z A-Z
(sleep 0.01; echo sub) &
wait
id -u
uname -s
grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status
"#;

#[test]
fn podman_profile_runs_a_shell_workload() {
    let Some(f) = podman_filter() else { return };
    let busybox = Path::new("/usr/bin/busybox");
    let mut shells: Vec<(&str, Vec<&str>)> = vec![("/bin/sh", vec!["-c", WORKLOAD])];
    if busybox.exists() {
        shells.push(("/usr/bin/busybox", vec!["sh", "-c", WORKLOAD]));
    } else {
        println!(
            "busybox part SKIPPED: /usr/bin/busybox is missing (apt-get install busybox-static)"
        );
    }
    for (prog, args) in shells {
        let mut cmd = Command::new(prog);
        cmd.args(&args).stdin(Stdio::null());
        if prog.ends_with("busybox") {
            // Every command of the script from busybox's own applets.
            let bin = TempDir::new("bb");
            for applet in [
                "sh", "mktemp", "mkdir", "cat", "ls", "mv", "ln", "readlink", "chmod", "wc", "rm",
                "tr", "sleep", "id", "uname", "grep",
            ] {
                std::os::unix::fs::symlink(busybox, bin.0.join(applet)).unwrap();
            }
            cmd.env("PATH", &bin.0);
            let out = cmd.pre_exec_filter(&f).output().unwrap();
            check_workload(prog, &out);
        } else {
            let out = cmd.pre_exec_filter(&f).output().unwrap();
            check_workload(prog, &out);
        }
    }
}

fn check_workload(prog: &str, out: &std::process::Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{prog}: {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    for want in [
        "hello",
        "g",
        "6",
        "PIPED",
        "sub",
        "Linux",
        "Seccomp:\t2",
        "NoNewPrivs:\t1",
    ] {
        assert!(
            stdout.contains(want),
            "{prog}: no {want:?} in:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn podman_profile_refuses_what_it_should() {
    let Some(f) = podman_filter() else { return };
    let end = in_child(&f, || {
        // SAFETY: raw syscalls with integer arguments (io_uring_setup gets a NULL params
        // pointer: the filter answers before the kernel would look at it).
        let unknown = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, 0) };
        let unknown_errno = errno();
        let no_cap = unsafe { libc::syscall(libc::SYS_bpf, 0, 0, 0) };
        let no_cap_errno = errno();
        // socket(AF_NETLINK, SOCK_RAW, NETLINK_AUDIT) without CAP_AUDIT_WRITE.
        let audit = unsafe { libc::syscall(libc::SYS_socket, 16, 3, 9) };
        let audit_errno = errno();
        let ok = (unknown, unknown_errno) == (-1, libc::ENOSYS)
            && (no_cap, no_cap_errno) == (-1, libc::EPERM)
            && (audit, audit_errno) == (-1, libc::EINVAL)
            && personality(0x0040_0000) == Err(libc::ENOSYS)
            && personality(0xffff_ffff).is_ok();
        if ok {
            0
        } else {
            1
        }
    });
    assert_eq!(end, End::Exit(0));
}

// ------------------------------------------------------------------ NOTIFY

/// Receive one message with one fd (SCM_RIGHTS) on a connected stream.
fn recv_with_fd(sock: RawFd) -> (Vec<u8>, OwnedFd) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data, filled in below with buffers that outlive recvmsg;
    // CMSG_FIRSTHDR/CMSG_DATA stay inside cbuf.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
        let c = libc::CMSG_FIRSTHDR(&msg);
        assert!(!c.is_null(), "no fd came with the message");
        assert_eq!(
            ((*c).cmsg_level, (*c).cmsg_type),
            (libc::SOL_SOCKET, libc::SCM_RIGHTS)
        );
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const i32);
        buf.truncate(n as usize);
        // Read more only while the JSON is incomplete (the sender may split the message);
        // waiting for EOF instead could wait on a copy of the socket in a child forked by a
        // parallel test.
        while matches!(serde_json::from_slice::<serde_json::Value>(&buf), Err(e) if e.is_eof()) {
            let mut more = [0u8; 4096];
            let m = libc::read(sock, more.as_mut_ptr() as *mut libc::c_void, more.len());
            assert!(m > 0, "the message ended early");
            buf.extend_from_slice(&more[..m as usize]);
        }
        (buf, OwnedFd::from_raw_fd(fd))
    }
}

#[test]
fn notify_reaches_the_listener_which_answers() {
    let dir = TempDir::new("notify");
    let sock_path = dir.0.join("agent.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/unused","syscalls":[
        {"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
    ))
    .unwrap();
    assert!(f.uses_notify());

    // The seccomp agent: a thread that takes the fd and the state, then answers the first
    // mkdir with 42 and the second with EACCES.
    let agent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let (json, fd) = recv_with_fd(conn.as_raw_fd());
        let msg: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let mut answered = Vec::new();
        for answer in [(42i64, 0i32), (0, -libc::EACCES)] {
            let n = notify::receive(fd.as_fd()).unwrap();
            answered.push((n.data.nr, n.data.args[1], n.pid));
            notify::respond(fd.as_fd(), n.id, answer.0, answer.1, false).unwrap();
        }
        (msg, answered)
    });

    let (rd, wr) = pipe();
    let target = CString::new(dir.0.join("never").to_str().unwrap()).unwrap();
    // SAFETY: the child makes raw syscalls only and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls; the child never returns into the harness.
        unsafe {
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            let Ok(Some(lfd)) = f.install() else {
                libc::_exit(100)
            };
            // Tell the parent which fd number is the listener; it takes it with pidfd_getfd.
            let n = lfd.as_raw_fd();
            libc::write(wr.as_raw_fd(), &n as *const i32 as *const libc::c_void, 4);
            let first = libc::syscall(libc::SYS_mkdir, target.as_ptr(), 0o700);
            let second = libc::syscall(libc::SYS_mkdir, target.as_ptr(), 0o700);
            let second_errno = errno();
            libc::_exit(
                if first == 42 && second == -1 && second_errno == libc::EACCES {
                    0
                } else {
                    1
                },
            );
        }
    }
    drop(wr);
    let mut n = [0u8; 4];
    std::fs::File::from(rd).read_exact(&mut n).unwrap();
    let child_fd = i32::from_ne_bytes(n);
    // SAFETY: pidfd_open / pidfd_getfd on our own child; the new fd is ours to own.
    let listener_fd = unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, child_fd, 0);
        assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
        libc::close(pidfd as i32);
        OwnedFd::from_raw_fd(fd as i32)
    };
    let state = oci::State {
        oci_version: oci::OCI_VERSION.into(),
        id: "ctr-notify".into(),
        status: oci::Status::Creating,
        pid: Some(pid),
        bundle: "/run/bundle".into(),
        annotations: [("a".to_string(), "b".to_string())].into(),
    };
    seccomp::send_to_listener(
        &sock_path,
        listener_fd.as_fd(),
        pid,
        &state,
        Some("meta-data"),
    )
    .unwrap();
    drop(listener_fd);

    assert_eq!(wait(pid), End::Exit(0));
    let (msg, answered) = agent.join().unwrap();
    assert_eq!(msg["ociVersion"], oci::OCI_VERSION);
    assert_eq!(msg["fds"], serde_json::json!(["seccompFd"]));
    assert_eq!(msg["pid"], pid);
    assert_eq!(msg["metadata"], "meta-data");
    assert_eq!(msg["state"]["id"], "ctr-notify");
    assert_eq!(msg["state"]["status"], "creating");
    assert_eq!(msg["state"]["annotations"]["a"], "b");
    let mkdir_nr = libc::SYS_mkdir as u32;
    assert_eq!(
        answered,
        [(mkdir_nr, 0o700, pid as u32), (mkdir_nr, 0o700, pid as u32)]
    );
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds that we then own.
    unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

#[test]
fn a_listener_path_that_is_not_a_socket_is_a_clear_error() {
    let dir = TempDir::new("listener");
    let file = dir.0.join("file");
    std::fs::write(&file, "x").unwrap();
    let e = seccomp::check_listener_path(&file).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "linux.seccomp.listenerPath: {}: is not a Unix socket (it is a regular file)",
            file.display()
        )
    );
    let e = seccomp::check_listener_path(&dir.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.ends_with("is not a Unix socket (it is a directory)"),
        "{e}"
    );
    let missing = dir.0.join("missing");
    let e = seccomp::check_listener_path(&missing)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        format!(
            "linux.seccomp.listenerPath: {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    // A socket nobody listens on: bound, never listen(2)ed. (Not a dropped UnixListener: a
    // child forked meanwhile by a parallel test would still hold it open and accept.)
    let stale = dir.0.join("stale.sock");
    let _bound = bound_not_listening(&stale);
    seccomp::check_listener_path(&stale).unwrap();
    let (rd, _wr) = pipe();
    let state = oci::State {
        oci_version: oci::OCI_VERSION.into(),
        id: "x".into(),
        status: oci::Status::Creating,
        pid: Some(1),
        bundle: "/b".into(),
        annotations: Default::default(),
    };
    let e = seccomp::send_to_listener(&stale, rd.as_fd(), 1, &state, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("connect: Connection refused"), "{e}");
    let e = seccomp::send_to_listener(&file, rd.as_fd(), 1, &state, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("is not a Unix socket"), "{e}");
}

fn bound_not_listening(path: &Path) -> OwnedFd {
    // SAFETY: a new socket we own; sockaddr_un is plain data filled with a short path.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_un = std::mem::zeroed();
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr
            .sun_path
            .iter_mut()
            .zip(path.as_os_str().as_encoded_bytes())
        {
            *d = *s as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        assert_eq!(
            libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len),
            0
        );
        OwnedFd::from_raw_fd(fd)
    }
}

#[test]
fn install_without_no_new_privs_needs_cap_sys_admin() {
    let f = compile(&profile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#)).unwrap();
    // SAFETY: the child makes raw syscalls, formats one error and _exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: see above.
        unsafe {
            // As root without no_new_privs: allowed (CAP_SYS_ADMIN).
            if f.install().is_err() {
                libc::_exit(1);
            }
            // Become nobody: every capability is gone; still no no_new_privs.
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(2);
            }
            let code = match f.install() {
                Err(e @ seccomp::Error::Install { .. }) => {
                    let text = e.to_string();
                    if text.contains("Permission denied") && text.contains("no_new_privs") {
                        0
                    } else {
                        3
                    }
                }
                _ => 4,
            };
            libc::_exit(code);
        }
    }
    assert_eq!(wait(pid), End::Exit(0));
}

#[test]
fn flags_reach_the_kernel() {
    // TSYNC, LOG and SPEC_ALLOW are accepted by this kernel; the filter then applies to
    // every thread of the child (TSYNC), checked from a second thread.
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":5}]}"#,
    ))
    .unwrap();
    assert_eq!(
        f.flags(),
        seccomp::FLAG_TSYNC | seccomp::FLAG_LOG | seccomp::FLAG_SPEC_ALLOW
    );
    // A thread started before the install, observed after it.
    let end = in_child_threaded(&f);
    assert_eq!(end, End::Exit(0));
}

/// Fork; the child starts a thread that waits, installs `f` (TSYNC) on the main thread, then
/// lets the thread call getppid and report the errno.
fn in_child_threaded(f: &Filter) -> End {
    let (rd, wr) = pipe();
    let (rd2, wr2) = pipe();
    // SAFETY: the child uses raw syscalls and a raw pthread (no allocation by us).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: raw syscalls, a pthread whose start routine only makes syscalls.
        unsafe {
            extern "C" fn worker(arg: *mut libc::c_void) -> *mut libc::c_void {
                let fds = arg as *const [i32; 2];
                // SAFETY: arg points at two fds that outlive the thread (joined below).
                unsafe {
                    let mut b = [0u8; 1];
                    libc::read((*fds)[0], b.as_mut_ptr() as *mut libc::c_void, 1);
                    let r = libc::syscall(libc::SYS_getppid);
                    let e = if r < 0 { *libc::__errno_location() } else { 0 };
                    libc::write((*fds)[1], &e as *const i32 as *const libc::c_void, 4);
                }
                std::ptr::null_mut()
            }
            let fds = [rd.as_raw_fd(), wr2.as_raw_fd()];
            let mut t: libc::pthread_t = 0;
            libc::pthread_create(
                &mut t,
                std::ptr::null(),
                worker,
                &fds as *const [i32; 2] as *mut libc::c_void,
            );
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
            if f.install().is_err() {
                libc::_exit(100);
            }
            libc::write(wr.as_raw_fd(), b"go".as_ptr() as *const libc::c_void, 1);
            let mut e = 0i32;
            libc::read(rd2.as_raw_fd(), &mut e as *mut i32 as *mut libc::c_void, 4);
            libc::pthread_join(t, std::ptr::null_mut());
            libc::_exit(if e == 5 { 0 } else { 1 });
        }
    }
    drop((rd, wr, rd2, wr2));
    wait(pid)
}

/// An i386 syscall from this 64-bit process (`int $0x80`: the kernel runs it as ia32, and
/// seccomp sees AUDIT_ARCH_I386). Only for syscalls without arguments.
fn i386_syscall(nr: u32) -> i64 {
    let ret: u32;
    // SAFETY: int 0x80 with eax = a syscall number without arguments; the kernel returns in
    // eax and may not preserve r8-r11 for a 64-bit caller.
    unsafe {
        std::arch::asm!("int 0x80", inlateout("eax") nr => ret,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _);
    }
    ret as i32 as i64
}

/// An x32 syscall: the x86_64 entry with __X32_SYSCALL_BIT in the number. Seccomp sees it
/// even where the kernel has no x32 support (it then returns ENOSYS).
fn x32_syscall(nr: u32) -> Result<i64, i32> {
    // SAFETY: a syscall without arguments.
    let r = unsafe { libc::syscall((seccomp::X32_SYSCALL_BIT | nr) as libc::c_long) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

#[test]
fn i386_and_x32_calls_meet_their_sections() {
    const I386_GETPID: u32 = 20;
    const I386_GETPPID: u32 = 64;
    const X32_GETPID: u32 = 39;
    const X32_GETPPID: u32 = 110;
    // Not listed: both ABIs are bad arches and kill.
    let only64 = compile(&profile(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#)).unwrap();
    assert_eq!(
        in_child(&only64, || i386_syscall(I386_GETPID) as i32),
        End::Signal(libc::SIGSYS)
    );
    assert_eq!(
        in_child(&only64, || x32_syscall(X32_GETPID).is_ok() as i32),
        End::Signal(libc::SIGSYS)
    );

    // Listed: each ABI's own numbers meet the rule for the name.
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
        "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    ))
    .unwrap();
    let end = in_child(&f, || {
        // SAFETY: getppid has no arguments.
        let native = unsafe { libc::syscall(libc::SYS_getppid) };
        let native_errno = errno();
        let ok = i386_syscall(I386_GETPPID) == -13
            && i386_syscall(I386_GETPID) > 0
            && (native, native_errno) == (-1, 13)
            && x32_syscall(X32_GETPPID) == Err(13)
            // Allowed by the filter; the kernel's own answer (ENOSYS without x32 support).
            && matches!(x32_syscall(X32_GETPID), Ok(_) | Err(libc::ENOSYS));
        if ok {
            0
        } else {
            1
        }
    });
    assert_eq!(end, End::Exit(0));

    // i386 listed, x32 not: an x32 call is still a bad arch.
    let f = compile(&profile(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86"]}"#,
    ))
    .unwrap();
    assert_eq!(
        in_child(&f, || (i386_syscall(I386_GETPID) > 0) as i32),
        End::Exit(1)
    );
    assert_eq!(
        in_child(&f, || x32_syscall(X32_GETPID).is_ok() as i32),
        End::Signal(libc::SIGSYS)
    );
}
