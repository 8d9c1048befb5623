//! SCMP_ACT_NOTIFY plumbing: handing the listener fd to `linux.seccomp.listenerPath`
//! (config-linux.md "seccomp" and "The Container Process State"), and the two ioctls a
//! listener uses to answer.
//!
//! The message is byte for byte what runc sends: the container process state marshalled as
//! Go's encoding/json does (fields in the order of runtime-spec's `ContainerProcessState`
//! and `State` Go types, `metadata` and the state's `pid`/`annotations` left out when
//! empty, map keys sorted, `<`, `>`, `&`, U+2028 and U+2029 escaped as `\u003c`...), on a
//! fresh stream connection, in one sendmsg(2) that carries the notify fd with SCM_RIGHTS;
//! then the connection is closed (one state per connection, never reused).

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

/// The bytes of the container process state message (see the module notes).
///
/// `pid` is the process the filter belongs to (the container's init, or an `exec`'d
/// process -- which is why it is not taken from `state`); `state` is the container's state;
/// `metadata` is `listenerMetadata`.
pub fn process_state_message(pid: i32, state: &oci::State, metadata: Option<&str>) -> Vec<u8> {
    let msg = ContainerProcessState {
        version: oci::OCI_VERSION,
        fds: [SECCOMP_FD_NAME],
        pid,
        metadata: metadata.unwrap_or(""),
        state,
    };
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    msg.serialize(&mut ser)
        .expect("serialising plain strings and numbers cannot fail");
    out
}

/// serde_json's compact output, with the extra escapes Go's encoding/json applies to
/// strings (HTML-safe `<`, `>`, `&`, and the JavaScript line terminators U+2028/U+2029).
/// Control characters already come out as Go writes them (`\n`, `\u001f`...).
struct GoFormatter;

impl serde_json::ser::Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Connect to the seccomp agent at `listener_path` (a stream socket), send it the container
/// process state with `notify_fd` attached, and close the connection, as runtime-spec
/// describes and runc does. A failure is an error naming the path.
pub fn send_to_listener(
    listener_path: &Path,
    notify_fd: BorrowedFd<'_>,
    pid: i32,
    state: &oci::State,
    metadata: Option<&str>,
) -> Result<()> {
    check_listener_path(listener_path)?;
    let sock = UnixStream::connect(listener_path)
        .map_err(|e| listener_err(listener_path, format!("connect: {e}")))?;
    let msg = process_state_message(pid, state, metadata);
    let sent = send_with_fd(sock.as_raw_fd(), &msg, notify_fd)
        .map_err(|e| listener_err(listener_path, format!("sendmsg: {e}")))?;
    // A stream socket may take a long message in pieces; the fd went with the first one
    // (the spec allows several sendmsg calls, the fds only in the first).
    let mut rest = &sock;
    rest.write_all(&msg[sent..])
        .map_err(|e| listener_err(listener_path, format!("write: {e}")))?;
    Ok(())
}

/// One sendmsg(2) on `sock` carrying `data` and `fd` (SCM_RIGHTS); returns how many bytes
/// went. It allocates nothing (the control buffer is on the stack), so a container's init
/// can call it between installing its filter and execve.
pub fn send_with_fd(
    sock: std::os::fd::RawFd,
    data: &[u8],
    fd: BorrowedFd<'_>,
) -> io::Result<usize> {
    // Room for one cmsghdr (16 bytes on 64-bit) and one int, aligned: CMSG_SPACE(4) = 24.
    let mut cbuf = [0u64; 4];
    // SAFETY: CMSG_SPACE is a pure computation on a constant.
    let space = unsafe { libc::CMSG_SPACE(size_of::<libc::c_int>() as u32) } as usize;
    debug_assert!(space <= size_of::<[u64; 4]>());
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all-zero is its "empty" value.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    // `as _`: the field types differ between glibc and musl.
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` bytes, enough for one cmsghdr carrying one int,
    // so CMSG_FIRSTHDR is non-null and CMSG_DATA is in bounds.
    let n = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::c_int>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::c_int, fd.as_raw_fd());
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_bytes_are_what_go_marshals() {
        let mut annotations = std::collections::BTreeMap::new();
        annotations.insert("z.key".to_string(), "<a&b>\u{2028}\n\u{1}".to_string());
        annotations.insert("a.key".to_string(), String::new());
        let state = oci::State {
            oci_version: oci::OCI_VERSION.into(),
            id: "c1".into(),
            status: oci::Status::Creating,
            pid: Some(42),
            bundle: "/b".into(),
            annotations,
        };
        // What runc's json.Marshal(specs.ContainerProcessState{...}) writes for this state.
        let want = format!(
            concat!(
                r#"{{"ociVersion":"{v}","fds":["seccompFd"],"pid":7,"metadata":"m","#,
                r#""state":{{"ociVersion":"{v}","id":"c1","status":"creating","pid":42,"#,
                r#""bundle":"/b","annotations":{{"a.key":"","z.key":"\u003ca\u0026b\u003e\u2028\n\u0001"}}}}}}"#
            ),
            v = oci::OCI_VERSION
        );
        let got = String::from_utf8(process_state_message(7, &state, Some("m"))).unwrap();
        assert_eq!(got, want);
        // No metadata, no annotations, no pid: those keys are left out, as omitempty does.
        let bare = oci::State {
            pid: None,
            annotations: Default::default(),
            ..state
        };
        let got = String::from_utf8(process_state_message(7, &bare, None)).unwrap();
        let want = format!(
            r#"{{"ociVersion":"{v}","fds":["seccompFd"],"pid":7,"state":{{"ociVersion":"{v}","id":"c1","status":"creating","bundle":"/b"}}}}"#,
            v = oci::OCI_VERSION
        );
        assert_eq!(got, want);
    }
}
