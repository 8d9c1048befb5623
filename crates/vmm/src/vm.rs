//! Building a VM from a [`VmConfig`] and running it to the end.
//!
//! [`Vm::new`] does all the work that can fail on bad input before anything with a host-side
//! footprint exists: it validates the config, opens /dev/kvm, allocates guest memory, loads
//! the kernel and initrd and writes the boot structures, then creates devices, and creates
//! the only things visible outside the process (the vsock socket file, the console file)
//! last. Any error drops what was built so far: nothing is left half-created.
//! [`Vm::run`] starts one thread per vCPU, runs the device event loop on the calling thread
//! and returns when the guest shuts down or a vCPU fails.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{IoEventAddress, Kvm, VmFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::boot::gdt::{boot_gdt, CODE32, CODE64};
use crate::boot::loader::{load_initrd, load_kernel, EntryMode, KernelFormat};
use crate::boot::params::{write_boot_params, write_cmdline, write_pvh_start_info};
use crate::boot::{mptable, paging};
use crate::config::VmConfig;
use crate::devices::boot_timer::{BootTime, BootTimer, BOOT_TIMER_PORT};
use crate::devices::i8042::{I8042, I8042_PORT, I8042_PORT_LEN};
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
use crate::kvm::cpuid::vcpu_cpuid;
use crate::kvm::vcpu::{BootEntry, Vcpu};
use crate::kvm::vm::{create_vm, open_kvm, register_memory};
use crate::logger::{ms, since_process_start};
use crate::memory::{
    create_guest_memory, low_ram_end, BOOT_TIMER_MMIO_START, GDT_START, IDT_START,
    VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START,
};
use crate::shutdown::{ShutdownReason, ShutdownSignal};
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
}

/// The VMM's closing line on stderr.
impl std::fmt::Display for VmReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bulkhead vm: guest shut down ({}): first vCPU entry {}, boot-timer {}, \
             shutdown {} after VMM start",
            self.reason,
            ms(self.guest_entry),
            self.boot_timer.map_or("not written".to_string(), ms),
            ms(self.shutdown)
        )
    }
}

/// A virtio device ready for the event loop.
struct VirtioSlot {
    transport: Arc<Mutex<MmioTransport>>,
    queue_evts: Vec<EventFd>,
    activate_evt: EventFd,
}

/// A built, not yet running VM.
pub struct Vm {
    // Field order is drop order: vCPUs and the VM fd go before the memory they map.
    vcpus: Vec<Vcpu>,
    virtio: Vec<VirtioSlot>,
    serial: Arc<Mutex<Serial>>,
    console_input: bool,
    shutdown: Arc<ShutdownSignal>,
    stop: Arc<AtomicBool>,
    boot_time: BootTime,
    _vm: VmFd,
    _kvm: Kvm,
    _mem: GuestMemoryMmap,
}

fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

impl Vm {
    /// Builds the VM described by `config`.
    pub fn new(config: &VmConfig) -> Result<Vm> {
        Vm::new_with(config, None)
    }

    /// [`Vm::new`] for a VMM that will reach no host path once running (jailed): guest
    /// connections to the vsock's `<uds>_PORT` go through `vsock_connector`.
    pub fn new_with(
        config: &VmConfig,
        vsock_connector: Option<Box<dyn HostConnector>>,
    ) -> Result<Vm> {
        config.validate()?;
        let kvm = open_kvm()?;
        let mem_size = config.memory_mib << 20;
        let mem = create_guest_memory(config.memory_mib)?;

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

        // Devices that read host files come first, so a bad path fails before anything else.
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

        let mut cmdline = config.cmdline.trim().to_string();
        let device_count = virtio_devices.len() + usize::from(vsock_index.is_some());
        for i in 0..device_count {
            let base = VIRTIO_MMIO_START + i as u64 * VIRTIO_MMIO_SIZE;
            let irq = VIRTIO_FIRST_IRQ + i as u32;
            cmdline.push_str(&format!(" virtio_mmio.device=4K@{base:#x}:{irq}"));
        }
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

        // The KVM VM, its memory and interrupt controller.
        let vm = create_vm(&kvm)?;
        register_memory(&kvm, &vm, &mem)?;
        let shutdown = Arc::new(ShutdownSignal::new()?);
        let stop = Arc::new(AtomicBool::new(false));
        let boot_time: BootTime = Arc::new(Mutex::new(None));

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
        let i8042 = Arc::new(Mutex::new(I8042::new(shutdown.clone())));
        pio.insert(i8042, I8042_PORT, I8042_PORT_LEN)
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
            let activate_evt =
                EventFd::new(EFD_NONBLOCK).map_err(Error::sys("eventfd (activate)"))?;
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

        // vCPUs.
        let pio = Arc::new(pio);
        let mmio = Arc::new(mmio);
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        let boot = BootEntry {
            entry: kernel.entry.0,
            mode: kernel.mode,
            cr3,
            gdt,
        };
        let mut vcpus = Vec::new();
        for id in 0..config.cpus {
            let vcpu = Vcpu::new(
                &vm,
                id,
                pio.clone(),
                mmio.clone(),
                shutdown.clone(),
                stop.clone(),
            )?;
            let cpuid = vcpu_cpuid(&supported, id, config.cpus);
            vcpu.configure(&cpuid, (id == 0).then_some(&boot))?;
            vcpus.push(vcpu);
        }

        // Last: the console file.
        let out: Box<dyn Write + Send> = match &config.console {
            Some(path) => Box::new(File::create(path).map_err(|source| Error::File {
                what: "console",
                path: path.clone(),
                source,
            })?),
            None => Box::new(std::io::stdout()),
        };
        serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set_output(out);

        Ok(Vm {
            vcpus,
            virtio,
            serial,
            console_input: config.console.is_none(),
            shutdown,
            stop,
            boot_time,
            _vm: vm,
            _kvm: kvm,
            _mem: mem,
        })
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
        let event_loop = start(
            "vmm-events".into(),
            ThreadKind::EventLoop,
            Box::new(move || {
                while !shutdown.is_signalled() {
                    if let Err(e) = em.run() {
                        shutdown.signal(Err(Error::Sys {
                            call: "epoll_wait (event loop)",
                            source: std::io::Error::other(format!("{e:?}")),
                        }));
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

        let _ = event_loop.join();
        let ended = since_process_start();

        self.stop.store(true, Ordering::Release);
        stop_vcpu_threads(threads);
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();

        let outcome = self
            .shutdown
            .take()
            .unwrap_or(Err(Error::Boot("VM stopped without a reason".into())));
        let reason = outcome?;
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
