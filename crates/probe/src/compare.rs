//! `probe --compare`: the battery in a busybox bundle under several OCI runtimes, each with
//! its own default config (`RUNTIME spec`), side by side.
//!
//! For each runtime: `RUNTIME spec` writes the config into a bundle directory of its own; the
//! config is changed only where it must be to run the probe (no terminal, the probe as the
//! process, the shared busybox rootfs, the probe binary bind-mounted read-only at /bulkhead —
//! with the host's library directories when the binary is dynamically linked). Then
//! `RUNTIME --root STATE run --bundle DIR ID` runs it in the foreground and its JSON report is
//! collected; the container is deleted and every file removed afterwards. A host-side marker
//! file next to the bundles (outside the rootfs) tells whether the chroot escape reached the
//! host's tree.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use crate::{Error, Outcome, Report, Result, PROBES};

const BUSYBOX: &str = "/bin/busybox";

/// One runtime's column.
#[derive(Debug, Clone, Serialize)]
pub struct Column {
    pub runtime: String,
    /// The binary that ran.
    pub path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Removes the work directory (bundles, rootfs, state roots) on every path out.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// Find a runtime: "bulkhead" is `own_exe`; a name with a slash is a path; else PATH.
fn resolve(name: &str, own_exe: &Path) -> Result<PathBuf> {
    if name == "bulkhead" {
        return Ok(own_exe.to_path_buf());
    }
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Invalid(format!("--compare {name}: no such file")))
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Invalid(format!("--compare {name}: not found in PATH")))
}

/// Does the ELF file at `path` ask for a program interpreter (a dynamic loader)?
pub fn is_dynamic(path: &Path) -> bool {
    let Ok(b) = fs::read(path) else { return false };
    let u16_at = |o: usize| {
        b.get(o..o + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]) as usize)
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])) as usize)
    };
    if b.len() < 64 || b[..4] != *b"\x7fELF" || b[4] != 2 {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        b.get(o..o + 4) == Some(&3u32.to_le_bytes()[..]) // PT_INTERP
    })
}

/// The busybox rootfs shared by every bundle.
fn make_rootfs(rootfs: &Path) -> Result<()> {
    if !Path::new(BUSYBOX).is_file() {
        return Err(Error::Invalid(format!(
            "{BUSYBOX} is missing: install Debian's busybox-static for the comparison's rootfs"
        )));
    }
    for d in ["bin", "proc", "sys", "dev", "etc", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).map_err(io(format!("{}", rootfs.display())))?;
    }
    fs::copy(BUSYBOX, rootfs.join("bin/busybox")).map_err(io(BUSYBOX))?;
    for name in ["sh", "ls", "cat"] {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(name));
    }
    fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(io("rootfs /etc/passwd"))
}

/// What a rootfs needs to run the probe binary `exe` as /bulkhead: the OCI mounts (a
/// read-only bind of `exe`, and when it is dynamically linked the host's library
/// directories, mirrored: a symlink on the host becomes the same symlink in `rootfs`, a
/// directory a read-only bind). The mount points are created in `rootfs`.
pub fn probe_mounts(rootfs: &Path, exe: &Path) -> Result<Vec<serde_json::Value>> {
    fs::write(rootfs.join("bulkhead"), "").map_err(io("rootfs /bulkhead"))?;
    let mut mounts = vec![serde_json::json!({
        "destination": "/bulkhead", "type": "bind", "source": exe,
        "options": ["bind", "ro"]
    })];
    if !is_dynamic(exe) {
        return Ok(mounts);
    }
    for dir in ["/lib", "/lib64", "/usr/lib", "/usr/lib64"] {
        let Ok(meta) = fs::symlink_metadata(dir) else {
            continue;
        };
        let inside = rootfs.join(dir.trim_start_matches('/'));
        if let Some(parent) = inside.parent() {
            fs::create_dir_all(parent).map_err(io(format!("{}", parent.display())))?;
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(dir).map_err(io(dir))?;
            let _ = fs::remove_file(&inside);
            std::os::unix::fs::symlink(&target, &inside)
                .map_err(io(format!("{}", inside.display())))?;
        } else if meta.is_dir() {
            fs::create_dir_all(&inside).map_err(io(format!("{}", inside.display())))?;
            mounts.push(serde_json::json!({
                "destination": dir, "type": "bind", "source": dir,
                "options": ["rbind", "ro", "nosuid", "nodev"]
            }));
        }
    }
    Ok(mounts)
}

/// Run the battery under each runtime of `names` ("bulkhead" is always the first column),
/// using `own_exe` (this bulkhead binary) as the probe.
pub fn compare(names: &[String], own_exe: &Path) -> Result<Vec<Column>> {
    let mut all = vec!["bulkhead".to_string()];
    for n in names {
        if !all.contains(n) {
            all.push(n.clone());
        }
    }
    let runtimes: Vec<(String, PathBuf)> = all
        .iter()
        .map(|n| resolve(n, own_exe).map(|p| (n.clone(), p)))
        .collect::<Result<_>>()?;
    let work = WorkDir(
        std::env::temp_dir().join(format!("bulkhead-probe-compare-{}", std::process::id())),
    );
    fs::create_dir_all(&work.0).map_err(io(format!("{}", work.0.display())))?;
    let rootfs = work.0.join("rootfs");
    make_rootfs(&rootfs)?;
    let extra_mounts = probe_mounts(&rootfs, own_exe)?;
    let marker = work.0.join("host-marker");
    fs::write(&marker, "outside every container's root\n").map_err(io("marker"))?;

    let mut columns = Vec::new();
    for (i, (name, path)) in runtimes.iter().enumerate() {
        let r = run_one(&work.0, i, path, &rootfs, &extra_mounts, &marker);
        columns.push(Column {
            runtime: name.clone(),
            path: path.clone(),
            report: r.as_ref().ok().cloned(),
            error: r.err(),
        });
    }
    Ok(columns)
}

