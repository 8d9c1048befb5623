//! A terminal for tests to drive, as a person at a keyboard would: a pty whose
//! slave is the controlling terminal and stdio of the spawned command (a
//! session of its own, its process group in the foreground), and whose master
//! the test writes keystrokes to and reads the screen from.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
use rustix::termios::{tcsetwinsize, Winsize};

/// How long a test waits for output before it fails (a bound on failure,
/// never a measurement).
const PATIENCE: Duration = Duration::from_secs(60);

pub struct Term {
    master: OwnedFd,
    slave: OwnedFd,
    /// Everything read from the master so far.
    screen: Vec<u8>,
    /// Where the next `expect` starts looking.
    pos: usize,
}

impl Term {
    /// A new terminal of `rows` x `cols`, in the kernel's default (cooked) mode.
    pub fn open(rows: u16, cols: u16) -> Term {
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let name = ptsname(&master, Vec::new()).unwrap();
        let slave = rustix::fs::open(
            name.as_c_str(),
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NOCTTY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let t = Term {
            master,
            slave,
            screen: Vec::new(),
            pos: 0,
        };
        t.resize(rows, cols);
        t
    }

    /// Start `cmd` on this terminal: its stdin, stdout and stderr, and its
    /// controlling terminal with `cmd` in the foreground.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let io = || Stdio::from(self.slave.try_clone().unwrap());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.stdin(io()).stdout(io()).stderr(io()).spawn().unwrap()
    }

    /// Type `keys`.
    pub fn send(&self, keys: &str) {
        let mut f = std::fs::File::from(self.master.try_clone().unwrap());
        f.write_all(keys.as_bytes()).unwrap();
    }

    /// Read the screen until `pat` appears after what earlier calls consumed;
    /// return the text up to and including it.
    pub fn expect(&mut self, pat: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let text = String::from_utf8_lossy(&self.screen[self.pos..]).into_owned();
            if let Some(i) = text.find(pat) {
                let upto = &text[..i + pat.len()];
                self.pos += upto.len();
                return upto.to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && self.read_some(left),
                "{pat:?} never appeared on the terminal; it shows:\n{}",
                String::from_utf8_lossy(&self.screen)
            );
        }
    }

    /// Everything on the screen so far.
    pub fn screen(&mut self) -> String {
        while self.read_some(Duration::ZERO) {}
        String::from_utf8_lossy(&self.screen).into_owned()
    }

    /// Read what the master has within `wait`; false if nothing came.
    fn read_some(&mut self, wait: Duration) -> bool {
        let ts = Timespec {
            tv_sec: wait.as_secs() as i64,
            tv_nsec: wait.subsec_nanos() as i64,
        };
        let mut fds = [PollFd::new(&self.master, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(n) if n > 0 => {}
            _ => return false,
        }
        let mut buf = [0u8; 4096];
        match rustix::io::read(&self.master, &mut buf) {
            Ok(n) if n > 0 => {
                self.screen.extend_from_slice(&buf[..n]);
                true
            }
            _ => false,
        }
    }

    /// Set the window size (the kernel signals SIGWINCH to the foreground group).
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(&self.master, ws).unwrap();
    }

    /// The terminal's mode as `stty -g` prints it.
    pub fn stty_g(&self) -> String {
        let out = Command::new("stty")
            .arg("-g")
            .stdin(Stdio::from(self.slave.try_clone().unwrap()))
            .output()
            .unwrap();
        assert!(out.status.success(), "stty -g: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    pub fn slave(&self) -> std::os::fd::BorrowedFd<'_> {
        self.slave.as_fd()
    }
}

/// Wait for `child` to exit (bounded) and return its exit code.
pub fn exit_code(child: &mut Child) -> i32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st.code().unwrap_or(-1);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pid {} did not exit", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
