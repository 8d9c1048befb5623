//! How a running VM ends: the first vCPU or device that decides the VM is over records why
//! and wakes the event loop through an eventfd.

use std::sync::Mutex;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::error::{Error, Result};

/// Why the guest stopped on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    /// The guest pulsed the reset line through the i8042 (`reboot=k`, or the test guest).
    I8042Reset,
    /// A triple fault (KVM_EXIT_SHUTDOWN): what a guest reboot without other means becomes.
    TripleFault,
    /// KVM_EXIT_SYSTEM_EVENT (shutdown/reset/crash type).
    SystemEvent(u32),
    /// A vCPU executed `hlt` with interrupts off and nothing can wake it (only seen without
    /// the in-kernel irqchip, reported for completeness).
    Halt,
    /// A `shutdown` request on the API socket stopped the VM: it was paused, or the guest did
    /// not react to Ctrl+Alt+Del in time.
    Stopped,
}

impl std::fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShutdownReason::I8042Reset => write!(f, "i8042 reset"),
            ShutdownReason::TripleFault => write!(f, "triple fault (KVM_EXIT_SHUTDOWN)"),
            ShutdownReason::SystemEvent(t) => write!(f, "KVM system event type {t}"),
            ShutdownReason::Halt => write!(f, "vCPU halted"),
            ShutdownReason::Stopped => write!(f, "stopped through the API socket"),
        }
    }
}

type Waker = Box<dyn Fn() + Send + Sync>;

/// The single place the VM's outcome is recorded.
pub struct ShutdownSignal {
    outcome: Mutex<Option<Result<ShutdownReason>>>,
    evt: EventFd,
    /// Called after the outcome is recorded: the main thread's mailbox, which waits on a
    /// condition variable rather than on the eventfd.
    wakers: Mutex<Vec<Waker>>,
}

impl ShutdownSignal {
    pub fn new() -> Result<Self> {
        Ok(ShutdownSignal {
            outcome: Mutex::new(None),
            evt: EventFd::new(EFD_NONBLOCK).map_err(Error::sys("eventfd (shutdown)"))?,
            wakers: Mutex::new(Vec::new()),
        })
    }

    /// Has `waker` called whenever the VM is told to end.
    pub fn on_signal(&self, waker: Waker) {
        self.wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(waker);
    }

    /// Records the outcome if none is recorded yet (the first reason wins) and wakes the loop.
    pub fn signal(&self, outcome: Result<ShutdownReason>) {
        let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if o.is_none() {
            *o = Some(outcome);
        }
        drop(o);
        // A full eventfd counter still leaves it readable, which is all the loop needs.
        let _ = self.evt.write(1);
        for w in self.wakers.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            w();
        }
    }

    pub fn is_signalled(&self) -> bool {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    pub fn take(&self) -> Option<Result<ShutdownReason>> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}