fn run_one(
    work: &Path,
    i: usize,
    runtime: &Path,
    rootfs: &Path,
    extra_mounts: &[serde_json::Value],
    marker: &Path,
) -> std::result::Result<Report, String> {
    let bundle = work.join(format!("bundle-{i}"));
    let state = work.join(format!("state-{i}"));
    fs::create_dir_all(&bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
    let out = Command::new(runtime)
        .arg("spec")
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} spec: {e}", runtime.display()))?;
    if !out.status.success() {
        return Err(format!("spec: {}", first_line(&out.stderr)));
    }
    let cfg_path = bundle.join("config.json");
    let text = fs::read(&cfg_path).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", cfg_path.display()))?;
    cfg["process"]["terminal"] = false.into();
    cfg["process"]["args"] =
        serde_json::json!(["/bulkhead", "probe", "--format", "json", "--marker", marker]);
    cfg["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
    let mounts = cfg["mounts"]
        .as_array_mut()
        .ok_or("the runtime's spec has no mounts list")?;
    mounts.extend(extra_mounts.iter().cloned());
    fs::write(
        &cfg_path,
        serde_json::to_vec_pretty(&cfg).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", cfg_path.display()))?;

    let id = format!("bulkhead-probe-{}-{i}", std::process::id());
    let out = Command::new(runtime)
        .arg("--root")
        .arg(&state)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{} run: {e}", runtime.display()));
    // Whatever happened, no container is left behind.
    let _ = Command::new(runtime)
        .arg("--root")
        .arg(&state)
        .args(["delete", "--force", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let out = out?;
    match serde_json::from_slice::<Report>(&out.stdout) {
        Ok(r) if out.status.success() => Ok(r),
        _ => Err(format!(
            "run failed ({}): {}",
            out.status,
            first_line(if out.stderr.is_empty() {
                &out.stdout
            } else {
                &out.stderr
            })
        )),
    }
}

fn first_line(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

/// The columns side by side: one row per probe, the score at the bottom, errors below.
pub fn table(columns: &[Column]) -> String {
    let w = PROBES.iter().map(|p| p.name.len()).max().unwrap_or(5);
    let cw = columns
        .iter()
        .map(|c| c.runtime.len())
        .max()
        .unwrap_or(0)
        .max(9);
    let mut out = format!("{:<w$}", "PROBE");
    for c in columns {
        let _ = write!(out, "  {:<cw$}", c.runtime);
    }
    out.push('\n');
    for p in PROBES {
        let _ = write!(out, "{:<w$}", p.name);
        for c in columns {
            let cell = match &c.report {
                Some(r) => r.get(p.name).map_or("-", |f| f.result.word()),
                None => "error",
            };
            let _ = write!(out, "  {cell:<cw$}");
        }
        out.push('\n');
    }
    let _ = write!(out, "\n{:<w$}", "allowed");
    for c in columns {
        let cell = match &c.report {
            Some(r) => format!("{} of {}", r.allowed, r.allowed + r.blocked),
            None => "-".into(),
        };
        let _ = write!(out, "  {cell:<cw$}");
    }
    out.push('\n');
    for c in columns {
        if let Some(e) = &c.error {
            let _ = writeln!(out, "{}: {e}", c.runtime);
        }
    }
    let allowed_somewhere: Vec<&str> = PROBES
        .iter()
        .filter(|p| {
            columns.iter().any(|c| {
                c.report
                    .as_ref()
                    .and_then(|r| r.get(p.name))
                    .is_some_and(|f| f.result == Outcome::Allowed)
            })
        })
        .map(|p| p.name)
        .collect();
    if !allowed_somewhere.is_empty() {
        let _ = writeln!(
            out,
            "\nallowed by at least one runtime: {}",
            allowed_somewhere.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_interpreter_is_detected() {
        // The test binary is built like the rest of the workspace: dynamic unless crt-static.
        let me = std::env::current_exe().unwrap();
        let dynamic = is_dynamic(&me);
        assert_eq!(dynamic, !cfg!(target_feature = "crt-static"));
        assert!(!is_dynamic(Path::new("/bin/busybox")) || !Path::new(BUSYBOX).exists());
        assert!(!is_dynamic(Path::new("/no/such/file")));
    }

    #[test]
    fn unknown_runtime_is_a_one_line_error() {
        let e = resolve("surely-no-such-runtime", Path::new("/x")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--compare surely-no-such-runtime: not found in PATH"
        );
        assert_eq!(
            resolve("bulkhead", Path::new("/x")).unwrap(),
            PathBuf::from("/x")
        );
    }
}
