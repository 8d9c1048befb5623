//! The state file's framing: a fixed header that makes truncation and corruption detectable
//! before anything is parsed, then the bulkhead version that wrote it, then the state (JSON).
//!
//! ```text
//! 0   8  magic "BHVMSTAT"
//! 8   4  format version (u32 LE), FORMAT_VERSION
//! 12  4  CRC-32 (IEEE 802.3) of the body
//! 16  8  body length (u64 LE)
//! 24     body: "bulkhead <version>\n" then the state as one JSON document
//! ```

pub const MAGIC: &[u8; 8] = b"BHVMSTAT";
/// Bumped when the layout of the header or of the state changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 24;

/// This build's version, as the body's first line records it.
pub fn version_line() -> String {
    format!("bulkhead {}", env!("CARGO_PKG_VERSION"))
}

/// CRC-32 (IEEE 802.3, reflected, as zlib and Ethernet compute it), table-driven.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The whole file for a body (version line included).
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&crc32(body).to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of a file, once the header, the length and the checksum agree; the error says
/// which does not.
pub fn unframe(file: &[u8]) -> Result<&[u8], String> {
    if file.len() < HEADER_LEN {
        return Err(if file.starts_with(&MAGIC[..file.len().min(8)]) {
            format!("truncated ({} bytes, shorter than its header)", file.len())
        } else {
            "not a bulkhead VM state file".into()
        });
    }
    if &file[..8] != MAGIC {
        return Err("not a bulkhead VM state file".into());
    }
    let u32_at = |o: usize| u32::from_le_bytes([file[o], file[o + 1], file[o + 2], file[o + 3]]);
    let format = u32_at(8);
    if format != FORMAT_VERSION {
        return Err(format!(
            "state file format {format}, this bulkhead reads format {FORMAT_VERSION}"
        ));
    }
    let crc = u32_at(12);
    let mut len = [0u8; 8];
    len.copy_from_slice(&file[16..24]);
    let len = u64::from_le_bytes(len);
    let have = (file.len() - HEADER_LEN) as u64;
    if have < len {
        return Err(format!(
            "truncated ({have} of {len} bytes of state after the header)"
        ));
    }
    if have > len {
        return Err(format!(
            "corrupted ({} bytes after the end of the state)",
            have - len
        ));
    }
    let body = &file[HEADER_LEN..];
    if crc32(body) != crc {
        return Err("checksum mismatch: the file is corrupted".into());
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        // The standard check value of CRC-32/ISO-HDLC.
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn damage_is_detected() {
        let f = frame(b"bulkhead 0.1.0\n{}");
        assert_eq!(unframe(&f).unwrap(), b"bulkhead 0.1.0\n{}");
        let mut flipped = f.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(unframe(&flipped).unwrap_err().contains("checksum"));
        assert!(unframe(&f[..f.len() - 1])
            .unwrap_err()
            .contains("truncated"));
        assert!(unframe(&f[..10]).unwrap_err().contains("truncated"));
        let mut longer = f.clone();
        longer.push(0);
        assert!(unframe(&longer).unwrap_err().contains("corrupted"));
        let mut other = f.clone();
        other[8] = 2;
        assert!(unframe(&other).unwrap_err().contains("format 2"));
        assert!(unframe(b"#!/bin/sh\necho hello world\n")
            .unwrap_err()
            .contains("not a bulkhead"));
    }
}
