//! Building a VM from a [`VmConfig`] (or from a snapshot) and running it to the end.
//!
//! [`Vm::new`] does all the work that can fail on bad input before anything with a host-side
//! footprint exists: it validates the config, opens /dev/kvm, allocates guest memory, loads
//! the kernel and initrd and writes the boot structures, then creates devices, and creates
//! the only things visible outside the process (the vsock and API socket files, the console
//! file) last. Any error drops what was built so far: nothing is left half-created.
//! [`Vm::restore_with`] builds the same machine around RAM mapped from a snapshot's memory
//! file and writes the saved state back instead of booting.
//! [`Vm::run`] starts one thread per vCPU and one for the device event loop, and returns when
//! the guest shuts down or a vCPU fails; meanwhile the calling thread kicks the vCPUs when the
//! API pauses them (see `control`).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress};

use crate::memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::api::server::ApiServer;
use crate::boot::gdt::{boot_gdt, CODE32, CODE64};
use crate::boot::loader::{load_initrd, load_kernel, EntryMode, KernelFormat};
use crate::boot::params::{
    compose_cmdline, write_boot_params, write_cmdline, write_pvh_start_info,
};
use crate::boot::{mptable, paging};
use crate::config::VmConfig;
use crate::control::{Machine, Mailbox, Wake};
use crate::devices::boot_timer::{BootTime, BootTimer, BOOT_TIMER_PORT};
use crate::devices::i8042::{I8042, I8042_PORT, I8042_PORT_LEN, KEYBOARD_IRQ};
use crate::devices::serial::{Serial, COM1_IRQ, COM1_PORT, COM1_PORT_LEN};
use crate::devices::virtio::blk::Block;
use crate::devices::virtio::mmio::{MmioTransport, REG_QUEUE_NOTIFY};
use crate::devices::virtio::net::Net;
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::vsock::{HostConnector, Vsock};
use crate::devices::virtio::{Interrupt, VirtioDevice};
use crate::devices::Bus;
use crate::error::{Error, Result};
use crate::event_loop::{ConsoleInput, ShutdownWatcher, VirtioSubscriber};
use crate::guest_hints;
use crate::kvm::cpuid::vcpu_cpuid;
use crate::kvm::emulation::{Fallbacks, HostKvm};
use crate::kvm::pause::Gate;
use crate::kvm::state::{check_support, msrs_to_save};
use crate::kvm::vcpu::{BootEntry, Vcpu, VcpuShared};
use crate::kvm::vm::{create_irqchip, create_vm, open_kvm, register_memory};
use crate::logger::{ms, since_process_start};
use crate::memory::{
    create_guest_memory, low_ram_end, BOOT_TIMER_MMIO_START, GDT_START, IDT_START,
    VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START,
};
use crate::shutdown::{ShutdownReason, ShutdownSignal};
use crate::snapshot::{memory as memory_file, Restore};
use crate::syscalls::{NoHooks, ThreadHooks, ThreadKind};

/// First IRQ for virtio-mmio devices; 4 is COM1, 0-3 are legacy (PIT, keyboard, cascade).
const VIRTIO_FIRST_IRQ: u32 = 5;
/// Last IOAPIC pin usable for a device.
const VIRTIO_LAST_IRQ: u32 = 23;

/// How a VM ended when it ended well.
#[derive(Clone, Debug)]
pub struct VmReport {
    pub reason: ShutdownReason,
    /// Time from VMM process start to the guest's first boot-timer write.
    pub boot_timer: Option<Duration>,
    /// Time from VMM process start to the first vCPU entering the guest.
    pub guest_entry: Duration,
    /// Time from VMM process start to the shutdown.
    pub shutdown: Duration,
    /// Time from VMM process start until the KVM VM existed with its guest memory registered
    /// and its irqchip (a jailed VMM: in its jail).
    pub vm_ready: Duration,
    /// CLOCK_MONOTONIC at VMM process start, so that whoever spawned the VMM can split off
    /// exec and startup, and (from its exit) the teardown.
    pub started_at: Duration,
}

