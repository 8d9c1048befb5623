//! An unprivileged user made for one test (the tests run as root; rootless
//! bulkhead is tested as a real user): `useradd` with subordinate uid and gid
//! ranges (for newuidmap and rootless podman), a home, an XDG_RUNTIME_DIR, a
//! copy of the bulkhead binary it can execute, and commands run as it —
//! optionally from a cgroup v2 directory delegated to it.
//!
//! The binary: the checkout may sit where the user cannot enter (a CI clone
//! under /root, for instance), so it is hard-linked (or copied) into a
//! directory of the test's own, readable by all, instead of opening up
//! directories the test does not own.
//!
//! Its directory is under /var/tmp (a sandbox's /tmp is private, and the
//! sandboxes the user runs must see its home and the binary).
//!
//! Drop kills whatever the user left running (only its processes: the user
//! exists for this test alone), deletes the user with its home and its
//! subordinate ranges, removes the delegated cgroup and the directory.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{bin, output, subdirs_deepest_first, unique};

/// useradd and userdel lock /etc/passwd: one at a time in this process, and a
/// retry when another process holds the lock.
static ACCOUNTS: Mutex<()> = Mutex::new(());

pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// The test's directory (root's, 0755): home, run and bin are in it.
    pub dir: PathBuf,
    pub home: PathBuf,
    /// The user's XDG_RUNTIME_DIR (0700).
    pub run: PathBuf,
    /// bulkhead, where the user can execute it.
    pub bin: PathBuf,
    /// A cgroup v2 directory delegated to the user, once asked for.
    pub cgroup: Option<PathBuf>,
}

fn accounts(args: &[&str]) -> std::process::Output {
    let _lock = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = output(Command::new(args[0]).args(&args[1..]));
        let err = String::from_utf8_lossy(&out.stderr);
        // 10: "cannot lock /etc/passwd" (another process is at it); retry.
        let locked = out.status.code() == Some(10) || err.contains("lock");
        if out.status.success() || !locked || Instant::now() > deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The first free id after every subordinate range in `file`.
fn free_range(file: &str) -> u64 {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(f.get(1)?.parse::<u64>().ok()? + f.get(2)?.parse::<u64>().ok()?)
        })
        .max()
        .unwrap_or(100_000)
        .max(100_000)
}

fn has_range(file: &str, name: &str) -> bool {
    fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with(&format!("{name}:")))
}

