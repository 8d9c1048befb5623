//! The i8042 keyboard controller, reduced to what a micro-VM needs: writing 0xfe to the
//! command port (0x64) pulses the CPU reset line, which the VMM turns into a clean guest
//! shutdown with exit status 0. The register logic is vm-superio's `I8042Device`.

use std::sync::Arc;

use vm_superio::{I8042Device, Trigger};

use super::BusDevice;
use crate::shutdown::{ShutdownReason, ShutdownSignal};

/// Port range of the controller: data port 0x60 .. command/status port 0x64.
pub const I8042_PORT: u64 = 0x60;
pub const I8042_PORT_LEN: u64 = 5;

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

pub struct I8042(I8042Device<ResetLine>);

impl I8042 {
    pub fn new(shutdown: Arc<ShutdownSignal>) -> Self {
        I8042(I8042Device::new(ResetLine(shutdown)))
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(b) = data.first_mut() {
            *b = self.0.read(offset as u8);
        }
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(b) = data.first() {
            let _ = self.0.write(offset as u8, *b);
        }
    }
}