/// The VMM's closing line on stderr.
impl std::fmt::Display for VmReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bulkhead vm: guest shut down ({}): first vCPU entry {}, boot-timer {}, \
             shutdown {} after VMM start; KVM VM and memory ready {}; VMM start at \
             monotonic {:.6} s",
            self.reason,
            ms(self.guest_entry),
            self.boot_timer.map_or("not written".to_string(), ms),
            ms(self.shutdown),
            ms(self.vm_ready),
            self.started_at.as_secs_f64()
        )
    }
}

/// A virtio device ready for the event loop.
struct VirtioSlot {
    transport: Arc<Mutex<MmioTransport>>,
    queue_evts: Vec<EventFd>,
    activate_evt: EventFd,
}

/// How a VMM that runs jailed reaches the host once confined.
pub struct Confinement {
    /// Guest connections to the vsock's `<uds>_PORT` go through it.
    pub vsock_connector: Option<Box<dyn HostConnector>>,
}

/// A Unix socket the VMM bound; its file is removed on drop unless the VMM is jailed (then
/// the supervisor removes it: a jailed VMM reaches no path).
struct BoundSocket {
    listener: Option<UnixListener>,
    path: Option<PathBuf>,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Some(p) = &self.path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Binds a socket at `path`. A stale socket file is replaced; any other file there is an
/// error (the VMM never deletes what is not a socket).
fn bind_socket(what: &str, path: &Path) -> Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(Error::device(
                what,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path)
        .map_err(|e| Error::device(what, format!("bind {}: {e}", path.display())))
}

/// A built, not yet running VM.
pub struct Vm {
    // Field order is drop order: vCPUs and the VM fd go before the memory they map.
    vcpus: Vec<Vcpu>,
    virtio: Vec<VirtioSlot>,
    serial: Arc<Mutex<Serial>>,
    console_input: bool,
    /// Symptoms of a guest kernel that lacks a console or a device driver (a booted VM only:
    /// a restored guest was past that point when it was saved).
    hints: Option<Arc<Mutex<guest_hints::Watch>>>,
    fallbacks: Arc<Fallbacks>,
    shutdown: Arc<ShutdownSignal>,
    stop: Arc<AtomicBool>,
    boot_time: BootTime,
    /// When the KVM VM and its memory were ready (since VMM process start).
    vm_ready: Duration,
    gate: Arc<Gate>,
    mailbox: Arc<Mailbox>,
    machine: Arc<Machine>,
    api: BoundSocket,
    vm_fd: Arc<VmFd>,
    _kvm: Kvm,
    _mem: GuestMemoryMmap,
}

fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

/// Virtio devices in bus order, and where the vsock device goes among them.
type Devices = (Vec<Box<dyn VirtioDevice>>, Option<usize>);

/// The virtio devices of `config`, in the order that fixes their addresses and IRQs: disks,
/// nets, rng, then vsock (created last by [`assemble`]: binding its socket is host-visible).
/// Opening their host side first makes a bad path fail before anything else.
fn make_devices(config: &VmConfig) -> Result<Devices> {
    let mut virtio_devices: Vec<Box<dyn VirtioDevice>> = Vec::new();
    for (i, d) in config.disks.iter().enumerate() {
        virtio_devices.push(Box::new(Block::new(
            format!("virtio-blk{i}"),
            &d.path,
            d.read_only,
        )?));
    }
    for (i, n) in config.net.iter().enumerate() {
        virtio_devices.push(Box::new(Net::new(format!("virtio-net{i}"), n, i)?));
    }
    if config.rng {
        virtio_devices.push(Box::new(Rng::new("virtio-rng".into())));
    }
    let vsock_index = config.vsock.as_ref().map(|_| virtio_devices.len());
    let max_devices = (VIRTIO_LAST_IRQ - VIRTIO_FIRST_IRQ + 1) as usize;
    if virtio_devices.len() + usize::from(vsock_index.is_some()) > max_devices {
        return Err(Error::config(
            "devices",
            format!("at most {max_devices} virtio devices fit on the IOAPIC"),
        ));
    }
    Ok((virtio_devices, vsock_index))
}

/// What [`assemble`] builds a VM from besides its config.
struct Parts {
    kvm: Kvm,
    mem: GuestMemoryMmap,
    devices: Vec<Box<dyn VirtioDevice>>,
    vsock_index: Option<usize>,
    disk_bytes: Vec<u64>,
    cpuids: Vec<CpuId>,
    host_cpuid: CpuId,
    start_paused: bool,
    restored: bool,
}

/// The machine around guest memory, shared by a boot and a restore: the KVM VM with its
/// memory and irqchip, the legacy devices, the virtio transports, the vsock and API sockets
/// and the vCPUs (created, not configured). The console is attached by the caller, last.
fn assemble(config: &VmConfig, p: Parts, confined: Option<Confinement>) -> Result<Vm> {
    let Parts {
        kvm,
        mem,
        devices: mut virtio_devices,
        vsock_index,
        disk_bytes,
        cpuids,
        host_cpuid,
        start_paused,
        restored,
    } = p;
    let jailed = confined.is_some();
    let vsock_connector = confined.and_then(|c| c.vsock_connector);
    // The KVM VM, its memory and interrupt controller, in that order (see `create_irqchip`).
    let vm = Arc::new(create_vm(&kvm)?);
    register_memory(&kvm, &vm, &mem, config.track_dirty_pages)?;
    create_irqchip(&kvm, &vm, config.pit)?;
    let vm_ready = since_process_start();
    let shutdown = Arc::new(ShutdownSignal::new()?);
    let stop = Arc::new(AtomicBool::new(false));
    let boot_time: BootTime = Arc::new(Mutex::new(None));
    let mailbox = Arc::new(Mailbox::default());
    {
        let mailbox = mailbox.clone();
        shutdown.on_signal(Box::new(move || mailbox.end()));
    }

    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let bus_err = |e: String| Error::Boot(format!("device bus: {e}"));

    let serial_irq = EventFd::new(EFD_NONBLOCK).map_err(Error::sys("eventfd (serial)"))?;
    vm.register_irqfd(&serial_irq, COM1_IRQ)
        .map_err(Error::kvm("KVM_IRQFD (serial)"))?;
    // The console output is attached last (see below); until then it goes nowhere.
    let serial = Arc::new(Mutex::new(Serial::new(
        serial_irq,
        Box::new(std::io::sink()),
    )));
    pio.insert(serial.clone(), COM1_PORT, COM1_PORT_LEN)
        .map_err(bus_err)?;
    let kbd_irq = EventFd::new(EFD_NONBLOCK).map_err(Error::sys("eventfd (i8042)"))?;
    vm.register_irqfd(&kbd_irq, KEYBOARD_IRQ)
        .map_err(Error::kvm("KVM_IRQFD (i8042)"))?;
    let i8042 = Arc::new(Mutex::new(I8042::new(shutdown.clone(), kbd_irq)));
    pio.insert(i8042.clone(), I8042_PORT, I8042_PORT_LEN)
        .map_err(bus_err)?;
    let boot_timer = Arc::new(Mutex::new(BootTimer::new(boot_time.clone())));
    pio.insert(boot_timer.clone(), BOOT_TIMER_PORT, 1)
        .map_err(bus_err)?;
    mmio.insert(boot_timer, BOOT_TIMER_MMIO_START, VIRTIO_MMIO_SIZE)
        .map_err(bus_err)?;

    // The vsock device binds its Unix socket: the first thing visible on the host
    // filesystem, so it is created after everything that can fail on bad input.
    if let (Some(v), Some(idx)) = (&config.vsock, vsock_index) {
        virtio_devices.insert(
            idx,
            Box::new(Vsock::new("virtio-vsock".into(), v, vsock_connector)?),
        );
    }

    let mut virtio = Vec::new();
    for (i, device) in virtio_devices.into_iter().enumerate() {
        let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_SIZE;
        let irq = VIRTIO_FIRST_IRQ + i as u32;
        let name = device.name().to_string();
        let irq_evt = EventFd::new(EFD_NONBLOCK).map_err(Error::sys("eventfd (irq)"))?;
        vm.register_irqfd(&irq_evt, irq)
            .map_err(Error::kvm("KVM_IRQFD (virtio)"))?;
        let mut queue_evts = Vec::new();
        for q in 0..device.queue_max_sizes().len() {
            let evt = EventFd::new(EFD_NONBLOCK).map_err(Error::sys("eventfd (queue)"))?;
            vm.register_ioevent(
                &evt,
                &IoEventAddress::Mmio(base + REG_QUEUE_NOTIFY),
                q as u32,
            )
            .map_err(Error::kvm("KVM_IOEVENTFD"))?;
            queue_evts.push(evt);
        }
        let activate_evt = EventFd::new(EFD_NONBLOCK).map_err(Error::sys("eventfd (activate)"))?;
        let transport = Arc::new(Mutex::new(MmioTransport::new(
            device,
            mem.clone(),
            Arc::new(Interrupt::new(irq_evt)),
            activate_evt
                .try_clone()
                .map_err(Error::sys("eventfd dup"))?,
        )));
        mmio.insert(transport.clone(), base, VIRTIO_MMIO_SIZE)
            .map_err(bus_err)?;
        tracing::debug!("{name} at {base:#x} irq {irq}");
        virtio.push(VirtioSlot {
            transport,
            queue_evts,
            activate_evt,
        });
    }

    // The control socket, bound like the vsock socket (before the jail; used by descriptor).
    let api = BoundSocket {
        listener: match &config.api_socket {
            Some(p) => Some(bind_socket("api socket", p)?),
            None => None,
        },
        path: config.api_socket.clone().filter(|_| !jailed),
    };

    // vCPUs.
    let gate = Arc::new(Gate::new(cpuids, msrs_to_save(&kvm)?, start_paused));
    let fallbacks = Arc::new(Fallbacks::default());
    let shared = VcpuShared {
        pio: Arc::new(pio),
        mmio: Arc::new(mmio),
        shutdown: shutdown.clone(),
        stop: stop.clone(),
        gate: gate.clone(),
        fallbacks: fallbacks.clone(),
    };
    let mut vcpus = Vec::new();
    for id in 0..config.cpus {
        vcpus.push(Vcpu::new(&vm, id, shared.clone())?);
    }

    let machine = Arc::new(Machine {
        config: config.clone(),
        vm: vm.clone(),
        mem: mem.clone(),
        gate: gate.clone(),
        mailbox: mailbox.clone(),
        shutdown: shutdown.clone(),
        serial: serial.clone(),
        i8042,
        virtio: virtio.iter().map(|s| s.transport.clone()).collect(),
        disk_bytes,
        host_cpuid: host_cpuid.as_slice().to_vec(),
        snapshot_support: check_support(&kvm, config.pit),
        started: Instant::now(),
        restored,
        last_snapshot: Mutex::new(None),
    });
    Ok(Vm {
        vcpus,
        virtio,
        serial,
        console_input: config.console.is_none(),
        hints: None,
        fallbacks,
        shutdown,
        stop,
        boot_time,
        vm_ready,
        gate,
        mailbox,
        machine,
        api,
        vm_fd: vm,
        _kvm: kvm,
        _mem: mem,
    })
}

impl Vm {
    /// Builds the VM described by `config`.
    pub fn new(config: &VmConfig) -> Result<Vm> {
        Vm::new_with(config, None)
    }

