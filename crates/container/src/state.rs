//! The state directory: one directory per container under the runtime root
//! (`/run/bulkhead/<id>`), holding `state.json` and the start socket.
//!
//! Concurrency: every command that reads or changes a container holds a
//! `flock` on the container's directory for its whole duration (exclusive for
//! changes, shared for reads), so two commands on one ID serialise instead of
//! corrupting each other. `mkdir` of the directory is the atomic "ID is taken"
//! test. `state.json` is replaced by rename, so readers never see half a file;
//! that lets `state` and `list` read without waiting for a lock (they must not
//! hang behind a long `create`).
//!
//! Crash consistency: `create` writes `state.json` with status `creating`
//! right after claiming the ID, naming everything it is about to make (the
//! cgroup directories in every hierarchy, the pid file), then records the
//! init's pid as soon as it exists (unless the init is born in the
//! container's v2 cgroup, where `delete` finds it), and writes the final `created` state
//! before it releases the init. A create that was killed therefore leaves a
//! `creating` record whose status reads `stopped` once no process holds the
//! directory's lock (the creating runtime held it exclusively), and `delete`
//! removes all of it. Only a directory killed between its `mkdir` and the
//! first write has no state file: nothing else exists then, and it is listed
//! (and deleted) all the same.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustix::fs::{flock, FlockOperation, RenameFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

pub const STATE_FILE: &str = "state.json";
/// Where [`StateDir::save`] writes the next state before it swaps it in.
const STATE_TMP: &str = ".state.json.tmp";

/// The state root of a runtime on the host, and of `--root`'s default for root.
pub const SYSTEM_ROOT: &str = "/run/bulkhead";

/// The state root when `--root` is not given.
///
/// Root on the host: [`SYSTEM_ROOT`]. Otherwise `$XDG_RUNTIME_DIR/bulkhead`, when runc
/// would honour XDG_RUNTIME_DIR: set, and the caller not root, or root of a user namespace
/// whose USER is not `root` (rootless podman calls its runtime so, with the user's
/// XDG_RUNTIME_DIR). Without XDG_RUNTIME_DIR runc and crun fall back to `/run/runc`
/// (`/run/crun`), which a user cannot write; an unprivileged bulkhead falls back as rootless
/// podman does instead: `/run/user/UID/bulkhead` when `/run/user/UID` is the user's own
/// directory (logind's XDG_RUNTIME_DIR, when a `su` or `sudo` session dropped the
/// variable), else `/tmp/bulkhead-UID`, made with mode 0700 and refused unless it is a real
/// directory that belongs to the user and that nobody else may write (in a shared /tmp,
/// someone else could have made it first).
pub fn default_root() -> Result<PathBuf> {
    let euid = rustix::process::geteuid();
    let xdg = std::env::var_os("XDG_RUNTIME_DIR");
    let user = std::env::var("USER").ok();
    match choose_root(
        euid.is_root(),
        crate::userns::in_initial(),
        xdg.as_deref().map(Path::new),
        user.as_deref(),
    ) {
        Some(root) => Ok(root),
        None => user_fallback(euid.as_raw()),
    }
}

/// [`default_root`]'s choice from the caller's facts; None: a user without
/// XDG_RUNTIME_DIR (the fallbacks).
fn choose_root(
    euid_root: bool,
    initial_userns: bool,
    xdg: Option<&Path>,
    user: Option<&str>,
) -> Option<PathBuf> {
    let xdg = xdg.filter(|x| !x.as_os_str().is_empty());
    // runc's rule (shouldHonorXDGRuntimeDir): not for root on the host, nor for a
    // root of a user namespace that says it is root.
    let honour = !euid_root || (!initial_userns && user != Some("root"));
    match xdg {
        Some(dir) if honour => Some(dir.join("bulkhead")),
        Some(_) => Some(PathBuf::from(SYSTEM_ROOT)),
        None if euid_root => Some(PathBuf::from(SYSTEM_ROOT)),
        None => None,
    }
}

