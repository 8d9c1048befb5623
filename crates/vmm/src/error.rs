//! The one error type of the `vmm` crate.
//!
//! Every variant names what failed: the file, the configuration field, the ioctl or the
//! guest-visible structure, so the CLI can print it on one line and exit non-zero.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can stop a VM from being built or from running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration asks for something impossible (0 vCPUs, too much memory, ...).
    #[error("invalid VM config: {field}: {reason}")]
    Config { field: String, reason: String },

    /// A file named by the configuration could not be opened or read.
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The JSON configuration file could not be parsed.
    #[error("VM config {path}: {reason}")]
    ConfigFile { path: PathBuf, reason: String },

    /// The kernel image is neither a bzImage nor an ELF vmlinux, or it does not load.
    #[error("kernel {path}: {reason}")]
    Kernel { path: PathBuf, reason: String },

    /// The initrd does not fit in guest memory.
    #[error("initrd {path}: {reason}")]
    Initrd { path: PathBuf, reason: String },

    /// The kernel command line is too long or malformed.
    #[error("kernel command line: {0}")]
    Cmdline(String),

    /// /dev/kvm is missing or cannot be opened.
    #[error("/dev/kvm: {0}")]
    KvmUnavailable(String),

    /// A KVM ioctl failed.
    #[error("{ioctl}: {source}")]
    Kvm {
        ioctl: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },

    /// Guest memory could not be created or written.
    #[error("guest memory: {0}")]
    GuestMemory(String),

    /// A boot structure (zero page, page tables, MP table...) could not be written.
    #[error("boot setup: {0}")]
    Boot(String),

    /// A device could not be created (tap, vsock socket, disk...).
    #[error("device {device}: {reason}")]
    Device { device: String, reason: String },

    /// A host system call failed outside KVM (eventfd, epoll, thread spawn, signals).
    #[error("{call}: {source}")]
    Sys {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// A VMM thread could not be confined (its seccomp filter did not install...).
    #[error("{thread} thread: {reason}")]
    ThreadSetup {
        thread: &'static str,
        reason: String,
    },

    /// The jail around the VMM could not be built, or the jailed VMM reported a failure.
    #[error(transparent)]
    Jail(#[from] jail::Error),

    /// A snapshot cannot be taken or restored; the message names the file and the reason
    /// (checksum, version, CPU, memory size...).
    #[error("{0}")]
    Snapshot(String),

    /// A vCPU stopped on an exit the VMM cannot continue from.
    #[error("vcpu{vcpu}: {reason}\n{registers}")]
    VcpuExit {
        vcpu: u64,
        reason: String,
        registers: String,
    },
}

impl Error {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn kvm(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |source| Error::Kvm { ioctl, source }
    }

    pub(crate) fn sys(call: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Error::Sys { call, source }
    }

    pub(crate) fn device(device: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Device {
            device: device.into(),
            reason: reason.to_string(),
        }
    }
}
