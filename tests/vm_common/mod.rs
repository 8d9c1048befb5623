//! Shared helpers of the VM end-to-end tests: building the test guest with gcc, unique
//! temporary directories removed even when a test fails, and running `bulkhead vm run`
//! with a time limit while its output streams in.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BULKHEAD: &str = env!("CARGO_BIN_EXE_bulkhead");

/// The guest images built once per test binary by guest/build.sh.
pub struct Guest {
    pub elf: PathBuf,
    pub bzimage: PathBuf,
}

pub fn guest() -> &'static Guest {
    static GUEST: OnceLock<Guest> = OnceLock::new();
    GUEST.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        // Per process, under the target dir: parallel test binaries never share outputs.
        let out =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-guest-{}", std::process::id()));
        let status = Command::new("sh")
            .arg(root.join("guest/build.sh"))
            .arg(&out)
            .status()
            .expect("run guest/build.sh (needs gcc and binutils)");
        assert!(status.success(), "guest/build.sh failed: {status}");
        Guest {
            elf: out.join("guest.elf"),
            bzimage: out.join("guest.bzImage"),
        }
    })
}

/// The static bulkhead of scripts/build.sh (musl): the binary users install, and the VM
/// guests' /init. $BULKHEAD_AGENT overrides it.
pub fn static_bulkhead() -> PathBuf {
    let agent = std::env::var_os("BULKHEAD_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/x86_64-unknown-linux-musl/release/bulkhead")
        });
    assert!(
        agent.is_file(),
        "{} is missing: build the static bulkhead with scripts/build.sh (./test.sh does)",
        agent.display()
    );
    agent
}

/// A temporary directory removed on drop (also when the test panics).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "bulkhead-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `bulkhead` whose stdout lines arrive on a channel; killed on drop.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    pub stdout: Vec<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
    stdin: Option<ChildStdin>,
}

pub fn spawn(args: &[&str]) -> Running {
    spawn_with(args, false)
}

/// [`spawn`] with stdin a pipe the test writes to ([`Running::send`]): the serial console's
/// input.
pub fn spawn_with_input(args: &[&str]) -> Running {
    spawn_with(args, true)
}

fn spawn_with(args: &[&str], input: bool) -> Running {
    spawn_on(Path::new(BULKHEAD), args, input)
}

/// [`spawn`] of another bulkhead binary (`input`: as [`spawn_with_input`]).
pub fn spawn_on(bin: &Path, args: &[&str], input: bool) -> Running {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(if input { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bulkhead");
    let out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdin = child.stdin.take();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line.trim_end_matches('\r').to_string()).is_err() {
                break;
            }
        }
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    Running {
        child,
        lines,
        stdout: Vec::new(),
        stderr: Some(stderr),
        stdin,
    }
}

pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The one serial line starting with `prefix` (panics with the whole output otherwise).
    pub fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no serial line starting with {prefix:?}\n{self}"))
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

