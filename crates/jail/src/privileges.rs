//! Giving up privileges, in the order the kernel needs: the bounding set while CAP_SETPCAP is
//! still held, then the ids (setgroups, setresgid, setresuid), then the remaining capability
//! sets, then no_new_privs and non-dumpable. Built from the container crate's pieces.

use container::capabilities::{self, Resolved};

use crate::{sys_err, Result};

fn prctl(option: libc::c_int, arg: libc::c_ulong, what: &str) -> Result<()> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(option, arg, 0, 0, 0) };
    if r != 0 {
        return Err(sys_err(what.to_string())(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Become `uid`/`gid` with no supplementary groups and no capability in any of the five sets
/// but `keep` (in all five: ambient, so they survive an exec of a file without capabilities).
pub(crate) fn drop_all(uid: u32, gid: u32, keep: u64) -> Result<()> {
    capabilities::drop_bounding(keep)?;
    container::process::switch_user(&oci::User {
        uid,
        gid,
        umask: None,
        additional_gids: Vec::new(),
    })?;
    // switch_user kept the permitted set across the uid change (PR_SET_KEEPCAPS): set
    // effective, permitted and inheritable to `keep` in one capset, and the ambient set with
    // them (cleared first: it may hold what the caller had).
    prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
        "clear the ambient capabilities",
    )?;
    let kept = Resolved {
        bounding: keep,
        effective: keep,
        permitted: keep,
        inheritable: keep,
        ambient: keep,
    };
    capabilities::apply(&kept, 0)?;
    rustix::thread::set_no_new_privs(true).map_err(|e| sys_err("set no_new_privs")(e.into()))?;
    // Not dumpable: no core file, no ptrace by the same uid, /proc/PID owned by root.
    prctl(libc::PR_SET_DUMPABLE, 0, "make the process non-dumpable")?;
    // The uid change cleared the parent-death signal: arm it again.
    parent_death_kills()
}

/// Die with SIGKILL when the supervisor does.
pub(crate) fn parent_death_kills() -> Result<()> {
    prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        "set the parent-death signal",
    )
}
