//! CRC-32C (Castagnoli), the one checksum of every format in this crate.
//!
//! Backed by `crc-fast`, which picks the fastest kernel the CPU offers at run
//! time (AVX-512 VPCLMULQDQ, PCLMULQDQ fused with SSE4.2 `crc32`, or NEON).
//! Keeping the algorithm behind these two functions lets it change behind a
//! format version bump.

use crc_fast::{CrcAlgorithm, Digest};

/// The CRC-32C of `data`.
#[inline]
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// Continues `crc` (the CRC-32C of earlier bytes) over `data`, so that
/// `crc32c_append(crc32c(a), b) == crc32c(a ++ b)`.
#[inline]
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    // The register holds the complement of a finished CRC (init and xorout
    // are both 0xFFFFFFFF for CRC-32C), so a finished value resumes as !crc.
    let mut digest = Digest::new_with_init_state(CrcAlgorithm::Crc32Iscsi, u64::from(!crc));
    digest.update(data);
    // A CRC-32 result fits in the low 32 bits.
    digest.finalize() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn rfc3720_vectors() {
        // RFC 3720 section B.4: 32 bytes of zeros, ones, incrementing, decrementing.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
        let inc: Vec<u8> = (0u8..32).collect();
        assert_eq!(crc32c(&inc), 0x46DD_794E);
        let dec: Vec<u8> = (0u8..32).rev().collect();
        assert_eq!(crc32c(&dec), 0x113F_DB5C);
    }

    #[test]
    fn append_equals_whole() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + 3) as u8).collect();
        for split in [0, 1, 7, 64, 4096, 99_999, 100_000] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_append(crc32c(a), b), crc32c(&data), "split {split}");
        }
    }
}