/// A user's state root without XDG_RUNTIME_DIR (see [`default_root`]).
fn user_fallback(uid: u32) -> Result<PathBuf> {
    let run_user = PathBuf::from(format!("/run/user/{uid}"));
    if fs::symlink_metadata(&run_user).is_ok_and(|m| m.is_dir() && owned_private(&m, uid)) {
        return Ok(run_user.join("bulkhead"));
    }
    let tmp = PathBuf::from(format!("/tmp/bulkhead-{uid}"));
    match fs::DirBuilder::new().mode(0o700).create(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).ctx(|| format!("create the state root {}", tmp.display())),
    }
    let m = fs::symlink_metadata(&tmp).ctx(|| format!("state root {}", tmp.display()))?;
    if !m.is_dir() || !owned_private(&m, uid) {
        return Err(Error::Msg(format!(
            "state root {}: not a directory of yours that only you may write (someone else may have made it); set XDG_RUNTIME_DIR or pass --root",
            tmp.display()
        )));
    }
    Ok(tmp)
}

/// Owned by `uid`, and writable by nobody else.
fn owned_private(m: &fs::Metadata, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    m.uid() == uid && m.mode() & 0o022 == 0
}
pub const START_SOCKET: &str = "start.sock";

/// What the runtime remembers about a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Saved {
    pub id: String,
    /// Last status written by a command (`creating`, `created`, or `running` for a VM
    /// container); the live status is derived from this, the start socket (see
    /// [`StateDir::load`]) and the init process (see [`Saved::status`]).
    pub status: oci::Status,
    pub pid: i32,
    /// Start time of `pid` (field 22 of /proc/PID/stat), to detect pid reuse.
    pub pid_start: u64,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub cgroup: Option<cgroups::Saved>,
    #[serde(default)]
    pub hooks: Option<oci::Hooks>,
    /// The container has its own pid namespace: killing init kills everything.
    #[serde(default)]
    pub private_pid_ns: bool,
    /// The engine's NOTIFY_SOCKET (sd_notify), relayed by `start`.
    #[serde(default)]
    pub notify_socket: Option<String>,
    /// `--pid-file` of create: its temporary sibling is ours to remove.
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// The init waits on the start socket: the container is `created` while the socket
    /// exists, and `running` once `start` has removed it (see [`StateDir::load`]).
    #[serde(default)]
    pub start_socket: bool,
}

/// The `state` command's output: the OCI state plus runc's extra fields,
/// which engines (podman, containerd) read.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: oci::Status,
    pub bundle: String,
    pub rootfs: String,
    pub created: String,
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An open, locked container directory.
pub struct StateDir {
    pub dir: PathBuf,
    pub id: String,
    _lock: OwnedFd,
}

fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    Ok(fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)?
        .into())
}

fn lock_dir(dir: &Path, exclusive: bool) -> io::Result<OwnedFd> {
    let fd = open_dir(dir)?;
    let op = if exclusive {
        FlockOperation::LockExclusive
    } else {
        FlockOperation::LockShared
    };
    flock(&fd, op)?;
    Ok(fd)
}

