//! The guest's end of the channel to the host: a vsock connection to the host (CID 2) or a
//! virtio-serial port, as the kernel command line's `bulkhead.transport=` says.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{msg, Context, Result};

/// The kernel command line parameter naming the transport.
pub const PARAM: &str = "bulkhead.transport";
/// The vsock port the host listens on.
pub const VSOCK_PORT: u32 = 1024;
/// The name of the virtio-serial port QEMU gives the agent.
pub const PORT_NAME: &str = "bulkhead.agent";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Connect to the host (CID 2) on this port.
    Vsock(u32),
    /// The virtio-serial port with this name.
    Port(String),
}

impl Transport {
    /// The kernel command line parameter for this transport.
    pub fn param(&self) -> String {
        match self {
            Transport::Vsock(p) => format!("{PARAM}=vsock:{p}"),
            Transport::Port(n) => format!("{PARAM}=port:{n}"),
        }
    }
}

pub fn from_cmdline(cmdline: &str) -> Result<Transport> {
    let value = cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .find_map(|w| w.strip_prefix(PARAM).and_then(|r| r.strip_prefix('=')))
        .ok_or_else(|| msg(format!("agent: no {PARAM}= on the kernel command line")))?;
    match value.split_once(':') {
        Some(("vsock", port)) => port
            .parse()
            .map(Transport::Vsock)
            .map_err(|_| msg(format!("agent: {PARAM}={value}: bad port"))),
        Some(("port", name)) if !name.is_empty() => Ok(Transport::Port(name.to_string())),
        _ => Err(msg(format!(
            "agent: {PARAM}={value}: expected vsock:PORT or port:NAME"
        ))),
    }
}

/// Open the transport, retrying until `wait` passes: devices are probed while init runs
/// (virtio-serial ports appear when the host's control message arrives).
pub fn open(t: &Transport, wait: Duration) -> Result<OwnedFd> {
    let end = Instant::now() + wait;
    loop {
        let res = match t {
            Transport::Vsock(port) => vsock_connect(*port),
            Transport::Port(name) => open_port(name),
        };
        match res {
            Ok(fd) => return Ok(fd),
            Err(e) if Instant::now() >= end => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn vsock_connect(port: u32) -> Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::VSOCK,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .ctx(|| "socket(AF_VSOCK)".into())?;
    let addr = libc::sockaddr_vm {
        svm_family: libc::AF_VSOCK as libc::sa_family_t,
        svm_reserved1: 0,
        svm_port: port,
        svm_cid: libc::VMADDR_CID_HOST,
        svm_zero: [0; 4],
    };
    // SAFETY: connect(2) with a fully initialised sockaddr_vm and its size.
    let ret = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        return Err(std::io::Error::last_os_error())
            .ctx(|| format!("connect to the host's vsock port {port}"));
    }
    Ok(fd)
}

/// The /dev node of the virtio-serial port called `name`.
fn find_port(name: &str) -> Result<PathBuf> {
    let dir = "/sys/class/virtio-ports";
    for e in std::fs::read_dir(dir)
        .ctx(|| format!("read {dir}"))?
        .flatten()
    {
        let n = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if n.trim() == name {
            return Ok(PathBuf::from("/dev").join(e.file_name()));
        }
    }
    Err(msg(format!("no virtio-serial port named {name:?}")))
}

fn open_port(name: &str) -> Result<OwnedFd> {
    let path = find_port(name)?;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .ctx(|| format!("open {}", path.display()))?;
    Ok(f.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let c = "console=ttyS0 bulkhead.transport=vsock:1024 quiet -- agent";
        assert_eq!(from_cmdline(c).unwrap(), Transport::Vsock(1024));
        let c = "bulkhead.transport=port:bulkhead.agent";
        assert_eq!(
            from_cmdline(c).unwrap(),
            Transport::Port("bulkhead.agent".into())
        );
        for t in [Transport::Vsock(7), Transport::Port("x".into())] {
            assert_eq!(from_cmdline(&t.param()).unwrap(), t);
        }
        assert!(from_cmdline("console=ttyS0").is_err());
        assert!(from_cmdline("bulkhead.transport=tcp:1").is_err());
        assert!(from_cmdline("bulkhead.transport=vsock:x").is_err());
        // Arguments after `--` belong to init, not to the kernel.
        assert!(from_cmdline("quiet -- bulkhead.transport=vsock:1").is_err());
    }
}
