//! 1000 create / start / wait / delete cycles of /bin/true leave the host as
//! they found it: the same number of cgroup directories, mounts, open
//! descriptors of this process and state entries. (Alone in its test binary,
//! so no other test opens descriptors in this process meanwhile.)

mod common;

use std::fs;
use std::path::Path;
use std::time::Instant;

use common::*;

const CYCLES: usize = 1000;

#[derive(Debug, PartialEq, Eq)]
struct Counts {
    /// Cgroup directories, in every hierarchy, of this test's containers.
    cgroup_dirs: usize,
    /// Mounts in this process's mount namespace mentioning the bundle, the
    /// state root or a container of this test (other tests on the machine
    /// may mount and unmount their own things meanwhile).
    mounts: usize,
    fds: usize,
    state_entries: usize,
}

fn count(prefix: &str, bundle: &Path, root: &Path) -> Counts {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let (b, r) = (bundle.display().to_string(), root.display().to_string());
    let mounts = info
        .lines()
        .filter(|l| l.contains(&b) || l.contains(&r) || l.contains(prefix))
        .count();
    Counts {
        cgroup_dirs: cgroup_dirs_where(|n| n.starts_with(prefix)).len(),
        mounts,
        fds: fs::read_dir("/proc/self/fd").unwrap().count(),
        state_entries: fs::read_dir(root).map(|d| d.count()).unwrap_or(0),
    }
}

/// Block until `pid` (not our child) has exited.
fn wait_exit(pid: i32) {
    use rustix::event::{poll, PollFd, PollFlags};
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    let Ok(fd) = pidfd_open(Pid::from_raw(pid).unwrap(), PidfdFlags::empty()) else {
        return; // already gone
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    while poll(&mut fds, None).is_err() {}
}

#[test]
fn a_thousand_lifecycles_leave_no_trace() {
    let rt = Rt::new();
    let b = Bundle::new("cycles", &["/bin/true"]);
    let prefix = unique("cyc");
    let pid_file = b.dir.join("init.pid");
    let before = count(&prefix, &b.dir, &rt.root);
    let t = Instant::now();
    for i in 0..CYCLES {
        let id = format!("{prefix}-{i}");
        ok(&rt.create_with_pid_file(&id, &b, &pid_file));
        let pid: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
        ok(&rt.run(&["start", &id]));
        wait_exit(pid);
        ok(&rt.run(&["delete", &id]));
        rt.ids.lock().unwrap().pop();
    }
    let took = t.elapsed();
    fs::remove_file(&pid_file).unwrap();
    let after = count(&prefix, &b.dir, &rt.root);
    println!(
        "{CYCLES} cycles in {:.1} s ({:.1} ms each)",
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / CYCLES as f64
    );
    assert_eq!(before, after);
}
