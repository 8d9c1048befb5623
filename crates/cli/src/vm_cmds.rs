//! The OCI commands for VM-backed containers (glue over `vmruntime::host`), chosen by
//! `--vm` or the config's `run.bulkhead.vm=true` at create, and by the container's state
//! afterwards; `bulkhead vm image build`; and the guest agent's entry point.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use container::exec::ExecOptions;
use vmruntime::host::backend::Backend;
use vmruntime::host::lifecycle::VmRuntime;
use vmruntime::host::plan::Overrides;

use crate::cgroup_cmds::PsArgs;

pub fn runtime(root: &std::path::Path) -> VmRuntime {
    VmRuntime::new(root, vmruntime::image::DEFAULT_CACHE)
}

/// The global `--vm-backend` and `--vm-image` flags.
pub fn overrides(backend: Option<&str>, image: Option<PathBuf>) -> Result<Overrides> {
    Ok(Overrides {
        backend: backend.map(Backend::parse).transpose()?,
        image,
        ..Default::default()
    })
}

pub fn exec(vm: &VmRuntime, id: &str, opts: &ExecOptions) -> Result<i32> {
    Ok(vm.exec(id, opts)?)
}

/// `ps` of a VM-backed container: its processes in the guest (guest pids).
pub fn ps(vm: &VmRuntime, a: &PsArgs) -> Result<i32> {
    if !a.ps_args.is_empty() {
        bail!("ps: options for ps(1) do not apply to a VM-backed container (its processes are in the guest)");
    }
    let procs = vm.ps(&a.id)?;
    let mut out = std::io::stdout().lock();
    if a.format == "json" {
        let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
        writeln!(out, "{}", serde_json::to_string(&pids)?)?;
    } else {
        writeln!(out, "{:>7} CMD", "PID")?;
        for p in procs {
            writeln!(out, "{:>7} {}", p.pid, p.args.join(" "))?;
        }
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct ImageBuildArgs {
    /// Guest kernel (ELF vmlinux). Default: the newest one guest/build-kernel.sh cached
    /// under /var/cache/bulkhead/kernel.
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Static bulkhead binary to put in the guest as /init. Default: this binary, if it is
    /// statically linked.
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Cache directory (images under images/, the default image as `default`).
    #[arg(long, default_value = vmruntime::image::DEFAULT_CACHE)]
    pub cache: PathBuf,
}

/// `bulkhead vm image build`: prints progress on stderr and the image directory on stdout.
pub fn image_build(a: ImageBuildArgs) -> Result<i32> {
    let kernel = match a.kernel {
        Some(k) => k,
        None => vmruntime::image::find_kernel()?,
    };
    let agent = vmruntime::image::agent_binary(a.agent.as_deref())?;
    let opts = vmruntime::image::BuildOptions {
        kernel,
        agent,
        cache: a.cache,
    };
    let img = vmruntime::image::build(&opts, &mut |line| eprintln!("vm image: {line}"))?;
    println!("{}", img.dir.display());
    Ok(0)
}

/// `bulkhead agent`: the guest's init.
pub fn agent() -> Result<i32> {
    Ok(vmruntime::agent::main()?)
}

/// The kernel starts the guest image's /init without arguments: recognise it.
pub fn started_as_guest_init() -> bool {
    std::process::id() == 1 && std::env::args_os().next().is_some_and(|a| a == "/init")
}
