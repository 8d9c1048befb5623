//! Emulated devices and the two buses (port I/O and MMIO) the vCPU threads dispatch to.
//!
//! Legacy devices: the 16550 UART (`serial`), the i8042 controller whose reset line ends the
//! VM (`i8042`) and the boot-timer port (`boot_timer`). Paravirtual devices: virtio over MMIO
//! (`virtio`).

pub mod boot_timer;
pub mod i8042;
pub mod serial;
pub mod virtio;

use std::sync::{Arc, Mutex};

/// A device reachable at a range of port or MMIO addresses. `offset` is relative to the
/// start of the range the device was inserted at.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

struct BusRange {
    start: u64,
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// An address space of devices. Built once before the vCPUs start, then only read, so it
/// needs no lock of its own; each device has its own mutex.
#[derive(Default)]
pub struct Bus {
    ranges: Vec<BusRange>,
}

impl Bus {
    pub fn new() -> Self {
        Bus::default()
    }

    /// Adds a device; overlapping ranges are a programming error reported as a string.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        start: u64,
        len: u64,
    ) -> Result<(), String> {
        if len == 0 {
            return Err(format!("empty bus range at {start:#x}"));
        }
        if self
            .ranges
            .iter()
            .any(|r| start < r.start + r.len && r.start < start + len)
        {
            return Err(format!(
                "bus range {start:#x}+{len:#x} overlaps another device"
            ));
        }
        self.ranges.push(BusRange { start, len, device });
        self.ranges.sort_by_key(|r| r.start);
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(&BusRange, u64)> {
        let idx = self.ranges.partition_point(|r| r.start <= addr);
        let r = self.ranges.get(idx.checked_sub(1)?)?;
        (addr - r.start < r.len).then(|| (r, addr - r.start))
    }

    /// Dispatches a read; returns false when no device claims `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((r, off)) => {
                // A poisoned lock means another vCPU thread panicked inside the device; the
                // device state is still memory-safe to use, so carry on rather than cascade.
                let mut dev = r.device.lock().unwrap_or_else(|e| e.into_inner());
                dev.read(off, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a write; returns false when no device claims `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((r, off)) => {
                let mut dev = r.device.lock().unwrap_or_else(|e| e.into_inner());
                dev.write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<u8>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0.extend_from_slice(data);
        }
    }

    #[test]
    fn dispatch_and_overlap() {
        let mut bus = Bus::new();
        let dev = Arc::new(Mutex::new(Echo(Vec::new())));
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        assert!(bus.insert(dev.clone(), 0x3fc, 8).is_err());
        bus.insert(dev.clone(), 0x60, 5).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b[0], 2);
        assert!(!bus.read(0x400, &mut b));
        assert!(!bus.read(0x3f7, &mut b));
        assert!(bus.write(0x64, &[0xfe]));
        assert_eq!(dev.lock().unwrap().0, vec![0xfe]);
    }
}
