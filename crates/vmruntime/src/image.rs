//! The guest image: a kernel and an initramfs whose only file is `/init`, the static
//! bulkhead binary itself (it runs the agent when started as PID 1 under that name).
//!
//! `bulkhead vm image build` assembles one under `<cache>/images/<key>/` where `<key>`
//! hashes the kernel's and the agent's bytes, so the same inputs always give the same
//! directory (and the same initramfs bytes: cpio `--reproducible`, fixed owner and mtime)
//! and are built once. `<cache>/default` points at the image built last; containers use it
//! unless their config names another (`run.bulkhead.vm.image`).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{msg, Context, Result};

/// The cache every VM artefact lives under.
pub const DEFAULT_CACHE: &str = "/var/cache/bulkhead/vm";
/// Where guest/build-kernel.sh caches its kernels.
pub const KERNEL_CACHE: &str = "/var/cache/bulkhead/kernel";
/// Bumped when the image layout changes (part of every key).
const FORMAT: &str = "bulkhead-guest-image-1";

pub const KERNEL_FILE: &str = "vmlinux";
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
const MANIFEST_FILE: &str = "image.json";

/// What a built image holds, as recorded in its `image.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub kernel_sha256: String,
    pub agent_sha256: String,
    pub agent_version: String,
    /// The kernel configuration found beside the kernel when the image was built.
    #[serde(default)]
    pub kernel_config: Option<String>,
}

/// A built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl GuestImage {
    pub fn kernel(&self) -> PathBuf {
        self.dir.join(KERNEL_FILE)
    }

    pub fn initramfs(&self) -> PathBuf {
        self.dir.join(INITRAMFS_FILE)
    }

    /// Open an image directory, checking it is complete.
    pub fn open(dir: &Path) -> Result<GuestImage> {
        let manifest = dir.join(MANIFEST_FILE);
        let text = fs::read(&manifest).map_err(|e| {
            msg(format!(
                "guest image {}: {e}; build one with `bulkhead vm image build`",
                dir.display()
            ))
        })?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| msg(format!("{}: {e}", dir.join(MANIFEST_FILE).display())))?;
        if manifest.format != FORMAT {
            return Err(msg(format!(
                "guest image {} has format {:?}, this bulkhead reads {FORMAT:?}: rebuild it with `bulkhead vm image build`",
                dir.display(),
                manifest.format
            )));
        }
        let img = GuestImage {
            dir: dir.to_path_buf(),
            manifest,
        };
        for f in [img.kernel(), img.initramfs()] {
            if !f.is_file() {
                return Err(msg(format!(
                    "guest image {}: {} is missing; rebuild it with `bulkhead vm image build`",
                    dir.display(),
                    f.display()
                )));
            }
        }
        Ok(img)
    }

    /// The image named by the config, or the cache's default.
    pub fn resolve(explicit: Option<&Path>, cache: &Path) -> Result<GuestImage> {
        if let Some(d) = explicit {
            return GuestImage::open(d);
        }
        let link = cache.join("default");
        match fs::canonicalize(&link) {
            Ok(d) => GuestImage::open(&d),
            Err(_) => Err(msg(format!(
                "no guest image at {}: build one with `bulkhead vm image build` (needs a kernel from guest/build-kernel.sh and a static bulkhead, see README)",
                link.display()
            ))),
        }
    }

    /// The kernel was built with this option (`CONFIG_X=y`), as far as its recorded
    /// configuration tells.
    pub fn kernel_has(&self, option: &str) -> bool {
        self.manifest
            .kernel_config
            .as_deref()
            .is_some_and(|c| c.lines().any(|l| l == format!("{option}=y")))
    }

    /// The kernel's recorded configuration says it was built without this option (false
    /// when no configuration was recorded).
    pub fn kernel_lacks(&self, option: &str) -> bool {
        self.manifest.kernel_config.is_some() && !self.kernel_has(option)
    }
}

/// Inputs of [`build`].
pub struct BuildOptions {
    pub kernel: PathBuf,
    pub agent: PathBuf,
    pub cache: PathBuf,
}

/// The newest kernel guest/build-kernel.sh left in its cache.
pub fn find_kernel() -> Result<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    if let Ok(rd) = fs::read_dir(KERNEL_CACHE) {
        for e in rd.flatten() {
            let k = e.path().join(KERNEL_FILE);
            if let Ok(t) = fs::metadata(&k).and_then(|m| m.modified()) {
                if best.as_ref().is_none_or(|(bt, _)| t > *bt) {
                    best = Some((t, k));
                }
            }
        }
    }
    best.map(|(_, k)| k).ok_or_else(|| {
        msg(format!(
            "no guest kernel in {KERNEL_CACHE}: build one with guest/build-kernel.sh, or pass --kernel"
        ))
    })
}

