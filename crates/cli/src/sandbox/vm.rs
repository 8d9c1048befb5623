//! `sandbox --vm`: the same sandbox — planned by the parent module, every input checked
//! the same way — run in a micro-VM (`vmruntime`): the command gets its own kernel, and
//! the container recipe (namespaces, seccomp, capabilities, limits) applies inside it.
//!
//! The root filesystem must be `--rootfs DIR` (it becomes the VM's read-only disk): the
//! host's root cannot be shared with the guest, which has no shared filesystem (no
//! virtio-fs, and the guest kernel has no 9p). The VM has no network device, so
//! `--net host` is refused. Exit codes are `sandbox`'s: the command's own, 124 on
//! timeout, 128+N when bulkhead was stopped by signal N (the VM is killed at once: the
//! host cannot see whether the command handles the signal), 125 when the sandbox could
//! not be set up.

use anyhow::{bail, Result};
use container::{CreateOptions, Runtime};
use vmruntime::host::lifecycle::VmRuntime;
use vmruntime::host::plan::Overrides;

use super::{console_receiver, plan, setup_failed, wait_code, ContainerGuard, SandboxArgs};

pub fn sandbox(rt: &Runtime, vm: &VmRuntime, over: &Overrides, a: SandboxArgs) -> Result<i32> {
    run(rt, vm, over, a).map_err(setup_failed)
}

fn run(rt: &Runtime, vm: &VmRuntime, over: &Overrides, a: SandboxArgs) -> Result<i32> {
    let plan = plan(&a)?;
    let Some(rootfs) = plan.rootfs.clone() else {
        bail!("--vm needs --rootfs DIR: the host's root cannot be shared with a VM (the guest has no virtio-fs or 9p); DIR becomes the VM's read-only disk");
    };
    if a.net == "host" {
        bail!("--vm --net host: the VM has no network device");
    }
    let old_mask = container::block_forwarded_signals();
    let res = (|| {
        // With a terminal, the host side of the VM's pty comes to us, as for `sandbox`.
        let console = console_receiver(&plan)?;
        let opts = CreateOptions {
            bundle: rootfs,
            spec: Some(plan.spec.clone()),
            console_fd: console.as_ref().map(|c| c.console_fd()),
            ..Default::default()
        };
        let id = plan.id.as_str();
        let pid = vm.create(id, &opts, over)?;
        let master = console.and_then(container::console::Receiver::master);
        let mut guard = ContainerGuard {
            rt,
            id,
            pid,
            reaped: false,
        };
        vm.start(id)?;
        let code = wait_code(rt, id, pid, plan.timeout, master)?;
        guard.reaped = true;
        drop(guard);
        Ok(code)
    })();
    container::foreground::restore_signals(&old_mask);
    res
}