impl User {
    /// A new user, named after `tag` and this test run (so parallel runs and
    /// parallel tests never share one).
    pub fn new(tag: &str) -> User {
        let name = unique(&format!("bh{tag}"));
        assert!(name.len() <= 32, "user name {name} too long");
        // Under /var/tmp, not /tmp: a sandbox's /tmp is private, and its
        // commands must see the home and the binary on the host's root.
        let base = Some(PathBuf::from("/var/tmp"))
            .filter(|b| b.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("bh-user-{name}"));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let home = dir.join("home");
        let out = accounts(&[
            "useradd",
            "--create-home",
            "--home-dir",
            &home.to_string_lossy(),
            "--shell",
            "/bin/sh",
            "--user-group",
            &name,
        ]);
        assert!(
            out.status.success(),
            "useradd {name} (Debian's passwd package; scripts/deps.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = |flag: &str| -> u32 {
            let o = output(Command::new("id").args([flag, &name]));
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        // Debian's useradd gives new users subordinate ranges (login.defs
        // SUB_UID_COUNT); where it did not, give one past every other.
        for (file, flag) in [
            ("/etc/subuid", "--add-subuids"),
            ("/etc/subgid", "--add-subgids"),
        ] {
            if !has_range(file, &name) {
                // usermod needs the file (a minimal system may lack it).
                if !std::path::Path::new(file).exists() {
                    fs::write(file, "").unwrap();
                }
                let lo = free_range(file);
                let range = format!("{lo}-{}", lo + 65535);
                let out = accounts(&["usermod", flag, &range, &name]);
                assert!(
                    out.status.success(),
                    "usermod {flag} {range} {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let run = dir.join("run");
        let bin_dir = dir.join("bin");
        for (d, owner, mode) in [(&run, Some((uid, gid)), 0o700), (&bin_dir, None, 0o755)] {
            fs::create_dir_all(d).unwrap();
            fs::set_permissions(d, fs::Permissions::from_mode(mode)).unwrap();
            if let Some((u, g)) = owner {
                std::os::unix::fs::chown(d, Some(u), Some(g)).unwrap();
            }
        }
        let exe = bin_dir.join("bulkhead");
        if fs::hard_link(bin(), &exe).is_err() {
            fs::copy(bin(), &exe).unwrap();
        }
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
        User {
            name,
            uid,
            gid,
            dir,
            home,
            run,
            bin: exe,
            cgroup: None,
        }
    }

    /// `program` as the user: its environment only (HOME, USER, PATH,
    /// XDG_RUNTIME_DIR), started in its home, in its delegated cgroup if any.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_clear()
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("XDG_RUNTIME_DIR", &self.run)
            .current_dir(&self.home);
        let procs = self
            .cgroup
            .as_ref()
            .map(|d| CString::new(d.join("cgroup.procs").to_string_lossy().as_bytes()).unwrap());
        let (uid, gid) = (self.uid, self.gid);
        // SAFETY: only async-signal-safe calls between fork and exec (open,
        // write, close, setgroups, setresgid, setresuid); the path was made
        // before the fork.
        unsafe {
            c.pre_exec(move || {
                // Still root here: move into the delegated cgroup ("0" is the
                // writer), which the user itself may not (the source cgroup is root's).
                if let Some(p) = &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(gid, gid, gid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    /// `bulkhead ARGS...` as the user.
    pub fn bulkhead(&self, args: &[&str]) -> Command {
        let mut c = self.cmd(&self.bin);
        c.args(args);
        c
    }

    /// What is left in the user's runtime directory under bulkhead's state root.
    pub fn state_entries(&self) -> Vec<String> {
        fs::read_dir(self.run.join("bulkhead"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Pids of the user's processes (real uid), zombies excluded.
    pub fn processes(&self) -> Vec<i32> {
        let mut v = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(status) = fs::read_to_string(e.path().join("status")) else {
                continue;
            };
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
            };
            if field("Uid:").as_deref() == Some(&self.uid.to_string())
                && field("State:").as_deref() != Some("Z")
            {
                v.push(pid);
            }
        }
        v
    }

    /// A cgroup v2 directory for the user's commands, delegated to it (its own
    /// directory, cgroup.procs, cgroup.threads and cgroup.subtree_control, as
    /// systemd does for `Delegate=yes`); None when no cgroup2 is mounted.
    pub fn delegate_cgroup(&mut self) -> Option<PathBuf> {
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = info
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split(' ').nth(4))
            .map(PathBuf::from)?;
        let d = mount.join(&self.name);
        fs::create_dir(&d).unwrap();
        for f in [
            "",
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
        ] {
            let p = if f.is_empty() { d.clone() } else { d.join(f) };
            std::os::unix::fs::chown(&p, Some(self.uid), Some(self.gid)).unwrap();
        }
        self.cgroup = Some(d.clone());
        Some(d)
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.processes();
            if left.is_empty() || Instant::now() > deadline {
                break;
            }
            for pid in left {
                // SAFETY: plain kill(2) of a process of this test's own user.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = accounts(&["userdel", "--force", "--remove", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: userdel {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            if has_range(file, &self.name) {
                eprintln!("warning: {file} still has ranges of {}", self.name);
            }
        }
        if let Some(d) = &self.cgroup {
            for sub in subdirs_deepest_first(d) {
                let _ = fs::remove_dir(sub);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
