//! Byte layouts of the two file forms, version 1. All integers little-endian.
//!
//! # Unsealed (writable) file
//!
//! Preallocated to its full size at create, then memory-mapped; made under
//! a temporary name and renamed once its header is on disk, so a file under
//! its own name always has a header (`IndexFile::create`).
//!
//! ```text
//! offset  size  field
//! ------  ----  -----------------------------------------------------------
//!      0     8  magic  "\x89TIXU\r\n\x1a"   (format, then line-ending traps)
//!      8     2  format version (1)
//!     10     2  header length (64)
//!     12     4  slots: size of the slot table
//!     16     4  capacity: usable entries (every one of them, none reserved)
//!     20     8  begin_ms: the file's begin time, as given at create
//!     28     4  CRC32C of bytes 0..28 (the static header: never rewritten)
//!     32     4  state: 0 closed cleanly, 1 open for writing, 2 sealed
//!     36     4  count: entries written
//!     40     4  used slots: slots holding at least one entry
//!     44     4  slot table CRC32C when closed or sealed (0 while open)
//!     48     8  end_ms: largest timestamp put (begin_ms while empty)
//!     56     4  CRC32C of bytes 32..56 (the dynamic header)
//!     60     4  reserved, 0
//!     64        slot table: `slots` x u32, 1 + index of the slot's newest
//!               entry, 0 for an empty slot
//!  E = align64(64 + 4 * slots)
//!      E        entries: `capacity` x 40 bytes, in put order
//! ```
//!
//! An unsealed entry (40 bytes):
//!
//! ```text
//!  0  8  key fingerprint (XXH3-64 of the key bytes)
//!  8  8  offset
//! 16  8  timestamp_ms
//! 24  4  queue_id
//! 28  4  size
//! 32  4  previous entry of the same slot: 1 + its index, 0 for none
//! 36  4  CRC32C of (entry index as u32 LE ++ bytes 0..36)
//! ```
//!
//! Crash rules. The dynamic header is only a summary: while the file is open
//! for writing its state is 1, so an `open()` after a crash rebuilds count,
//! used slots, end time and the slot table from the longest prefix of
//! entries whose checksums hold (an entry torn by power loss ends the prefix
//! and is dropped). Mixing the index into each entry's CRC means an entry
//! copied to the wrong place does not verify. An all-zero entry is never
//! valid, so the preallocated zeros past the end are never taken as entries.
//!
//! Every sync writes the entries and slot table to stable storage first and
//! the dynamic header that counts them second, so a dynamic header whose
//! CRC holds is a durable lower bound: its `count` entries were all on disk
//! before it was. A rebuild whose valid prefix is shorter than that count
//! found damage, not a torn tail, and raises `CorruptFileError` (the store
//! then salvages every entry that still verifies) instead of dropping
//! entries a `flush()` made durable. A clean file's slot table is trusted
//! only while its CRC (offset 44) holds; otherwise it is rebuilt.
//!
//! # Sealed file (what is uploaded)
//!
//! ```text
//! offset  size  field
//!      0     8  magic  "\x89TIXS\r\n\x1a"
//!      8     2  format version (1)
//!     10     2  header length (64)
//!     12     4  slots: size of this file's slot table
//!     16     4  count: entries
//!     20     4  used slots
//!     24     8  begin_ms
//!     32     8  end_ms
//!     40     4  block size B (bytes covered by one block CRC)
//!     44     8  min_ms: smallest timestamp put (begin_ms while empty)
//!     52     8  reserved, 0
//!     60     4  CRC32C of bytes 0..60
//!     64        slot table: `slots` x (u32 first entry, u32 entry count)
//!  64 + 8 * slots
//!               entries, 32 bytes each, every slot's entries contiguous and
//!               newest put first
//!  D = data length (header + slot table + entries)
//!      D        block CRCs: ceil(D / B) x u32, CRC32C of each B-byte block
//!               of bytes 0..D (the last block may be short)
//!               trailer, 40 bytes:
//!                 0  8  data length D
//!                 8  4  block size B
//!                12  4  block count
//!                16  4  slots (as in the header)
//!                20  4  count (as in the header)
//!                24  4  CRC32C of bytes 0..D
//!                28  4  CRC32C of the block CRCs and trailer bytes 0..28
//!                32  8  end magic "TIXSEND\n"
//! ```
//!
//! A sealed entry (32 bytes): fingerprint u64, offset u64, timestamp_ms u64,
//! queue_id u32, size u32.
//!
//! The sealed slot table is sized to the entries (about one slot per entry),
//! not to the unsealed file's slot count, so a nearly empty file seals to a
//! few hundred bytes, not 40 MB as in RocketMQ. Queries re-derive the slot
//! from the stored fingerprint, so the answer is the same.
//!
//! Every byte of the object is covered: 0..D by the block CRCs (and by the
//! data CRC), the block CRCs and trailer by the footer CRC, the magic by
//! comparison. The total size is D + 4 * blocks + 40, so truncation and
//! garbage tails show as a size mismatch. A reader holding byte ranges only
//! reads the trailer (which repeats the geometry) and block CRCs once, then the slot's 8 bytes, then the
//! slot's run of entries, verifying each block it touched.