    /// [`Vm::new`] for a VMM that will reach no host path once running (jailed).
    pub fn new_with(config: &VmConfig, confined: Option<Confinement>) -> Result<Vm> {
        config.validate()?;
        let kvm = open_kvm()?;
        let mem_size = config.memory_mib << 20;
        let mem = create_guest_memory(config.memory_mib, config.track_dirty_pages)?;

        // Kernel, initrd and boot structures.
        let kernel = load_kernel(&mem, &config.kernel, config.boot_protocol)?;
        let initrd_ceiling = match kernel.setup_header {
            Some(h) if h.initrd_addr_max != 0 => {
                low_ram_end(mem_size).min(u64::from(h.initrd_addr_max) + 1)
            }
            _ => low_ram_end(mem_size),
        };
        let initrd = match &config.initrd {
            Some(p) => Some(load_initrd(&mem, p, kernel.end, initrd_ceiling)?),
            None => None,
        };

        let (devices, vsock_index) = make_devices(config)?;
        let device_count = devices.len() + usize::from(vsock_index.is_some());
        let device_params: Vec<String> = (0..device_count)
            .map(|i| {
                let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_SIZE;
                let irq = VIRTIO_FIRST_IRQ + i as u32;
                format!("virtio_mmio.device=4K@{base:#x}:{irq}")
            })
            .collect();
        let host = HostKvm::detect();
        if host == HostKvm::Emulating {
            tracing::info!(
                "host KVM emulates guest kernel code: adding {:?} to the kernel command line",
                host.cmdline_additions().join(" ")
            );
        }
        let cmdline = compose_cmdline(&config.cmdline, host.cmdline_additions(), &device_params);
        write_cmdline(&mem, &cmdline, kernel.setup_header.map(|h| h.cmdline_size))?;
        match kernel.mode {
            EntryMode::Linux64 => {
                write_boot_params(&mem, kernel.setup_header, cmdline.len(), initrd, mem_size)?
            }
            EntryMode::Pvh => write_pvh_start_info(&mem, initrd, mem_size)?,
        }
        let cr3 = paging::setup_identity_map(&mem)?;
        let gdt = boot_gdt(if kernel.mode == EntryMode::Pvh {
            CODE32
        } else {
            CODE64
        });
        for (i, e) in gdt.iter().enumerate() {
            mem.write_obj(*e, GuestAddress(GDT_START + i as u64 * 8))
                .map_err(|e| Error::Boot(format!("GDT: {e}")))?;
        }
        mem.write_obj(0u64, GuestAddress(IDT_START))
            .map_err(|e| Error::Boot(format!("IDT: {e}")))?;
        mptable::setup_mptable(&mem, config.cpus)?;
        tracing::debug!(
            "kernel {} loaded as {:?}, entry {:#x} ({:?}), end {:#x}; cmdline {cmdline:?}",
            config.kernel.display(),
            kernel.format,
            kernel.entry.0,
            kernel.mode,
            kernel.end
        );
        if kernel.format == KernelFormat::BzImage && kernel.mode != EntryMode::Linux64 {
            return Err(Error::Boot("bzImage must use the 64-bit entry".into()));
        }

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        let cpuids: Vec<CpuId> = (0..config.cpus)
            .map(|id| vcpu_cpuid(&supported, id, config.cpus, host))
            .collect();
        let parts = Parts {
            kvm,
            mem,
            devices,
            vsock_index,
            disk_bytes: config.disk_sizes(),
            cpuids: cpuids.clone(),
            host_cpuid: supported,
            start_paused: false,
            restored: false,
        };
        let mut vm = assemble(config, parts, confined)?;
        let boot = BootEntry {
            entry: kernel.entry.0,
            mode: kernel.mode,
            cr3,
            gdt,
        };
        for (vcpu, cpuid) in vm.vcpus.iter().zip(&cpuids) {
            vcpu.configure(cpuid, (vcpu.id == 0).then_some(&boot))?;
        }
        let counters = vm
            .serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .shared_counters();
        let mut hints = guest_hints::Watch::new(counters, &cmdline);
        for (i, slot) in vm.virtio.iter().enumerate() {
            let name = slot
                .transport
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .device()
                .name()
                .to_string();
            let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_SIZE;
            hints.device(&name, base, slot.transport.clone());
        }
        vm.hints = Some(Arc::new(Mutex::new(hints)));
        vm.attach_console(config)?;
        Ok(vm)
    }

