//! The containers/common seccomp profile format (podman's default profile is
//! /usr/share/containers/seccomp.json) and its conversion to an OCI `linux.seccomp`.
//!
//! The conversion follows containers/common `pkg/seccomp` (`setupSeccomp`), which is what
//! podman runs before handing the config to the OCI runtime:
//! - `archMap`: the entry whose `architecture` is the host's (SCMP_ARCH_X86_64 here) gives
//!   the architectures, with its `subArchitectures`; `architectures` may be used instead,
//!   not both.
//! - a rule is dropped when `excludes.arches` holds the host arch (libseccomp's name,
//!   `amd64`), when any of `excludes.caps` is in the bounding set, or when the kernel is at
//!   least `excludes.minKernel`; and when `includes.arches` is non-empty and lacks the host
//!   arch, when one of `includes.caps` is not in the bounding set, or when the kernel is
//!   older than `includes.minKernel`.
//! - `errno` (a name like "EPERM" or a number) wins over `errnoRet`; same for
//!   `defaultErrno` / `defaultErrnoRet`.
//! - `name` and `names` together are an error; `name` alone is a one-name `names`.

use std::path::Path;

use serde::{Deserialize, Deserializer};

use oci::{Arch, Seccomp, SeccompAction, SeccompArg, SeccompFlag, Syscall};

use crate::{tables, Error, Result};

/// podman's default capability set (containers.conf `default_capabilities`): the bounding set
/// a container gets from `podman run` without --cap-add/--cap-drop.
pub const PODMAN_DEFAULT_CAPS: [&str; 11] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

/// Where podman's default profile is installed (containers-common).
pub const PODMAN_PROFILE_PATH: &str = "/usr/share/containers/seccomp.json";

/// libseccomp's name for the host architecture, as the profile's `arches` use it.
const HOST_ARCH_NAME: &str = "amd64";
const HOST_ARCH: Arch = Arch::X86_64;

/// Go marshals a nil slice or pointer as `null`; treat it as the empty value.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> std::result::Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A containers/common (and Docker/moby) seccomp profile.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainersProfile {
    pub default_action: SeccompAction,
    #[serde(default)]
    pub default_errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub default_errno: String,
    /// Arch names; "SCMP_ARCH_NATIVE" is allowed here (it means the host's).
    #[serde(default, deserialize_with = "nullable")]
    pub architectures: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub arch_map: Vec<ArchMapEntry>,
    #[serde(default, deserialize_with = "nullable")]
    pub syscalls: Vec<ProfileSyscall>,
    #[serde(default, deserialize_with = "nullable")]
    pub flags: Vec<SeccompFlag>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchMapEntry {
    pub architecture: String,
    #[serde(default, deserialize_with = "nullable")]
    pub sub_architectures: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileSyscall {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(default, deserialize_with = "nullable")]
    pub names: Vec<String>,
    pub action: SeccompAction,
    #[serde(default, deserialize_with = "nullable")]
    pub args: Vec<SeccompArg>,
    #[serde(default, deserialize_with = "nullable")]
    pub comment: String,
    #[serde(default, deserialize_with = "nullable")]
    pub includes: Condition,
    #[serde(default, deserialize_with = "nullable")]
    pub excludes: Condition,
    #[serde(default)]
    pub errno_ret: Option<u32>,
    #[serde(default, deserialize_with = "nullable")]
    pub errno: String,
}

/// `includes` / `excludes` of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default, deserialize_with = "nullable")]
    pub caps: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub arches: Vec<String>,
    /// "major.minor", e.g. "4.8".
    #[serde(default, deserialize_with = "nullable")]
    pub min_kernel: String,
}

/// A kernel release, major and minor only (the profile's `minKernel` granularity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    /// Parse "6.1", "6.1.0-18-amd64", "3.12-1-amd64" (as containers/common: the leading
    /// "%d.%d").
    pub fn parse(s: &str) -> Option<KernelVersion> {
        let mut it = s.splitn(2, '.');
        let major = it.next()?.parse().ok()?;
        let rest = it.next()?;
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let minor = rest[..end].parse().ok()?;
        Some(KernelVersion { major, minor })
    }

    /// The running kernel (uname(2) release).
    pub fn running() -> std::io::Result<KernelVersion> {
        // SAFETY: utsname is plain data; uname fills it with NUL-terminated strings.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        // SAFETY: `u` is a valid utsname to write into.
        if unsafe { libc::uname(&mut u) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel NUL-terminates `release`.
        let rel = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
        let rel = rel.to_string_lossy();
        KernelVersion::parse(&rel).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("cannot parse kernel release {rel:?}"),
            )
        })
    }
}