pub const UNSEALED_MAGIC: [u8; 8] = *b"\x89TIXU\r\n\x1a";
pub const SEALED_MAGIC: [u8; 8] = *b"\x89TIXS\r\n\x1a";
pub const SEALED_END_MAGIC: [u8; 8] = *b"TIXSEND\n";
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 64;

// Unsealed header fields.
pub const U_OFF_MAGIC: usize = 0;
pub const U_OFF_VERSION: usize = 8;
pub const U_OFF_HEADER_LEN: usize = 10;
pub const U_OFF_SLOTS: usize = 12;
pub const U_OFF_CAPACITY: usize = 16;
pub const U_OFF_BEGIN: usize = 20;
pub const U_OFF_STATIC_CRC: usize = 28;
pub const U_OFF_STATE: usize = 32;
pub const U_OFF_COUNT: usize = 36;
pub const U_OFF_USED_SLOTS: usize = 40;
pub const U_OFF_SLOTS_CRC: usize = 44;
pub const U_OFF_END: usize = 48;
pub const U_OFF_DYNAMIC_CRC: usize = 56;

pub const STATE_CLOSED: u32 = 0;
pub const STATE_OPEN: u32 = 1;
pub const STATE_SEALED: u32 = 2;

pub const SLOT_LEN: usize = 4;
pub const ENTRY_LEN: usize = 40;
pub const E_OFF_FINGERPRINT: usize = 0;
pub const E_OFF_OFFSET: usize = 8;
pub const E_OFF_TIMESTAMP: usize = 16;
pub const E_OFF_QUEUE: usize = 24;
pub const E_OFF_SIZE: usize = 28;
pub const E_OFF_PREV: usize = 32;
pub const E_OFF_CRC: usize = 36;

/// Largest slot count and capacity: chain links are u32 holding index + 1.
pub const MAX_SLOTS: u32 = u32::MAX - 1;
pub const MAX_CAPACITY: u32 = u32::MAX - 1;

// Sealed header fields.
pub const S_OFF_SLOTS: usize = 12;
pub const S_OFF_COUNT: usize = 16;
pub const S_OFF_USED_SLOTS: usize = 20;
pub const S_OFF_BEGIN: usize = 24;
pub const S_OFF_END: usize = 32;
pub const S_OFF_BLOCK_SIZE: usize = 40;
pub const S_OFF_MIN: usize = 44;
pub const S_OFF_HEADER_CRC: usize = 60;
pub const S_SLOT_LEN: usize = 8;
pub const S_ENTRY_LEN: usize = 32;
pub const TRAILER_LEN: usize = 40;
pub const T_OFF_DATA_LEN: usize = 0;
pub const T_OFF_BLOCK_SIZE: usize = 8;
pub const T_OFF_BLOCK_COUNT: usize = 12;
pub const T_OFF_SLOTS: usize = 16;
pub const T_OFF_COUNT: usize = 20;
pub const T_OFF_DATA_CRC: usize = 24;
pub const T_OFF_FOOTER_CRC: usize = 28;
pub const T_OFF_END_MAGIC: usize = 32;
/// Smallest block size a reader accepts.
pub const MIN_BLOCK_SIZE: u32 = 64;
/// 4 KiB, a page: a query verifies the blocks it reads every time it reads
/// them from a mapped file (about 0.4 µs of CRC each; a file can change
/// under its map), so small blocks keep a sealed query within 5 µs (at
/// 16 KiB it took 6.4). The cost is the footer: 4 bytes a block, 586 KB for
/// a 600 MB object (read once per remote file, and cached). Readers take any
/// block size from the trailer, so files sealed at 16 KiB still open.
pub const DEFAULT_BLOCK_SIZE: u32 = 4 * 1024;

/// Offset of the first unsealed entry for a slot count.
pub fn unsealed_entries_offset(slots: u32) -> u64 {
    let end = HEADER_LEN as u64 + SLOT_LEN as u64 * u64::from(slots);
    end.div_ceil(64) * 64
}

/// Total size of an unsealed file.
pub fn unsealed_file_len(slots: u32, capacity: u32) -> u64 {
    unsealed_entries_offset(slots) + ENTRY_LEN as u64 * u64::from(capacity)
}

/// Reads a little-endian integer at `off`. Callers check bounds first: every
/// use is at a constant offset inside a slice whose length was validated.
macro_rules! le_reader {
    ($name:ident, $ty:ty) => {
        #[inline]
        pub fn $name(bytes: &[u8], off: usize) -> $ty {
            const N: usize = std::mem::size_of::<$ty>();
            let mut raw = [0u8; N];
            raw.copy_from_slice(&bytes[off..off + N]);
            <$ty>::from_le_bytes(raw)
        }
    };
}
le_reader!(read_u16, u16);
le_reader!(read_u32, u32);
le_reader!(read_u64, u64);

#[inline]
pub fn write_u16(bytes: &mut [u8], off: usize, value: u16) {
    bytes[off..off + 2].copy_from_slice(&value.to_le_bytes());
}
#[inline]
pub fn write_u32(bytes: &mut [u8], off: usize, value: u32) {
    bytes[off..off + 4].copy_from_slice(&value.to_le_bytes());
}
#[inline]
pub fn write_u64(bytes: &mut [u8], off: usize, value: u64) {
    bytes[off..off + 8].copy_from_slice(&value.to_le_bytes());
}
