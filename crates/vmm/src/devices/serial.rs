//! The 16550 UART at COM1 (0x3f8, IRQ 4): the guest console. Register emulation is
//! vm-superio's `Serial`; this file connects it to an interrupt eventfd (irqfd to IRQ 4),
//! an output (stdout or a file) and input bytes from the event loop, counts the bytes that
//! cross it, and saves and restores its registers and receive FIFO for snapshots.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use vm_superio::serial::{SerialEvents, SerialState};
use vm_superio::{Serial as Uart, Trigger};
use vmm_sys_util::eventfd::EventFd;

use super::BusDevice;

pub const COM1_PORT: u64 = 0x3f8;
pub const COM1_PORT_LEN: u64 = 8;
pub const COM1_IRQ: u32 = 4;

/// An interrupt line backed by an eventfd registered as a KVM irqfd.
pub struct IrqLine(pub EventFd);

impl Trigger for IrqLine {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Bytes the guest wrote and read (the API's status counters).
#[derive(Default)]
pub struct SerialCounters {
    pub tx_bytes: AtomicU64,
    pub rx_bytes: AtomicU64,
}

impl SerialEvents for SerialCounters {
    fn buffer_read(&self) {
        self.rx_bytes.fetch_add(1, Ordering::Relaxed);
    }
    fn out_byte(&self) {
        self.tx_bytes.fetch_add(1, Ordering::Relaxed);
    }
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {}
}

/// How a snapshot saves the UART: vm-superio's own state (registers and receive FIFO), given
/// serde's derive here (as a "remote" definition: the fields are vm-superio's).
#[derive(Serialize, Deserialize)]
#[serde(remote = "SerialState")]
pub struct SerialStateDef {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

type Inner = Uart<IrqLine, Arc<SerialCounters>, Box<dyn Write + Send>>;

pub struct Serial {
    uart: Inner,
    counters: Arc<SerialCounters>,
}

impl Serial {
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> Self {
        let counters = Arc::new(SerialCounters::default());
        Serial {
            uart: Uart::with_events(IrqLine(irq), counters.clone(), out),
            counters,
        }
    }

    /// Puts the UART in the state a snapshot saved (an interrupt it had pending is raised
    /// again); the output stays.
    pub fn load(&mut self, state: &SerialState) -> Result<(), String> {
        let irq = self
            .uart
            .interrupt_evt()
            .0
            .try_clone()
            .map_err(|e| format!("serial: eventfd dup: {e}"))?;
        let out = std::mem::replace(self.uart.writer_mut(), Box::new(std::io::sink()));
        self.uart = Uart::from_state(state, IrqLine(irq), self.counters.clone(), out)
            .map_err(|e| format!("serial: {e:?}"))?;
        Ok(())
    }

    pub fn save(&self) -> SerialState {
        self.uart.state()
    }

    pub fn counters(&self) -> &SerialCounters {
        &self.counters
    }

    /// The byte counters, shared: the VMM's hints watch whether the guest ever printed.
    pub fn shared_counters(&self) -> Arc<SerialCounters> {
        self.counters.clone()
    }

    /// Feeds host input to the guest; returns how many bytes the FIFO took.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        self.uart.enqueue_raw_bytes(bytes).unwrap_or(0)
    }

    /// Room left in the receive FIFO, so the event loop reads no more than fits.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Replaces where guest output goes (the VM attaches the console last).
    pub fn set_output(&mut self, out: Box<dyn Write + Send>) {
        *self.uart.writer_mut() = out;
    }

    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(b) = data.first_mut() {
            *b = self.uart.read(offset as u8);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(b) = data.first() {
            // A failed console write (closed stdout) must not stop the guest.
            let _ = self.uart.write(offset as u8, *b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[test]
    fn registers_and_fifo_survive_a_save_and_restore() {
        let evt = || EventFd::new(EFD_NONBLOCK).unwrap();
        let mut s = Serial::new(evt(), Box::new(std::io::sink()));
        s.write(3, &[0x80]); // DLAB on
        s.write(0, &[0x0c]); // divisor low
        s.write(3, &[0x03]); // 8N1, DLAB off
        s.write(7, &[0x5a]); // scratch
        s.write(0, b"x");
        assert_eq!(s.enqueue_input(b"ab"), 2);
        let saved = s.save();
        let mut r = Serial::new(evt(), Box::new(std::io::sink()));
        r.load(&saved).unwrap();
        assert_eq!(r.save(), saved);
        let mut b = [0u8];
        r.read(7, &mut b);
        assert_eq!(b[0], 0x5a);
        r.read(0, &mut b);
        assert_eq!(b[0], b'a');
        assert_eq!(s.counters().tx_bytes.load(Ordering::Relaxed), 1);
        assert_eq!(r.counters().rx_bytes.load(Ordering::Relaxed), 1);
    }
}