impl ContainersProfile {
    /// Parse profile JSON; `file` names the source in errors, which give the field path.
    pub fn from_json(text: &[u8], file: &str) -> Result<ContainersProfile> {
        Ok(oci::from_json(text, file)?)
    }

    pub fn load(path: &Path) -> Result<ContainersProfile> {
        let text = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ContainersProfile::from_json(&text, &path.display().to_string())
    }

    /// The OCI `linux.seccomp` podman would put in config.json for a process whose bounding
    /// capability set is `bounding_caps` (names like "CAP_SYS_ADMIN"), on a kernel `kernel`.
    pub fn to_oci(&self, bounding_caps: &[String], kernel: KernelVersion) -> Result<Seccomp> {
        if !self.architectures.is_empty() && !self.arch_map.is_empty() {
            return Err(Error::invalid(
                "architectures",
                "'architectures' and 'archMap' were both given; use one",
            ));
        }
        let mut architectures = Vec::new();
        for (i, a) in self.architectures.iter().enumerate() {
            architectures.push(parse_arch(a, &|| format!("architectures[{i}]"))?);
        }
        for (i, m) in self.arch_map.iter().enumerate() {
            if parse_arch(&m.architecture, &|| format!("archMap[{i}].architecture"))? == HOST_ARCH {
                architectures.push(HOST_ARCH);
                for (j, s) in m.sub_architectures.iter().enumerate() {
                    architectures.push(parse_arch(s, &|| {
                        format!("archMap[{i}].subArchitectures[{j}]")
                    })?);
                }
                break;
            }
        }
        let default_errno_ret = errno_value(&self.default_errno, self.default_errno_ret, &|| {
            "defaultErrno".into()
        })?;

        let has_cap = |c: &String| bounding_caps.iter().any(|b| b == c);
        let mut syscalls = Vec::with_capacity(self.syscalls.len());
        for (i, call) in self.syscalls.iter().enumerate() {
            let ex = &call.excludes;
            if ex.arches.iter().any(|a| a == HOST_ARCH_NAME)
                || ex.caps.iter().any(has_cap)
                || (!ex.min_kernel.is_empty()
                    && kernel >= min_kernel(&ex.min_kernel, i, "excludes")?)
            {
                continue;
            }
            let inc = &call.includes;
            if (!inc.arches.is_empty() && !inc.arches.iter().any(|a| a == HOST_ARCH_NAME))
                || !inc.caps.iter().all(has_cap)
                || (!inc.min_kernel.is_empty()
                    && kernel < min_kernel(&inc.min_kernel, i, "includes")?)
            {
                continue;
            }
            let names = match (call.name.is_empty(), call.names.is_empty()) {
                (false, false) => {
                    return Err(Error::invalid(
                        format!("syscalls[{i}]"),
                        "'name' and 'names' were both given; use one",
                    ))
                }
                (false, true) => vec![call.name.clone()],
                _ => call.names.clone(),
            };
            let errno_ret = errno_value(&call.errno, call.errno_ret, &|| {
                format!("syscalls[{i}].errno")
            })?;
            syscalls.push(Syscall {
                names,
                action: call.action,
                errno_ret,
                args: call.args.clone(),
            });
        }
        Ok(Seccomp {
            default_action: self.default_action,
            default_errno_ret,
            architectures,
            flags: self.flags.clone(),
            listener_path: None,
            listener_metadata: None,
            syscalls,
        })
    }
}

/// Read a containers/common profile and convert it for the running kernel.
pub fn load_containers_profile(path: &Path, bounding_caps: &[String]) -> Result<Seccomp> {
    let kernel = KernelVersion::running().map_err(|source| Error::Io {
        path: "/proc/sys/kernel/osrelease".into(),
        source,
    })?;
    ContainersProfile::load(path)?.to_oci(bounding_caps, kernel)
}

fn parse_arch(s: &str, field: &dyn Fn() -> String) -> Result<Arch> {
    if s == "SCMP_ARCH_NATIVE" {
        return Ok(HOST_ARCH);
    }
    let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s);
    Arch::deserialize(de)
        .map_err(|_| Error::invalid(field(), format!("unknown architecture {s:?}")))
}

fn min_kernel(s: &str, i: usize, which: &str) -> Result<KernelVersion> {
    KernelVersion::parse(s).ok_or_else(|| {
        Error::invalid(
            format!("syscalls[{i}].{which}.minKernel"),
            format!("{s:?} is not a kernel version like \"5.8\""),
        )
    })
}

