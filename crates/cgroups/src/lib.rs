//! cgroups for containers: one interface over v1, v2 and hybrid hosts.
//!
//! ## Architecture notes
//! - [`layout`] reads the mounted hierarchies from /proc/self/mountinfo; nothing is
//!   assumed about /sys/fs/cgroup. On a hybrid host every controller is driven
//!   through the hierarchy that owns it (a v1 mount if one binds it, else the
//!   cgroup2 mount), so limits land where the kernel enforces them.
//! - A [`Cgroup`] is the set of directories, one per hierarchy, that hold the
//!   container; it records which directories it created so removal (after
//!   `delete`, or when `create` fails half-way) leaves nothing behind and never
//!   touches directories that existed before.
//! - [`v1`] and [`v2`] translate OCI resources into controller files; every
//!   write that the kernel rejects is reported with the file and the value.
//!   [`validate`] refuses values that are wrong on any host before the first
//!   write.
//! - Devices: v1 list files, or on v2 an eBPF program ([`ebpf`]) that decides
//!   exactly as the v1 controller would for the same rules.
//! - [`Cgroup::update`] journals the old value of each file it changes and
//!   writes them back if a later write fails, so a refused update leaves the
//!   limits as they were.
//! - [`stats`] reads usage in runc's `events` JSON shape and watches OOM kills.
//! - An unprivileged runtime uses only the hierarchies it may write
//!   ([`Cgroup::leave_out_unwritable`]: a delegated cgroup v2 subtree); the
//!   others are recorded as the runtime's own directories there, never written,
//!   so a resource needing one fails saying why, and a `cgroup` mount can show
//!   them read-only.
//! - No systemd driver: cgroupfs only (no systemd runs on the hosts we target;
//!   `features` says so).

pub mod devices;
pub mod ebpf;
pub mod layout;
pub mod stats;
pub mod v1;
pub mod v2;
pub mod validate;

use std::cell::RefCell;
use std::fs;
use std::io::{self, ErrorKind};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use layout::{Hierarchies, Hierarchy, Layout};

/// The cgroup library's error. Each message is complete on its own (it
/// includes the OS error text), so none exposes a `source()`: printing the
/// chain would repeat it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {err}")]
    Io { context: String, err: io::Error },
    /// The kernel refused a value written to a controller file.
    #[error("cgroup: writing {value:?} to {file}: {err}")]
    Write {
        file: PathBuf,
        value: String,
        err: io::Error,
    },
    #[error("no cgroup hierarchy is mounted")]
    NoCgroups,
    /// A resource the config asks for that this host cannot provide.
    #[error("{0}")]
    Unsupported(String),
    /// A value that is wrong whatever the host.
    #[error("{0}")]
    Invalid(String),
    /// An update failed part-way; the files it had changed were set back.
    #[error("{inner} (the values changed before the failure were restored)")]
    RolledBack { inner: Box<Error> },
    /// An update failed part-way and setting the old values back failed too.
    #[error("{inner} (restoring the previous values failed: {restore})")]
    RollbackFailed { inner: Box<Error>, restore: String },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, err: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            err,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

thread_local! {
    /// While an update runs: the files written so far and their old values.
    static JOURNAL: RefCell<Option<Vec<(PathBuf, String)>>> = const { RefCell::new(None) };
}

/// Files whose content reads back in the form they are written, so an old
/// value can be written back. (Keyed files such as devices.allow, io.max or
/// blkio.throttle.* are not: writing back what they list adds, it does not
/// replace.)
fn restorable(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    const FILES: &[&str] = &[
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "memory.kmem.limit_in_bytes",
        "memory.kmem.tcp.limit_in_bytes",
        "memory.swappiness",
        "memory.max",
        "memory.swap.max",
        "memory.low",
        "memory.high",
        "cpu.shares",
        "cpu.cfs_period_us",
        "cpu.cfs_quota_us",
        "cpu.cfs_burst_us",
        "cpu.rt_period_us",
        "cpu.rt_runtime_us",
        "cpu.idle",
        "cpu.weight",
        "cpu.max",
        "cpu.max.burst",
        "cpuset.cpus",
        "cpuset.mems",
        "pids.max",
        "blkio.weight",
        "blkio.leaf_weight",
        "net_cls.classid",
    ];
    FILES.contains(&name)
        || (name.starts_with("hugetlb.")
            && (name.ends_with(".limit_in_bytes") || name.ends_with(".max")))
}

