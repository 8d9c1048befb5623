//! A bundle's root filesystem directory as a disk image the guest mounts: an ext4 file made
//! by e2fsprogs' `mkfs.ext4 -d DIR` (a real tool, no filesystem writer of ours), cached
//! under `<cache>/disks/<key>.ext4` where `<key>` hashes the tree's content (paths, types,
//! modes, owners, times, extended attributes, file bytes, link targets). The same image
//! content — e.g. every container of one podman image — builds one disk, once; the guest
//! mounts it read-only under an overlay, so the cached file is never written.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{msg, Context, Result};
use crate::image::hex;

/// Default largest root filesystem (content bytes) turned into a disk.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;
/// The disk cache is trimmed to this many bytes (least recently used first).
const CACHE_LIMIT: u64 = 8 << 30;
const FORMAT: &str = "bulkhead-rootfs-ext4-1";

/// Totals of a tree walk.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Usage {
    /// Bytes of regular files, rounded up to 4 KiB blocks, plus one block per directory.
    pub bytes: u64,
    pub inodes: u64,
}

/// Walk `root` (not following symlinks) and hash what mkfs.ext4 -d copies.
fn scan(root: &Path, max_bytes: u64) -> Result<(String, Usage)> {
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    let mut usage = Usage::default();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let mut names: Vec<_> = fs::read_dir(&path)
            .ctx(|| format!("read {}", path.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .ctx(|| format!("read {}", path.display()))?;
        names.sort();
        // A block per directory; its inode is counted as an entry of its parent (the
        // root's here).
        usage.bytes += 4096;
        usage.inodes += u64::from(rel.as_os_str().is_empty());
        for name in names {
            let rel = rel.join(&name);
            let p = root.join(&rel);
            let m = fs::symlink_metadata(&p).ctx(|| format!("stat {}", p.display()))?;
            let ft = m.file_type();
            h.update(rel.as_os_str().as_encoded_bytes());
            h.update([0]);
            for v in [
                m.mode() as u64,
                m.uid() as u64,
                m.gid() as u64,
                m.mtime() as u64,
                m.rdev(),
                m.len(),
            ] {
                h.update(v.to_le_bytes());
            }
            hash_xattrs(&mut h, &p);
            usage.inodes += 1;
            if ft.is_dir() {
                stack.push(rel);
            } else if ft.is_symlink() {
                let t = fs::read_link(&p).ctx(|| format!("readlink {}", p.display()))?;
                h.update(t.as_os_str().as_encoded_bytes());
            } else if ft.is_file() {
                usage.bytes += m.len().div_ceil(4096) * 4096;
                if usage.bytes > max_bytes {
                    return Err(too_large(root, usage.bytes, max_bytes));
                }
                let mut f = fs::File::open(&p).ctx(|| format!("open {}", p.display()))?;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = f.read(&mut buf).ctx(|| format!("read {}", p.display()))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            } else if !(ft.is_char_device()
                || ft.is_block_device()
                || ft.is_fifo()
                || ft.is_socket())
            {
                return Err(msg(format!("{}: unknown file type", p.display())));
            }
            h.update([0xff]);
        }
    }
    if usage.bytes > max_bytes {
        return Err(too_large(root, usage.bytes, max_bytes));
    }
    Ok((hex(&h.finalize())[..32].to_string(), usage))
}

fn too_large(root: &Path, bytes: u64, max: u64) -> crate::Error {
    msg(format!(
        "root filesystem {} holds more than {} MiB (at least {} MiB), above the VM disk budget: raise it with the annotation run.bulkhead.vm.disk-max=<MiB>",
        root.display(),
        max >> 20,
        bytes.div_ceil(1 << 20)
    ))
}

fn hash_xattrs(h: &mut Sha256, p: &Path) {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(p, &mut names) else {
        return;
    };
    let mut list: Vec<&[u8]> = names[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .collect();
    list.sort();
    for name in list {
        h.update(name);
        let mut val = vec![0u8; 65536];
        if let Ok(cname) = std::ffi::CString::new(name) {
            if let Ok(len) = rustix::fs::lgetxattr(p, cname.as_c_str(), &mut val) {
                h.update(&val[..len]);
            }
        }
    }
}

/// The image size for a tree: content plus inode tables plus room for ext4's metadata.
fn image_size(u: Usage) -> u64 {
    let raw = u.bytes + u.inodes * 256;
    (raw + raw / 4 + (8 << 20)).div_ceil(1 << 20) << 20
}

/// The disk image for `rootfs`, built unless cached.
pub fn rootfs_disk(rootfs: &Path, cache: &Path, max_bytes: u64) -> Result<PathBuf> {
    let (key, usage) = scan(rootfs, max_bytes)?;
    let dir = cache.join("disks");
    let path = dir.join(format!("{key}.ext4"));
    if path.is_file() {
        // Its mtime is its last use, for the trimming below.
        let _ = fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(path);
    }
    fs::create_dir_all(&dir).ctx(|| format!("mkdir {}", dir.display()))?;
    let tmp = dir.join(format!(".tmp-{key}-{}", std::process::id()));
    let mut size = image_size(usage);
    let mut res = mkfs(rootfs, &tmp, size, usage.inodes, &key);
    if res.is_err() {
        // The estimate was short (many small files, deep trees): once more, with room.
        size *= 2;
        res = mkfs(rootfs, &tmp, size, usage.inodes, &key);
    }
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, &path).ctx(|| format!("rename to {}", path.display()))?;
    trim(&dir, &path);
    Ok(path)
}

fn mkfs(rootfs: &Path, out: &Path, size: u64, inodes: u64, key: &str) -> Result<()> {
    let f = fs::File::create(out).ctx(|| format!("create {}", out.display()))?;
    f.set_len(size)
        .ctx(|| format!("size {} to {size} bytes", out.display()))?;
    drop(f);
    // The UUID comes from the key, so one content gives one image.
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &key[..8],
        &key[8..12],
        &key[12..16],
        &key[16..20],
        &key[20..32]
    );
    let o = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-I", "256", "-m", "0"])
        .args(["-O", "^has_journal,^resize_inode"])
        .arg("-N")
        .arg((inodes + 64).to_string())
        .arg("-U")
        .arg(&uuid)
        .arg("-E")
        .arg(format!("hash_seed={uuid}"))
        .arg("-d")
        .arg(rootfs)
        .arg(out)
        .env("E2FSPROGS_FAKE_TIME", "1")
        .output()
        .map_err(|e| {
            msg(format!(
                "run mkfs.ext4: {e} (install Debian's e2fsprogs; scripts/deps.sh does)"
            ))
        })?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        return Err(msg(format!(
            "mkfs.ext4 -d {} failed: {}",
            rootfs.display(),
            err.lines().last().unwrap_or("").trim()
        )));
    }
    Ok(())
}

