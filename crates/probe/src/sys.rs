//! The few system helpers the probes share: a forked child to try things that change the
//! process (namespaces, keyrings, chroot), errno text, filesystem types.

use std::ffi::CString;
use std::io;
use std::path::Path;

/// How a probe's child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildEnd {
    /// The child's exit code: 0 or an errno (or a probe-specific code, see the probe).
    Code(i32),
    /// Killed by this signal (e.g. by a seccomp filter whose action is KILL).
    Signal(i32),
}

/// Run `f` in a forked child, which exits with `f`'s return value, and wait for it.
///
/// The child may only make plain system calls: everything it needs (paths as C strings...)
/// must be prepared before the fork, since the parent may have other threads holding locks
/// the child would wait on forever.
pub fn in_child(f: impl FnOnce() -> i32) -> io::Result<ChildEnd> {
    // SAFETY: fork has no memory-safety preconditions; the child below only runs `f`, which
    // by this function's contract makes plain system calls, then _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: _exit ends the child without running the parent's atexit handlers or
        // flushing its copies of buffers.
        unsafe { libc::_exit(code) };
    }
    wait(pid)
}

/// Wait for child `pid` and say how it ended.
pub fn wait(pid: libc::pid_t) -> io::Result<ChildEnd> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status into a local.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    Ok(if libc::WIFSIGNALED(status) {
        ChildEnd::Signal(libc::WTERMSIG(status))
    } else {
        ChildEnd::Code(libc::WEXITSTATUS(status))
    })
}

/// The calling thread's errno.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// "EPERM (Operation not permitted)".
pub fn errno_text(e: i32) -> String {
    let name = seccomp::errno_name(e as u32)
        .map(String::from)
        .unwrap_or_else(|| format!("errno {e}"));
    let msg = io::Error::from_raw_os_error(e).to_string();
    let msg = msg.split(" (os error").next().unwrap_or(&msg).to_string();
    format!("{name} ({msg})")
}

/// A path as a C string (probe paths never hold NUL bytes).
pub fn cstr(p: impl AsRef<Path>) -> CString {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_ref().as_os_str().as_bytes()).unwrap_or_default()
}

/// The magic number of the filesystem holding `path` (statfs f_type), if it can be read.
pub fn fs_magic(path: &str) -> Option<i64> {
    let c = cstr(path);
    // SAFETY: statfs is plain data; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated, `st` is a valid statfs to write into.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type as i64)
}

pub const PROC_MAGIC: i64 = libc::PROC_SUPER_MAGIC;
pub const SYSFS_MAGIC: i64 = libc::SYSFS_MAGIC;

/// (device, inode) of a path.
pub fn dev_ino(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Is the file a character device (a path masked with /dev/null)?
pub fn is_char_device(f: &std::fs::File) -> bool {
    use std::os::unix::fs::FileTypeExt;
    f.metadata().is_ok_and(|m| m.file_type().is_char_device())
}

/// The seccomp mode of this process (0 off, 1 strict, 2 filter), if prctl answers.
pub fn seccomp_mode() -> Option<i32> {
    // SAFETY: PR_GET_SECCOMP takes no pointers.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP) };
    (r >= 0).then_some(r)
}

/// A directory where the probe may create entries, made fresh (mkdtemp) under the first
/// writable place of the usual ones; removed by [`TempDir`]'s drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> Option<TempDir> {
        let mut places: Vec<String> = std::env::var("TMPDIR").into_iter().collect();
        places.extend(["/tmp", "/dev/shm", "/run", "/var/tmp", "/dev"].map(String::from));
        for p in places {
            let template = cstr(format!("{p}/bulkhead-probe-XXXXXX"));
            let mut buf = template.into_bytes_with_nul();
            // SAFETY: `buf` is a writable NUL-terminated template mkdtemp fills in place.
            let r = unsafe { libc::mkdtemp(buf.as_mut_ptr().cast()) };
            if !r.is_null() {
                buf.pop();
                return Some(TempDir(String::from_utf8_lossy(&buf).into_owned().into()));
            }
        }
        None
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
