//! What the VMM can tell a user whose guest kernel lacks something it needs. A kernel
//! without a serial console prints nothing; a kernel without virtio-mmio command-line
//! discovery (or without a device's driver) never sets the device up. Neither is an error
//! the VMM can see directly, so it reports the symptom with the likely cause.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::devices::serial::SerialCounters;
use crate::devices::virtio::mmio::MmioTransport;

/// How long a guest may stay silent before the VMM says so. A Linux guest prints its first
/// console line within a few seconds even on a software-emulating KVM (about 10 s there
/// when the machine is busy).
pub const SILENCE: Duration = Duration::from_secs(30);

/// Whether the command line asks the kernel to keep its log off the console, in which case
/// silence until init prints is expected and not worth a warning.
pub fn quiet_cmdline(cmdline: &str) -> bool {
    cmdline
        .split_whitespace()
        .any(|p| p == "quiet" || p.starts_with("loglevel="))
}

/// Watches a running VM for the symptoms above and logs each warning once.
pub struct Watch {
    console: Arc<SerialCounters>,
    /// Off when the command line asks for a quiet boot.
    watch_silence: bool,
    started: Instant,
    silence_reported: bool,
    devices: Vec<(String, u64, Arc<Mutex<MmioTransport>>)>,
}

impl Watch {
    /// `console` counts the bytes the guest writes to its serial console.
    pub fn new(console: Arc<SerialCounters>, cmdline: &str) -> Self {
        Watch {
            console,
            watch_silence: !quiet_cmdline(cmdline),
            started: Instant::now(),
            silence_reported: false,
            devices: Vec::new(),
        }
    }

    fn printed(&self) -> bool {
        self.console.tx_bytes.load(Ordering::Relaxed) > 0
    }

    /// A virtio device whose driver should bring it up.
    pub fn device(&mut self, name: &str, base: u64, transport: Arc<Mutex<MmioTransport>>) {
        self.devices.push((name.to_string(), base, transport));
    }

    /// The guest starts running now.
    pub fn start(&mut self) {
        self.started = Instant::now();
    }

    /// Called from the event loop at least once a second.
    pub fn tick(&mut self) {
        if self.watch_silence
            && !self.silence_reported
            && self.started.elapsed() >= SILENCE
            && !self.printed()
        {
            self.silence_reported = true;
            tracing::warn!("{}", silent_guest(Some(SILENCE)));
        }
    }

    /// Called when the guest shut down by itself.
    pub fn at_shutdown(&self) {
        if !self.printed() && !self.silence_reported {
            tracing::warn!("{}", silent_guest(None));
        }
        for (name, base, transport) in &self.devices {
            let used = transport
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ever_active();
            if !used {
                tracing::warn!("{}", unused_device(name, *base));
            }
        }
    }
}

/// The warning for a guest that wrote nothing to the serial port (within `after`, or before
/// it shut down when `after` is `None`).
pub fn silent_guest(after: Option<Duration>) -> String {
    let when = match after {
        Some(d) => format!("in its first {} s", d.as_secs()),
        None => "before it shut down".to_string(),
    };
    format!(
        "the guest printed nothing on the serial console {when}: is \
         CONFIG_SERIAL_8250_CONSOLE set and console=ttyS0 on the command line?"
    )
}

/// The warning for a virtio device no guest driver ever brought up.
pub fn unused_device(name: &str, base: u64) -> String {
    let driver = if name.starts_with("virtio-blk") {
        "CONFIG_VIRTIO_BLK"
    } else if name.starts_with("virtio-net") {
        "CONFIG_VIRTIO_NET"
    } else if name.starts_with("virtio-vsock") {
        "CONFIG_VIRTIO_VSOCKETS"
    } else if name.starts_with("virtio-rng") {
        "CONFIG_HW_RANDOM_VIRTIO"
    } else {
        "its driver"
    };
    format!(
        "{name} at {base:#x} was never set up by the guest: does the kernel have \
         CONFIG_VIRTIO_MMIO with CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES, and {driver}?"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_name_the_missing_options() {
        assert!(silent_guest(Some(SILENCE)).contains("first 30 s"));
        assert!(quiet_cmdline("console=ttyS0 quiet") && quiet_cmdline("loglevel=1"));
        assert!(!quiet_cmdline("console=ttyS0 quietly"));
        assert!(silent_guest(None).contains("CONFIG_SERIAL_8250_CONSOLE"));
        let h = unused_device("virtio-blk0", 0xd000_1000);
        assert!(h.contains("0xd0001000") && h.contains("CONFIG_VIRTIO_BLK"));
        assert!(unused_device("virtio-vsock", 0).contains("CONFIG_VIRTIO_VSOCKETS"));
    }
}
