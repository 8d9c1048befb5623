//! The client side of the control socket, for `bulkhead vm pause|resume|status|shutdown|
//! snapshot` (and tests and benchmarks).
//!
//! A snapshot is written into files the *client* creates: new temporary files next to the
//! requested paths (mode 0600, so nobody else reads guest memory), passed to the VMM with the
//! request, renamed over the requested paths once the VMM answers success, removed on any
//! failure. The VMM opens no path (it may be jailed), a half-written snapshot never has the
//! requested name, and the memory file of a VM restored from the same path keeps its inode
//! (a VM maps its memory file: truncating it in place would take the VM's memory away).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, IoSlice, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::net::{sendmsg, SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::{Op, Request};

/// A failed request: the message names the socket or the VMM's reason.
#[derive(Debug)]
pub struct ClientError(pub String);

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}

type Result<T> = std::result::Result<T, ClientError>;

fn err(socket: &Path, what: impl std::fmt::Display) -> ClientError {
    ClientError(format!("api socket {}: {what}", socket.display()))
}

/// Sends one request (with `files` as SCM_RIGHTS) and returns the VMM's answer, which must
/// say `"ok": true`; its `"error"` otherwise.
pub fn request(socket: &Path, op: Op, files: &[&File]) -> Result<serde_json::Value> {
    let stream = UnixStream::connect(socket).map_err(|e| err(socket, e))?;
    let mut line = serde_json::to_vec(&Request::new(op)).map_err(|e| err(socket, e))?;
    line.push(b'\n');
    let fds: Vec<_> = files.iter().map(|f| f.as_fd()).collect();
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !cmsg.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(err(socket, "too many descriptors"));
    }
    let sent = sendmsg(
        &stream,
        &[IoSlice::new(&line)],
        &mut cmsg,
        SendFlags::NOSIGNAL,
    )
    .map_err(|e| err(socket, e))?;
    if sent < line.len() {
        (&stream)
            .write_all(&line[sent..])
            .map_err(|e| err(socket, e))?;
    }
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| err(socket, e))?;
    if answer.is_empty() {
        return Err(err(
            socket,
            "the VMM closed the connection without answering",
        ));
    }
    let v: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| err(socket, format!("bad answer: {e}")))?;
    if v.get("ok").and_then(|o| o.as_bool()) == Some(true) {
        Ok(v)
    } else {
        let why = v
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("request refused");
        Err(err(socket, why))
    }
}

/// A new file that is removed unless kept.
struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    keep: bool,
}

impl Pending {
    fn create(dest: &Path, what: &str) -> Result<Pending> {
        let name = dest
            .file_name()
            .ok_or_else(|| ClientError(format!("{what} {}: not a file name", dest.display())))?;
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty());
        let tmp_name = format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id());
        let tmp = dir.map_or_else(|| PathBuf::from(&tmp_name), |d| d.join(&tmp_name));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| ClientError(format!("{what} {}: {e}", dest.display())))?;
        Ok(Pending {
            tmp,
            dest: dest.to_path_buf(),
            file,
            keep: false,
        })
    }

    fn commit(mut self, what: &str) -> Result<()> {
        std::fs::rename(&self.tmp, &self.dest)
            .map_err(|e| ClientError(format!("{what} {}: {e}", self.dest.display())))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Has the VM at `socket` pause and write a snapshot (a `diff` one: only the pages written
/// since the previous snapshot) to `state` and `mem`; returns the VMM's report. On failure
/// neither path is created or changed.
pub fn snapshot(socket: &Path, state: &Path, mem: &Path, diff: bool) -> Result<serde_json::Value> {
    let s = Pending::create(state, "snapshot")?;
    let m = Pending::create(mem, "memory file")?;
    let report = request(socket, Op::Snapshot { diff }, &[&s.file, &m.file])?;
    m.commit("memory file")?;
    s.commit("snapshot")?;
    Ok(report)
}
