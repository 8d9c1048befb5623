//! Checks of OCI resource values that are wrong whatever the host, made
//! before anything is written (so a bad value never leaves a half-applied
//! cgroup). Values only the kernel can judge (a cpuset the host lacks...) are
//! left to it; its refusal names the file and the value.

use crate::{ebpf, v1, Error, Result};

/// -1 means "no limit"; any other negative number is an error.
fn limit(field: &str, v: Option<i64>) -> Result<()> {
    match v {
        Some(n) if n < -1 => Err(Error::Invalid(format!(
            "{field}: {n} is negative (-1 means no limit; 0 and above are limits)"
        ))),
        _ => Ok(()),
    }
}

fn weight(field: &str, v: Option<u16>) -> Result<()> {
    match v {
        Some(w) if !(10..=1000).contains(&w) => {
            Err(Error::Invalid(format!("{field}: {w} is outside 10..1000")))
        }
        _ => Ok(()),
    }
}

/// "2MB", "64KB", "1GB": the kernel's hugetlb file-name form.
fn page_size(s: &str) -> bool {
    let Some(num) = s
        .strip_suffix("KB")
        .or_else(|| s.strip_suffix("MB"))
        .or_else(|| s.strip_suffix("GB"))
    else {
        return false;
    };
    !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) && !num.starts_with('0')
}

