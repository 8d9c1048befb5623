//! Reading one process's files under /proc.

use std::fs;
use std::io;
use std::path::PathBuf;

/// A process, by pid in the inspector's pid namespace.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: i32,
    base: PathBuf,
}

impl Proc {
    pub fn new(pid: i32) -> Proc {
        Proc {
            pid,
            base: PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// A process directory elsewhere than /proc (tests give a fake one).
    pub fn at(base: PathBuf) -> Proc {
        Proc { pid: 0, base }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    pub fn read(&self, rel: &str) -> io::Result<String> {
        fs::read_to_string(self.path(rel))
    }

    pub fn comm(&self) -> io::Result<String> {
        Ok(self.read("comm")?.trim_end().to_string())
    }

    pub fn status(&self) -> io::Result<Status> {
        Ok(Status {
            text: self.read("status")?,
        })
    }

    /// The process's threads (`/proc/PID/task/TID`), by thread id.
    pub fn threads(&self) -> io::Result<Vec<Proc>> {
        let mut tids: Vec<i32> = fs::read_dir(self.path("task"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        Ok(tids
            .into_iter()
            .map(|tid| Proc {
                pid: tid,
                base: self.base.join("task").join(tid.to_string()),
            })
            .collect())
    }

    /// (state letter, start time) from /proc/PID/stat; None if there is no such process.
    pub fn stat(&self) -> Option<(char, u64)> {
        let text = self.read("stat").ok()?;
        // The command name (field 2) may hold spaces and parentheses.
        let rest = text.get(text.rfind(')')? + 2..)?;
        let mut fields = rest.split(' ');
        let state = fields.next()?.chars().next()?;
        let start = fields.nth(18)?.parse().ok()?;
        Some((state, start))
    }
}

/// `/proc/PID/status`, by field name.
#[derive(Debug, Clone)]
pub struct Status {
    pub text: String,
}

impl Status {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == name).then(|| v.trim())
        })
    }

    pub fn u64(&self, name: &str) -> Option<u64> {
        self.field(name)?.parse().ok()
    }

    pub fn hex(&self, name: &str) -> Option<u64> {
        u64::from_str_radix(self.field(name)?, 16).ok()
    }
}

/// A short reason for an I/O error ("permission denied"), for reports.
pub fn reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".into(),
        Some(libc::ENOENT) => "not present".into(),
        Some(libc::EINVAL) => "not supported".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields() {
        let s = Status {
            text: "Name:\tsh\nSeccomp:\t2\nCapBnd:\t00000000a80425fb\nUid:\t0\t0\t0\t0\n".into(),
        };
        assert_eq!(s.field("Name"), Some("sh"));
        assert_eq!(s.u64("Seccomp"), Some(2));
        assert_eq!(s.hex("CapBnd"), Some(0xa80425fb));
        assert_eq!(s.field("Uid"), Some("0\t0\t0\t0"));
        assert_eq!(s.field("Nope"), None);
    }

    #[test]
    fn stat_of_self() {
        let p = Proc::new(std::process::id() as i32);
        let (state, start) = p.stat().unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(start > 0);
        assert!(Proc::new(i32::MAX).stat().is_none());
        let me = p.threads().unwrap();
        assert!(
            me.iter().any(|t| t.pid == p.pid),
            "the main thread's id is the pid"
        );
        assert!(me[0].status().unwrap().field("Seccomp").is_some());
    }
}
