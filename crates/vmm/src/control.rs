//! What the API socket can do to a running VM: pause, resume, status, snapshot, shutdown.
//!
//! The requests arrive on the event-loop thread (`api::server`); [`Machine`] carries them out
//! there, except what only the main thread may do: kicking the vCPUs out of KVM_RUN (tgkill)
//! and stopping the VM when a guest ignores Ctrl+Alt+Del. Those go through the [`Mailbox`],
//! so the thread that parses guest-controlled queues still never signals a thread.

use std::fs::File;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::memory::GuestMemoryMmap;
use kvm_bindings::kvm_cpuid_entry2;
use kvm_ioctls::VmFd;
use serde::Serialize;

use crate::config::VmConfig;
use crate::devices::i8042::I8042;
use crate::devices::serial::Serial;
use crate::devices::virtio::mmio::{MmioTransport, QueueSnapshot};
use crate::dirty;
use crate::kvm::pause::Gate;
use crate::kvm::state::VmKvmState;
use crate::shutdown::{ShutdownReason, ShutdownSignal};
use crate::snapshot::{memory, VmState};

/// How long the guest gets to act on Ctrl+Alt+Del before the VM is stopped, unless the
/// request says otherwise.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct MainWork {
    kick: bool,
    stop_at: Option<Instant>,
    ended: bool,
}

/// Work for the main thread.
#[derive(Default)]
pub struct Mailbox {
    work: Mutex<MainWork>,
    cond: Condvar,
}

/// What the main thread is woken for.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    /// Kick the vCPUs until they are parked.
    Kick,
    /// The guest had its time to shut down: stop the VM.
    StopNow,
    /// The VM ended.
    Ended,
}

impl Mailbox {
    fn lock(&self) -> MutexGuard<'_, MainWork> {
        self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn kick(&self) {
        self.lock().kick = true;
        self.cond.notify_all();
    }

    pub fn stop_at(&self, when: Instant) {
        self.lock().stop_at = Some(when);
        self.cond.notify_all();
    }

    pub fn end(&self) {
        self.lock().ended = true;
        self.cond.notify_all();
    }

