//! Linux Security Modules: the AppArmor profile and SELinux label the
//! container process runs under, set with /proc/self/attr/.../exec so they
//! take effect at execve.
//!
//! When the LSM is not enabled on the host we do what runc does: an SELinux
//! process label is an error (the container would silently run unconfined),
//! an SELinux mount label is ignored (mount options cannot carry it), and an
//! AppArmor profile is an error (runc fails applying it).

use std::path::{Path, PathBuf};

use crate::error::{msg, Context, Result};

/// Where the LSM attribute files live; tests point this at a fake directory.
#[derive(Debug, Clone)]
pub struct Lsm {
    pub attr_dir: PathBuf,
    pub apparmor_enabled: bool,
    pub selinux_enabled: bool,
}

impl Lsm {
    pub fn host() -> Lsm {
        let apparmor_enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
            .map(|s| s.trim() == "Y")
            .unwrap_or(false);
        let selinux_enabled = Path::new("/sys/fs/selinux/enforce").exists();
        Lsm {
            attr_dir: PathBuf::from("/proc/self/attr"),
            apparmor_enabled,
            selinux_enabled,
        }
    }

    /// Validate the config against the host's LSMs before anything is created.
    pub fn check(&self, p: &oci::Process) -> Result<()> {
        if let Some(l) = p.selinux_label.as_deref().filter(|l| !l.is_empty()) {
            if !self.selinux_enabled {
                return Err(msg(format!(
                    "process.selinuxLabel {l:?}: SELinux is not enabled on this host"
                )));
            }
        }
        if let Some(a) = p.apparmor_profile.as_deref().filter(|a| !a.is_empty()) {
            // "unconfined" without AppArmor is what the process gets anyway.
            if !self.apparmor_enabled && a != "unconfined" {
                return Err(msg(format!(
                    "process.apparmorProfile {a:?}: AppArmor is not enabled on this host"
                )));
            }
        }
        Ok(())
    }

    /// Arrange for the next execve to switch to the configured labels.
    pub fn set_exec_labels(&self, p: &oci::Process) -> Result<()> {
        let apparmor = p.apparmor_profile.as_deref().filter(|a| !a.is_empty());
        if let Some(a) = apparmor.filter(|a| self.apparmor_enabled || *a != "unconfined") {
            // Newer kernels have a per-LSM directory; older ones only the shared file.
            let per_lsm = self.attr_dir.join("apparmor/exec");
            let file = if per_lsm.exists() {
                per_lsm
            } else {
                self.attr_dir.join("exec")
            };
            std::fs::write(&file, format!("exec {a}"))
                .ctx(|| format!("apply AppArmor profile {a:?} ({})", file.display()))?;
        }
        if let Some(l) = p.selinux_label.as_deref().filter(|l| !l.is_empty()) {
            let file = self.attr_dir.join("exec");
            std::fs::write(&file, l)
                .ctx(|| format!("apply SELinux label {l:?} ({})", file.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(name: &str, apparmor: bool, selinux: bool) -> Lsm {
        let dir = std::env::temp_dir().join(format!("bh-lsm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("apparmor")).unwrap();
        std::fs::write(dir.join("exec"), "").unwrap();
        std::fs::write(dir.join("apparmor/exec"), "").unwrap();
        Lsm {
            attr_dir: dir,
            apparmor_enabled: apparmor,
            selinux_enabled: selinux,
        }
    }

    fn proc_with(apparmor: Option<&str>, selinux: Option<&str>) -> oci::Process {
        oci::Process {
            apparmor_profile: apparmor.map(String::from),
            selinux_label: selinux.map(String::from),
            cwd: "/".into(),
            ..Default::default()
        }
    }

    #[test]
    fn labels_are_written_where_the_kernel_reads_them() {
        let l = fake("write", true, true);
        l.set_exec_labels(&proc_with(Some("bulkhead-default"), None))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(l.attr_dir.join("apparmor/exec")).unwrap(),
            "exec bulkhead-default"
        );
        l.set_exec_labels(&proc_with(None, Some("system_u:system_r:container_t:s0")))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(l.attr_dir.join("exec")).unwrap(),
            "system_u:system_r:container_t:s0"
        );
        std::fs::remove_dir_all(&l.attr_dir).unwrap();
    }

    #[test]
    fn disabled_lsms_reject_labels() {
        let l = fake("off", false, false);
        assert!(l
            .check(&proc_with(Some("p"), None))
            .unwrap_err()
            .to_string()
            .contains("AppArmor is not enabled"));
        assert!(l
            .check(&proc_with(None, Some("x")))
            .unwrap_err()
            .to_string()
            .contains("SELinux is not enabled"));
        l.check(&proc_with(None, None)).unwrap();
        l.check(&proc_with(Some("unconfined"), None)).unwrap();
        l.set_exec_labels(&proc_with(Some("unconfined"), None))
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(l.attr_dir.join("apparmor/exec")).unwrap(),
            ""
        );
        std::fs::remove_dir_all(&l.attr_dir).unwrap();
    }

    #[test]
    fn host_detection_matches_sysfs() {
        let h = Lsm::host();
        assert_eq!(
            h.selinux_enabled,
            Path::new("/sys/fs/selinux/enforce").exists()
        );
    }
}
