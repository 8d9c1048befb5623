//! `vmm`: bulkhead's KVM micro-VM monitor, as a library.
//!
//! ```no_run
//! let config = vmm::VmConfig::new("guest.elf");
//! let report = vmm::Vm::new(&config)?.run()?;
//! println!("guest ended: {}", report.reason);
//! # Ok::<(), vmm::Error>(())
//! ```
//!
//! # Architecture notes
//!
//! One module per concept, named as the kernel names it:
//! - `config`: [`VmConfig`], from CLI flags or JSON, validated once before anything exists.
//! - `memory`: the guest physical address map, RAM and the e820 view.
//! - `boot::{loader, params, paging, gdt, mptable}`: kernel/initrd loading, zero page or PVH
//!   start info, identity page tables, boot GDT, MP table for SMP.
//! - `kvm::{vm, vcpu, cpuid, pause, state}`: /dev/kvm, the VM fd (memory slots, in-kernel
//!   irqchip, PIT, irqfd, ioeventfd), the vCPU threads with their exit handling, pausing them,
//!   and the KVM state a snapshot saves (vCPU registers... and the VM's irqchip, PIT, clock).
//! - `devices::{serial, i8042, boot_timer}` on the port-I/O bus, `devices::virtio::{mmio,
//!   queue, blk, net, vsock, rng}` on the MMIO bus.
//! - `event_loop`: the device thread (epoll via event-manager); `vm`: wiring and running, from
//!   a config or from a snapshot.
//! - `api::{server, client}`: the control socket (JSON lines); `control`: what its requests do
//!   to a running VM (pause, resume, status, snapshot, shutdown); `snapshot::{format, memory}`:
//!   the state file (framing, checksum, version) and the memory file, and the checks before a
//!   restore.
//! - `syscalls`: what each kind of thread may call once jailed (allow lists as data, compiled
//!   by the `seccomp` crate); `jailed`: a VM whose VMM runs inside the `jail` crate's
//!   confinement, the default of `bulkhead vm run`.
//! - `kvm::emulation`: what a host whose KVM emulates guest kernel code needs (detection,
//!   kernel parameters, fallbacks for instructions its emulator rejects); `guest_hints`:
//!   the likely cause when a guest stays silent or leaves a device unused.
//!
//! rust-vmm crates used, and why:
//! - `kvm-ioctls` / `kvm-bindings`: safe wrappers for every KVM ioctl; no hand-written
//!   ioctl numbers or structure layouts.
//! - `vm-memory`: guest RAM as mmap'd regions with bounds-checked access. Every guest
//!   address a device touches goes through it, so a bad address is an error, never a host
//!   memory access.
//! - `linux-loader`: bzImage and ELF (with PVH note) loading and the `boot_params` /
//!   `hvm_start_info` layouts.
//! - `vm-superio`: the 16550 UART and i8042 register logic.
//! - `virtio-queue`: split virtqueue handling (avail/used rings, chain walking with loop
//!   protection); `queue` adds the per-buffer validation the devices rely on.
//! - `vmm-sys-util`: eventfd and signals (vCPU kick). `event-manager`: the epoll loop.
//!
//! Things written here rather than taken from a crate: the MP table (no maintained crate;
//! the format is small), CPUID topology fix-ups, the virtio-mmio transport and the four
//! devices (the rust-vmm `virtio-devices` crates are not published in a usable form), and a
//! minimal stderr `tracing` subscriber (`logger`) to avoid `tracing-subscriber`'s tree.
//!
//! Threads: one per vCPU (runs KVM_RUN, handles port I/O and MMIO register accesses), one for
//! the event loop (queue work, host I/O), and the caller of [`Vm::run`], which starts them,
//! waits for the end and stops the vCPUs. A device's state sits behind one mutex shared by the
//! vCPUs and the event loop. Three kinds of threads, because each gets its own seccomp filter
//! when jailed: the event loop runs on a thread of its own so that the thread that kicks vCPUs
//! (tgkill) and ends the process is not the one that parses guest-controlled queues. The API
//! socket is served by the event loop too (one thread parses untrusted input either way); a
//! pause it asks for is kicked by the main thread, and each paused vCPU saves its own state on
//! its own thread, so each kind of thread keeps to its own KVM requests.

pub mod api;
pub mod boot;
pub mod config;
pub mod control;
pub mod devices;
pub mod dirty;
pub mod error;
pub mod event_loop;
pub mod guest_hints;
pub mod jailed;
pub mod kvm;
pub mod logger;
pub mod memory;
pub mod shutdown;
pub mod snapshot;
pub mod syscalls;
pub mod vm;

pub use config::{BootProtocol, DiskConfig, NetConfig, VmConfig, VsockConfig};
pub use error::{Error, Result};
pub use shutdown::ShutdownReason;
pub use snapshot::Restore;
pub use vm::{Confinement, Vm, VmReport};
