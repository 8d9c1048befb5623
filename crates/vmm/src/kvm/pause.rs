//! Pausing the vCPUs, and saving their state while they are paused.
//!
//! A pause is a flag every vCPU thread checks before each KVM_RUN, plus the kick signal for
//! threads inside KVM_RUN (sent by the main thread, which owns the kicks: see `control`). A
//! thread that sees the flag enters KVM_RUN once more with `immediate_exit` set, so KVM
//! completes the port or MMIO access of the last exit (an `in` gets its value into RAX) and
//! returns EINTR without running the guest; then the thread *parks* on a condition variable.
//! A parked vCPU's registers are final, so that is where it saves its own state when a
//! snapshot asks (the KVM_GET_* ioctls are vCPU ioctls, made on the vCPU's own thread).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_bindings::CpuId;
use kvm_ioctls::VcpuFd;

use super::state::VcpuState;

/// How long a pause or a save may take before it is reported as failed (a vCPU thread stuck
/// in a device, e.g. writing to a console nobody reads).
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);

struct Inner {
    want_paused: bool,
    stopping: bool,
    parked: Vec<bool>,
    /// Bumped for each save request; `served[i]` is the last one vCPU i answered.
    save_gen: u64,
    served: Vec<u64>,
    saved: Vec<Option<Result<VcpuState, String>>>,
}

/// The vCPUs' pause state, shared by the vCPU threads, the main thread (kicks) and the event
/// loop (API requests).
pub struct Gate {
    paused: AtomicBool,
    inner: Mutex<Inner>,
    cond: Condvar,
    /// KVM_RUN returns per vCPU (status counters).
    exits: Vec<AtomicU64>,
    /// The CPUID table each vCPU was given, and the MSRs to save (read from /dev/kvm before
    /// the jail).
    cpuids: Vec<CpuId>,
    msrs: Vec<u32>,
}

impl Gate {
    pub fn new(cpuids: Vec<CpuId>, msrs: Vec<u32>, start_paused: bool) -> Gate {
        let n = cpuids.len();
        Gate {
            paused: AtomicBool::new(start_paused),
            inner: Mutex::new(Inner {
                want_paused: start_paused,
                stopping: false,
                parked: vec![false; n],
                save_gen: 0,
                served: vec![0; n],
                saved: (0..n).map(|_| None).collect(),
            }),
            cond: Condvar::new(),
            exits: (0..n).map(|_| AtomicU64::new(0)).collect(),
            cpuids,
            msrs,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn vcpus(&self) -> usize {
        self.cpuids.len()
    }

    /// Checked by a vCPU thread before each KVM_RUN.
    pub fn pause_requested(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Counts one KVM_RUN return of vCPU `id`.
    pub fn exited(&self, id: u8) {
        if let Some(c) = self.exits.get(usize::from(id)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn exits(&self, id: usize) -> u64 {
        self.exits.get(id).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The vCPU thread's side: called after KVM_RUN returned EINTR. If a pause is requested,
    /// blocks until it is lifted (or the VM stops), saving the vCPU's state whenever asked.
    pub fn park_if_requested(&self, id: u8, fd: &VcpuFd) {
        if !self.pause_requested() {
            return;
        }
        let i = usize::from(id);
        let mut g = self.lock();
        g.parked[i] = true;
        self.cond.notify_all();
        while g.want_paused && !g.stopping {
            if g.served[i] < g.save_gen {
                let gen = g.save_gen;
                drop(g);
                let state = VcpuState::save(fd, &self.cpuids[i], &self.msrs)
                    .map_err(|e| format!("vcpu{id}: {e}"));
                g = self.lock();
                g.saved[i] = Some(state);
                g.served[i] = gen;
                self.cond.notify_all();
                continue;
            }
            g = self.cond.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        g.parked[i] = false;
        self.cond.notify_all();
    }

    /// Asks every vCPU to pause (the caller then has them kicked).
    pub fn request_pause(&self) {
        let mut g = self.lock();
        g.want_paused = true;
        self.paused.store(true, Ordering::Release);
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) {
        let mut g = self.lock();
        g.want_paused = false;
        self.paused.store(false, Ordering::Release);
        self.cond.notify_all();
    }

    /// Releases parked vCPUs for good: the VM is stopping.
    pub fn stop(&self) {
        let mut g = self.lock();
        g.stopping = true;
        self.cond.notify_all();
    }

    pub fn is_parked(&self, id: usize) -> bool {
        self.lock().parked.get(id).copied().unwrap_or(false)
    }

    pub fn all_parked(&self) -> bool {
        self.lock().parked.iter().all(|p| *p)
    }

    /// Paused as far as the guest can tell: requested and every vCPU parked.
    pub fn is_paused(&self) -> bool {
        let g = self.lock();
        g.want_paused && g.parked.iter().all(|p| *p)
    }

    /// Waits until every vCPU is parked; `gone()` says the VM ended meanwhile.
    pub fn wait_parked(&self, gone: &dyn Fn() -> bool) -> Result<(), String> {
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        let mut g = self.lock();
        loop {
            if g.parked.iter().all(|p| *p) {
                return Ok(());
            }
            if gone() || g.stopping {
                return Err("the VM stopped".into());
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                let busy: Vec<String> = (0..g.parked.len())
                    .filter(|&i| !g.parked[i])
                    .map(|i| format!("vcpu{i}"))
                    .collect();
                return Err(format!(
                    "{} did not pause within {} s",
                    busy.join(", "),
                    PAUSE_TIMEOUT.as_secs()
                ));
            };
            // Short waits: the VM's end is not signalled on this condition variable.
            let step = left.min(Duration::from_millis(50));
            g = self
                .cond
                .wait_timeout(g, step)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Has every (parked) vCPU save its state, and returns them in vCPU order.
    pub fn save_all(&self) -> Result<Vec<VcpuState>, String> {
        let deadline = Instant::now() + PAUSE_TIMEOUT;
        let mut g = self.lock();
        if !g.want_paused || !g.parked.iter().all(|p| *p) {
            return Err("the vCPUs are not paused".into());
        }
        g.save_gen += 1;
        let gen = g.save_gen;
        for s in g.saved.iter_mut() {
            *s = None;
        }
        self.cond.notify_all();
        while g.served.iter().any(|&s| s < gen) {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Err("a vCPU did not save its state in time".into());
            };
            g = self
                .cond
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        g.saved
            .iter_mut()
            .map(|s| s.take().unwrap_or_else(|| Err("no state".into())))
            .collect()
    }
}
