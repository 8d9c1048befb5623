//! The virtio-mmio transport (virtio 1.x, register layout version 2).
//!
//! The guest finds each device through `virtio_mmio.device=4K@<base>:<irq>` on its command
//! line. Register writes arrive on vCPU threads; QueueNotify is normally not among them
//! because a KVM ioeventfd per queue catches it first and wakes the event loop instead. The
//! device sees its queues only after the driver sets DRIVER_OK and every ready queue passes
//! `Queue::is_valid` (rings inside guest memory and aligned); otherwise the device is marked
//! NEEDS_RESET and stays inert.
//!
//! A snapshot saves the registers and each queue ([`TransportState`]); the queues' indices
//! come from the device's own copies once it is active, since those are the ones that move.
//! Restoring an active device activates it again with those queues, so requests the driver
//! had made available and the device had not served yet are served once the event loop runs.

use std::sync::Arc;

use crate::memory::GuestMemoryMmap;
use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{Activation, Interrupt, VirtioDevice, VIRTIO_F_VERSION_1};
use crate::devices::BusDevice;

const MMIO_MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x554d_4551; // the value QEMU uses; drivers do not check it

pub const REG_MAGIC: u64 = 0x000;
pub const REG_VERSION: u64 = 0x004;
pub const REG_DEVICE_ID: u64 = 0x008;
pub const REG_VENDOR_ID: u64 = 0x00c;
pub const REG_DEVICE_FEATURES: u64 = 0x010;
pub const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
pub const REG_DRIVER_FEATURES: u64 = 0x020;
pub const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
pub const REG_QUEUE_SEL: u64 = 0x030;
pub const REG_QUEUE_NUM_MAX: u64 = 0x034;
pub const REG_QUEUE_NUM: u64 = 0x038;
pub const REG_QUEUE_READY: u64 = 0x044;
pub const REG_QUEUE_NOTIFY: u64 = 0x050;
pub const REG_INTERRUPT_STATUS: u64 = 0x060;
pub const REG_INTERRUPT_ACK: u64 = 0x064;
pub const REG_STATUS: u64 = 0x070;
pub const REG_QUEUE_DESC_LOW: u64 = 0x080;
pub const REG_QUEUE_DESC_HIGH: u64 = 0x084;
pub const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
pub const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
pub const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
pub const REG_CONFIG_GENERATION: u64 = 0x0fc;
pub const REG_CONFIG: u64 = 0x100;

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

