//! VM-backed containers: an OCI bundle run inside a micro-VM, Kata-style, behind the same
//! OCI command line engines already drive.
//!
//! ```text
//!  host                                         guest (micro-VM)
//!  bulkhead create ──fork──> monitor ──spawn──> hypervisor: builtin VMM | QEMU microvm
//!  (state.pid = monitor)       │                  kernel + initramfs (/init = bulkhead)
//!  start/kill/exec/ps ──> control.sock            │
//!                              └── vsock / virtio-serial ──> agent (PID 1)
//!                                  docs/agent-protocol.md      └─ container library:
//!  rootfs dir ──mkfs.ext4 -d──> disk (cached) ── virtio-blk ──>   namespaces, cgroups,
//!                                                                 seccomp, capabilities
//! ```
//!
//! ## Architecture notes
//! - [`protocol`] and [`conn`]: the one host ↔ agent protocol (length-prefixed frames,
//!   JSON messages, binary stdio chunks), documented in docs/agent-protocol.md and tested
//!   against that document.
//! - [`agent`]: the guest side. PID 1 of the guest is the static bulkhead binary itself;
//!   it builds the container with `container::Runtime`, the same library as on the host:
//!   the guest kernel is one isolation layer, the container's namespaces, cgroup v2,
//!   seccomp filter and capabilities inside it the second.
//! - [`image`] (kernel + initramfs, cached by content) and [`disk`] (the bundle's rootfs
//!   as an ext4 image made by `mkfs.ext4 -d`, cached by content). Or no disk: `sandbox
//!   --vm` shares the host's root read-only, and its `--bind` directories, over 9p (QEMU's
//!   virtio-9p device; the builtin VMM has none), which QEMU serves from inside its jail
//!   ([`host::backend`]).
//! - The network an engine gives the container (a network namespace joined by path) is
//!   carried into the VM as Kata does it: a tap joined to the namespace's interface by tc
//!   redirects, the interface's address on the guest's ([`host::network`] on the host,
//!   [`agent::network`] in the guest, both through [`netif`]).
//! - QEMU runs jailed whatever the accelerator: with KVM the jail gives it a /dev/kvm node of
//!   its own, since QEMU opens that device by path.
//! - [`host`]: the backends (builtin VMM, QEMU), the per-container monitor process, the
//!   OCI operations the CLI calls.
//! - Why a monitor process rather than the hypervisor's pid in `state`: engines (conmon,
//!   containerd's shim) learn the container's exit status by waiting for that pid, and
//!   QEMU's own exit status cannot carry it. The monitor is the hypervisor's parent,
//!   lives in the container's cgroup with it, and exits with the container's code.
//! - One error type, [`Error`]; no threads anywhere (the monitor, the agent and the exec
//!   relays are single poll loops), so `fork` and the container library's `clone3` are
//!   safe to use.

pub mod agent;
pub mod conn;
pub mod disk;
pub mod error;
pub mod host;
pub mod image;
pub mod netif;
pub mod protocol;

pub use error::{Error, Result};