    /// Builds the VM of a checked snapshot (see [`Restore::open`]) with its state written
    /// back; its vCPUs start paused unless `resume`. `console` and `api_socket` replace the
    /// snapshot's own (a restored VM prints where its restorer says).
    pub fn restore_with(
        r: &Restore,
        console: Option<PathBuf>,
        api_socket: Option<PathBuf>,
        resume: bool,
        confined: Option<Confinement>,
    ) -> Result<Vm> {
        let mut config = r.state.config.clone();
        config.console = console;
        config.api_socket = api_socket;
        let state = &r.state;
        let kvm = open_kvm()?;
        let mem = memory_file::map(&r.mem_file, state.memory_bytes, config.track_dirty_pages)
            .map_err(|e| Error::Snapshot(format!("memory file {}: {e}", r.mem_path.display())))?;
        let (devices, vsock_index) = make_devices(&config)?;
        let disk_bytes = config.disk_sizes();
        let host_cpuid = r.host_cpuid.clone();
        let cpuids = state
            .vcpus
            .iter()
            .map(|v| CpuId::from_entries(&v.cpuid))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Snapshot(format!("CPUID table: {e:?}")))?;
        let parts = Parts {
            kvm,
            mem,
            devices,
            vsock_index,
            disk_bytes,
            cpuids,
            host_cpuid,
            start_paused: !resume,
            restored: true,
        };
        let mut vm = assemble(&config, parts, confined)?;
        tracing::debug!(
            "VM assembled {} after VMM process start",
            ms(since_process_start())
        );
        // The VM-wide state first (interrupt controllers, PIT if any, clock), then each vCPU, then
        // the devices, whose restored interrupts must land in the restored irqchip.
        state.kvm.restore(&vm.vm_fd)?;
        if vm.vcpus.len() != state.vcpus.len() {
            return Err(Error::Snapshot("vCPU count differs from the config".into()));
        }
        for (vcpu, s) in vm.vcpus.iter().zip(&state.vcpus) {
            s.restore(vcpu.fd())
                .map_err(|e| Error::Snapshot(format!("vcpu{}: {e}", vcpu.id)))?;
        }
        vm.machine
            .i8042
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .restore(&state.i8042);
        vm.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .load(&state.serial)
            .map_err(Error::Snapshot)?;
        if state.virtio.len() != vm.virtio.len() {
            return Err(Error::Snapshot(format!(
                "{} virtio devices in the snapshot, {} in its config",
                state.virtio.len(),
                vm.virtio.len()
            )));
        }
        for (slot, s) in vm.virtio.iter().zip(&state.virtio) {
            slot.transport
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .restore(s)
                .map_err(Error::Snapshot)?;
        }
        // The restored memory is the snapshot's: a diff taken from here follows it.
        *vm.machine
            .last_snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(state.id.clone());
        vm.attach_console(&config)?;
        tracing::debug!(
            "restored {} ({} MiB, {} vCPUs) {} after VMM process start",
            r.state_path.display(),
            state.memory_bytes >> 20,
            state.vcpus.len(),
            ms(since_process_start())
        );
        Ok(vm)
    }

