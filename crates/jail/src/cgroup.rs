//! The jail's cgroup: `<parent>/<name>` in every hierarchy, with its limits written before the
//! child exists. Directories and limit files are the cgroups crate's, so v1, v2 and hybrid
//! hosts behave as they do for containers; a failure removes what was created.

use crate::{Error, Result};

/// Where the jail's cgroup goes and what it limits.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupPlan {
    /// Parent cgroup: absolute from each hierarchy's root, or relative to the supervisor's own
    /// cgroup (runc's cgroupfs rule); empty: the supervisor's own cgroup (a VM-backed
    /// container's monitor puts its hypervisor's jail inside the container's cgroup).
    pub parent: String,
    /// memory limit in bytes (swap capped at the same value where the host accounts swap).
    pub memory: Option<i64>,
    /// Tasks (threads included) the cgroup may hold.
    pub pids: Option<i64>,
    /// CFS quota in microseconds per [`CPU_PERIOD`].
    pub cpu_quota: Option<i64>,
}

/// The CFS period the quota refers to (100 ms, the kernel's default).
pub const CPU_PERIOD: u64 = 100_000;

impl CgroupPlan {
    /// The v1 hierarchies the jail joins: those of the controllers it limits. Joining another
    /// one would change nothing but the process's share of it: in a cpu (or blkio) group of
    /// its own, a VMM on a loaded host gets one group's share instead of one per thread
    /// (measured on the shared 2-core machine: the test guest ran 3x slower). The cgroup v2
    /// directory, if the host has one, is always joined (clone3 places the child there).
    fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.memory.is_some() {
            c.push("memory");
        }
        if self.pids.is_some() {
            c.push("pids");
        }
        if self.cpu_quota.is_some() {
            c.push("cpu");
        }
        c
    }

    fn resources(&self) -> oci::Resources {
        oci::Resources {
            memory: self.memory.map(|m| oci::Memory {
                limit: Some(m),
                swap: cgroups::swap_accounted().then_some(m),
                ..Default::default()
            }),
            pids: self.pids.map(|n| oci::Pids { limit: Some(n) }),
            cpu: self.cpu_quota.map(|q| oci::Cpu {
                quota: Some(q),
                period: Some(CPU_PERIOD),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Creates the cgroup with its limits; on error nothing is left.
#[cfg(test)]
fn create(name: &str, plan: &CgroupPlan) -> Result<cgroups::Cgroup> {
    let mut cg = resolve(name, plan)?;
    make(&mut cg, plan)?;
    Ok(cg)
}

/// The cgroup's directories in every hierarchy it joins, and the missing parents that
/// [`make`] will create ([`cgroups::Cgroup::saved`] lists both): nothing is created yet.
pub(crate) fn resolve(name: &str, plan: &CgroupPlan) -> Result<cgroups::Cgroup> {
    if name.is_empty() || name.contains('/') {
        return Err(Error::Invalid(format!(
            "jail name {name:?}: must be one non-empty path component"
        )));
    }
    let parent = plan.parent.trim_end_matches('/');
    let path = if plan.parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    };
    cgroups::validate::resources(&plan.resources())?;
    let hier = cgroups::Hierarchies::detect()?;
    let mut cg = cgroups::Cgroup::resolve(&hier, Some(&path), name)?;
    let wanted = plan.controllers();
    cg.dirs
        .retain(|d| d.v2 || d.controllers.iter().any(|c| wanted.contains(&c.as_str())));
    cg.plan_create();
    Ok(cg)
}

/// Creates the directories [`resolve`] planned and writes the limits; on error nothing is
/// left.
pub(crate) fn make(cg: &mut cgroups::Cgroup, plan: &CgroupPlan) -> Result<()> {
    cg.create_planned()?;
    if let Err(e) = cg.apply(&plan.resources()) {
        let _ = cg.destroy();
        return Err(e.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_oci_resources() {
        let p = CgroupPlan {
            parent: "/bulkhead".into(),
            memory: Some(200 << 20),
            pids: Some(9),
            cpu_quota: Some(50_000),
        };
        let r = p.resources();
        assert_eq!(p.controllers(), ["memory", "pids", "cpu"]);
        assert_eq!(r.memory.unwrap().limit, Some(200 << 20));
        assert_eq!(r.pids.unwrap().limit, Some(9));
        let cpu = r.cpu.unwrap();
        assert_eq!((cpu.quota, cpu.period), (Some(50_000), Some(CPU_PERIOD)));
        cgroups::validate::resources(&p.resources()).unwrap();
    }

    #[test]
    fn a_name_with_a_slash_is_refused_before_anything_is_made() {
        let p = CgroupPlan {
            parent: "/bulkhead".into(),
            memory: None,
            pids: None,
            cpu_quota: None,
        };
        assert!(p.controllers().is_empty());
        let e = create("a/b", &p).unwrap_err().to_string();
        assert!(e.contains("one non-empty path component"), "{e}");
    }

    #[test]
    fn an_empty_parent_is_the_callers_own_cgroup() {
        let p = CgroupPlan {
            parent: String::new(),
            memory: Some(64 << 20),
            pids: None,
            cpu_quota: None,
        };
        let name = format!("bh-jail-own-{}", std::process::id());
        let cg = create(&name, &p).unwrap();
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let memory = own
            .lines()
            .find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
                ctrls
                    .split(',')
                    .any(|c| c == "memory")
                    .then(|| path.to_string())
            })
            .or_else(|| {
                own.lines()
                    .find_map(|l| l.strip_prefix("0::").map(String::from))
            })
            .unwrap();
        let dir = cg
            .dirs
            .iter()
            .find(|d| d.v2 || d.has("memory"))
            .unwrap()
            .path
            .clone();
        let res = dir.ends_with(format!("{}/{name}", memory.trim_start_matches('/')));
        cg.destroy().unwrap();
        assert!(res, "{} is not under {memory}", dir.display());
    }
}