impl StateDir {
    /// Claim `id`: fails with [`Error::Exists`] if the directory already exists.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        oci::validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .ctx(|| format!("create state root {}", root.display()))?;
        let dir = root.join(id);
        match fs::DirBuilder::new().mode(0o711).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::Exists(id.to_string()))
            }
            Err(e) => return Err(e).ctx(|| format!("create {}", dir.display())),
        }
        let lock = lock_dir(&dir, true).ctx(|| format!("lock {}", dir.display()))?;
        Ok(StateDir {
            dir,
            id: id.to_string(),
            _lock: lock,
        })
    }

    /// Open and lock an existing container directory.
    pub fn open(root: &Path, id: &str, exclusive: bool) -> Result<StateDir> {
        oci::validate_id(id)?;
        let dir = root.join(id);
        let lock = match lock_dir(&dir, exclusive) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(e).ctx(|| format!("lock {}", dir.display())),
        };
        Ok(StateDir {
            dir,
            id: id.to_string(),
            _lock: lock,
        })
    }

    /// Open a container directory for a report, without waiting: the
    /// second value is true when another command holds it exclusively (a
    /// `create` in progress, or a change), in which case the directory is
    /// read without the lock.
    pub fn peek(root: &Path, id: &str) -> Result<(StateDir, bool)> {
        oci::validate_id(id)?;
        let dir = root.join(id);
        let fd = match open_dir(&dir) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(id.to_string()))
            }
            Err(e) => return Err(e).ctx(|| format!("open {}", dir.display())),
        };
        let busy = match flock(&fd, FlockOperation::NonBlockingLockShared) {
            Ok(()) => false,
            Err(rustix::io::Errno::WOULDBLOCK) => true,
            Err(e) => return Err(e).ctx(|| format!("lock {}", dir.display())),
        };
        let sd = StateDir {
            dir,
            id: id.to_string(),
            _lock: fd,
        };
        Ok((sd, busy))
    }

    /// What `state` and `list` print for this directory; `busy` as returned
    /// by [`StateDir::peek`].
    pub fn report(&self, busy: bool) -> Result<Report> {
        match self.load() {
            Ok(s) => Ok(s.report(busy)),
            // No state file: a create between its mkdir and its first write
            // (busy), or one killed there.
            Err(Error::NotFound(_)) if self.dir.is_dir() => Ok(Report {
                oci_version: oci::OCI_VERSION.to_string(),
                id: self.id.clone(),
                pid: 0,
                status: if busy {
                    oci::Status::Creating
                } else {
                    oci::Status::Stopped
                },
                bundle: String::new(),
                rootfs: String::new(),
                created: String::new(),
                owner: String::new(),
                annotations: BTreeMap::new(),
            }),
            Err(e) => Err(e),
        }
    }

    pub fn load(&self) -> Result<Saved> {
        let path = self.dir.join(STATE_FILE);
        let text = match fs::read(&path) {
            Ok(t) => t,
            // The directory exists but holds no state: a create that died
            // before finishing. Only `delete` can do something with it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::NotFound(self.id.clone()))
            }
            Err(e) => return Err(e).ctx(|| format!("read {}", path.display())),
        };
        let mut saved: Saved = serde_json::from_slice(&text)
            .map_err(|e| Error::Msg(format!("{}: corrupt state: {e}", path.display())))?;
        // `start` removes the socket once the init has answered (by executing the program,
        // or with why it could not) and does not rewrite the state: the socket's absence is
        // what says `running`, as runc's exec fifo does (an init that failed is soon dead,
        // and reads `stopped`). A save would cost each start a file write and its rename.
        if saved.status == oci::Status::Created && saved.start_socket {
            match fs::symlink_metadata(self.start_socket()) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    saved.status = oci::Status::Running
                }
                _ => {}
            }
        }
        Ok(saved)
    }

    /// Replace `state.json` atomically: readers see the old or the new file, never half.
    ///
    /// A replacement swaps the new file in with `RENAME_EXCHANGE` and unlinks the old one
    /// from the temporary name, rather than renaming over it. The result is the same, but
    /// ext4 (its default `auto_da_alloc`) treats a rename over an existing file as a request
    /// to allocate and write the new file's blocks at once: an I/O per save, and blocks the
    /// next save or `delete` then frees again (with a synchronous discard on a `discard`
    /// mount without a journal). That buys durability across a power loss, which a state
    /// directory does not need: the containers it describes do not survive one either.
    /// Atomicity against a killed command is the rename's, not the flush's.
    pub fn save(&self, s: &Saved) -> Result<()> {
        let tmp = self.dir.join(STATE_TMP);
        let path = self.dir.join(STATE_FILE);
        let text = serde_json::to_vec(s).expect("state serialises");
        let write = || -> io::Result<()> {
            let mut f = fs::File::options()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&text)?;
            drop(f);
            let cwd = rustix::fs::CWD;
            match rustix::fs::renameat_with(cwd, &tmp, cwd, &path, RenameFlags::EXCHANGE) {
                // The old state is now under the temporary name; a command killed before
                // this unlink leaves it there, and the next save truncates it.
                Ok(()) => fs::remove_file(&tmp),
                // No state yet (the first save), or a file system without exchange.
                Err(rustix::io::Errno::NOENT | rustix::io::Errno::INVAL) => fs::rename(&tmp, &path),
                Err(e) => Err(e.into()),
            }
        };
        write().ctx(|| format!("write {}", path.display()))
    }

    /// The lock's descriptor number: the container init, a clone of the
    /// runtime, closes its copy first thing (a copy would keep the lock held).
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self._lock)
    }

    /// A path to `name` in this directory through /proc/self/fd and the
    /// lock's descriptor: short whatever --root is (sun_path holds 108 bytes),
    /// and valid while this StateDir lives.
    pub fn fd_path(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}/{name}", self.lock_fd()))
    }

    pub fn start_socket(&self) -> PathBuf {
        self.dir.join(START_SOCKET)
    }

    /// Remove the directory and everything in it (the lock goes with it).
    /// The state file goes last: until the directory is gone, readers that
    /// do not wait for the lock still see what is being deleted, and a
    /// delete killed half-way leaves a container that is listed as before.
    pub fn remove(self) -> Result<()> {
        let gone = |r: io::Result<()>| match r {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        let res = (|| -> io::Result<()> {
            for e in fs::read_dir(&self.dir)? {
                let e = e?;
                if e.file_name() == STATE_FILE {
                    continue;
                }
                gone(if e.file_type()?.is_dir() {
                    fs::remove_dir_all(e.path())
                } else {
                    fs::remove_file(e.path())
                })?;
            }
            gone(fs::remove_file(self.dir.join(STATE_FILE)))?;
            fs::remove_dir(&self.dir)
        })();
        gone(res).ctx(|| format!("remove {}", self.dir.display()))
    }
}