    /// Blocks the main thread until there is something to do.
    pub fn wait(&self) -> Wake {
        let mut w = self.lock();
        loop {
            if w.ended {
                return Wake::Ended;
            }
            if w.kick {
                w.kick = false;
                return Wake::Kick;
            }
            match w.stop_at {
                Some(t) => match t.checked_duration_since(Instant::now()) {
                    None => {
                        w.stop_at = None;
                        return Wake::StopNow;
                    }
                    Some(left) => {
                        w = self
                            .cond
                            .wait_timeout(w, left)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                },
                None => w = self.cond.wait(w).unwrap_or_else(|e| e.into_inner()),
            }
        }
    }
}

/// The parts of a VM the API acts on.
pub struct Machine {
    pub config: VmConfig,
    pub vm: Arc<VmFd>,
    pub mem: GuestMemoryMmap,
    pub gate: Arc<Gate>,
    pub mailbox: Arc<Mailbox>,
    pub shutdown: Arc<ShutdownSignal>,
    pub serial: Arc<Mutex<Serial>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub virtio: Vec<Arc<Mutex<MmioTransport>>>,
    pub disk_bytes: Vec<u64>,
    /// KVM_GET_SUPPORTED_CPUID of this host (read before the jail).
    pub host_cpuid: Vec<kvm_cpuid_entry2>,
    /// Why this KVM cannot take snapshots, if it cannot.
    pub snapshot_support: Result<(), String>,
    pub started: Instant,
    pub restored: bool,
    /// The id of the snapshot this VM's memory last matched (the last one taken, or the one
    /// it was restored from): what a diff snapshot follows. None before the first, and after
    /// a diff that could not be written.
    pub last_snapshot: Mutex<Option<String>>,
}

#[derive(Serialize)]
pub struct VcpuStatus {
    pub id: usize,
    pub state: &'static str,
    /// KVM_RUN returns (exits to the VMM, including interruptions).
    pub exits: u64,
}

#[derive(Serialize)]
pub struct DeviceStatus {
    pub name: String,
    /// The virtio device status register (ACKNOWLEDGE|DRIVER|FEATURES_OK|DRIVER_OK = 15).
    pub status: u32,
    pub active: bool,
    pub notifications: u64,
    pub interrupts: u64,
    pub queues: Vec<QueueSnapshot>,
}

#[derive(Serialize)]
pub struct SerialStatus {
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

#[derive(Serialize)]
pub struct Status {
    pub state: &'static str,
    pub uptime_ms: f64,
    pub restored: bool,
    pub memory_mib: u64,
    pub vcpus: Vec<VcpuStatus>,
    pub serial: SerialStatus,
    pub devices: Vec<DeviceStatus>,
}

/// What a snapshot wrote and how long it took.
#[derive(Serialize)]
pub struct SnapshotReport {
    /// The snapshot's id (in both files).
    pub id: String,
    /// For a diff: the id of the snapshot whose memory it applies to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub follows: Option<String>,
    pub state_bytes: u64,
    pub memory_file_bytes: u64,
    /// Bytes of guest RAM written (the rest of the memory file is holes).
    pub memory_data_bytes: u64,
    pub pause_ms: f64,
    pub save_ms: f64,
    pub write_ms: f64,
}

/// What a shutdown request did.
#[derive(Serialize)]
pub struct ShutdownReport {
    pub action: &'static str,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// 32 random hex digits.
fn random_id() -> Result<String, String> {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most 16 bytes into the 16-byte buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(format!("getrandom: {}", std::io::Error::last_os_error()));
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Machine {
    /// Pauses every vCPU (a paused VM stays paused).
    pub fn pause(&self) -> Result<(), String> {
        if self.gate.is_paused() {
            return Ok(());
        }
        self.gate.request_pause();
        self.mailbox.kick();
        let shutdown = self.shutdown.clone();
        let parked = self.gate.wait_parked(&move || shutdown.is_signalled());
        if parked.is_err() {
            // A vCPU that could not be paused: the others run again rather than wait for it.
            self.gate.resume();
        }
        parked
    }

    pub fn resume(&self) {
        self.gate.resume();
    }

    pub fn status(&self) -> Status {
        // Requested: a VM restored paused is "paused" before its vCPU threads have parked.
        let paused = self.gate.pause_requested();
        let vcpus = (0..self.gate.vcpus())
            .map(|id| VcpuStatus {
                id,
                state: if self.gate.is_parked(id) {
                    "paused"
                } else {
                    "running"
                },
                exits: self.gate.exits(id),
            })
            .collect();
        let serial = {
            let s = lock(&self.serial);
            SerialStatus {
                tx_bytes: s.counters().tx_bytes.load(Ordering::Relaxed),
                rx_bytes: s.counters().rx_bytes.load(Ordering::Relaxed),
            }
        };
        let devices = self
            .virtio
            .iter()
            .map(|t| {
                let t = lock(t);
                DeviceStatus {
                    name: t.device().name().to_string(),
                    status: t.status(),
                    active: t.is_active(),
                    notifications: t.notifications(),
                    interrupts: t.interrupt().raised(),
                    queues: t.queue_states(),
                }
            })
            .collect();
        Status {
            state: if paused { "paused" } else { "running" },
            uptime_ms: ms(self.started.elapsed()),
            restored: self.restored,
            memory_mib: self.config.memory_mib,
            vcpus,
            serial,
            devices,
        }
    }

    /// Pauses the VM (it stays paused), saves its state to `state_file` and its RAM to
    /// `mem_file` (both new, empty, writable). A `diff` snapshot's memory file holds only the
    /// pages written since the previous snapshot (`snapshot::memory`); it needs dirty page
    /// tracking and a previous snapshot, checked before the VM is paused.
    pub fn snapshot(
        &self,
        state_file: &mut File,
        mem_file: &mut File,
        diff: bool,
    ) -> Result<SnapshotReport, String> {
        self.snapshot_support.clone()?;
        let follows =
            if diff {
                if !self.config.track_dirty_pages {
                    return Err(
                        "a diff snapshot needs dirty page tracking: start the VM with \
                            --track-dirty-pages"
                            .into(),
                    );
                }
                let last = lock(&self.last_snapshot).clone();
                Some(last.ok_or(
                    "no previous snapshot for a diff to follow: take a full snapshot first",
                )?)
            } else {
                None
            };
        let t0 = Instant::now();
        self.pause()?;
        let t1 = Instant::now();
        let vcpus = self.gate.save_all()?;
        let kvm = VmKvmState::save(&self.vm, self.config.pit).map_err(|e| e.to_string())?;
        let serial = lock(&self.serial).save();
        let i8042 = lock(&self.i8042).save();
        let virtio = self.virtio.iter().map(|t| lock(t).save()).collect();
        let state = VmState {
            id: random_id()?,
            follows: follows.clone(),
            config: self.config.clone(),
            memory_bytes: self.config.memory_mib << 20,
            disk_bytes: self.disk_bytes.clone(),
            host_cpuid: self.host_cpuid.clone(),
            kvm,
            vcpus,
            serial,
            i8042,
            virtio,
        };
        let t2 = Instant::now();
        let bytes = state.encode();
        state_file
            .write_all(&bytes)
            .map_err(|e| format!("write the state file: {e}"))?;
        // With tracking on, every snapshot (full or diff) restarts the record of what
        // changed: the vCPUs are paused and devices run only on this thread, so nothing is
        // written between the read of the records and the memory file.
        let dirty = match self.config.track_dirty_pages {
            true => Some(dirty::take(&self.vm, &self.mem)?),
            false => None,
        };
        let written = match (&follows, &dirty) {
            (Some(f), Some(pages)) => memory::write_diff(mem_file, &self.mem, &state.id, f, pages),
            _ => memory::write(mem_file, &self.mem, &state.id),
        };
        let written = match written {
            Ok(w) => w,
            Err(e) => {
                // The pages stay dirty for the next snapshot, which still follows the
                // previous one (this one does not exist).
                if let Some(pages) = &dirty {
                    dirty::give_back(&self.mem, pages);
                }
                return Err(format!("write the memory file: {e}"));
            }
        };
        if self.config.track_dirty_pages {
            *lock(&self.last_snapshot) = Some(state.id.clone());
        }
        let t3 = Instant::now();
        Ok(SnapshotReport {
            id: state.id,
            follows,
            state_bytes: bytes.len() as u64,
            memory_file_bytes: written.size,
            memory_data_bytes: written.data,
            pause_ms: ms(t1 - t0),
            save_ms: ms(t2 - t1),
            write_ms: ms(t3 - t2),
        })
    }

    /// Asks the guest to shut down (Ctrl+Alt+Del through the i8042) and has the VM stopped if
    /// it has not ended after `timeout`; a paused VM (which cannot react) is stopped at once.
    pub fn shutdown(&self, timeout: Duration) -> ShutdownReport {
        if self.gate.pause_requested() || !lock(&self.i8042).ctrl_alt_del() {
            self.shutdown.signal(Ok(ShutdownReason::Stopped));
            return ShutdownReport { action: "stopped" };
        }
        self.mailbox.stop_at(Instant::now() + timeout);
        ShutdownReport {
            action: "ctrl-alt-del",
        }
    }
}