/// containers/common's getErrno: a name or a number in `errno` wins over `errno_ret`.
fn errno_value(
    errno: &str,
    errno_ret: Option<u32>,
    field: &dyn Fn() -> String,
) -> Result<Option<u32>> {
    if errno.is_empty() {
        return Ok(errno_ret);
    }
    if let Ok(n) = errno.parse::<u32>() {
        return Ok(Some(n));
    }
    match tables::ERRNO.binary_search_by(|e| e.0.cmp(errno)) {
        Ok(k) => Ok(Some(tables::ERRNO[k].1)),
        Err(_) => Err(Error::invalid(field(), format!("unknown errno {errno:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const K61: KernelVersion = KernelVersion { major: 6, minor: 1 };

    #[test]
    fn kernel_versions() {
        assert_eq!(KernelVersion::parse("6.1.0-18-amd64"), Some(K61));
        assert_eq!(
            KernelVersion::parse("3.12-1-amd64"),
            Some(KernelVersion {
                major: 3,
                minor: 12
            })
        );
        assert_eq!(KernelVersion::parse("6"), None);
        assert!(KernelVersion::running().unwrap() >= KernelVersion { major: 3, minor: 0 });
    }

    #[test]
    fn includes_excludes_and_errno_names() {
        let text = br#"{
          "defaultAction": "SCMP_ACT_ERRNO", "defaultErrno": "ENOSYS", "defaultErrnoRet": 1,
          "archMap": [{"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
                      {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
          "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": null, "includes": {}, "excludes": {}},
            {"names": ["chroot"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_CHROOT"]}},
            {"names": ["chroot"], "action": "SCMP_ACT_ERRNO", "errno": "EPERM", "excludes": {"caps": ["CAP_SYS_CHROOT"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["cacheflush"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm", "arm64"]}},
            {"names": ["bpf"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN", "CAP_BPF"]}},
            {"names": ["newer"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "6.2"}},
            {"names": ["older"], "action": "SCMP_ACT_ALLOW", "excludes": {"minKernel": "5.10"}},
            {"name": "single", "action": "SCMP_ACT_ERRNO", "errno": "42"}
          ]}"#;
        let p = ContainersProfile::from_json(text, "p.json").unwrap();
        let with = p
            .to_oci(&caps(&["CAP_SYS_CHROOT", "CAP_SYS_ADMIN"]), K61)
            .unwrap();
        assert_eq!(with.default_errno_ret, Some(38));
        assert_eq!(with.architectures, [Arch::X86_64, Arch::X86, Arch::X32]);
        let names =
            |s: &Seccomp| -> Vec<String> { s.syscalls.iter().map(|c| c.names.join(",")).collect() };
        // bpf needs both caps; newer needs 6.2; older is dropped on >= 5.10.
        assert_eq!(names(&with), ["read", "chroot", "arch_prctl", "single"]);
        assert_eq!(with.syscalls[1].action, SeccompAction::Allow);
        assert_eq!(with.syscalls[3].errno_ret, Some(42));
        let without = p.to_oci(&[], KernelVersion { major: 5, minor: 4 }).unwrap();
        assert_eq!(
            names(&without),
            ["read", "chroot", "arch_prctl", "older", "single"]
        );
        assert_eq!(without.syscalls[1].action, SeccompAction::Errno);
        assert_eq!(without.syscalls[1].errno_ret, Some(1));
    }

    #[test]
    fn bad_profiles_name_the_field() {
        let bad_errno = br#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["x"], "action": "SCMP_ACT_ERRNO", "errno": "EBOGUS"}]}"#;
        let e = ContainersProfile::from_json(bad_errno, "p.json")
            .unwrap()
            .to_oci(&[], K61)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "syscalls[0].errno: unknown errno \"EBOGUS\"");
        let bad_action = br#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["x"], "action": "SCMP_ACT_MAYBE"}]}"#;
        let e = ContainersProfile::from_json(bad_action, "p.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.json: syscalls[0].action: unknown variant"),
            "{e}"
        );
        let both = br#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86"],
            "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}"#;
        let e = ContainersProfile::from_json(both, "p.json")
            .unwrap()
            .to_oci(&[], K61)
            .unwrap_err()
            .to_string();
        assert!(e.contains("'architectures' and 'archMap'"), "{e}");
        let bad_arch =
            br#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}"#;
        let e = ContainersProfile::from_json(bad_arch, "p.json")
            .unwrap()
            .to_oci(&[], K61)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "architectures[0]: unknown architecture \"SCMP_ARCH_Z80\""
        );
    }
}