impl Running {
    /// The `bulkhead` process (the jail's supervisor when the VMM is jailed).
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` to the `bulkhead` process.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own, not yet reaped, child.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Writes `bytes` to the serial console's input (needs [`spawn_with_input`]).
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("spawned without input");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for a serial line containing `needle`, up to `timeout`.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout.push(line.clone());
                    if line.contains(needle) {
                        return Some(line);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the process to end (killing it after `timeout`) and collects its output.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.stdout.push(l);
        }
        let stderr = self.stderr.take().and_then(|h| h.join().ok());
        Finished {
            status,
            stdout: std::mem::take(&mut self.stdout).join("\n"),
            stderr: stderr.unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `bulkhead` to completion.
pub fn run(args: &[&str], timeout: Duration) -> Finished {
    spawn(args).finish(timeout)
}

/// Wait for a VM told to shut down: it must exit 0 through the guest's i8042 reset.
pub fn finish_by_reset(vm: Running, timeout: Duration) -> Finished {
    let out = vm.finish(timeout);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stderr.contains("guest shut down (i8042 reset)"),
        "{out}"
    );
    out
}

/// The VMM's closing report line on stderr; checks the guest wrote the boot timer.
pub fn shutdown_report(out: &Finished) -> String {
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("bulkhead vm: guest shut down ("))
        .unwrap_or_else(|| panic!("no shutdown report on stderr\n{out}"));
    assert!(
        line.contains(", boot-timer ") && !line.contains("boot-timer not written"),
        "the guest did not write the boot timer\n{out}"
    );
    line.to_string()
}

/// FNV-1a, the checksum the test guest prints for the initrd.
pub fn fnv1a(data: &[u8]) -> u32 {
    data.iter().fold(2_166_136_261u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(16_777_619)
    })
}

/// Deterministic bytes for disks and initrds (xorshift).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The VMM: the one child of the `bulkhead` supervisor that is not the jail's cgroup reaper
/// (`bulkhead-jailrp`).
pub fn vmm_pid(vm: &Running) -> i32 {
    let pid = vm.pid();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let kids: Vec<i32> = children
            .split_whitespace()
            .filter_map(|c| c.parse().ok())
            .filter(|c| {
                std::fs::read_to_string(format!("/proc/{c}/comm"))
                    .is_ok_and(|n| n.trim() != "bulkhead-jailrp")
            })
            .collect();
        if kids.len() == 1 {
            return kids[0];
        }
        assert!(
            Instant::now() < deadline,
            "bulkhead {pid} has children {kids:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The directories of the VMM's own cgroup (`.../vm-<id>`, in the hierarchies it joined), from
/// /proc/PID/cgroup and the cgroup mounts.
pub fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut dirs = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next(), f.next().unwrap(), f.next().unwrap());
        if !path.rsplit('/').next().unwrap_or("").starts_with("vm-") {
            continue;
        }
        for m in mounts.lines() {
            let fields: Vec<&str> = m.split(' ').collect();
            let Some(dash) = fields.iter().position(|x| *x == "-") else {
                continue;
            };
            let fstype = fields[dash + 1];
            let opts = fields.last().unwrap();
            let matches = if ctrls.is_empty() {
                fstype == "cgroup2"
            } else {
                fstype == "cgroup" && ctrls.split(',').all(|c| opts.split(',').any(|o| o == c))
            };
            if matches && fields[3] == "/" {
                dirs.push(Path::new(fields[4]).join(path.trim_start_matches('/')));
            }
        }
    }
    dirs
}

/// Lets a test guest waiting on vsock port 1234 finish: the host-initiated connection, a line
/// each way (the guest echoes it upper-cased).
pub fn connect_1234(uds: &Path) {
    let mut s = UnixStream::connect(uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"CONNECT 1234\n").unwrap();
    let mut ok = [0u8; 32];
    let n = s.read(&mut ok).unwrap();
    assert!(ok[..n].starts_with(b"OK "), "{:?}", &ok[..n]);
    s.write_all(b"ping from the host test").unwrap();
    let mut echo = [0u8; 64];
    let n = s.read(&mut echo).unwrap();
    assert_eq!(&echo[..n], b"PING FROM THE HOST TEST");
}

/// Waits until the file at `path` contains `needle` (a console file the VMM writes).
pub fn wait_file(path: &Path, needle: &str, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return Some(text);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Answers the test guest's connection to host port 5000 (`<uds>_5000`): reads its line,
/// replies, and returns what it sent once it closes.
pub fn serve_port_5000(uds: &Path) -> std::thread::JoinHandle<String> {
    let listener = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap();
        s.write_all(b"reply from the host test").unwrap();
        // Keep the stream open until the guest closes its side.
        let _ = s.read(&mut buf);
        String::from_utf8_lossy(&buf[..n]).to_string()
    })
}

/// The test guest's counting mode.
pub const COUNT: &str = "console=ttyS0 bulkhead_test.mode=count";

/// `bulkhead vm run` of the counting guest with an API socket and a console file.
pub fn count_vm(socket: &Path, console: &Path, extra: &[&str]) -> Running {
    count_vm_with(COUNT, socket, console, extra)
}

/// [`count_vm`] with another command line (the counting mode's parameters).
pub fn count_vm_with(cmdline: &str, socket: &Path, console: &Path, extra: &[&str]) -> Running {
    count_vm_on(Path::new(BULKHEAD), cmdline, socket, console, extra)
}

/// [`count_vm_with`] on another bulkhead binary.
pub fn count_vm_on(
    bin: &Path,
    cmdline: &str,
    socket: &Path,
    console: &Path,
    extra: &[&str],
) -> Running {
    let mut args = vec![
        "vm",
        "run",
        "--kernel",
        guest().elf.to_str().unwrap(),
        "--cmdline",
        cmdline,
        "--api-socket",
        socket.to_str().unwrap(),
        "--console",
        console.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    spawn_on(bin, &args, false)
}

/// `bulkhead vm restore --snapshot STATE --mem MEM` plus `extra`.
pub fn restore(state: &Path, mem: &Path, extra: &[&str]) -> Running {
    restore_on(Path::new(BULKHEAD), state, mem, extra)
}

/// [`restore`] by another bulkhead binary.
pub fn restore_on(bin: &Path, state: &Path, mem: &Path, extra: &[&str]) -> Running {
    let mut args = vec![
        "vm",
        "restore",
        "--snapshot",
        state.to_str().unwrap(),
        "--mem",
        mem.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    spawn_on(bin, &args, true)
}

/// A `bulkhead` command that must succeed and print one JSON answer (the API clients).
pub fn api_ok(args: &[&str]) -> serde_json::Value {
    let out = run(args, Duration::from_secs(60));
    assert!(out.status.success(), "{args:?}\n{out}");
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

/// `bulkhead vm OP --api-socket SOCKET` (status, pause, resume, shutdown).
pub fn api_op(op: &str, socket: &Path) -> serde_json::Value {
    api_ok(&["vm", op, "--api-socket", socket.to_str().unwrap()])
}

/// `bulkhead vm snapshot [--diff]` of the VM at `socket` into `state` and `mem`: the finished
/// command (it may fail).
pub fn snapshot_cmd(socket: &Path, state: &Path, mem: &Path, diff: bool) -> Finished {
    let mut args = vec![
        "vm",
        "snapshot",
        "--api-socket",
        socket.to_str().unwrap(),
        "--snapshot",
        state.to_str().unwrap(),
        "--mem",
        mem.to_str().unwrap(),
    ];
    if diff {
        args.push("--diff");
    }
    run(&args, Duration::from_secs(60))
}

/// A `vm snapshot` that must succeed: the VMM's report.
pub fn snapshot_ok(socket: &Path, state: &Path, mem: &Path, diff: bool) -> serde_json::Value {
    let out = snapshot_cmd(socket, state, mem, diff);
    assert!(out.status.success(), "{out}");
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"))
}

/// `bulkhead vm snapshot` of the VM at `socket` into `state` and `mem`.
pub fn snapshot(socket: &Path, state: &Path, mem: &Path) -> serde_json::Value {
    snapshot_ok(socket, state, mem, false)
}

/// A failure of bad input: exit 1 and exactly one line `bulkhead: ...` containing `expect`.
pub fn one_error_line(out: &Finished, expect: &str) {
    assert_eq!(out.status.code(), Some(1), "{out}");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line\n{out}");
    assert!(
        lines[0].starts_with("bulkhead: ") && lines[0].contains(expect),
        "expected {expect:?}\n{out}"
    );
}

/// The `count N HASH` lines of a console text, in order.
pub fn counts(text: &str) -> Vec<(u64, String)> {
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            match f.as_slice() {
                ["count", n, h] if h.starts_with("0x") => Some((n.parse().ok()?, h.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// The test guest's report of both vsock directions (host port 5000 answered by
/// [`serve_port_5000`], port 1234 by [`connect_1234`]).
pub fn assert_vsock_exchange(out: &Finished) {
    assert_eq!(
        out.line("vsock: host replied"),
        "vsock: host replied 'reply from the host test'"
    );
    assert_eq!(
        out.line("vsock: host sent"),
        "vsock: host sent 'ping from the host test'"
    );
}
