//! SCMP_ACT_NOTIFY plumbing: handing the listener fd to `linux.seccomp.listenerPath`
//! (config-linux.md "seccomp"; the message is runtime-spec's `ContainerProcessState`,
//! specs-go/state.go), and the two ioctls a listener uses to answer.

use std::io::{self, Write};
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde::Serialize;

use crate::bpf::SeccompData;
use crate::{Error, Result};

/// The message a seccomp agent receives (runtime-spec `ContainerProcessState`).
#[derive(Serialize)]
struct ContainerProcessState<'a> {
    #[serde(rename = "ociVersion")]
    version: &'a str,
    /// Names of the fds passed with the message, in order.
    fds: [&'a str; 1],
    pid: i32,
    #[serde(skip_serializing_if = "str::is_empty")]
    metadata: &'a str,
    state: &'a oci::State,
}

/// The name runtime-spec gives the seccomp notify fd in `fds`.
pub const SECCOMP_FD_NAME: &str = "seccompFd";

fn listener_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Listener {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Check that `listenerPath` names a Unix socket, so a bad path fails before any process is
/// started. Errors are one line: `linux.seccomp.listenerPath: /x: is not a Unix socket (it
/// is a regular file)`.
pub fn check_listener_path(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| listener_err(path, e.to_string()))?;
    let ft = meta.file_type();
    if ft.is_socket() {
        return Ok(());
    }
    let what = if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "not a socket"
    };
    Err(listener_err(
        path,
        format!("is not a Unix socket (it is {what})"),
    ))
}

/// Connect to the seccomp agent at `listener_path` and send it the container process state
/// with `notify_fd` attached (SCM_RIGHTS), as runtime-spec describes:
/// `{"ociVersion","fds":["seccompFd"],"pid","metadata","state":{...}}`.
///
/// `pid` is the process the filter belongs to (the container's init, or an `exec`'d
/// process -- which is why it is not taken from `state`); `state` is the container's state;
/// `metadata` is `listenerMetadata`. [`connect_listener`] + [`send_state`] do the same in
/// two steps, for a runtime that connects before starting the process.
pub fn send_to_listener(
    listener_path: &Path,
    notify_fd: BorrowedFd<'_>,
    pid: i32,
    state: &oci::State,
    metadata: Option<&str>,
) -> Result<()> {
    let sock = connect_listener(listener_path)?;
    send_state(&sock, notify_fd, pid, state, metadata)
}

/// Check `listener_path` ([`check_listener_path`]) and connect to it (a stream socket, as
/// runc and crun use).
pub fn connect_listener(listener_path: &Path) -> Result<UnixStream> {
    check_listener_path(listener_path)?;
    UnixStream::connect(listener_path)
        .map_err(|e| listener_err(listener_path, format!("connect: {e}")))
}

/// Send the state message with `notify_fd` on an already connected socket.
pub fn send_state(
    sock: &UnixStream,
    notify_fd: BorrowedFd<'_>,
    pid: i32,
    state: &oci::State,
    metadata: Option<&str>,
) -> Result<()> {
    let path = sock
        .peer_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(Path::to_path_buf))
        .unwrap_or_default();
    let msg = ContainerProcessState {
        version: oci::OCI_VERSION,
        fds: [SECCOMP_FD_NAME],
        pid,
        metadata: metadata.unwrap_or(""),
        state,
    };
    let json = serde_json::to_vec(&msg).map_err(|e| Error::Internal(e.to_string()))?;
    let sent = send_with_fd(sock, &json, notify_fd)
        .map_err(|e| listener_err(&path, format!("sendmsg: {e}")))?;
    // A stream socket may take the message in pieces; the fd went with the first one.
    let mut rest = sock;
    rest.write_all(&json[sent..])
        .map_err(|e| listener_err(&path, format!("write: {e}")))?;
    Ok(())
}

/// One sendmsg(2) carrying `data` and `fd`; returns how many bytes went.
fn send_with_fd(sock: &UnixStream, data: &[u8], fd: BorrowedFd<'_>) -> io::Result<usize> {
    // SAFETY: CMSG_SPACE is a pure computation on a constant.
    let space = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
    // u64 elements keep the control buffer aligned for struct cmsghdr.
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is its "empty" value.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space;
    // SAFETY: msg_control points at `space` bytes, enough for one cmsghdr carrying one int,
    // so CMSG_FIRSTHDR is non-null and CMSG_DATA is in bounds.
    let n = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::c_int, fd.as_raw_fd());
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A notification read from a listener fd (`struct seccomp_notif`).
#[derive(Debug, Clone, Copy)]
pub struct Notification {
    /// Cookie to answer with.
    pub id: u64,
    /// The calling thread (in the listener's pid namespace).
    pub pid: u32,
    pub data: SeccompData,
}

/// Wait for the next notification (SECCOMP_IOCTL_NOTIF_RECV).
pub fn receive(listener: BorrowedFd<'_>) -> io::Result<Notification> {
    // SAFETY: seccomp_notif is plain data, and the kernel requires it zeroed.
    let mut n: libc::seccomp_notif = unsafe { zeroed() };
    // SAFETY: the ioctl writes a struct seccomp_notif into `n`, which is one.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            &mut n,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Notification {
        id: n.id,
        pid: n.pid,
        data: SeccompData {
            nr: n.data.nr as u32,
            arch: n.data.arch,
            instruction_pointer: n.data.instruction_pointer,
            args: n.data.args,
        },
    })
}

/// Answer a notification (SECCOMP_IOCTL_NOTIF_SEND). `error` is 0 or a negative errno
/// (`-libc::EACCES`): with 0 the syscall returns `val`, otherwise it fails with that errno.
/// With `continue_syscall` the kernel runs the syscall itself (`val` and `error` must be 0);
/// only safe for syscalls whose arguments the listener does not need to trust.
pub fn respond(
    listener: BorrowedFd<'_>,
    id: u64,
    val: i64,
    error: i32,
    continue_syscall: bool,
) -> io::Result<()> {
    let resp = libc::seccomp_notif_resp {
        id,
        val,
        error,
        flags: if continue_syscall {
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
        } else {
            0
        },
    };
    // SAFETY: the ioctl reads a struct seccomp_notif_resp, which `resp` is.
    let r = unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &resp,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
