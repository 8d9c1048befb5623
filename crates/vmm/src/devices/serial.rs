//! The 16550 UART at COM1 (0x3f8, IRQ 4): the guest console. Register emulation is
//! vm-superio's `Serial`; this file connects it to an interrupt eventfd (irqfd to IRQ 4),
//! an output (stdout or a file) and input bytes from the event loop.

use std::io::Write;

use vm_superio::{serial::NoEvents, Serial as Uart, Trigger};
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

pub struct Serial {
    uart: Uart<IrqLine, NoEvents, Box<dyn Write + Send>>,
}

impl Serial {
    pub fn new(irq: EventFd, out: Box<dyn Write + Send>) -> Self {
        Serial {
            uart: Uart::new(IrqLine(irq), out),
        }
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