/// Write a controller file, naming file and value on failure.
pub(crate) fn write_file(path: &Path, value: &str) -> Result<()> {
    let old = JOURNAL.with(|j| {
        let j = j.borrow();
        let list = j.as_ref()?;
        if !restorable(path) || list.iter().any(|(p, _)| p == path) {
            return None;
        }
        fs::read_to_string(path).ok()
    });
    fs::write(path, value).map_err(|err| Error::Write {
        file: path.to_path_buf(),
        value: value.to_string(),
        err,
    })?;
    // Journal only what was changed: a refused write changed nothing.
    if let Some(old) = old {
        JOURNAL.with(|j| {
            if let Some(list) = j.borrow_mut().as_mut() {
                list.push((path.to_path_buf(), old.trim_end().to_string()));
            }
        });
    }
    Ok(())
}

/// checkBeforeUpdate: refuse a memory limit below the current usage.
pub(crate) fn check_usage(usage_file: &Path, limit: i64) -> Result<()> {
    let cur: u64 = read_file(usage_file)?.trim().parse().unwrap_or(0);
    if (limit as u64) < cur {
        return Err(Error::Invalid(format!(
            "linux.resources.memory.limit: {limit} is below the current usage {cur} ({}; checkBeforeUpdate)",
            usage_file.display()
        )));
    }
    Ok(())
}

pub(crate) fn read_file(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(format!("read {}", path.display()), e))
}

/// One directory of the container's cgroup, in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dir {
    pub v2: bool,
    /// v1: the controllers of the hierarchy; v2: those enabled for it.
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

impl Dir {
    pub fn has(&self, c: &str) -> bool {
        self.controllers.iter().any(|x| x == c)
    }
}

/// What is persisted in the container's state to find the cgroup again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub layout: Layout,
    /// The cgroup path as resolved (from the hierarchy roots).
    pub path: String,
    pub dirs: Vec<Dir>,
    /// Directories this runtime created, parents first.
    pub created: Vec<PathBuf>,
}

/// A container's cgroup across all hierarchies.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub layout: Layout,
    pub path: String,
    pub dirs: Vec<Dir>,
    created: Vec<PathBuf>,
    /// The hierarchies an unprivileged runtime may not write (see
    /// [`Cgroup::leave_out_unwritable`]), each as the directory the container stays in
    /// there: the runtime's own cgroup. Never written, created or removed.
    pub outside: Vec<Dir>,
}

/// The default cgroup path for a container, as runc's cgroupfs driver: the
/// container ID relative to the runtime's own cgroup.
pub fn default_path(id: &str) -> String {
    id.to_string()
}

/// Check a cgroupsPath value before anything is created.
pub fn validate_path(p: &str) -> Result<()> {
    if p.split('/').any(|c| c == ".." || c == ".") {
        return Err(Error::Invalid(format!(
            "linux.cgroupsPath: {p:?} must not contain '.' or '..' components"
        )));
    }
    if p.contains('\0') || p.contains('\n') {
        return Err(Error::Invalid(format!(
            "linux.cgroupsPath: {p:?} contains a control character"
        )));
    }
    Ok(())
}

