//! virtio devices over the MMIO transport (virtio 1.x, "modern" register layout).
//!
//! `mmio` is the transport (registers, feature negotiation, queue setup, activation);
//! `queue` turns a guest descriptor chain into validated buffers; `blk`, `net`, `vsock`,
//! `rng` are the devices. Queue notifications arrive as ioeventfds and interrupts leave as
//! irqfds, so the vCPU threads only touch registers and the device work happens on the
//! event-loop thread.

pub mod blk;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod rng;
pub mod vsock;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::memory::GuestMemoryMmap;
use event_manager::{EventOps, EventSet, Events};
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_VSOCK: u32 = 19;

pub const INTERRUPT_USED_RING: u32 = 1;
pub const INTERRUPT_CONFIG: u32 = 2;

/// The interrupt line of one virtio-mmio device: the InterruptStatus register plus the irqfd
/// that raises the IOAPIC pin.
pub struct Interrupt {
    status: AtomicU32,
    evt: EventFd,
    /// Interrupts raised (the API's status counters).
    raised: AtomicU64,
}

impl Interrupt {
    pub fn new(evt: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            evt,
            raised: AtomicU64::new(0),
        }
    }

    /// Tells the driver the used ring moved.
    pub fn signal_used_ring(&self) {
        self.status.fetch_or(INTERRUPT_USED_RING, Ordering::SeqCst);
        self.raised.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.evt.write(1) {
            tracing::warn!("virtio interrupt: irqfd write failed: {e}");
        }
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub fn raised(&self) -> u64 {
        self.raised.load(Ordering::Relaxed)
    }

    /// The InterruptStatus a snapshot saved (the line itself is in the IOAPIC's state).
    pub fn set_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
    }
}

/// Registers a device's host file descriptors (tap, sockets) with the event loop under the
/// device's own tokens.
pub struct DeviceEvents<'a, 'b> {
    ops: &'a mut EventOps<'b>,
}

/// Event data values at or above this belong to the device; below are queue indexes.
pub const DEVICE_TOKEN_BASE: u32 = 0x1000;

impl<'a, 'b> DeviceEvents<'a, 'b> {
    pub fn new(ops: &'a mut EventOps<'b>) -> Self {
        DeviceEvents { ops }
    }

    /// Watches `fd` edge-triggered: devices drain a source until EAGAIN and retry when the
    /// guest gives them room, so a blocked source never spins the loop.
    pub fn add(&mut self, fd: RawFd, token: u32, set: EventSet) -> std::io::Result<()> {
        self.ops
            .add(Events::with_data_raw(
                fd,
                DEVICE_TOKEN_BASE + token,
                set | EventSet::EDGE_TRIGGERED,
            ))
            .map_err(|e| std::io::Error::other(format!("epoll add: {e:?}")))
    }

    pub fn remove(&mut self, fd: RawFd, token: u32, set: EventSet) {
        let _ = self.ops.remove(Events::with_data_raw(
            fd,
            DEVICE_TOKEN_BASE + token,
            set | EventSet::EDGE_TRIGGERED,
        ));
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    pub queues: Vec<Queue>,
    pub acked_features: u64,
}

/// One virtio device type behind the MMIO transport.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// For logs and errors: "virtio-blk0" and so on.
    fn name(&self) -> &str;
    fn queue_max_sizes(&self) -> &[u16];
    fn features(&self) -> u64;
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver finished setup; queues are valid against guest memory.
    fn activate(&mut self, activation: Activation) -> Result<(), String>;
    /// The driver reset the device (status 0): drop the queues and any connection state.
    fn reset(&mut self);
    /// The queues as the device holds them once active: their indices (next available and
    /// used entry) move as it serves them, so a snapshot saves these. Empty when inactive.
    fn queues(&self) -> &[Queue];
    /// The device was rebuilt from a snapshot and activated again: host-side state that did
    /// not survive (connections) is gone; tell the driver if the device has a way to.
    /// Returns true if the used ring changed.
    fn restored(&mut self) -> bool {
        false
    }
    /// Called on the event loop once after activation, to watch host-side fds.
    fn register_events(&mut self, _events: &mut DeviceEvents) {}
    /// The driver notified queue `index`. Returns true if the used ring changed.
    fn queue_notify(&mut self, index: usize, events: &mut DeviceEvents) -> bool;
    /// A host fd registered through [`DeviceEvents::add`] is ready. Returns true if the used
    /// ring changed.
    fn host_event(&mut self, _token: u32, _set: EventSet, _events: &mut DeviceEvents) -> bool {
        false
    }
}

/// Copies a little-endian config structure to the driver, ignoring reads past its end.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    let start = offset as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b = start
            .checked_add(i)
            .and_then(|j| config.get(j))
            .copied()
            .unwrap_or(0);
    }
}