/// State of a process as /proc/PID/stat tells it: (state letter, start time).
pub fn proc_stat(pid: i32) -> Option<(char, u64)> {
    // /proc files report a size of 0, so `fs::read_to_string` would start with a 32-byte
    // buffer and read six times; every command that looks at a container reads this file.
    let mut text = String::with_capacity(1024);
    fs::File::open(format!("/proc/{pid}/stat"))
        .and_then(|mut f| f.read_to_string(&mut text))
        .ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip to the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl Saved {
    /// True while the init process recorded here still exists and has not exited.
    pub fn init_alive(&self) -> bool {
        match proc_stat(self.pid) {
            Some((state, start)) => start == self.pid_start && state != 'Z' && state != 'X',
            None => false,
        }
    }

    /// The live status: the saved one while init lives, `stopped` after.
    /// For a caller holding the directory's lock: a `creating` record is
    /// then one whose create was killed (the create holds the lock
    /// exclusively while it runs), and reads `stopped`.
    pub fn status(&self) -> oci::Status {
        if self.status == oci::Status::Creating || !self.init_alive() {
            return oci::Status::Stopped;
        }
        if self.status == oci::Status::Running {
            if let Some(cg) = &self.cgroup {
                if cgroups::Cgroup::from_saved(cg).is_frozen() {
                    return oci::Status::Paused;
                }
            }
        }
        self.status
    }

    pub fn oci_state(&self, status: oci::Status) -> oci::State {
        oci::State {
            oci_version: oci::OCI_VERSION.to_string(),
            id: self.id.clone(),
            status,
            pid: (status != oci::Status::Stopped).then_some(self.pid),
            bundle: self.bundle.clone(),
            annotations: self.annotations.clone(),
        }
    }

    /// True for the record of a create that did not finish (it is running,
    /// or was killed): `delete` must then look for everything it recorded.
    pub fn unfinished(&self) -> bool {
        self.status == oci::Status::Creating
    }

    /// The report of `state`/`list`; `busy`: another command holds the
    /// directory (for a `creating` record: its create is still running).
    pub fn report(&self, busy: bool) -> Report {
        let status = if self.unfinished() && busy {
            oci::Status::Creating
        } else {
            self.status()
        };
        Report {
            oci_version: oci::OCI_VERSION.to_string(),
            id: self.id.clone(),
            pid: if status == oci::Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.annotations.clone(),
        }
    }
}

/// All containers under `root`, including those whose create is running
/// (`creating`) or was killed (`stopped`), so that every directory can be
/// found and deleted.
pub fn list(root: &Path) -> Result<Vec<Report>> {
    let entries = match fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx(|| format!("read {}", root.display())),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        if oci::validate_id(id).is_err() || !entry.path().is_dir() {
            continue;
        }
        let Ok((sd, busy)) = StateDir::peek(root, id) else {
            continue;
        };
        if let Ok(mut r) = sd.report(busy) {
            // runc's OWNER column: who made the container (its directory's owner).
            use std::os::unix::fs::MetadataExt;
            if let Ok(m) = entry.metadata() {
                r.owner = user_name(m.uid());
            }
            out.push(r);
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// The name of `uid` in the host's /etc/passwd, or the number.
fn user_name(uid: u32) -> String {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

/// RFC 3339 UTC timestamp with nanoseconds, as runc writes `created`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_state_roots() {
        let xdg = Some(Path::new("/run/user/1000"));
        let sys = Some(PathBuf::from(SYSTEM_ROOT));
        // Root on the host ignores XDG_RUNTIME_DIR (runc's rule).
        assert_eq!(choose_root(true, true, xdg, Some("root")), sys);
        assert_eq!(choose_root(true, true, None, None), sys);
        // A user: its XDG_RUNTIME_DIR, else the fallbacks.
        let mine = Some(PathBuf::from("/run/user/1000/bulkhead"));
        assert_eq!(choose_root(false, true, xdg, Some("me")), mine);
        assert_eq!(choose_root(false, true, None, Some("me")), None);
        assert_eq!(choose_root(false, true, Some(Path::new("")), None), None);
        // Root of a user namespace (rootless podman): XDG unless USER says root.
        assert_eq!(choose_root(true, false, xdg, Some("me")), mine);
        assert_eq!(choose_root(true, false, xdg, None), mine);
        assert_eq!(choose_root(true, false, xdg, Some("root")), sys);
        assert_eq!(choose_root(true, false, None, Some("me")), sys);
    }

    #[test]
    fn a_fallback_root_someone_else_made_is_refused() {
        // A uid no one has: the directory this (root) test makes for it is
        // not that uid's, as one made by another user in /tmp would not be.
        let uid = 4_000_000_000 + std::process::id() % 100_000;
        let dir = PathBuf::from(format!("/tmp/bulkhead-{uid}"));
        let e = user_fallback(uid).unwrap_err().to_string();
        let _ = fs::remove_dir(&dir);
        assert!(e.contains("someone else may have made it"), "{e}");
    }
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(951_782_400, 5); // 2000-02-29
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.000000005Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_599); // 2026-12-31T23:59:59
        assert_eq!(rfc3339(t), "2026-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn proc_stat_of_self() {
        let (state, start) = proc_stat(std::process::id() as i32).unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(start > 0);
        assert!(proc_stat(i32::MAX).is_none());
    }

    fn creating(id: &str) -> Saved {
        Saved {
            id: id.into(),
            status: oci::Status::Creating,
            pid: std::process::id() as i32,
            pid_start: proc_stat(std::process::id() as i32).unwrap().1,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: rfc3339(SystemTime::now()),
            annotations: BTreeMap::new(),
            cgroup: None,
            hooks: None,
            private_pid_ns: true,
            notify_socket: None,
            pid_file: None,
            start_socket: false,
        }
    }

    #[test]
    fn a_creating_record_is_creating_only_while_its_create_holds_the_lock() {
        // Even with its init alive, a `creating` record read under the lock
        // is a killed create's: stopped.
        let s = creating("c1");
        assert!(s.init_alive());
        assert_eq!(s.status(), oci::Status::Stopped);
        assert_eq!(s.report(true).status, oci::Status::Creating);
        assert_eq!(s.report(true).pid, s.pid);
        assert_eq!(s.report(false).status, oci::Status::Stopped);
        assert_eq!(s.report(false).pid, 0);
    }

    #[test]
    fn peek_sees_a_create_in_progress_and_one_that_died() {
        let root = std::env::temp_dir().join(format!("bh-peek-{}", std::process::id()));
        // Between mkdir and the first write: no state file.
        let sd = StateDir::create(&root, "c1").unwrap();
        let (p, busy) = StateDir::peek(&root, "c1").unwrap();
        assert!(busy, "create holds the lock");
        assert_eq!(p.report(busy).unwrap().status, oci::Status::Creating);
        sd.save(&creating("c1")).unwrap();
        let (p, busy) = StateDir::peek(&root, "c1").unwrap();
        assert_eq!(p.report(busy).unwrap().status, oci::Status::Creating);
        assert_eq!(list(&root).unwrap()[0].status, oci::Status::Creating);
        // The create is gone (its lock with it).
        drop((sd, p));
        let (p, busy) = StateDir::peek(&root, "c1").unwrap();
        assert!(!busy);
        assert_eq!(p.report(busy).unwrap().status, oci::Status::Stopped);
        assert_eq!(list(&root).unwrap()[0].status, oci::Status::Stopped);
        fs::remove_file(root.join("c1").join(STATE_FILE)).unwrap();
        let (p, busy) = StateDir::peek(&root, "c1").unwrap();
        let r = p.report(busy).unwrap();
        assert_eq!((r.id.as_str(), r.status), ("c1", oci::Status::Stopped));
        assert!(matches!(
            StateDir::peek(&root, "c2"),
            Err(Error::NotFound(_))
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn create_claims_the_id_once() {
        let root = std::env::temp_dir().join(format!("bh-state-{}", std::process::id()));
        let sd = StateDir::create(&root, "c1").unwrap();
        assert!(matches!(
            StateDir::create(&root, "c1"),
            Err(Error::Exists(_))
        ));
        assert!(matches!(
            StateDir::create(&root, "../x"),
            Err(Error::Spec(_))
        ));
        assert!(matches!(sd.load(), Err(Error::NotFound(_))));
        sd.remove().unwrap();
        assert!(matches!(
            StateDir::open(&root, "c1", false),
            Err(Error::NotFound(_))
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_save_replaces_the_state_and_leaves_no_temporary_file() {
        let root = std::env::temp_dir().join(format!("bh-save-{}", std::process::id()));
        let sd = StateDir::create(&root, "c1").unwrap();
        let mut s = creating("c1");
        sd.save(&s).unwrap();
        s.status = oci::Status::Created;
        s.bundle = "/second".into();
        sd.save(&s).unwrap();
        let back = sd.load().unwrap();
        assert_eq!(
            (back.status, back.bundle.as_str()),
            (oci::Status::Created, "/second")
        );
        let names: Vec<_> = fs::read_dir(&sd.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATE_FILE], "only the state file is left");
        sd.remove().unwrap();
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_created_container_runs_once_its_start_socket_is_gone() {
        let root = std::env::temp_dir().join(format!("bh-started-{}", std::process::id()));
        let sd = StateDir::create(&root, "c1").unwrap();
        let mut s = creating("c1");
        s.status = oci::Status::Created;
        // A VM container has no socket: its saved status stands.
        sd.save(&s).unwrap();
        assert_eq!(sd.load().unwrap().status(), oci::Status::Created);
        s.start_socket = true;
        sd.save(&s).unwrap();
        fs::write(sd.start_socket(), "").unwrap();
        assert_eq!(sd.load().unwrap().status(), oci::Status::Created);
        fs::remove_file(sd.start_socket()).unwrap();
        assert_eq!(sd.load().unwrap().status(), oci::Status::Running);
        // Only `created` turns into `running`: a killed create stays stopped.
        s.status = oci::Status::Creating;
        sd.save(&s).unwrap();
        assert_eq!(sd.load().unwrap().status(), oci::Status::Stopped);
        sd.remove().unwrap();
        fs::remove_dir_all(&root).unwrap();
    }
}