impl Cgroup {
    /// Resolve the container's cgroup in every hierarchy (creating nothing).
    /// Absolute paths are taken from each hierarchy's root; relative ones from
    /// the runtime's own cgroup in that hierarchy (runc's cgroupfs rule).
    pub fn resolve(h: &Hierarchies, cgroups_path: Option<&str>, id: &str) -> Result<Cgroup> {
        let raw = cgroups_path
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| default_path(id));
        validate_path(&raw)?;
        let own = if raw.starts_with('/') {
            Vec::new()
        } else {
            layout::proc_cgroups(None)?
        };
        let mut dirs = Vec::new();
        let mut shown = None;
        for hier in &h.list {
            let base = if raw.starts_with('/') {
                String::new()
            } else {
                own.iter()
                    .find(|(k, _)| *k == hier.key())
                    .map(|(_, p)| p.trim_end_matches('/').to_string())
                    .unwrap_or_default()
            };
            let full = if raw.starts_with('/') {
                raw.trim_end_matches('/').to_string()
            } else {
                format!("{base}/{}", raw.trim_end_matches('/'))
            };
            if full == "/" || full.is_empty() {
                return Err(Error::Invalid(
                    "linux.cgroupsPath: the root cgroup cannot hold a container".into(),
                ));
            }
            if shown.is_none() || hier.v2 {
                shown = Some(full.clone());
            }
            dirs.push(Dir {
                v2: hier.v2,
                controllers: hier.controllers.clone(),
                path: hier.dir_of(&full),
            });
        }
        Ok(Cgroup {
            layout: h.layout,
            path: shown.unwrap_or(raw),
            dirs,
            created: Vec::new(),
            outside: Vec::new(),
        })
    }

    /// No cgroup at all: no directory, in no hierarchy (none is looked for; `layout` means
    /// nothing then). A container made with it stays in its creator's cgroup.
    pub fn none() -> Cgroup {
        Cgroup {
            layout: Layout::V1,
            path: String::new(),
            dirs: Vec::new(),
            created: Vec::new(),
            outside: Vec::new(),
        }
    }

    /// For an unprivileged runtime (a user, or root of a user namespace): leave out every
    /// hierarchy where it may not make the container's directory — cgroup v1, which is
    /// never delegated to users, and cgroup v2 outside a subtree delegated to it (a
    /// directory it owns, such as a systemd user slice with `Delegate=yes`). The container
    /// then stays in the runtime's own cgroup there, as with runc; a resource that needs
    /// such a hierarchy fails in [`Cgroup::apply`] with an error saying so. Decided with
    /// access(2) on the directory that would be written (the container's own if it exists,
    /// else its nearest existing ancestor), so nothing is created here.
    pub fn leave_out_unwritable(&mut self, h: &Hierarchies) -> Result<()> {
        let own = layout::proc_cgroups(None)?;
        let mut kept = Vec::new();
        for d in std::mem::take(&mut self.dirs) {
            if writable(&d.path) {
                kept.push(d);
                continue;
            }
            let hier = h
                .list
                .iter()
                .find(|x| x.v2 == d.v2 && (x.v2 || x.controllers == d.controllers));
            let own_dir = hier.and_then(|x| {
                own.iter()
                    .find(|(k, _)| *k == x.key())
                    .map(|(_, p)| x.dir_of(p))
            });
            self.outside.push(Dir {
                path: own_dir.unwrap_or_else(|| d.path.clone()),
                ..d
            });
        }
        self.dirs = kept;
        Ok(())
    }

    /// Create the directories (parents as needed). On error, whatever was
    /// created is removed again, leaves first.
    pub fn create(&mut self) -> Result<()> {
        self.plan_create();
        self.create_planned()
    }

    /// Record, without creating anything, the directories that
    /// [`Cgroup::create_planned`] will make: the missing ones, parents first.
    /// A caller persists [`Cgroup::saved`] after this, so that if it is
    /// killed half-way through the creation, its record names every
    /// directory that can exist (removal tolerates the missing ones).
    pub fn plan_create(&mut self) {
        self.created.clear();
        for d in &self.dirs {
            // Walk up to the first existing ancestor.
            let mut missing = Vec::new();
            let mut p = d.path.as_path();
            while !p.exists() {
                missing.push(p.to_path_buf());
                p = match p.parent() {
                    Some(pp) => pp,
                    None => break,
                };
            }
            self.created.extend(missing.into_iter().rev());
        }
    }

    /// Create the directories recorded by [`Cgroup::plan_create`]; afterwards
    /// the record holds only those this call made (one that appeared in the
    /// meantime belongs to someone else). On error, those are removed again.
    pub fn create_planned(&mut self) -> Result<()> {
        let planned = std::mem::take(&mut self.created);
        let res = self.make_dirs(&planned);
        if res.is_err() {
            self.remove_created();
        }
        res
    }

    fn make_dirs(&mut self, planned: &[PathBuf]) -> Result<()> {
        for m in planned {
            match fs::DirBuilder::new().mode(0o755).create(m) {
                Ok(()) => self.created.push(m.clone()),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(format!("create cgroup {}", m.display()), e)),
            }
            // A fresh v1 cpuset is empty, and a task cannot join an empty
            // cpuset: inherit the parent's cpus and mems.
            let in_cpuset = self
                .dirs
                .iter()
                .any(|d| !d.v2 && d.has("cpuset") && d.path.starts_with(m));
            if in_cpuset {
                v1::inherit_cpuset(m)?;
            }
        }
        Ok(())
    }

    pub fn from_saved(s: &Saved) -> Cgroup {
        Cgroup {
            layout: s.layout,
            path: s.path.clone(),
            dirs: s.dirs.clone(),
            created: s.created.clone(),
            outside: Vec::new(),
        }
    }

    pub fn saved(&self) -> Saved {
        Saved {
            layout: self.layout,
            path: self.path.clone(),
            dirs: self.dirs.clone(),
            created: self.created.clone(),
        }
    }

    pub fn v2_dir(&self) -> Option<&Dir> {
        self.dirs.iter().find(|d| d.v2)
    }

    /// The directory driving `controller` (v1 mount that binds it, else v2).
    pub fn dir_for(&self, controller: &str) -> Option<&Dir> {
        self.dirs
            .iter()
            .find(|d| !d.v2 && d.has(controller))
            .or_else(|| self.dirs.iter().find(|d| d.v2 && d.has(controller)))
    }

    /// The directory driving `controller`, or an error naming the config field.
    pub fn need(&self, controller: &str, field: &str) -> Result<&Dir> {
        if let Some(d) = self.dir_for(controller) {
            return Ok(d);
        }
        let left_out = self
            .outside
            .iter()
            .find(|d| !d.v2 && d.has(controller))
            .or_else(|| self.outside.iter().find(|d| d.v2 && d.has(controller)));
        Err(Error::Unsupported(match left_out {
            Some(d) => format!(
                "{field}: cannot be applied: the {controller} cgroup hierarchy is not writable by this unprivileged runtime (the container would stay in {}); an unprivileged user can only limit resources in a cgroup v2 subtree delegated to it (e.g. a systemd user slice with Delegate=yes), {}",
                d.path.display(),
                if d.v2 {
                    "and this one is not"
                } else {
                    "and this host binds the controller to cgroup v1, which is never delegated"
                }
            ),
            None => {
                format!("{field}: the {controller} cgroup controller is not available on this host")
            }
        }))
    }

    /// Apply OCI resources to the controllers that own them: a v1 hierarchy
    /// if one binds the controller, else cgroup v2. The values must have
    /// passed [`validate::resources`] (the runtime checks them before it
    /// creates anything; [`Cgroup::update`] checks them itself).
    pub fn apply(&self, res: &oci::Resources) -> Result<()> {
        if let Some(m) = res.memory.as_ref().filter(|m| **m != Default::default()) {
            let d = self.need("memory", "linux.resources.memory")?;
            if d.v2 {
                v2::memory(self, d, m)?
            } else {
                v1::memory(&d.path, m)?
            }
        }
        if let Some(c) = res.cpu.as_ref() {
            v1::check_cpu(c)?;
            let has_cpu = c.shares.is_some()
                || c.quota.is_some()
                || c.period.is_some()
                || c.burst.is_some()
                || c.realtime_period.is_some()
                || c.realtime_runtime.is_some()
                || c.idle.is_some();
            if has_cpu {
                let d = self.need("cpu", "linux.resources.cpu")?;
                if d.v2 {
                    v2::cpu(self, d, c)?
                } else {
                    v1::cpu(&d.path, c)?
                }
            }
            if c.cpus.is_some() || c.mems.is_some() {
                let d = self.need("cpuset", "linux.resources.cpu.cpus")?;
                if d.v2 {
                    v2::enable(self, d, "cpuset")?;
                }
                v1::cpuset(&d.path, c)?;
            }
        }
        if let Some(limit) = res.pids.as_ref().and_then(|p| p.limit) {
            let d = self.need("pids", "linux.resources.pids")?;
            if d.v2 {
                v2::enable(self, d, "pids")?;
            }
            // Spec v1.3: -1 is "max", 0 a real 0 (checked: nothing below -1).
            let v = if limit == -1 {
                "max".to_string()
            } else {
                limit.to_string()
            };
            write_file(&d.path.join("pids.max"), &v)?;
        }
        if let Some(b) = res.block_io.as_ref().filter(|b| **b != Default::default()) {
            match self.dir_for("blkio") {
                Some(d) if !d.v2 => v1::blkio(&d.path, b)?,
                _ => {
                    let d = self.need("io", "linux.resources.blockIO")?;
                    v2::io(self, d, b)?
                }
            }
        }
        for (i, h) in res.hugepage_limits.iter().enumerate() {
            let d = self.need("hugetlb", &format!("linux.resources.hugepageLimits[{i}]"))?;
            // Before enabling anything: a size the host lacks changes nothing.
            check_page_size(&h.page_size, i)?;
            if d.v2 {
                v2::enable(self, d, "hugetlb")?;
            }
            hugetlb(d, h, i)?;
        }
        if let Some(n) = res.network.as_ref().filter(|n| **n != Default::default()) {
            v1::network(self, n)?;
        }
        if !res.rdma.is_empty() {
            let d = self.need("rdma", "linux.resources.rdma")?;
            if d.v2 {
                v2::enable(self, d, "rdma")?;
            }
            for (dev, r) in &res.rdma {
                let mut v = dev.clone();
                if let Some(h) = r.hca_handles {
                    v.push_str(&format!(" hca_handle={h}"));
                }
                if let Some(o) = r.hca_objects {
                    v.push_str(&format!(" hca_object={o}"));
                }
                write_file(&d.path.join("rdma.max"), &v)?;
            }
        }
        if !res.unified.is_empty() {
            v2::unified(self, &res.unified)?;
        }
        devices::apply(self, &res.devices)
    }

    /// `update`: apply `res` to a live cgroup. If a write fails part-way, the
    /// files already changed are set back to their previous values, so a
    /// failed update leaves the limits as they were. (Plain value files only:
    /// keyed ones such as devices.allow or io.max cannot be written back.)
    pub fn update(&self, res: &oci::Resources) -> Result<()> {
        validate::resources(res)?;
        JOURNAL.with(|j| *j.borrow_mut() = Some(Vec::new()));
        let res = self.apply(res);
        let journal = JOURNAL.with(|j| j.borrow_mut().take()).unwrap_or_default();
        let Err(e) = res else { return Ok(()) };
        if journal.is_empty() {
            return Err(e);
        }
        let mut failed = Vec::new();
        for (path, old) in journal.iter().rev() {
            if let Err(err) = fs::write(path, old) {
                failed.push(format!("{} <- {old:?}: {err}", path.display()));
            }
        }
        if failed.is_empty() {
            Err(Error::RolledBack { inner: Box::new(e) })
        } else {
            Err(Error::RollbackFailed {
                inner: Box::new(e),
                restore: failed.join("; "),
            })
        }
    }

    /// The directory whose cgroup.procs lists the container's processes.
    fn procs_dir(&self) -> Option<&Dir> {
        self.dir_for("pids")
            .or_else(|| self.dirs.iter().find(|d| !d.v2))
            .or_else(|| self.dirs.first())
    }

    /// Pids of every process in the cgroup and in the cgroups below it
    /// (a container may make sub-cgroups), sorted.
    pub fn all_procs(&self) -> Result<Vec<i32>> {
        let d = self.procs_dir().ok_or(Error::NoCgroups)?;
        let mut out = Vec::new();
        let mut stack = vec![d.path.clone()];
        while let Some(dir) = stack.pop() {
            match fs::read_to_string(dir.join("cgroup.procs")) {
                Ok(t) => out.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("read {}/cgroup.procs", dir.display()), e)),
            }
            if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The `tasks` files of the v1 directories, opened (close-on-exec) for a single-threaded
    /// child of the caller to move itself in with [`SelfJoin::join`]; v2 is not among them
    /// (clone3 places a child there). Why: a `cgroup.procs` write takes the kernel's
    /// threadgroup lock, whose first writer after a quiet moment waits for an RCU grace
    /// period (5-12 ms measured here), while a thread that moves itself through `tasks`
    /// (writing "0") skips that lock (kernel 6.0+; 20 µs here). A single-threaded process
    /// moving its one thread moves the process.
    pub fn self_join(&self) -> Result<SelfJoin> {
        let mut files = Vec::new();
        for d in self.dirs.iter().filter(|d| !d.v2) {
            let path = d.path.join("tasks");
            let fd = rustix::fs::open(
                &path,
                rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::io(format!("open {}", path.display()), e.into()))?;
            files.push((fd, path));
        }
        Ok(SelfJoin { files })
    }

    /// Move `pid` into every hierarchy; `skip_v2` when clone3 already placed it.
    pub fn add(&self, pid: i32, skip_v2: bool) -> Result<()> {
        for d in &self.dirs {
            if d.v2 && skip_v2 {
                continue;
            }
            write_file(&d.path.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Pids of every process in the cgroup.
    pub fn procs(&self) -> Result<Vec<i32>> {
        let d = self.procs_dir().ok_or(Error::NoCgroups)?;
        let text = match fs::read_to_string(d.path.join("cgroup.procs")) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::io(
                    format!("read {}/cgroup.procs", d.path.display()),
                    e,
                ))
            }
        };
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    fn freezer(&self) -> Option<(&Dir, bool)> {
        if let Some(d) = self.dirs.iter().find(|d| !d.v2 && d.has("freezer")) {
            return Some((d, false));
        }
        self.v2_dir()
            .filter(|d| d.path.join("cgroup.freeze").exists())
            .map(|d| (d, true))
    }

    /// Freeze every process (v1 freezer.state or v2 cgroup.freeze) and wait
    /// until the kernel reports the cgroup frozen.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, on: bool) -> Result<()> {
        let (d, v2) = self.freezer().ok_or_else(|| {
            Error::Unsupported(
                "no freezer: neither a v1 freezer hierarchy nor cgroup.freeze".into(),
            )
        })?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if v2 {
                write_file(&d.path.join("cgroup.freeze"), if on { "1" } else { "0" })?;
            } else {
                write_file(
                    &d.path.join("freezer.state"),
                    if on { "FROZEN" } else { "THAWED" },
                )?;
            }
            if self.frozen_state(d, v2)? == on {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Unsupported(format!(
                    "cgroup {} did not become {} within 5s",
                    d.path.display(),
                    if on { "frozen" } else { "thawed" }
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn frozen_state(&self, d: &Dir, v2: bool) -> Result<bool> {
        if v2 {
            let ev = read_file(&d.path.join("cgroup.events"))?;
            Ok(ev.lines().any(|l| l.trim() == "frozen 1"))
        } else {
            Ok(read_file(&d.path.join("freezer.state"))?.trim() == "FROZEN")
        }
    }

    pub fn is_frozen(&self) -> bool {
        match self.freezer() {
            Some((d, v2)) => self.frozen_state(d, v2).unwrap_or(false),
            None => false,
        }
    }

    /// Send `signal` to every process in the cgroup. SIGKILL on v2 uses
    /// cgroup.kill (atomic, no race with forks); otherwise the cgroup is frozen
    /// while the signals go out so no process can fork past the snapshot.
    pub fn kill_all(&self, signal: i32) -> Result<()> {
        if signal == libc::SIGKILL && self.layout == Layout::V2 {
            if let Some(d) = self.v2_dir() {
                let f = d.path.join("cgroup.kill");
                if f.exists() {
                    return write_file(&f, "1");
                }
            }
        }
        // Freeze while signalling so nothing forks past the snapshot; a
        // container that was already paused stays paused, except that
        // SIGKILL must be able to act (frozen tasks cannot die).
        let was_frozen = self.is_frozen();
        let frozen = self.freezer().is_some() && self.freeze().is_ok();
        let mut res = Ok(());
        for pid in self.procs()? {
            // SAFETY: plain kill(2); the pid came from this cgroup while frozen.
            if unsafe { libc::kill(pid, signal) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    res = Err(Error::io(format!("kill {pid}"), e));
                }
            }
        }
        if frozen && (!was_frozen || signal == libc::SIGKILL) {
            self.thaw()?;
        }
        res
    }

    /// Remove the container's directories (waiting briefly for exiting
    /// processes to leave) and the parents this runtime created, if empty.
    pub fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for d in &self.dirs {
            if let Err(e) = rmdir_retry(&d.path) {
                first_err.get_or_insert(e);
            }
        }
        self.remove_created();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn remove_created(&self) {
        for p in self.created.iter().rev() {
            if self.dirs.iter().any(|d| &d.path == p) {
                continue; // the leaves were removed (or reported) by destroy
            }
            // Parents may be shared with other containers by now: only empty ones go.
            let _ = fs::remove_dir(p);
        }
    }
}

/// What [`Cgroup::self_join`] opened.
#[derive(Debug)]
pub struct SelfJoin {
    files: Vec<(std::os::fd::OwnedFd, PathBuf)>,
}

impl SelfJoin {
    /// Nothing to join (no v1 hierarchy).
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Move the calling thread -- the whole process if it has only one -- into every v1
    /// directory. Called by the child that inherited the descriptors; the kernel checks the
    /// permission against the credentials they were opened with.
    pub fn join(&self) -> Result<()> {
        for (fd, path) in &self.files {
            rustix::io::write(fd, b"0").map_err(|err| Error::Write {
                file: path.clone(),
                value: "0".into(),
                err: err.into(),
            })?;
        }
        Ok(())
    }
}

/// Can the memory cgroup limit swap on this host? Only where swap is on and accounted: a
/// v1 memory hierarchy with `memory.memsw.*`, or cgroup v2 holding the memory controller.
/// (Writing a swap limit where it is not accounted is an error.)
pub fn swap_accounted() -> bool {
    let swaps = fs::read_to_string("/proc/swaps").unwrap_or_default();
    if swaps.lines().count() <= 1 {
        return false;
    }
    let Ok(h) = Hierarchies::detect() else {
        return false;
    };
    match h.list.iter().find(|x| !x.v2 && x.has("memory")) {
        Some(m) => m.mount_point.join("memory.memsw.limit_in_bytes").exists(),
        None => h.list.iter().any(|x| x.v2 && x.has("memory")),
    }
}

/// The huge page sizes of this host, in the kernel's file-name form ("2MB", "1GB").
pub fn host_page_sizes() -> Vec<String> {
    let mut v: Vec<(u64, String)> = fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let kb: u64 = n
                        .strip_prefix("hugepages-")?
                        .strip_suffix("kB")?
                        .parse()
                        .ok()?;
                    Some((kb, page_size_name(kb)))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.into_iter().map(|(_, n)| n).collect()
}

/// 2048 (kB) -> "2MB", as the hugetlb controller names its files.
fn page_size_name(kb: u64) -> String {
    if kb >= 1 << 20 && kb & ((1 << 20) - 1) == 0 {
        format!("{}GB", kb >> 20)
    } else if kb >= 1 << 10 && kb & ((1 << 10) - 1) == 0 {
        format!("{}MB", kb >> 10)
    } else {
        format!("{kb}KB")
    }
}

fn check_page_size(size: &str, i: usize) -> Result<()> {
    let sizes = host_page_sizes();
    if sizes.iter().any(|s| s == size) {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "linux.resources.hugepageLimits[{i}].pageSize: huge page size {size:?} is not supported by this host (it has: {})",
        if sizes.is_empty() { "none".to_string() } else { sizes.join(", ") }
    )))
}