/// Check every value of `res` that can be judged without the host.
pub fn resources(res: &oci::Resources) -> Result<()> {
    if let Some(m) = &res.memory {
        let f = "linux.resources.memory";
        limit(&format!("{f}.limit"), m.limit)?;
        limit(&format!("{f}.reservation"), m.reservation)?;
        limit(&format!("{f}.swap"), m.swap)?;
        limit(&format!("{f}.kernel"), m.kernel)?;
        limit(&format!("{f}.kernelTCP"), m.kernel_tcp)?;
        if let (Some(l), Some(s)) = (m.limit, m.swap) {
            if l >= 0 && s >= 0 && s < l {
                return Err(Error::Invalid(format!(
                    "{f}.swap: {s} is below the memory limit {l} (swap counts memory+swap)"
                )));
            }
        }
        if let Some(s) = m.swappiness {
            if s > 100 {
                return Err(Error::Invalid(format!("{f}.swappiness: {s} is above 100")));
            }
        }
    }
    if let Some(c) = &res.cpu {
        v1::check_cpu(c)?;
        if let Some(r) = c.realtime_runtime {
            limit("linux.resources.cpu.realtimeRuntime", Some(r))?;
        }
        if let Some(i) = c.idle {
            if i != 0 && i != 1 {
                return Err(Error::Invalid(format!(
                    "linux.resources.cpu.idle: {i} is not 0 or 1"
                )));
            }
        }
        if let (Some(b), Some(q)) = (c.burst, c.quota) {
            if q > 0 && b > q as u64 {
                return Err(Error::Invalid(format!(
                    "linux.resources.cpu.burst: {b} is larger than the quota {q}"
                )));
            }
        }
        for (name, v) in [("cpus", &c.cpus), ("mems", &c.mems)] {
            if let Some(v) = v {
                if !v
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b',' || b == b'-')
                {
                    return Err(Error::Invalid(format!(
                        "linux.resources.cpu.{name}: {v:?} is not a list like \"0-3,6\""
                    )));
                }
            }
        }
    }
    if let Some(p) = &res.pids {
        limit("linux.resources.pids.limit", p.limit)?;
    }
    if let Some(b) = &res.block_io {
        let f = "linux.resources.blockIO";
        weight(&format!("{f}.weight"), b.weight)?;
        weight(&format!("{f}.leafWeight"), b.leaf_weight)?;
        for (i, w) in b.weight_device.iter().enumerate() {
            if w.weight.is_none() && w.leaf_weight.is_none() {
                return Err(Error::Invalid(format!(
                    "{f}.weightDevice[{i}]: needs weight or leafWeight"
                )));
            }
            weight(&format!("{f}.weightDevice[{i}].weight"), w.weight)?;
            weight(&format!("{f}.weightDevice[{i}].leafWeight"), w.leaf_weight)?;
        }
    }
    for (i, h) in res.hugepage_limits.iter().enumerate() {
        if !page_size(&h.page_size) {
            return Err(Error::Invalid(format!(
                "linux.resources.hugepageLimits[{i}].pageSize: {:?} is not a size like \"2MB\" or \"1GB\"",
                h.page_size
            )));
        }
    }
    for (dev, r) in &res.rdma {
        if r.hca_handles.is_none() && r.hca_objects.is_none() {
            return Err(Error::Invalid(format!(
                "linux.resources.rdma.{dev}: needs hcaHandles or hcaObjects"
            )));
        }
    }
    for (i, r) in res.devices.iter().enumerate() {
        ebpf::parse_rule(r, &format!("linux.resources.devices[{i}]"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(res: oci::Resources) -> String {
        resources(&res).unwrap_err().to_string()
    }

    #[test]
    fn negative_and_absurd_values() {
        let mem = |m: oci::Memory| oci::Resources {
            memory: Some(m),
            ..Default::default()
        };
        assert!(err(mem(oci::Memory {
            limit: Some(-5),
            ..Default::default()
        }))
        .contains("linux.resources.memory.limit: -5"));
        assert!(resources(&mem(oci::Memory {
            limit: Some(-1),
            swap: Some(-1),
            ..Default::default()
        }))
        .is_ok());
        assert!(err(mem(oci::Memory {
            limit: Some(100),
            swap: Some(50),
            ..Default::default()
        }))
        .contains("memory.swap"));
        let pids = |l| oci::Resources {
            pids: Some(oci::Pids { limit: Some(l) }),
            ..Default::default()
        };
        assert!(err(pids(-7)).contains("linux.resources.pids.limit: -7"));
        assert!(resources(&pids(-1)).is_ok());
        assert!(resources(&pids(0)).is_ok());
        let cpu = |c: oci::Cpu| oci::Resources {
            cpu: Some(c),
            ..Default::default()
        };
        assert!(err(cpu(oci::Cpu {
            quota: Some(5),
            ..Default::default()
        }))
        .contains("cpu.quota"));
        assert!(err(cpu(oci::Cpu {
            quota: Some(10_000),
            burst: Some(20_000),
            ..Default::default()
        }))
        .contains("cpu.burst"));
        assert!(err(cpu(oci::Cpu {
            cpus: Some("0;rm -rf".into()),
            ..Default::default()
        }))
        .contains("cpu.cpus"));
        assert!(err(cpu(oci::Cpu {
            idle: Some(2),
            ..Default::default()
        }))
        .contains("cpu.idle"));
        let blk = oci::Resources {
            block_io: Some(oci::BlockIo {
                weight: Some(5),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(err(blk).contains("blockIO.weight: 5"));
        let blk = oci::Resources {
            block_io: Some(oci::BlockIo {
                weight_device: vec![oci::WeightDevice {
                    major: 8,
                    minor: 0,
                    weight: None,
                    leaf_weight: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(err(blk).contains("weightDevice[0]: needs weight or leafWeight"));
        let rdma = oci::Resources {
            rdma: [("mlx5_1".to_string(), oci::Rdma::default())].into(),
            ..Default::default()
        };
        assert!(err(rdma).contains("needs hcaHandles or hcaObjects"));
        let huge = oci::Resources {
            hugepage_limits: vec![oci::HugepageLimit {
                page_size: "2M".into(),
                limit: 1,
            }],
            ..Default::default()
        };
        assert!(err(huge).contains("hugepageLimits[0].pageSize"));
        assert!(page_size("64KB") && page_size("1GB") && !page_size("0MB") && !page_size("MB"));
    }
}