/// True when `path` is an ELF executable without a program interpreter (statically
/// linked): the guest has no libc and no dynamic loader.
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let mut f = fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut head = vec![0u8; 64];
    f.read_exact(&mut head)
        .ctx(|| format!("read {}", path.display()))?;
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return Err(msg(format!(
            "{} is not a 64-bit little-endian ELF file",
            path.display()
        )));
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let phoff = u64::from_le_bytes(head[32..40].try_into().expect("8 bytes"));
    let (phentsize, phnum) = (u16_at(54) as u64, u16_at(56) as u64);
    let mut table = vec![0u8; (phentsize * phnum) as usize];
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(phoff))
        .and_then(|_| f.read_exact(&mut table))
        .ctx(|| format!("read the program headers of {}", path.display()))?;
    const PT_INTERP: u32 = 3;
    Ok(!table
        .chunks(phentsize as usize)
        .any(|ph| u32::from_le_bytes(ph[..4].try_into().expect("4 bytes")) == PT_INTERP))
}

/// The agent binary for the guest: `explicit`, or this very binary when it is static.
pub fn agent_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => fs::read_link("/proc/self/exe").ctx(|| "readlink /proc/self/exe".into())?,
    };
    if !is_static_elf(&path)? {
        return Err(msg(format!(
            "{} is dynamically linked, and the guest has no libc: pass --agent with a static bulkhead (scripts/build.sh builds one at target/x86_64-unknown-linux-musl/release/bulkhead)",
            path.display()
        )));
    }
    Ok(path)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .ctx(|| format!("read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Build (or find cached) the image for these inputs; `progress` gets one line per step.
pub fn build(opts: &BuildOptions, progress: &mut dyn FnMut(&str)) -> Result<GuestImage> {
    progress(&format!("kernel {}", opts.kernel.display()));
    let kernel_sha = sha256_file(&opts.kernel)?;
    progress(&format!("agent {}", opts.agent.display()));
    let agent_sha = sha256_file(&opts.agent)?;
    let mut h = Sha256::new();
    for part in [FORMAT, &kernel_sha, &agent_sha] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let key = hex(&h.finalize())[..16].to_string();
    let images = opts.cache.join("images");
    let dir = images.join(&key);
    if let Ok(img) = GuestImage::open(&dir) {
        progress(&format!("cached: {}", dir.display()));
        set_default(&opts.cache, &dir)?;
        return Ok(img);
    }
    fs::create_dir_all(&images).ctx(|| format!("mkdir {}", images.display()))?;
    let tmp = images.join(format!(".tmp-{key}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let res = (|| {
        fs::create_dir(&tmp).ctx(|| format!("mkdir {}", tmp.display()))?;
        progress("copying the kernel");
        fs::copy(&opts.kernel, tmp.join(KERNEL_FILE))
            .ctx(|| format!("copy {}", opts.kernel.display()))?;
        progress("writing the initramfs (/init = the agent)");
        write_initramfs(&opts.agent, &tmp)?;
        let config = opts.kernel.with_file_name("config");
        let manifest = Manifest {
            format: FORMAT.into(),
            kernel_sha256: kernel_sha,
            agent_sha256: agent_sha,
            agent_version: agent_version(&opts.agent),
            kernel_config: fs::read_to_string(config).ok(),
        };
        fs::write(
            tmp.join(MANIFEST_FILE),
            serde_json::to_vec_pretty(&manifest).expect("manifest serialises"),
        )
        .ctx(|| format!("write {}", tmp.join(MANIFEST_FILE).display()))?;
        // Another build of the same inputs may have won the race: theirs is as good.
        if fs::rename(&tmp, &dir).is_err() && GuestImage::open(&dir).is_err() {
            return Err(msg(format!(
                "cannot move {} to {}",
                tmp.display(),
                dir.display()
            )));
        }
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    res?;
    set_default(&opts.cache, &dir)?;
    progress(&format!("built: {}", dir.display()));
    trim(&images, &dir);
    GuestImage::open(&dir)
}

/// How many images the cache keeps (the newest; each is a kernel and an agent, ~30 MB).
const KEEP_IMAGES: usize = 4;

/// Remove all but the [`KEEP_IMAGES`] newest images, never `keep`. A VM booted from a
/// removed image is unaffected: its kernel and initramfs were read at boot.
fn trim(images: &Path, keep: &Path) {
    let Ok(rd) = fs::read_dir(images) else { return };
    let mut all: Vec<(std::time::SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    all.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, p) in all.into_iter().skip(KEEP_IMAGES) {
        if p != keep {
            let _ = fs::remove_dir_all(p);
        }
    }
}

fn agent_version(agent: &Path) -> String {
    Command::new(agent)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Point `<cache>/default` at `dir` (atomically: a new link renamed over the old).
fn set_default(cache: &Path, dir: &Path) -> Result<()> {
    let rel = dir.strip_prefix(cache).unwrap_or(dir);
    let link = cache.join("default");
    let tmp = cache.join(format!(".default-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(rel, &tmp)
        .and_then(|_| fs::rename(&tmp, &link))
        .ctx(|| format!("point {} at {}", link.display(), dir.display()))
}

/// `<dir>/initramfs.cpio`: a newc archive holding `init` (the agent, mode 0755, owner 0,
/// mtime 0), made by GNU cpio with `--reproducible`.
fn write_initramfs(agent: &Path, dir: &Path) -> Result<()> {
    let stage = dir.join("stage");
    fs::create_dir(&stage).ctx(|| format!("mkdir {}", stage.display()))?;
    let init = stage.join("init");
    fs::copy(agent, &init).ctx(|| format!("copy {}", agent.display()))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", init.display()))?;
    let epoch = fs::FileTimes::new().set_modified(std::time::SystemTime::UNIX_EPOCH);
    fs::File::options()
        .write(true)
        .open(&init)
        .and_then(|f| f.set_times(epoch))
        .ctx(|| format!("set the mtime of {}", init.display()))?;
    let out = fs::File::create(dir.join(INITRAMFS_FILE))
        .ctx(|| format!("create {}", dir.join(INITRAMFS_FILE).display()))?;
    let mut child = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "--reproducible", "-R", "0:0"])
        .current_dir(&stage)
        .stdin(std::process::Stdio::piped())
        .stdout(out)
        .spawn()
        .map_err(|e| {
            msg(format!(
                "run cpio: {e} (install Debian's cpio; scripts/deps.sh does)"
            ))
        })?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin
            .write_all(b"init\n")
            .ctx(|| "write the cpio file list".into())?;
    }
    let st = child.wait().ctx(|| "wait for cpio".into())?;
    fs::remove_dir_all(&stage).ctx(|| format!("remove {}", stage.display()))?;
    if !st.success() {
        return Err(msg(format!("cpio failed ({st})")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_and_dynamic_binaries() {
        // The test binary itself is dynamically linked (it names ld-linux).
        let me = fs::read_link("/proc/self/exe").unwrap();
        assert!(!is_static_elf(&me).unwrap());
        let e = agent_binary(Some(&me)).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        // busybox-static has no interpreter.
        if Path::new("/bin/busybox").exists() {
            assert!(is_static_elf(Path::new("/bin/busybox")).unwrap());
        }
        assert!(is_static_elf(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn build_is_cached_and_reproducible() {
        let busybox = Path::new("/bin/busybox");
        assert!(busybox.exists(), "install busybox-static (scripts/deps.sh)");
        let dir = std::env::temp_dir().join(format!("bh-image-{}", std::process::id()));
        let kernel = dir.join("k");
        fs::create_dir_all(&dir).unwrap();
        fs::write(&kernel, b"not really a kernel").unwrap();
        fs::write(dir.join("config"), "CONFIG_9P_FS=y\n").unwrap();
        let opts = |cache: &str| BuildOptions {
            kernel: kernel.clone(),
            agent: busybox.to_path_buf(),
            cache: dir.join(cache),
        };
        let mut lines = Vec::new();
        let a = build(&opts("c1"), &mut |l| lines.push(l.to_string())).unwrap();
        assert!(lines.iter().any(|l| l.starts_with("built: ")), "{lines:?}");
        assert!(a.kernel_has("CONFIG_9P_FS"));
        assert!(!a.kernel_has("CONFIG_EROFS_FS"));
        assert!(a.kernel_lacks("CONFIG_EROFS_FS") && !a.kernel_lacks("CONFIG_9P_FS"));
        let mut again = Vec::new();
        let b = build(&opts("c1"), &mut |l| again.push(l.to_string())).unwrap();
        assert_eq!(a.dir, b.dir);
        assert!(again.iter().any(|l| l.starts_with("cached: ")), "{again:?}");
        // Another cache, same inputs: byte-identical initramfs.
        let c = build(&opts("c2"), &mut |_| {}).unwrap();
        assert_eq!(
            fs::read(a.initramfs()).unwrap(),
            fs::read(c.initramfs()).unwrap()
        );
        let resolved = GuestImage::resolve(None, &dir.join("c1")).unwrap();
        assert_eq!(
            fs::canonicalize(resolved.dir).unwrap(),
            fs::canonicalize(&a.dir).unwrap()
        );
        let e = GuestImage::resolve(None, &dir.join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bulkhead vm image build"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cache_keeps_the_newest_images() {
        let dir = std::env::temp_dir().join(format!("bh-image-trim-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("k");
        fs::write(&kernel, b"kernel").unwrap();
        let mut last = None;
        for i in 0..KEEP_IMAGES + 2 {
            let agent = dir.join(format!("agent-{i}"));
            fs::write(&agent, format!("agent {i}")).unwrap();
            let opts = BuildOptions {
                kernel: kernel.clone(),
                agent,
                cache: dir.join("cache"),
            };
            last = Some(build(&opts, &mut |_| {}).unwrap().dir);
        }
        let left = fs::read_dir(dir.join("cache/images")).unwrap().count();
        assert_eq!(left, KEEP_IMAGES);
        assert!(last.unwrap().is_dir(), "the newest image was removed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
