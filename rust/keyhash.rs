//! Key fingerprints and slot choice.
//!
//! A key is identified by its 64-bit XXH3 fingerprint, stored with every
//! entry, so a query returns exactly the key asked for (RocketMQ stores a
//! 32-bit `String.hashCode` and returns every colliding key). The slot comes
//! from the fingerprint's high half by multiply-shift range reduction: never
//! negative, never out of range, no `abs(Integer.MIN_VALUE)` trap.

/// The fingerprint of a key's bytes (UTF-8 for text keys).
#[inline]
pub fn fingerprint(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// The slot in `0..slots` for `fingerprint`. `slots` must be non-zero.
#[inline]
pub fn slot_of(fingerprint: u64, slots: u32) -> u32 {
    let high = fingerprint >> 32;
    // high < 2^32 and slots < 2^32, so the product >> 32 is below slots.
    ((high * u64::from(slots)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_in_range_for_extremes() {
        for slots in [1u32, 2, 5, 5_000_000, u32::MAX] {
            for fp in [0u64, 1, u64::MAX, 0x8000_0000_0000_0000, 0xFFFF_FFFF] {
                assert!(slot_of(fp, slots) < slots);
            }
        }
    }

    #[test]
    fn slots_spread() {
        let slots = 16u32;
        let mut seen = [0u32; 16];
        for i in 0..16_000u32 {
            seen[slot_of(fingerprint(&i.to_le_bytes()), slots) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700 && n < 1300), "{seen:?}");
    }
}