/// hugetlb limits: the reservation limit too where the kernel has it (spec:
/// "default to reservation limits if supported").
fn hugetlb(d: &Dir, h: &oci::HugepageLimit, i: usize) -> Result<()> {
    let size = &h.page_size;
    let (limit, rsvd) = if d.v2 {
        (
            format!("hugetlb.{size}.max"),
            format!("hugetlb.{size}.rsvd.max"),
        )
    } else {
        (
            format!("hugetlb.{size}.limit_in_bytes"),
            format!("hugetlb.{size}.rsvd.limit_in_bytes"),
        )
    };
    if !d.path.join(&limit).exists() {
        return Err(Error::Unsupported(format!(
            "linux.resources.hugepageLimits[{i}].pageSize: huge page size {size:?} is not supported by this host"
        )));
    }
    let v = h.limit.to_string();
    write_file(&d.path.join(&limit), &v)?;
    let r = d.path.join(&rsvd);
    if r.exists() {
        write_file(&r, &v)?;
    }
    Ok(())
}

/// May this process write the cgroup directory `p` (its cgroup.procs if it exists, else
/// its nearest existing ancestor, where it would be made)?
fn writable(p: &Path) -> bool {
    use rustix::fs::{access, Access};
    if p.exists() {
        return access(p.join("cgroup.procs"), Access::WRITE_OK).is_ok();
    }
    match p.ancestors().skip(1).find(|a| a.exists()) {
        Some(a) => access(a, Access::WRITE_OK | Access::EXEC_OK).is_ok(),
        None => false,
    }
}

