//! The container's root filesystem: mount propagation, the config's mounts,
//! devices, pivot_root(2) (or MS_MOVE + chroot for `--no-pivot`), then the
//! protections applied from inside: masked paths, read-only paths, read-only root.
//!
//! Everything here runs in the container's init, in its new mount namespace,
//! before it executes the user's program.

use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use libc::c_ulong;
use oci::{Mount, Spec};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::{msg, Context, Result};
use crate::mounts::{self, Options};
use crate::paths::{ensure_in_root, fd_path, open_in_root};
use crate::{devices, sys};

pub struct Rootfs<'a> {
    pub spec: &'a Spec,
    /// Absolute, canonical host path of the root filesystem.
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub cgroup: Option<&'a cgroups::Cgroup>,
    /// The parsed options of `spec.mounts`, in order (parsed by the runtime
    /// while validating, before anything was created).
    pub mount_opts: &'a [mounts::Options],
    pub in_userns: bool,
    pub new_cgroupns: bool,
}

fn propagation_flag(p: &str) -> c_ulong {
    match p {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | libc::MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | libc::MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | libc::MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | libc::MS_REC,
        _ => libc::MS_SLAVE | libc::MS_REC,
    }
}

/// Make `new_root` (a mount point) the root of this mount namespace with pivot_root(2) and
/// detach the old root, leaving the cwd at the new "/". Shared with the VMM jail, whose root
/// is an empty tmpfs.
pub fn pivot_root_to(new_root: &Path) -> Result<()> {
    rustix::process::chdir(new_root).ctx(|| format!("chdir {}", new_root.display()))?;
    // pivot_root(".", ".") stacks the old root on top of the new one at ".";
    // detaching "." afterwards removes it without a temp directory. Before
    // that the old root's tree becomes rslave, so the unmount cannot
    // propagate to the host's mounts. It is named by a descriptor opened
    // before the pivot: a path lookup of "." would reach the new root under
    // it, whose mounts (a bind with "rshared"...) must keep their propagation.
    let old_root = rustix::fs::open(
        "/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| "open the old root".into())?;
    rustix::process::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    sys::mount_setattr(old_root.as_fd(), true, 0, 0, libc::MS_SLAVE)
        .ctx(|| "make the old root a slave".into())?;
    drop(old_root);
    sys::umount_detach(Path::new(".")).ctx(|| "detach the old root".into())?;
    rustix::process::chdir("/").ctx(|| "chdir /".into())
}

impl Rootfs<'_> {
    fn propagation(&self) -> c_ulong {
        self.spec
            .linux
            .as_ref()
            .and_then(|l| l.rootfs_propagation.as_deref())
            .map(propagation_flag)
            .unwrap_or(libc::MS_SLAVE | libc::MS_REC)
    }

    /// Everything up to (not including) pivot_root. Returns an O_PATH fd of the root.
    pub fn prepare(&self) -> Result<OwnedFd> {
        // Our mount namespace is a copy of the host's: stop our mounts from
        // propagating back (default rslave, as runc). An unbindable "/" would
        // also refuse the bind of the rootfs below it (EINVAL), so unbindable
        // is applied to the new root (switch_root) and "/" is rslave meanwhile.
        let prop = self.propagation();
        let first = if prop & libc::MS_UNBINDABLE != 0 {
            libc::MS_SLAVE | libc::MS_REC
        } else {
            prop
        };
        sys::mount(None, Path::new("/"), None, first, None)
            .ctx(|| "set the propagation of / (linux.rootfsPropagation)".into())?;
        if first & libc::MS_SHARED != 0 {
            // pivot_root refuses a new root whose parent mount is shared.
            self.set_parent_mount_propagation(libc::MS_PRIVATE)?;
        } else if first & libc::MS_REC == 0 {
            // Only "/" itself changed: the mount holding the rootfs may still
            // be shared with the host, and so would be our bind of it.
            self.set_parent_mount_propagation(first)?;
        }
        // The rootfs must be a mount point for pivot_root.
        sys::mount(
            Some(&self.rootfs.to_string_lossy()),
            self.rootfs,
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .ctx(|| format!("bind mount the root filesystem {}", self.rootfs.display()))?;
        let open_root = || {
            rustix::fs::open(
                self.rootfs,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ctx(|| format!("open {}", self.rootfs.display()))
        };
        let mut root = open_root()?;

        let mut has_dev_bind = false;
        let mut has_devpts = false;
        for (i, (m, opts)) in self.spec.mounts.iter().zip(self.mount_opts).enumerate() {
            let dest = m.destination.trim_end_matches('/');
            if dest == "/dev" && (opts.bind || m.typ.as_deref() == Some("bind")) {
                has_dev_bind = true;
            }
            if m.typ.as_deref() == Some("devpts") && dest == "/dev/pts" {
                has_devpts = true;
            }
            self.mount_one(root.as_fd(), i, m, opts)?;
            if dest.is_empty() {
                // A mount on "/" covers the root itself: the entries after it go
                // into it (as runc's path-based joins do), and so does pivot_root,
                // which follows the path. A descriptor opened before would still
                // name the directory underneath.
                root = open_root()?;
            }
        }

        if let Some(p) = &self.spec.process {
            // Like runc and crun, create the working directory if the image lacks it.
            ensure_in_root(root.as_fd(), &p.cwd, false)
                .map_err(|e| msg(format!("process.cwd {}: {e}", p.cwd)))?;
        }

        if !has_dev_bind {
            let linux = self.spec.linux();
            devices::create_all(root.as_fd(), &linux.devices, self.in_userns)?;
            devices::symlinks(root.as_fd(), has_devpts)?;
        }
        Ok(root)
    }

    /// Set the propagation of the mount that holds the rootfs directory.
    fn set_parent_mount_propagation(&self, flag: c_ulong) -> Result<()> {
        let info = fs::read_to_string("/proc/self/mountinfo")
            .ctx(|| "read /proc/self/mountinfo".into())?;
        let parent = self.rootfs.parent().unwrap_or(Path::new("/"));
        let mut best: Option<PathBuf> = None;
        for line in info.lines() {
            let Some(mp) = line.split(' ').nth(4) else {
                continue;
            };
            let mp = PathBuf::from(mp.replace("\\040", " "));
            if parent.starts_with(&mp)
                && best
                    .as_ref()
                    .is_none_or(|b| mp.as_os_str().len() > b.as_os_str().len())
            {
                best = Some(mp);
            }
        }
        let mp = best.unwrap_or_else(|| PathBuf::from("/"));
        sys::mount(None, &mp, None, flag, None).ctx(|| {
            format!(
                "set the propagation of {} (the mount holding the rootfs)",
                mp.display()
            )
        })
    }

    fn mount_one(&self, root: BorrowedFd<'_>, i: usize, m: &Mount, opts: &Options) -> Result<()> {
        let typ = m.typ.as_deref().unwrap_or("");
        let field = || format!("mounts[{i}] ({})", m.destination);
        if opts.flags & libc::MS_REMOUNT != 0 {
            // "remount": new flags for what an earlier entry mounted there
            // (a bind mount's flags with "bind" too, as mount(8) does).
            let mnt = open_in_root(root, &m.destination, OFlags::PATH).ctx(field)?;
            let bind = if opts.bind { libc::MS_BIND } else { 0 };
            return sys::mount(
                m.source.as_deref(),
                &fd_path(&mnt),
                m.typ.as_deref().filter(|_| !opts.bind),
                opts.flags | bind,
                opts.data().as_deref(),
            )
            .ctx(|| format!("{}: remount with {:?}", field(), m.options));
        }
        if typ == "cgroup" || typ == "cgroup2" {
            return self.mount_cgroup(root, i, m, opts);
        }
        let bind = opts.bind || typ == "bind";
        if bind {
            let src = self
                .bind_source(m)
                .map_err(|e| msg(format!("{}: {e}", field())))?;
            let is_dir = fs::metadata(&src)
                .map_err(|e| msg(format!("{}: source {}: {e}", field(), src.display())))?
                .is_dir();
            let target = ensure_in_root(root, &m.destination, !is_dir)?;
            let mut flags = libc::MS_BIND;
            if opts.recursive {
                flags |= libc::MS_REC;
            }
            sys::mount(
                Some(&src.to_string_lossy()),
                &fd_path(&target),
                None,
                flags,
                None,
            )
            .ctx(|| format!("{}: bind mount {}", field(), src.display()))?;
            // Flags of a bind mount are changed on the new mount itself: reopen
            // the destination, which now resolves to the mount's root.
            if opts.attr_set() != 0 || opts.attr_clr() != 0 {
                let mnt = open_in_root(root, &m.destination, OFlags::PATH).ctx(field)?;
                sys::mount_setattr(mnt.as_fd(), false, opts.attr_set(), opts.attr_clr(), 0)
                    .ctx(|| format!("{}: apply options {:?}", field(), m.options))?;
            }
        } else {
            let target = ensure_in_root(root, &m.destination, false)?;
            let source = m.source.as_deref().unwrap_or(typ);
            let data = opts.data();
            // Keep a handle on what was under the mount point, for tmpcopyup.
            let under = if opts.tmpcopyup {
                Some(
                    rustix::fs::openat(
                        &target,
                        ".",
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .ctx(|| format!("{}: open for tmpcopyup", field()))?,
                )
            } else {
                None
            };
            let res = sys::mount(
                Some(source),
                &fd_path(&target),
                Some(typ),
                opts.flags,
                data.as_deref(),
            );
            match res {
                Ok(()) => {}
                // In a user namespace some filesystems cannot be mounted fresh
                // (sysfs without a new net namespace, mqueue without ipc): bind
                // the host's instead, read-only where asked, as runc does.
                Err(e)
                    if self.in_userns
                        && e.raw_os_error() == Some(libc::EPERM)
                        && (typ == "sysfs" || typ == "mqueue") =>
                {
                    let host = if typ == "sysfs" {
                        "/sys"
                    } else {
                        "/dev/mqueue"
                    };
                    sys::mount(
                        Some(host),
                        &fd_path(&target),
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    )
                    .ctx(|| {
                        format!(
                            "{}: bind {host} (fallback for {typ} in a user namespace)",
                            field()
                        )
                    })?;
                    let mnt = open_in_root(root, &m.destination, OFlags::PATH).ctx(field)?;
                    sys::mount_setattr(mnt.as_fd(), true, opts.attr_set(), 0, 0)
                        .ctx(|| format!("{}: apply options {:?}", field(), m.options))?;
                }
                Err(e) => {
                    return Err(e).ctx(|| {
                        format!("{}: mount {typ} {source:?} with {:?}", field(), m.options)
                    })
                }
            }
            if let Some(under) = under {
                let mnt = open_in_root(root, &m.destination, OFlags::DIRECTORY | OFlags::RDONLY)
                    .ctx(field)?;
                copy_tree(under.as_fd(), mnt.as_fd()).ctx(|| format!("{}: tmpcopyup", field()))?;
            }
        }
        if !opts.propagation.is_empty() || opts.rec_set != 0 || opts.rec_clr != 0 {
            let mnt = open_in_root(root, &m.destination, OFlags::PATH).ctx(field)?;
            for p in &opts.propagation {
                sys::mount(None, &fd_path(&mnt), None, *p, None)
                    .ctx(|| format!("{}: set propagation", field()))?;
            }
            if opts.rec_set != 0 || opts.rec_clr != 0 {
                sys::mount_setattr(mnt.as_fd(), true, opts.rec_set, opts.rec_clr, 0)
                    .ctx(|| format!("{}: apply recursive options {:?}", field(), m.options))?;
            }
        }
        Ok(())
    }

    /// Bind sources are host paths; relative ones are relative to the bundle.
    fn bind_source(&self, m: &Mount) -> std::result::Result<PathBuf, String> {
        let src = m.source.as_deref().ok_or("a bind mount needs a source")?;
        let p = Path::new(src);
        Ok(if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.bundle.join(p)
        })
    }

    /// A `cgroup` mount: on pure v2 with a cgroup namespace, a fresh cgroup2
    /// mount (rooted at the container's cgroup by the namespace); otherwise a
    /// tmpfs holding a bind mount of the container's own directory in each
    /// hierarchy, so the container sees its cgroup and nothing above it.
    fn mount_cgroup(
        &self,
        root: BorrowedFd<'_>,
        i: usize,
        m: &Mount,
        opts: &Options,
    ) -> Result<()> {
        let field = || format!("mounts[{i}] ({})", m.destination);
        let target = ensure_in_root(root, &m.destination, false)?;
        let cg = self
            .cgroup
            .ok_or_else(|| msg(format!("{}: the container has no cgroup", field())))?;
        let flags = opts.flags & !libc::MS_RDONLY;
        if cg.layout == cgroups::Layout::V2 {
            if self.new_cgroupns {
                sys::mount(
                    Some("cgroup2"),
                    &fd_path(&target),
                    Some("cgroup2"),
                    opts.flags,
                    None,
                )
                .ctx(|| format!("{}: mount cgroup2", field()))?;
            } else if let Some(d) = cg.v2_dir().or_else(|| cg.outside.iter().find(|d| d.v2)) {
                sys::mount(
                    Some(&d.path.to_string_lossy()),
                    &fd_path(&target),
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .ctx(|| format!("{}: bind {}", field(), d.path.display()))?;
                let mnt = open_in_root(root, &m.destination, OFlags::PATH).ctx(field)?;
                sys::mount_setattr(mnt.as_fd(), true, opts.attr_set(), 0, 0).ctx(field)?;
            }
            return Ok(());
        }
        sys::mount(
            Some("tmpfs"),
            &fd_path(&target),
            Some("tmpfs"),
            flags,
            Some("mode=755"),
        )
        .ctx(|| format!("{}: mount tmpfs for the cgroup hierarchies", field()))?;
        // The hierarchies an unprivileged runtime could not write hold the container in
        // the runtime's own cgroup: that directory is shown, read-only.
        let dirs = cg.dirs.iter().map(|d| (d, false));
        for (d, outside) in dirs.chain(cg.outside.iter().map(|d| (d, true))) {
            let name = if d.v2 {
                "unified".to_string()
            } else {
                d.controllers
                    .iter()
                    .map(|c| c.strip_prefix("name=").unwrap_or(c))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let sub = format!("{}/{name}", m.destination.trim_end_matches('/'));
            let t = ensure_in_root(root, &sub, false)?;
            sys::mount(
                Some(&d.path.to_string_lossy()),
                &fd_path(&t),
                None,
                libc::MS_BIND,
                None,
            )
            .ctx(|| format!("{}: bind {}", field(), d.path.display()))?;
            let mnt = open_in_root(root, &sub, OFlags::PATH).ctx(field)?;
            sys::mount_setattr(
                mnt.as_fd(),
                false,
                opts.attr_set()
                    | libc::MOUNT_ATTR_NOSUID
                    | libc::MOUNT_ATTR_NODEV
                    | libc::MOUNT_ATTR_NOEXEC
                    | if outside { libc::MOUNT_ATTR_RDONLY } else { 0 },
                0,
                0,
            )
            .ctx(|| format!("{}: options for {sub}", field()))?;
            // Co-mounted controllers ("cpu,cpuacct") get a link per controller.
            if name.contains(',') {
                let dir = open_in_root(root, &m.destination, OFlags::DIRECTORY).ctx(field)?;
                for c in name.split(',') {
                    match rustix::fs::symlinkat(name.as_str(), &dir, c) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e).ctx(|| format!("{}: symlink {c}", field())),
                    }
                }
            }
        }
        if opts.flags & libc::MS_RDONLY != 0 {
            let mnt = open_in_root(root, &m.destination, OFlags::PATH).ctx(field)?;
            sys::mount_setattr(mnt.as_fd(), false, libc::MOUNT_ATTR_RDONLY, 0, 0)
                .ctx(|| format!("{}: make read-only", field()))?;
        }
        Ok(())
    }

    /// Switch the root: pivot_root(2) and detach the old root, or (no_pivot)
    /// move the rootfs onto / and chroot, for hosts where pivot_root cannot
    /// work (a ramfs root).
    pub fn switch_root(&self, no_pivot: bool) -> Result<()> {
        if no_pivot {
            rustix::process::chdir(self.rootfs)
                .ctx(|| format!("chdir {}", self.rootfs.display()))?;
            sys::mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)
                .ctx(|| "move the root filesystem to / (--no-pivot)".into())?;
            rustix::process::chroot(".").ctx(|| "chroot (--no-pivot)".into())?;
            rustix::process::chdir("/").ctx(|| "chdir /".into())?;
        } else {
            pivot_root_to(self.rootfs)?;
        }
        // Shared is set on the new root (its parent had to be private for
        // pivot_root); unbindable only once nothing is bound from it (finish).
        let prop = self.propagation();
        if prop & libc::MS_SHARED != 0 {
            sys::mount(None, Path::new("/"), None, prop, None)
                .ctx(|| "set linux.rootfsPropagation on the new root".into())?;
        }
        Ok(())
    }

    /// After switch_root: maskedPaths and readonlyPaths (missing paths are skipped).
    pub fn protect_paths(&self) -> Result<()> {
        let linux = self.spec.linux();
        for p in &linux.masked_paths {
            let path = Path::new(p);
            let meta = match fs::symlink_metadata(path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx(|| format!("linux.maskedPaths: {p}")),
            };
            if meta.is_dir() {
                sys::mount(
                    Some("tmpfs"),
                    path,
                    Some("tmpfs"),
                    libc::MS_RDONLY,
                    Some("size=0k"),
                )
                .ctx(|| format!("linux.maskedPaths: mask {p}"))?;
            } else {
                sys::mount(Some("/dev/null"), path, None, libc::MS_BIND, None)
                    .ctx(|| format!("linux.maskedPaths: mask {p}"))?;
            }
        }
        for p in &linux.readonly_paths {
            let path = Path::new(p);
            match sys::mount(Some(p), path, None, libc::MS_BIND | libc::MS_REC, None) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                Err(e) => return Err(e).ctx(|| format!("linux.readonlyPaths: bind {p}")),
            }
            let fd = rustix::fs::open(
                path,
                OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .ctx(|| format!("linux.readonlyPaths: open {p}"))?;
            sys::mount_setattr(fd.as_fd(), true, libc::MOUNT_ATTR_RDONLY, 0, 0)
                .ctx(|| format!("linux.readonlyPaths: make {p} read-only"))?;
        }
        Ok(())
    }

    /// The last step: an unbindable root (`rootfsPropagation` unbindable or
    /// runbindable) refuses every bind mount from it, which the masked and
    /// read-only paths (and the rootfs bind itself) are; so it comes after them.
    pub fn finish(&self) -> Result<()> {
        let prop = self.propagation();
        if prop & libc::MS_UNBINDABLE == 0 {
            return Ok(());
        }
        sys::mount(None, Path::new("/"), None, prop, None)
            .ctx(|| "set linux.rootfsPropagation on the new root".into())
    }

    /// root.readonly: the root mount (only it, not the mounts on top) read-only.
    pub fn make_root_readonly(&self) -> Result<()> {
        if !self.spec.root.as_ref().is_some_and(|r| r.readonly) {
            return Ok(());
        }
        let fd = rustix::fs::open("/", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
            .ctx(|| "open /".into())?;
        sys::mount_setattr(fd.as_fd(), false, libc::MOUNT_ATTR_RDONLY, 0, 0)
            .ctx(|| "root.readonly: remount / read-only".into())
    }
}

/// Copy a directory tree (tmpcopyup): files, directories, symlinks, with modes
/// and owners. Both fds are directories.
fn copy_tree(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> std::io::Result<()> {
    use rustix::fs::{AtFlags, Dir};
    let mut dir = Dir::read_from(from)?;
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let st = rustix::fs::statat(from, name, AtFlags::SYMLINK_NOFOLLOW)?;
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777);
        match rustix::fs::FileType::from_raw_mode(st.st_mode) {
            rustix::fs::FileType::Directory => {
                match rustix::fs::mkdirat(to, name, mode) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
                let sf = rustix::fs::openat(
                    from,
                    name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let df = rustix::fs::openat(
                    to,
                    name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                copy_tree(sf.as_fd(), df.as_fd())?;
            }
            rustix::fs::FileType::RegularFile => {
                let sf = rustix::fs::openat(
                    from,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let df = rustix::fs::openat(
                    to,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::TRUNC
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    mode,
                )?;
                let mut s = fs::File::from(sf);
                let mut d = fs::File::from(df);
                std::io::copy(&mut s, &mut d)?;
            }
            rustix::fs::FileType::Symlink => {
                let target = rustix::fs::readlinkat(from, name, Vec::new())?;
                match rustix::fs::symlinkat(target.as_c_str(), to, name) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            _ => continue, // device nodes, sockets, fifos are not copied
        }
        let _ = rustix::fs::chownat(
            to,
            name,
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Symlink {
            rustix::fs::chmodat(to, name, mode, AtFlags::empty())?;
        }
    }
    Ok(())
}
