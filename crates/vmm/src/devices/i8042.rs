//! The i8042 keyboard controller, reduced to what a micro-VM needs:
//! - guest to host: writing 0xfe to the command port (0x64) pulses the CPU reset line, which
//!   the VMM turns into a clean guest shutdown with exit status 0 (vm-superio's
//!   `I8042Device`);
//! - host to guest: Ctrl+Alt+Del, the key press a guest without ACPI can be asked to shut down
//!   with. The VMM queues the make codes Firecracker sends (scan code set 2: Ctrl 0x14,
//!   Alt 0x11, Del 0xe0 0x71) in the controller's output buffer and raises IRQ 1; the guest
//!   reads them from the data port (0x60) while the status register (0x64) says the buffer is
//!   full. With nothing queued every register reads 0, as before.

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::{I8042Device, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;
use crate::shutdown::{ShutdownReason, ShutdownSignal};

/// Port range of the controller: data port 0x60 .. command/status port 0x64.
pub const I8042_PORT: u64 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;
/// The keyboard's interrupt line.
pub const KEYBOARD_IRQ: u32 = 1;

const DATA_OFFSET: u64 = 0;
const STATUS_OFFSET: u64 = 4;
/// Status register: output buffer full (a byte waits at the data port).
const STATUS_OBF: u8 = 1;
/// Ctrl, Alt, Del (scan code set 2 make codes).
pub const CTRL_ALT_DEL: [u8; 4] = [0x14, 0x11, 0xe0, 0x71];
/// Bytes the output buffer holds at most (a guest that never reads cannot grow it).
const MAX_QUEUED: usize = 64;

/// The reset line: ends the VM.
pub struct ResetLine(Arc<ShutdownSignal>);

impl Trigger for ResetLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        tracing::info!("guest requested a reset through the i8042: shutting down");
        self.0.signal(Ok(ShutdownReason::I8042Reset));
        Ok(())
    }
}

/// What a snapshot keeps of the controller: the bytes the guest has not read yet.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct I8042Snapshot {
    pub output: Vec<u8>,
}

pub struct I8042 {
    reset: I8042Device<ResetLine>,
    output: VecDeque<u8>,
    irq: EventFd,
}

impl I8042 {
    pub fn new(shutdown: Arc<ShutdownSignal>, irq: EventFd) -> Self {
        I8042 {
            reset: I8042Device::new(ResetLine(shutdown)),
            output: VecDeque::new(),
            irq,
        }
    }

    fn raise(&self) {
        if let Err(e) = self.irq.write(1) {
            tracing::warn!("i8042: irqfd write failed: {e}");
        }
    }

    /// Queues Ctrl+Alt+Del for the guest; false if its buffer is full (it reads nothing).
    pub fn ctrl_alt_del(&mut self) -> bool {
        if self.output.len() + CTRL_ALT_DEL.len() > MAX_QUEUED {
            return false;
        }
        self.output.extend(CTRL_ALT_DEL);
        self.raise();
        true
    }

    pub fn save(&self) -> I8042Snapshot {
        I8042Snapshot {
            output: self.output.iter().copied().collect(),
        }
    }

    pub fn restore(&mut self, s: &I8042Snapshot) {
        self.output = s.output.iter().copied().take(MAX_QUEUED).collect();
        if !self.output.is_empty() {
            self.raise();
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let Some(b) = data.first_mut() else {
            return;
        };
        *b = match offset {
            DATA_OFFSET => {
                let v = self.output.pop_front().unwrap_or(0);
                if !self.output.is_empty() {
                    self.raise();
                }
                v
            }
            STATUS_OFFSET if !self.output.is_empty() => STATUS_OBF,
            _ => self.reset.read(offset as u8),
        };
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(b) = data.first() {
            let _ = self.reset.write(offset as u8, *b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn ctrl_alt_del_is_read_byte_by_byte_and_survives_a_snapshot() {
        let shutdown = Arc::new(ShutdownSignal::new().unwrap());
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let mut k = I8042::new(shutdown.clone(), irq.try_clone().unwrap());
        let mut b = [0u8];
        k.read(STATUS_OFFSET, &mut b);
        assert_eq!(b[0], 0);
        assert!(k.ctrl_alt_del());
        assert_eq!(irq.read().unwrap(), 1);
        k.read(DATA_OFFSET, &mut b);
        assert_eq!(b[0], CTRL_ALT_DEL[0]);
        let saved = k.save();
        assert_eq!(saved.output, CTRL_ALT_DEL[1..]);
        let mut r = I8042::new(shutdown.clone(), EventFd::new(EFD_NONBLOCK).unwrap());
        r.restore(&saved);
        let mut got = Vec::new();
        loop {
            r.read(STATUS_OFFSET, &mut b);
            if b[0] & STATUS_OBF == 0 {
                break;
            }
            r.read(DATA_OFFSET, &mut b);
            got.push(b[0]);
        }
        assert_eq!(got, CTRL_ALT_DEL[1..]);
        assert!(!shutdown.is_signalled());
        r.write(STATUS_OFFSET, &[0xfe]);
        assert!(shutdown.is_signalled());
    }
}
