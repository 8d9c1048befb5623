//! Protecting the runtime binary from the container (CVE-2019-5736).
//!
//! The attack: a process in the container opens /proc/PID/exe of a runtime
//! process that has entered the container (its init before execve, or an
//! `exec` helper), keeps the descriptor, and writes the host's runtime binary
//! once the runtime has exited.
//!
//! Default defence, free of cost: every runtime process that enters a
//! container is made non-dumpable first (`init`). Opening /proc/PID/exe of a
//! non-dumpable process needs CAP_SYS_PTRACE in the user namespace that owns
//! the process's memory — the host's. So the defence holds unless the
//! container itself has CAP_SYS_PTRACE in the host user namespace: no user
//! namespace and CAP_SYS_PTRACE granted.
//!
//! For exactly that case the runtime re-executes itself from a sealed memfd
//! copy before creating anything (runc's and crun's approach, which they pay on
//! every start): the container can then only reach the read-only, sealed copy.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

const SEAL_ENV: &str = "_BULKHEAD_SEALED_EXE";

/// Does this config defeat the non-dumpable defence?
pub fn needs_sealed_copy(spec: &oci::Spec) -> bool {
    let linux = spec.linux();
    let in_userns = linux.namespace(oci::NamespaceType::User).is_some();
    let ptrace = spec
        .process
        .as_ref()
        .and_then(|p| p.capabilities.as_ref())
        .is_some_and(|c| {
            [
                &c.bounding,
                &c.effective,
                &c.permitted,
                &c.ambient,
                &c.inheritable,
            ]
            .iter()
            .any(|set| set.iter().flatten().any(|n| n == "CAP_SYS_PTRACE"))
        });
    ptrace && !in_userns
}

/// Is this process running from a sealed, unwritable copy?
pub fn is_sealed_copy() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    // SAFETY: fcntl query on an owned descriptor.
    let seals = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GET_SEALS) };
    seals >= 0 && seals & libc::F_SEAL_WRITE != 0
}

/// Re-execute the current command from a sealed memfd copy of the binary.
/// Returns only on failure.
pub fn reexec_sealed() -> io::Error {
    match reexec_inner() {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn reexec_inner() -> io::Result<std::convert::Infallible> {
    if std::env::var_os(SEAL_ENV).is_some() {
        return Err(io::Error::other(
            "re-executed from a sealed copy, but the copy is not sealed",
        ));
    }
    // SAFETY: memfd_create with a NUL-terminated name.
    let fd = unsafe {
        libc::memfd_create(
            c"bulkhead-sealed".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let memfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut src = std::fs::File::open("/proc/self/exe")?;
    let mut dst = std::fs::File::from(memfd.try_clone()?);
    io::copy(&mut src, &mut dst)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()).expect("argv has no NUL"))
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).expect("env has no NUL")
        })
        .collect();
    env.push(CString::new(format!("{SEAL_ENV}=1")).expect("no NUL"));
    Err(crate::sys::execveat(memfd.as_fd(), &args, &env))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(caps: &[&str], userns: bool) -> oci::Spec {
        let mut ns = vec![oci::Namespace {
            typ: oci::NamespaceType::Mount,
            path: None,
        }];
        if userns {
            ns.push(oci::Namespace {
                typ: oci::NamespaceType::User,
                path: None,
            });
        }
        oci::Spec {
            process: Some(oci::Process {
                capabilities: Some(oci::Capabilities {
                    bounding: Some(caps.iter().map(|s| s.to_string()).collect()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            linux: Some(oci::Linux {
                namespaces: ns,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_ptrace_without_userns_needs_the_copy() {
        assert!(!needs_sealed_copy(&spec(&["CAP_CHOWN"], false)));
        assert!(needs_sealed_copy(&spec(&["CAP_SYS_PTRACE"], false)));
        assert!(!needs_sealed_copy(&spec(&["CAP_SYS_PTRACE"], true)));
        // The test binary itself is a plain file.
        assert!(!is_sealed_copy());
    }
}
