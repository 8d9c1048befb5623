//! The VMM's event loop (event-manager over epoll, on the thread that called `Vm::run`):
//! queue notifications (ioeventfds), device host fds (tap, vsock sockets), console input,
//! and the shutdown eventfd that ends the loop.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::serial::Serial;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::{DeviceEvents, DEVICE_TOKEN_BASE};
use crate::shutdown::ShutdownSignal;

/// Wakes the loop when the VM ends; nothing else to do, the run loop checks the signal.
pub struct ShutdownWatcher(pub Arc<ShutdownSignal>);

impl MutEventSubscriber for ShutdownWatcher {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.0.eventfd().read();
    }
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(self.0.eventfd(), EventSet::IN)) {
            tracing::error!("event loop: cannot watch the shutdown eventfd: {e:?}");
        }
    }
}

/// Host stdin to the guest's serial port.
pub struct ConsoleInput {
    pub serial: Arc<Mutex<Serial>>,
}

impl MutEventSubscriber for ConsoleInput {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let mut buf = [0u8; 64];
        let n = match std::io::stdin().lock().read(&mut buf) {
            Ok(0) | Err(_) => {
                // EOF or a closed stdin: stop watching, the guest keeps running.
                let _ = ops.remove(events);
                return;
            }
            Ok(n) => n,
        };
        let mut serial = self.serial.lock().unwrap_or_else(|e| e.into_inner());
        // Bytes beyond the UART FIFO are dropped, as a real UART overruns.
        serial.enqueue_input(&buf[..n]);
    }
    fn init(&mut self, ops: &mut EventOps) {
        let stdin = std::io::stdin();
        if let Err(e) = ops.add(Events::new(&stdin.as_raw_fd(), EventSet::IN)) {
            // stdin may be /dev/null or a regular file, which epoll refuses: no console input.
            tracing::debug!("console: stdin not watched: {e:?}");
        }
    }
}

const ACTIVATE_TOKEN: u32 = 0xffff_ffff;

/// One virtio-mmio device on the event loop.
pub struct VirtioSubscriber {
    pub transport: Arc<Mutex<MmioTransport>>,
    /// One ioeventfd per queue, registered with KVM on the QueueNotify address.
    pub queue_evts: Vec<EventFd>,
    pub activate_evt: EventFd,
}

impl MutEventSubscriber for VirtioSubscriber {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let token = events.data();
        let mut t = self.transport.lock().unwrap_or_else(|e| e.into_inner());
        let used = if token == ACTIVATE_TOKEN {
            let _ = self.activate_evt.read();
            if !t.is_active() {
                return;
            }
            let dev = t.device_mut();
            dev.register_events(&mut DeviceEvents::new(ops));
            // Buffers the driver queued before we were watching still need service.
            let mut any = false;
            for q in 0..self.queue_evts.len() {
                any |= dev.queue_notify(q, &mut DeviceEvents::new(ops));
            }
            any
        } else if token < DEVICE_TOKEN_BASE {
            if let Some(evt) = self.queue_evts.get(token as usize) {
                let _ = evt.read();
            }
            t.count_notification();
            if !t.is_active() {
                return;
            }
            t.device_mut()
                .queue_notify(token as usize, &mut DeviceEvents::new(ops))
        } else {
            if !t.is_active() {
                return;
            }
            t.device_mut().host_event(
                token - DEVICE_TOKEN_BASE,
                events.event_set(),
                &mut DeviceEvents::new(ops),
            )
        };
        if used {
            t.interrupt().signal_used_ring();
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        for (i, evt) in self.queue_evts.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                tracing::error!("event loop: cannot watch queue {i} notifications: {e:?}");
            }
        }
        if let Err(e) = ops.add(Events::with_data(
            &self.activate_evt,
            ACTIVATE_TOKEN,
            EventSet::IN,
        )) {
            tracing::error!("event loop: cannot watch device activation: {e:?}");
        }
    }
}