/// One virtqueue as a snapshot saves it: its configuration and its indices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    /// The next available-ring entry the device will read.
    pub next_avail: u16,
    /// The next used-ring entry the device will write.
    pub next_used: u16,
    pub event_idx: bool,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        QueueSnapshot {
            max_size: q.max_size,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx: q.event_idx_enabled,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> Self {
        QueueState {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

/// A virtio-mmio device's transport as a snapshot saves it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub name: String,
    pub device_type: u32,
    pub status: u32,
    pub queue_sel: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub interrupt_status: u32,
    pub active: bool,
    pub queues: Vec<QueueSnapshot>,
}

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    active: bool,
    /// The driver set DRIVER_OK at least once (a later reset does not clear it).
    ever_active: bool,
    /// Written when the device becomes active, so the event loop registers its host fds.
    activate_evt: EventFd,
    /// Queue notifications the event loop handled (the API's status counters).
    notifications: u64,
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
        activate_evt: EventFd,
    ) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            // Queue::new only fails for a max size that is not a power of two; the devices
            // declare constant powers of two.
            .map(|&max| Queue::new(max).expect("queue max size is a power of two"))
            .collect();
        MmioTransport {
            device,
            mem,
            interrupt,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            active: false,
            ever_active: false,
            activate_evt,
            notifications: 0,
        }
    }

    pub fn device(&self) -> &dyn VirtioDevice {
        self.device.as_ref()
    }

    pub fn count_notification(&mut self) {
        self.notifications += 1;
    }

    pub fn notifications(&self) -> u64 {
        self.notifications
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    /// The queues with the indices that count: the device's once active, else the
    /// transport's (what the driver configured).
    pub fn queue_states(&self) -> Vec<QueueSnapshot> {
        let device = self.device.queues();
        if self.active && device.len() == self.queues.len() {
            device.iter().map(|q| q.state().into()).collect()
        } else {
            self.queues.iter().map(|q| q.state().into()).collect()
        }
    }

    pub fn save(&self) -> TransportState {
        TransportState {
            name: self.device.name().to_string(),
            device_type: self.device.device_type(),
            status: self.status,
            queue_sel: self.queue_sel,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            interrupt_status: self.interrupt.status(),
            active: self.active,
            queues: self.queue_states(),
        }
    }

    /// Puts a freshly built transport (same device, same configuration) in the saved state,
    /// activating the device again if it was active.
    pub fn restore(&mut self, s: &TransportState) -> Result<(), String> {
        let name = self.device.name().to_string();
        if s.device_type != self.device.device_type() || s.queues.len() != self.queues.len() {
            return Err(format!(
                "{name}: the snapshot has a device of type {} with {} queues here",
                s.device_type,
                s.queues.len()
            ));
        }
        let queues: Result<Vec<Queue>, _> = s
            .queues
            .iter()
            .map(|q| Queue::try_from(QueueState::from(*q)))
            .collect();
        self.queues = queues.map_err(|e| format!("{name}: saved queue: {e}"))?;
        self.status = s.status;
        self.queue_sel = s.queue_sel;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features;
        self.interrupt.set_status(s.interrupt_status);
        if !s.active {
            return Ok(());
        }
        let queues: Result<Vec<Queue>, _> = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect();
        let activation = Activation {
            mem: self.mem.clone(),
            queues: queues.map_err(|e| format!("{name}: saved queue: {e}"))?,
            acked_features: self.driver_features,
        };
        self.device
            .activate(activation)
            .map_err(|e| format!("{name}: activation: {e}"))?;
        self.active = true;
        let _ = self.activate_evt.write(1);
        if self.device.restored() {
            self.interrupt.signal_used_ring();
        }
        Ok(())
    }

    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        self.device.as_mut()
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Whether a guest driver ever brought the device up (DRIVER_OK with valid queues).
    pub fn ever_active(&self) -> bool {
        self.ever_active
    }

    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        // Queue registers are writable only before DRIVER_OK (virtio 1.x 4.2.2.2).
        if self.status & STATUS_DRIVER_OK != 0 {
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn device_features(&self) -> u64 {
        self.device.features() | VIRTIO_F_VERSION_1
    }

    fn reset(&mut self) {
        if self.active {
            self.device.reset();
        }
        self.active = false;
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt.ack(u32::MAX);
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // FEATURES_OK stays clear if the driver did not accept VERSION_1 or asked for
        // features we do not offer; a conforming driver then gives up.
        let mut value = value;
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let bad = self.driver_features & !self.device_features();
            if bad != 0 || self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                tracing::warn!(
                    "{}: driver features {:#x} refused (offered {:#x})",
                    self.device.name(),
                    self.driver_features,
                    self.device_features()
                );
                value &= !STATUS_FEATURES_OK;
            }
        }
        let newly_ok = value & STATUS_DRIVER_OK != 0 && self.status & STATUS_DRIVER_OK == 0;
        self.status = value;
        if newly_ok {
            self.activate();
        }
    }

    fn activate(&mut self) {
        if self.status & STATUS_FEATURES_OK == 0 {
            tracing::warn!("{}: DRIVER_OK without FEATURES_OK", self.device.name());
            self.status |= STATUS_NEEDS_RESET;
            return;
        }
        for (i, q) in self.queues.iter().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                tracing::warn!(
                    "{}: queue {i} rings are outside guest memory or misaligned",
                    self.device.name()
                );
                self.status |= STATUS_NEEDS_RESET;
                return;
            }
        }
        // The device gets its own copies of the queues; the transport keeps its view for
        // register reads.
        let queues: Result<Vec<Queue>, _> = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()))
            .collect();
        let queues = match queues {
            Ok(q) => q,
            Err(e) => {
                tracing::warn!("{}: bad queue state: {e}", self.device.name());
                self.status |= STATUS_NEEDS_RESET;
                return;
            }
        };
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            acked_features: self.driver_features,
        };
        match self.device.activate(activation) {
            Ok(()) => {
                self.active = true;
                self.ever_active = true;
                let _ = self.activate_evt.write(1);
            }
            Err(e) => {
                tracing::warn!("{}: activation failed: {e}", self.device.name());
                self.status |= STATUS_NEEDS_RESET;
            }
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MMIO_MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => self
                .queues
                .get(self.queue_sel as usize)
                .map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => 0,
            _ => {
                tracing::debug!("{}: read of register {offset:#x}", self.device.name());
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES => {
                if self.status & STATUS_FEATURES_OK == 0 {
                    match self.driver_features_sel {
                        0 => {
                            self.driver_features =
                                (self.driver_features & !0xffff_ffff) | u64::from(v)
                        }
                        1 => {
                            self.driver_features =
                                (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                        }
                        _ => {}
                    }
                }
            }
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(v as u16);
                }
            }
            REG_QUEUE_READY => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            REG_QUEUE_DESC_LOW => self.with_queue(|q| q.set_desc_table_address(Some(v), None)),
            REG_QUEUE_DESC_HIGH => self.with_queue(|q| q.set_desc_table_address(None, Some(v))),
            REG_QUEUE_DRIVER_LOW => self.with_queue(|q| q.set_avail_ring_address(Some(v), None)),
            REG_QUEUE_DRIVER_HIGH => self.with_queue(|q| q.set_avail_ring_address(None, Some(v))),
            REG_QUEUE_DEVICE_LOW => self.with_queue(|q| q.set_used_ring_address(Some(v), None)),
            REG_QUEUE_DEVICE_HIGH => self.with_queue(|q| q.set_used_ring_address(None, Some(v))),
            REG_QUEUE_NOTIFY => {
                // Only reached if the ioeventfd for this queue is missing; the event loop
                // would never see it, so say so instead of losing it silently.
                tracing::warn!(
                    "{}: queue notify {v} trapped to the VMM (no ioeventfd)",
                    self.device.name()
                );
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.set_status(v),
            _ => tracing::debug!("{}: write of register {offset:#x}", self.device.name()),
        }
    }

    fn with_queue(&mut self, f: impl FnOnce(&mut Queue)) {
        if let Some(q) = self.selected_queue() {
            f(q);
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            // virtio-mmio registers are 32-bit; other accesses are driver bugs.
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            self.device.write_config(offset - REG_CONFIG, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, v);
    }
}
