//! `sandbox --vm`: the same sandbox — planned by the parent module, every input checked
//! the same way — run in a micro-VM (`vmruntime`): the command gets its own kernel, and
//! the container recipe (namespaces, seccomp, capabilities, limits) applies inside it.
//!
//! The root filesystem is the host's, read-only, as for `sandbox`: QEMU exports it over 9p
//! (a read-only export of a read-only view of the host's root, without its /proc, /sys,
//! /dev, /run and /tmp), and the agent mounts it read-only (nosuid, nodev) as the
//! container's root, under which the container gets its private /tmp, /run, /dev. Or
//! `--rootfs DIR`, which becomes the VM's read-only disk. `--bind` directories are 9p
//! exports too (read-only ones read-only on the host side as well); `--bind` files are
//! copied in. The builtin VMM has no 9p or virtio-fs device: there, the host's root and
//! `--bind` directories are refused with the way out (`--vm-backend qemu`, `--rootfs`).
//! A VM cannot share the host's network, so `--net host` is refused. Exit codes are `sandbox`'s:
//! the command's own, 124 on timeout, 128+N when bulkhead was stopped by signal N (the VM
//! is killed at once: the host cannot see whether the command handles the signal), 125
//! when the sandbox could not be set up.

use std::path::PathBuf;

use anyhow::{bail, Result};
use container::{CreateOptions, Runtime};
use vmruntime::host::backend::Backend;
use vmruntime::host::lifecycle::VmRuntime;
use vmruntime::host::plan::Overrides;

use super::{console_receiver, plan, setup_failed, wait_code, ContainerGuard, SandboxArgs};

pub fn sandbox(rt: &Runtime, vm: &VmRuntime, over: &Overrides, a: SandboxArgs) -> Result<i32> {
    run(rt, vm, over, a).map_err(setup_failed)
}

fn run(rt: &Runtime, vm: &VmRuntime, over: &Overrides, a: SandboxArgs) -> Result<i32> {
    let plan = plan(&a)?;
    let backend = over.backend.unwrap_or_else(Backend::host_default);
    if plan.rootfs.is_none() && backend == Backend::Builtin {
        bail!("--vm without --rootfs shares the host's root with the VM over 9p, which needs the qemu backend (the builtin VMM has no 9p or virtio-fs device): add --vm-backend qemu, or give --rootfs DIR (it becomes the VM's read-only disk)");
    }
    if a.net == "host" {
        bail!("--vm --net host: a VM cannot share the host's network (its own kernel has its own network stack)");
    }
    let over = Overrides {
        host_root: plan.rootfs.is_none(),
        share_dirs: true,
        ..over.clone()
    };
    let old_mask = container::block_forwarded_signals();
    let res = (|| {
        // With a terminal, the host side of the VM's pty comes to us, as for `sandbox`.
        let console = console_receiver(&plan)?;
        let mut spec = plan.spec.clone();
        if plan.rootfs.is_none() {
            // The host's root reaches the guest as its root, over 9p: a bind of the host's `/`
            // on `/` (how a plan may give it to a container on the host) is not for the guest.
            spec.mounts
                .retain(|m| !(m.destination == "/" && m.source.as_deref() == Some("/")));
        }
        let opts = CreateOptions {
            // The host's root: the spec's root.path (".") names it, and nothing is made of it.
            bundle: plan.rootfs.clone().unwrap_or_else(|| PathBuf::from("/")),
            spec: Some(spec),
            console_fd: console.as_ref().map(|c| c.console_fd()),
            ..Default::default()
        };
        let id = plan.id.as_str();
        let pid = vm.create(id, &opts, &over)?;
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
