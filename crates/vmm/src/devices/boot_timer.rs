//! The boot timer: the guest writes [`BOOT_TIMER_MAGIC`] when its init starts (as
//! Firecracker's guests do), and the VMM logs how long that took since the VMM process
//! started. It answers on an I/O port (for guests that can `outb`) and on an MMIO byte (for
//! a busybox init: `devmem 0xd0000000 8 123`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::BusDevice;
use crate::logger::{ms, since_process_start};

pub const BOOT_TIMER_PORT: u64 = 0x3f0;
pub const BOOT_TIMER_MAGIC: u8 = 123;

/// Shared record of the first boot-timer write, read back in the VM's run report.
pub type BootTime = Arc<Mutex<Option<Duration>>>;

pub struct BootTimer {
    first: BootTime,
}

impl BootTimer {
    pub fn new(first: BootTime) -> Self {
        BootTimer { first }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data.first() != Some(&BOOT_TIMER_MAGIC) {
            return;
        }
        let t = since_process_start();
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(t);
        tracing::info!(
            "boot-timer: guest init started {} after VMM process start",
            ms(t)
        );
    }
}