/// Remove cgroup directory `p` and the cgroups nested in it, deepest first (as runc does:
/// a container's processes may have made sub-cgroups, and a VM-backed container's
/// hypervisor runs in one whose owner may have been killed before removing it). A cgroup
/// whose processes are still exiting is busy for a moment: retried.
fn rmdir_retry(p: &Path) -> Result<()> {
    let mut nested = Vec::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = fs::read_dir(&d) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    nested.push(e.path());
                    stack.push(e.path());
                }
            }
        }
    }
    nested.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in &nested {
        rmdir_one(d)?;
    }
    rmdir_one(p)
}

fn rmdir_one(p: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match fs::remove_dir(p) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(Error::io(format!("remove cgroup {}", p.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hybrid() -> Hierarchies {
        Hierarchies::from_mountinfo(
            "31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n\
             32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
             34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n",
            |_| Some("hugetlb".into()),
        )
        .unwrap()
    }

    #[test]
    fn absolute_paths_start_at_each_root() {
        let cg = Cgroup::resolve(&hybrid(), Some("/bh/c1"), "c1").unwrap();
        let paths: Vec<_> = cg.dirs.iter().map(|d| d.path.clone()).collect();
        assert_eq!(
            paths,
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu/bh/c1"),
                PathBuf::from("/sys/fs/cgroup/memory/bh/c1"),
                PathBuf::from("/sys/fs/cgroup/unified/bh/c1"),
            ]
        );
        assert_eq!(cg.dir_for("memory").unwrap().path, paths[1]);
        assert_eq!(cg.dir_for("hugetlb").unwrap().path, paths[2]);
        assert!(cg.dir_for("io").is_none());
    }

    #[test]
    fn page_size_names() {
        assert_eq!(page_size_name(2048), "2MB");
        assert_eq!(page_size_name(1 << 20), "1GB");
        assert_eq!(page_size_name(64), "64KB");
        assert!(host_page_sizes().iter().all(|s| s.ends_with('B')));
        assert!(check_page_size("3MB", 0)
            .unwrap_err()
            .to_string()
            .contains("hugepageLimits[0].pageSize"));
    }

    #[test]
    fn restorable_files() {
        assert!(restorable(Path::new("/x/memory.limit_in_bytes")));
        assert!(restorable(Path::new("/x/hugetlb.2MB.limit_in_bytes")));
        assert!(!restorable(Path::new("/x/devices.allow")));
        assert!(!restorable(Path::new("/x/io.max")));
    }

    #[test]
    fn planned_directories_are_recorded_before_they_exist() {
        let tmp = std::env::temp_dir().join(format!("bh-cg-plan-{}", std::process::id()));
        fs::create_dir_all(tmp.join("v1")).unwrap();
        let dir = |p: &str, v2: bool| Dir {
            v2,
            controllers: vec!["pids".into()],
            path: tmp.join(p),
        };
        let mut cg = Cgroup {
            layout: Layout::Hybrid,
            path: "/a/c".into(),
            dirs: vec![dir("v1/a/c", false), dir("v2/a/c", true)],
            created: Vec::new(),
            outside: Vec::new(),
        };
        cg.plan_create();
        let planned = cg.saved().created;
        assert_eq!(
            planned,
            ["v1/a", "v1/a/c", "v2", "v2/a", "v2/a/c"].map(|p| tmp.join(p))
        );
        assert!(
            planned.iter().all(|p| !p.exists()),
            "planning creates nothing"
        );
        // Someone else makes one of them meanwhile: it is not ours.
        fs::create_dir(tmp.join("v2")).unwrap();
        cg.create_planned().unwrap();
        assert!(planned.iter().all(|p| p.exists()));
        assert!(!cg.saved().created.contains(&tmp.join("v2")));
        // A record of the plan (a killed create) removes whatever exists.
        let mut record = cg.saved();
        record.created = planned;
        fs::remove_dir(tmp.join("v1/a/c")).unwrap();
        Cgroup::from_saved(&record).destroy().unwrap();
        assert!(!tmp.join("v1/a").exists() && !tmp.join("v2/a").exists());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn bad_paths() {
        for p in ["/a/../b", "a/./b", "..", "/"] {
            assert!(Cgroup::resolve(&hybrid(), Some(p), "x").is_err(), "{p}");
        }
    }

    #[test]
    fn destroy_removes_nested_cgroups() {
        let h = Hierarchies::detect().unwrap();
        let name = format!("bh-nested-{}", std::process::id());
        let mut cg = Cgroup::resolve(&h, Some(&format!("/{name}")), &name).unwrap();
        cg.create().unwrap();
        for d in &cg.dirs {
            fs::create_dir_all(d.path.join("a/b")).unwrap();
            fs::create_dir_all(d.path.join("c")).unwrap();
        }
        cg.destroy().unwrap();
        for d in &cg.dirs {
            assert!(!d.path.exists(), "{} left", d.path.display());
        }
    }
}