    /// Last: the console file (the only thing besides the sockets a VM creates on the host).
    fn attach_console(&mut self, config: &VmConfig) -> Result<()> {
        let out: Box<dyn Write + Send> = match &config.console {
            Some(path) => Box::new(File::create(path).map_err(|source| Error::File {
                what: "console",
                path: path.clone(),
                source,
            })?),
            None => Box::new(std::io::stdout()),
        };
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_output(out);
        Ok(())
    }

    /// Runs the VM until the guest shuts down (Ok) or a vCPU fails (Err).
    pub fn run(self) -> Result<VmReport> {
        self.run_with(Arc::new(NoHooks))
    }

    /// [`Vm::run`] with `hooks` called first on every thread of the VM: the device event
    /// loop's, one per vCPU, and the calling thread, which waits for the end. The jail
    /// installs each thread's seccomp filter there.
    pub fn run_with(mut self, hooks: Arc<dyn ThreadHooks>) -> Result<VmReport> {
        register_signal_handler(kick_signal(), kick_handler).map_err(|e| Error::Sys {
            call: "sigaction (vCPU kick signal)",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let mut em: EventManager<Box<dyn MutEventSubscriber + Send>> = EventManager::new()
            .map_err(|e| Error::Sys {
                call: "epoll_create (event loop)",
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        em.add_subscriber(Box::new(ShutdownWatcher(self.shutdown.clone())));
        if self.console_input {
            em.add_subscriber(Box::new(ConsoleInput {
                serial: self.serial.clone(),
            }));
        }
        for slot in self.virtio.drain(..) {
            em.add_subscriber(Box::new(VirtioSubscriber {
                transport: slot.transport,
                queue_evts: slot.queue_evts,
                activate_evt: slot.activate_evt,
            }));
        }
        if let Some(listener) = self.api.listener.take() {
            em.add_subscriber(Box::new(ApiServer::new(listener, self.machine.clone())));
        }

        let entered = Arc::new(Entered::default());
        let start = |name: String, kind: ThreadKind, body: Box<dyn FnOnce() + Send>| {
            let (hooks, entered, shutdown) =
                (hooks.clone(), entered.clone(), self.shutdown.clone());
            std::thread::Builder::new().name(name).spawn(move || {
                let confined = hooks.enter(kind);
                entered.arrive();
                match confined {
                    Ok(()) => body(),
                    Err(reason) => shutdown.signal(Err(Error::ThreadSetup {
                        thread: kind.name(),
                        reason,
                    })),
                }
            })
        };
        let shutdown = self.shutdown.clone();
        let hints = self.hints.clone();
        if let Some(h) = &hints {
            h.lock().unwrap_or_else(|e| e.into_inner()).start();
        }
        let event_loop = start(
            "vmm-events".into(),
            ThreadKind::EventLoop,
            Box::new(move || {
                while !shutdown.is_signalled() {
                    // Wakes at least every second to notice a guest that never prints.
                    if let Err(e) = em.run_with_timeout(1000) {
                        shutdown.signal(Err(Error::Sys {
                            call: "epoll_wait (event loop)",
                            source: std::io::Error::other(format!("{e:?}")),
                        }));
                    }
                    if let Some(h) = &hints {
                        h.lock().unwrap_or_else(|e| e.into_inner()).tick();
                    }
                }
            }),
        )
        .map_err(|source| Error::Sys {
            call: "spawn the event-loop thread",
            source,
        })?;
        let mut started = 1;

        let guest_entry = since_process_start();
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for vcpu in self.vcpus.drain(..) {
            let name = format!("vcpu{}", vcpu.id);
            match start(name, ThreadKind::Vcpu, Box::new(move || vcpu.run())) {
                Ok(h) => {
                    threads.push(h);
                    started += 1;
                }
                Err(e) => {
                    self.shutdown.signal(Err(Error::Sys {
                        call: "spawn vCPU thread",
                        source: e,
                    }));
                    break;
                }
            }
        }

        // This thread last: the others were started unconfined by it, so none inherits its
        // filter, and each has exactly its own.
        let confined = hooks
            .enter(ThreadKind::Main)
            .and_then(|()| {
                entered.wait_for(started);
                hooks.all_entered()
            })
            .map_err(|reason| Error::ThreadSetup {
                thread: ThreadKind::Main.name(),
                reason,
            });
        if let Err(e) = confined {
            self.shutdown.signal(Err(e));
        }

        // Until the VM ends: kick the vCPUs into a pause when the API asks, stop the VM when
        // a guest ignored a shutdown request.
        loop {
            match self.mailbox.wait() {
                Wake::Ended => break,
                Wake::Kick => kick_until_parked(&threads, &self.gate, &self.shutdown),
                Wake::StopNow => {
                    tracing::info!("the guest did not shut down in time: stopping the VM");
                    self.shutdown.signal(Ok(ShutdownReason::Stopped));
                }
            }
        }
        let _ = event_loop.join();
        let ended = since_process_start();

        self.stop.store(true, Ordering::Release);
        self.gate.stop();
        stop_vcpu_threads(threads);
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();

        let outcome = self
            .shutdown
            .take()
            .unwrap_or(Err(Error::Boot("VM stopped without a reason".into())));
        let (int3, fwait) = self.fallbacks.counts();
        if int3 + fwait > 0 {
            tracing::info!("{}", self.fallbacks);
        }
        let reason = outcome?;
        if let Some(h) = &self.hints {
            h.lock().unwrap_or_else(|e| e.into_inner()).at_shutdown();
        }
        let boot_timer = *self.boot_time.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!(
            "guest shut down ({reason}) {} after VMM process start",
            ms(ended)
        );
        Ok(VmReport {
            reason,
            boot_timer,
            guest_entry,
            shutdown: ended,
            vm_ready: self.vm_ready,
            started_at: crate::logger::process_start_monotonic(),
        })
    }
}

/// Counts the threads that have been through their hooks, so the main thread can tell when
/// every thread of the VM is confined.
#[derive(Default)]
struct Entered {
    count: Mutex<usize>,
    cond: Condvar,
}

impl Entered {
    fn arrive(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cond.notify_all();
    }

    fn wait_for(&self, n: usize) {
        let mut c = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *c < n {
            c = self.cond.wait(c).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Interrupts KVM_RUN in every vCPU thread until all are parked by a pause (or the VM ends).
/// As in [`stop_vcpu_threads`], a signal that arrives just before a thread enters KVM_RUN is
/// missed, so the kicks repeat; a thread that does not park is reported by the pause itself.
fn kick_until_parked(threads: &[JoinHandle<()>], gate: &Gate, shutdown: &ShutdownSignal) {
    let deadline = Instant::now() + crate::kvm::pause::PAUSE_TIMEOUT;
    while gate.pause_requested() && !shutdown.is_signalled() && Instant::now() < deadline {
        let mut all = true;
        for (i, t) in threads.iter().enumerate() {
            if !t.is_finished() && !gate.is_parked(i) {
                all = false;
                let _ = t.kill(kick_signal());
            }
        }
        if all {
            return;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Interrupts KVM_RUN in every vCPU thread until it notices the stop flag. A signal sent just
/// before a thread re-enters KVM_RUN would be missed, so the kick repeats until the thread is
/// gone (bounded, so a wedged thread cannot hang the VMM).
fn stop_vcpu_threads(threads: Vec<JoinHandle<()>>) {
    let deadline = Instant::now() + Duration::from_secs(2);
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            let _ = t.kill(kick_signal());
            std::thread::sleep(Duration::from_micros(200));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!("a vCPU thread did not stop within 2 s; leaving it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closing_line_gives_every_phase() {
        let ms = |v: u64| Duration::from_micros(v);
        let r = VmReport {
            reason: ShutdownReason::I8042Reset,
            boot_timer: Some(ms(15_000)),
            guest_entry: ms(7_500),
            shutdown: ms(20_000),
            vm_ready: ms(6_250),
            started_at: Duration::new(23227, 292_262_000),
        };
        // bench/src/main.rs (vm_phases) parses this line: keep the two in step.
        assert_eq!(
            r.to_string(),
            "bulkhead vm: guest shut down (i8042 reset): first vCPU entry 7.500 ms, \
             boot-timer 15.000 ms, shutdown 20.000 ms after VMM start; KVM VM and memory \
             ready 6.250 ms; VMM start at monotonic 23227.292262 s"
        );
    }
}
