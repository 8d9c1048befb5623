//! sd_notify passthrough (NOTIFY_SOCKET), as runc does for podman
//! `--sdnotify=container`: the container sees a notify socket of the
//! runtime's at /run/notify/notify.sock; `start` listens on it and, when the
//! container says READY=1, tells the engine's own NOTIFY_SOCKET (with the
//! container's pid as MAINPID).

use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use rustix::event::{poll, PollFd, PollFlags};

use crate::error::{Context, Result};
use crate::state::StateDir;

pub const DIR: &str = "notify";
const SOCK: &str = "notify.sock";
const IN_CONTAINER: &str = "/run/notify";

pub fn add_to_spec(spec: &mut oci::Spec, host_dir: &Path) {
    spec.mounts.push(oci::Mount {
        destination: IN_CONTAINER.into(),
        typ: Some("bind".into()),
        source: Some(host_dir.display().to_string()),
        options: ["rbind", "nosuid", "nodev", "noexec"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    });
    if let Some(p) = spec.process.as_mut() {
        p.env.retain(|e| !e.starts_with("NOTIFY_SOCKET="));
        p.env.push(format!("NOTIFY_SOCKET={IN_CONTAINER}/{SOCK}"));
    }
}

pub fn make_dir(sd: &StateDir) -> Result<()> {
    let d = sd.dir.join(DIR);
    std::fs::create_dir(&d).ctx(|| format!("create {}", d.display()))?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", d.display()))
}

/// Bind the container-side socket (before the process runs, so an early
/// READY=1 is not lost).
pub fn bind(sd: &StateDir) -> Result<UnixDatagram> {
    let path = sd.fd_path(DIR).join(SOCK);
    let _ = std::fs::remove_file(&path);
    let s = UnixDatagram::bind(&path)
        .ctx(|| format!("bind {}", sd.dir.join(DIR).join(SOCK).display()))?;
    // Any user of the container may notify.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
        .ctx(|| "chmod the notify socket".into())?;
    Ok(s)
}

/// Wait for READY=1 from the container (or its init's exit) and pass it on.
pub fn relay_ready(sock: &UnixDatagram, host: &str, init: &impl AsFd, pid: i32) -> Result<()> {
    let mut buf = vec![0u8; 4096];
    loop {
        let mut fds = [
            PollFd::new(sock, PollFlags::IN),
            PollFd::new(init, PollFlags::IN),
        ];
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e).ctx(|| "poll the notify socket".into()),
        }
        if fds[0].revents().contains(PollFlags::IN) {
            let n = sock
                .recv(&mut buf)
                .ctx(|| "read the notify socket".into())?;
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l.trim() == "READY=1") {
                let out = UnixDatagram::unbound().ctx(|| "socket".into())?;
                out.send_to(format!("READY=1\nMAINPID={pid}\n").as_bytes(), host)
                    .ctx(|| format!("notify {host}"))?;
                return Ok(());
            }
        } else if fds[1].revents().contains(PollFlags::IN) {
            return Ok(()); // the container exited without READY=1
        }
    }
}