/// Remove the least recently used disks until the cache fits its limit (never `keep`).
/// A disk in use by a running VM stays readable: the hypervisor holds it open.
fn trim(dir: &Path, keep: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut disks: Vec<(std::time::SystemTime, u64, PathBuf)> = rd
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "ext4"))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, m.blocks() * 512, e.path()))
        })
        .collect();
    let mut total: u64 = disks.iter().map(|d| d.1).sum();
    disks.sort();
    for (_, bytes, p) in disks {
        if total <= CACHE_LIMIT {
            break;
        }
        if p != keep && fs::remove_file(&p).is_ok() {
            total -= bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) {
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(dir.join("etc/hostname"), "one\n").unwrap();
        fs::write(dir.join("bin/tool"), vec![1u8; 10_000]).unwrap();
        std::os::unix::fs::symlink("tool", dir.join("bin/alias")).unwrap();
    }

    #[test]
    fn key_follows_content() {
        let base = std::env::temp_dir().join(format!("bh-disk-scan-{}", std::process::id()));
        let (a, b) = (base.join("a"), base.join("b"));
        tree(&a);
        tree(&b);
        let mtime = fs::FileTimes::new().set_modified(std::time::UNIX_EPOCH);
        for d in [&a, &b] {
            for f in ["etc/hostname", "bin/tool"] {
                fs::File::options()
                    .write(true)
                    .open(d.join(f))
                    .unwrap()
                    .set_times(mtime)
                    .unwrap();
            }
        }
        let (ka, ua) = scan(&a, DEFAULT_MAX_BYTES).unwrap();
        let (kb, ub) = scan(&b, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(ka, kb, "two trees with the same content");
        assert_eq!(ua, ub);
        // 3 directories + 2 file inodes + the symlink; 12 KiB of file blocks + 3 dirs.
        assert_eq!(ua.inodes, 6);
        assert_eq!(ua.bytes, 3 * 4096 + 4096 + 12288);
        fs::write(b.join("etc/hostname"), "two\n").unwrap();
        let (kb2, _) = scan(&b, DEFAULT_MAX_BYTES).unwrap();
        assert_ne!(ka, kb2, "changed content, new key");
        let e = scan(&a, 8192).unwrap_err().to_string();
        assert!(e.contains("run.bulkhead.vm.disk-max"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn disk_is_built_once_and_holds_the_tree() {
        let base = std::env::temp_dir().join(format!("bh-disk-mkfs-{}", std::process::id()));
        let root = base.join("rootfs");
        tree(&root);
        let cache = base.join("cache");
        let d1 = rootfs_disk(&root, &cache, DEFAULT_MAX_BYTES).unwrap();
        let m1 = fs::metadata(&d1).unwrap();
        let d2 = rootfs_disk(&root, &cache, DEFAULT_MAX_BYTES).unwrap();
        assert_eq!(d1, d2);
        assert_eq!(m1.ino(), fs::metadata(&d2).unwrap().ino(), "not rebuilt");
        // debugfs (e2fsprogs) reads the image back without mounting it.
        let o = Command::new("debugfs")
            .args(["-R", "cat /etc/hostname"])
            .arg(&d1)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&o.stdout), "one\n");
        let left: Vec<_> = fs::read_dir(cache.join("disks"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temporary files left: {left:?}");
        fs::remove_dir_all(&base).unwrap();
    }
}
