//! Reading, verifying and importing Apache RocketMQ tiered index files
//! (RIP-65 `IndexStoreFile`), both layouts. Reference: RocketMQ's
//! `tieredstore/index/IndexStoreFile.java`; every integer is big-endian.
//!
//! ```text
//! header (28 B, both layouts)
//!   0  4  magic: 0xBCC50289 while writable, 0xBCC50285 once full or compacted
//!   4  8  begin timestamp (ms)
//!  12  8  end timestamp (ms): largest store time put
//!  20  4  hashSlotCount: slots holding at least one item (not the capacity)
//!  24  4  indexItemCount: last item index used
//!
//! unsealed (local, writable): 28 + S*8 + I*32 bytes
//!   slot s at 28 + 8s: i32 item index of the chain head, 0 = empty
//!                      (only the first 4 of its 8 bytes are used)
//!   item i at 28 + 8S + 32i (item 0 is never used: 0 is the null link)
//!     0 hash  4 topicId  8 queueId  12 offset(i64)  20 size  24 timeDiff(s)  28 next
//!
//! compacted (what RocketMQ uploads): 28 + S*8 + C*28 bytes, C = item count
//!   slot s at 28 + 8s: i32 absolute byte position of its run, i32 byte length
//!                      (an empty slot holds the write cursor and length 0)
//!   runs of 28-byte items (the 32-byte item minus `next`), one run per slot
//!   in slot order, each newest first
//! ```
//!
//! Hashing is Java `String.hashCode` of `topic + "#" + key` over UTF-16 code
//! units, made non-negative with `h < 0 ? -h : h` (so `Integer.MIN_VALUE`
//! stays negative: RocketMQ then fails the put or query; so do we, quietly),
//! slot = `hash % S`. An item's time is `begin + timeDiff * 1000`.
//!
//! Neither the slot capacity S nor (for unsealed files) the item capacity I
//! is in the header. The caller may give them; otherwise a compacted file's S
//! comes from its slot 0, whose run position is always `28 + 8S`, and an
//! unsealed file's from its size: the RocketMQ default (5,000,000 slots,
//! 20,000,000 items) if the size is exactly that, else the one solution with
//! RocketMQ's ratio I = 4S (its defaults and its tests). Any other geometry
//! is ambiguous from the size and must be given.
//!
//! Files are mapped read-only (`mapping::ReadMap`) and every read is a
//! bounds-checked slice; every public operation first checks the file is
//! still as long as the map, so a file cut short between two calls is a
//! `Corrupt` error, not SIGBUS. Verification streams the file once, in two
//! halves on two threads, in cache-sized chunks.

use std::path::Path;

use crate::checksum::crc32c_append;
use crate::error::{Error, Result};
use crate::index::{Batch, IndexFile};
use crate::keyhash::fingerprint;
use crate::mapping::ReadMap;

/// Header length, both layouts.
pub const HEADER_LEN: u64 = 28;
/// `0xCCDDEEFF ^ (1880681586 + 4)`: the file is writable.
pub const BEGIN_MAGIC: u32 = 0xCCDD_EEFF ^ (1_880_681_586 + 4);
/// `0xCCDDEEFF ^ (1880681586 + 8)`: full, or compacted.
pub const END_MAGIC: u32 = 0xCCDD_EEFF ^ (1_880_681_586 + 8);
pub const SLOT_LEN: u64 = 8;
pub const ITEM_LEN: u64 = 32;
pub const COMPACT_ITEM_LEN: u64 = 28;
pub const DEFAULT_SLOTS: u32 = 5_000_000;
pub const DEFAULT_ITEMS: u32 = 20_000_000;
/// RocketMQ follows at most this many links per unsealed-file query.
pub const MAX_QUERY_HOPS: u32 = 512;
/// RocketMQ reads at most this many bytes of a compacted slot run.
pub const MAX_SEGMENT_RUN_BYTES: u64 = COMPACT_ITEM_LEN * 1024;
/// The topic under which imported entries are keyed in our format (see
/// [`import_key`]). RocketMQ topic names match `^[%|a-zA-Z0-9_-]+$`, so a
/// name with ':' never collides with a real topic.
pub const IMPORT_TOPIC: &str = "rocketmq:imported";

const CHUNK_BYTES: usize = 256 << 10;
const MAX_WARNINGS: usize = 20;

/// Java `String.hashCode` over UTF-16 code units.
pub fn java_hash_utf16(units: impl IntoIterator<Item = u16>) -> i32 {
    units
        .into_iter()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// Java `String.hashCode` of a Rust string.
pub fn java_string_hash(s: &str) -> i32 {
    java_hash_utf16(s.encode_utf16())
}

/// RocketMQ's `hashCode(buildKey(topic, key))`: the Java hash of
/// `topic#key`, negated when negative (`Integer.MIN_VALUE` stays negative).
pub fn rocketmq_hash_of(java_hash: i32) -> i32 {
    if java_hash < 0 {
        java_hash.wrapping_neg()
    } else {
        java_hash
    }
}

/// `rocketmq_hash_of(java_string_hash(topic + "#" + key))`.
pub fn key_hash(topic: &str, key: &str) -> i32 {
    let units = topic
        .encode_utf16()
        .chain(std::iter::once(u16::from(b'#')))
        .chain(key.encode_utf16());
    rocketmq_hash_of(java_hash_utf16(units))
}

/// Byte position of slot `slot` (either layout).
pub fn slot_position(slot: u32) -> u64 {
    HEADER_LEN + SLOT_LEN * u64::from(slot)
}

/// Byte position of unsealed item `index` in a file of `max_slots` slots.
pub fn item_position(max_slots: u32, index: u32) -> u64 {
    HEADER_LEN + SLOT_LEN * u64::from(max_slots) + ITEM_LEN * u64::from(index)
}

/// The bytes our store hashes for an imported entry: exactly
/// `tieredindex.layout.index_key(IMPORT_TOPIC, f"{topic_id}#{hash}")`
/// (topic length as u32 LE, topic, key, all UTF-8).
pub fn import_key(topic_id: i32, hash: i32) -> Vec<u8> {
    let key = format!("{topic_id}#{hash}");
    let mut out = Vec::with_capacity(4 + IMPORT_TOPIC.len() + key.len());
    out.extend_from_slice(&(IMPORT_TOPIC.len() as u32).to_le_bytes());
    out.extend_from_slice(IMPORT_TOPIC.as_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// Which of the two layouts a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The local, writable file: 8-byte slots of chain heads, 32-byte items.
    Unsealed,
    /// The uploaded form: (position, length) slots, 28-byte items per slot.
    Compacted,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Unsealed => "unsealed",
            Layout::Compacted => "compacted",
        }
    }

    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "unsealed" => Ok(Layout::Unsealed),
            "compacted" => Ok(Layout::Compacted),
            other => Err(Error::invalid(
                "layout",
                format!("must be 'unsealed' or 'compacted', got {other:?}"),
            )),
        }
    }
}

/// The 28-byte header, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub magic: u32,
    pub begin_ms: i64,
    pub end_ms: i64,
    pub slot_count: i32,
    pub item_count: i32,
}

/// One index item, as stored, with where it was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    pub hash: i32,
    pub topic_id: i32,
    pub queue_id: i32,
    pub offset: i64,
    pub size: i32,
    pub time_diff: i32,
    /// Next item of the chain (unsealed files; 0 in compacted files).
    pub next: i32,
    /// `begin + time_diff * 1000`, as RocketMQ computes it.
    pub timestamp_ms: i64,
    /// Byte position of the item in the file.
    pub position: u64,
}

/// What a full verification found. Hard problems are errors instead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub items: u32,
    pub used_slots: u32,
    /// Smallest and largest item time (`begin_ms` when empty).
    pub min_ms: i64,
    pub max_ms: i64,
    /// Longest chain (unsealed) or run (compacted), in items.
    pub longest_run: u32,
    /// Findings that do not make the file wrong, but matter: items RocketMQ
    /// cannot reach, times outside the header's range. At most 20 kept.
    pub warnings: Vec<String>,
    /// All warnings, including those not kept.
    pub warning_count: u64,
}

impl Report {
    fn warn(&mut self, text: String) {
        self.warning_count += 1;
        if self.warnings.len() < MAX_WARNINGS {
            self.warnings.push(text);
        }
    }
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    pub count: u32,
    pub min_ms: u64,
    pub max_ms: u64,
    /// CRC32C over the imported entries in put order: identifies the
    /// content, so the same file imports under the same name.
    pub content_crc: u32,
}

#[inline]
fn be_i32(b: &[u8], off: usize) -> i32 {
    b.get(off..off + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, i32::from_be_bytes)
}

#[inline]
fn be_i64(b: &[u8], off: usize) -> i64 {
    b.get(off..off + 8)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map_or(0, i64::from_be_bytes)
}

/// Decodes an item of 28 or 32 bytes (`raw.len()` decides).
#[inline]
fn decode_item(raw: &[u8], begin_ms: i64, position: u64) -> Item {
    let time_diff = be_i32(raw, 24);
    Item {
        hash: be_i32(raw, 0),
        topic_id: be_i32(raw, 4),
        queue_id: be_i32(raw, 8),
        offset: be_i64(raw, 12),
        size: be_i32(raw, 20),
        time_diff,
        next: if raw.len() >= 32 { be_i32(raw, 28) } else { 0 },
        timestamp_ms: begin_ms.wrapping_add(i64::from(time_diff) * 1000),
        position,
    }
}

/// `x % d` for a fixed `d`, by Lemire's multiply-shift (no division).
#[derive(Clone, Copy)]
struct FastMod {
    m: u64,
    d: u32,
}

impl FastMod {
    fn new(d: u32) -> Self {
        let d = d.max(1);
        Self {
            m: (u64::MAX / u64::from(d)).wrapping_add(1),
            d,
        }
    }

    #[inline]
    fn rem(self, x: u32) -> u32 {
        if self.d == 1 {
            return 0;
        }
        let low = self.m.wrapping_mul(u64::from(x));
        ((u128::from(low) * u128::from(self.d)) >> 64) as u32
    }
}

enum Source {
    Map(ReadMap),
    Bytes(Vec<u8>),
}

impl Source {
    fn bytes(&self) -> &[u8] {
        match self {
            Source::Map(m) => m.bytes(),
            Source::Bytes(b) => b,
        }
    }

    /// Fails if a mapped file was cut short since it was mapped: called
    /// before every operation, so a shrunk file is an error, not SIGBUS.
    fn check_len(&self) -> Result<()> {
        match self {
            Source::Map(m) => m.check_len(),
            Source::Bytes(_) => Ok(()),
        }
    }

    fn read_exact_at(&self, off: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let bytes = self.bytes();
        let start = usize::try_from(off).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// One RocketMQ index file, from disk or from bytes.
pub struct RocketMqFile {
    name: String,
    source: Source,
    len: u64,
    layout: Layout,
    max_slots: u32,
    /// Unsealed: item capacity including the unused item 0. Compacted: the
    /// item count the size describes.
    max_items: u32,
    header: Header,
}

/// Geometry hints from the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hints {
    pub layout: Option<Layout>,
    pub max_slots: Option<u32>,
    pub max_items: Option<u32>,
}

impl RocketMqFile {
    pub fn open_path(path: &Path, hints: Hints) -> Result<Self> {
        let map = ReadMap::open(path)?;
        let len = map.bytes().len() as u64;
        Self::new(path.display().to_string(), Source::Map(map), len, hints)
    }

    pub fn from_bytes(name: String, bytes: Vec<u8>, hints: Hints) -> Result<Self> {
        let len = bytes.len() as u64;
        Self::new(name, Source::Bytes(bytes), len, hints)
    }

    fn corrupt(&self, what: impl Into<String>) -> Error {
        Error::corrupt(&self.name, what)
    }

    /// Reads `buf.len()` bytes at `off`; a short file is corruption.
    fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        read_source(&self.source, &self.name, off, buf)
    }

    fn new(name: String, source: Source, len: u64, hints: Hints) -> Result<Self> {
        if let Some(0) = hints.max_slots {
            return Err(Error::invalid("max_slots", "must be at least 1"));
        }
        if let Some(0) = hints.max_items {
            return Err(Error::invalid("max_items", "must be at least 1"));
        }
        if len < HEADER_LEN {
            return Err(Error::corrupt(
                &name,
                format!("file is {len} bytes, shorter than the 28-byte header"),
            ));
        }
        if len > i32::MAX as u64 {
            return Err(Error::corrupt(
                &name,
                format!(
                    "file is {len} bytes: RocketMQ addresses index files with 32-bit positions"
                ),
            ));
        }
        let mut raw = [0u8; HEADER_LEN as usize];
        read_source(&source, &name, 0, &mut raw)?;
        let header = Header {
            magic: be_i32(&raw, 0) as u32,
            begin_ms: be_i64(&raw, 4),
            end_ms: be_i64(&raw, 12),
            slot_count: be_i32(&raw, 20),
            item_count: be_i32(&raw, 24),
        };
        if header.magic != BEGIN_MAGIC && header.magic != END_MAGIC {
            return Err(Error::corrupt(
                &name,
                format!(
                    "byte 0: bad magic 0x{:08X} (expected 0x{BEGIN_MAGIC:08X} or 0x{END_MAGIC:08X}): \
                     not a RocketMQ tiered index file",
                    header.magic
                ),
            ));
        }
        if header.item_count < 0 {
            return Err(Error::corrupt(
                &name,
                format!("byte 24: negative item count {}", header.item_count),
            ));
        }
        if header.slot_count < 0 {
            return Err(Error::corrupt(
                &name,
                format!("byte 20: negative slot count {}", header.slot_count),
            ));
        }
        let slot0 = if len >= HEADER_LEN + SLOT_LEN {
            let mut b = [0u8; 8];
            read_source(&source, &name, HEADER_LEN, &mut b)?;
            Some((be_i32(&b, 0), be_i32(&b, 4)))
        } else {
            None
        };
        let layout = match hints.layout {
            Some(l) => l,
            None => detect_layout(&header, slot0, len),
        };
        let (max_slots, max_items) = match layout {
            Layout::Compacted => compacted_geometry(&name, &header, slot0, len, hints)?,
            Layout::Unsealed => unsealed_geometry(&name, &header, len, hints)?,
        };
        let f = Self {
            name,
            source,
            len,
            layout,
            max_slots,
            max_items,
            header,
        };
        f.check_header()?;
        Ok(f)
    }

    /// Header checks that need no scan.
    fn check_header(&self) -> Result<()> {
        let h = &self.header;
        if h.slot_count as u64 > u64::from(self.max_slots) {
            return Err(self.corrupt(format!(
                "byte 20: {} used slots, more than the {} slots",
                h.slot_count, self.max_slots
            )));
        }
        match self.layout {
            Layout::Compacted => {
                if h.magic != END_MAGIC {
                    return Err(self.corrupt(format!(
                        "byte 0: a compacted file carries the end magic 0x{END_MAGIC:08X}, found 0x{:08X}",
                        h.magic
                    )));
                }
            }
            Layout::Unsealed => {
                let full = h.item_count as u64 + 1 == u64::from(self.max_items);
                if h.item_count as u64 >= u64::from(self.max_items) {
                    return Err(self.corrupt(format!(
                        "byte 24: item count {} does not fit {} items (item 0 is never used)",
                        h.item_count, self.max_items
                    )));
                }
                if (h.magic == END_MAGIC) != full {
                    return Err(self.corrupt(format!(
                        "byte 0: magic 0x{:08X} but the file holds {} of {} items \
                         (RocketMQ writes the end magic exactly when item {} is put)",
                        h.magic,
                        h.item_count,
                        self.max_items - 1,
                        self.max_items - 1
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn layout(&self) -> Layout {
        self.layout
    }
    pub fn header(&self) -> Header {
        self.header
    }
    pub fn max_slots(&self) -> u32 {
        self.max_slots
    }
    pub fn max_items(&self) -> u32 {
        self.max_items
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.header.item_count == 0
    }

    fn items_offset(&self) -> u64 {
        HEADER_LEN + SLOT_LEN * u64::from(self.max_slots)
    }

    /// RocketMQ's query of one file for `hash` (already made non-negative):
    /// items of that hash with `begin_ms <= time <= end_ms`, newest first,
    /// at most `max_count`, only of `topic_id` if given. Unsealed files
    /// follow at most 512 links and compacted files read at most 1024 items
    /// of a slot, as RocketMQ does. A pointer out of the file is an error
    /// (RocketMQ would read zeros or throw).
    pub fn query_hash(
        &self,
        hash: i32,
        begin_ms: i64,
        end_ms: i64,
        max_count: usize,
        topic_id: Option<i32>,
    ) -> Result<Vec<Item>> {
        if begin_ms > end_ms {
            return Err(Error::invalid(
                "begin_ms",
                format!("begin_ms ({begin_ms}) is after end_ms ({end_ms})"),
            ));
        }
        if max_count < 1 {
            return Err(Error::invalid("max_count", "max_count must be at least 1"));
        }
        self.source.check_len()?;
        if hash < 0 {
            // Integer.MIN_VALUE: RocketMQ computes a negative slot and fails.
            return Ok(Vec::new());
        }
        let slot = hash as u32 % self.max_slots;
        let wanted = |it: &Item| {
            it.hash == hash
                && begin_ms <= it.timestamp_ms
                && it.timestamp_ms <= end_ms
                && topic_id.is_none_or(|t| t == it.topic_id)
        };
        let mut out = Vec::new();
        let mut rec = [0u8; 8];
        self.read_at(slot_position(slot), &mut rec)?;
        match self.layout {
            Layout::Unsealed => {
                let count = self.header.item_count;
                let mut idx = be_i32(&rec, 0).max(0);
                let mut left = MAX_QUERY_HOPS;
                let mut raw = [0u8; ITEM_LEN as usize];
                while left > 0 && idx > 0 && idx <= count {
                    let at = item_position(self.max_slots, idx as u32);
                    self.read_at(at, &mut raw)?;
                    let it = decode_item(&raw, self.header.begin_ms, at);
                    if wanted(&it) {
                        out.push(it);
                        if out.len() >= max_count {
                            break;
                        }
                    }
                    idx = it.next;
                    left -= 1;
                }
            }
            Layout::Compacted => {
                let pos = be_i32(&rec, 0);
                let len = i64::from(be_i32(&rec, 4)).min(MAX_SEGMENT_RUN_BYTES as i64);
                if pos <= 0 || len <= 0 {
                    return Ok(out);
                }
                let (pos, len) = (pos as u64, len as u64);
                let rec_at = slot_position(slot);
                if !len.is_multiple_of(COMPACT_ITEM_LEN)
                    || pos < self.items_offset()
                    || pos + len > self.len
                {
                    return Err(self.corrupt(format!(
                        "byte {rec_at}: slot {slot} points to bytes {pos}..{} outside the items \
                         ({}..{}) or not whole items",
                        pos + len,
                        self.items_offset(),
                        self.len
                    )));
                }
                let mut run = vec![0u8; len as usize];
                self.read_at(pos, &mut run)?;
                for (i, raw) in run.chunks_exact(COMPACT_ITEM_LEN as usize).enumerate() {
                    let it =
                        decode_item(raw, self.header.begin_ms, pos + i as u64 * COMPACT_ITEM_LEN);
                    if wanted(&it) {
                        out.push(it);
                        if out.len() >= max_count {
                            break;
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// [`query_hash`](Self::query_hash) for RocketMQ's key `topic#key`.
    pub fn query(
        &self,
        topic: &str,
        key: &str,
        begin_ms: i64,
        end_ms: i64,
        max_count: usize,
        topic_id: Option<i32>,
    ) -> Result<Vec<Item>> {
        self.query_hash(key_hash(topic, key), begin_ms, end_ms, max_count, topic_id)
    }

    /// Streams `start..end` in chunks of whole records of `rec` bytes
    /// (`rec` divides `end - start`), calling `f(offset, chunk)` in order.
    /// Files are read ahead by a helper thread into recycled buffers.
    fn stream(
        &self,
        start: u64,
        end: u64,
        rec: u64,
        mut f: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let chunk = (CHUNK_BYTES as u64 / rec).max(1) * rec;
        let bytes = self.source.bytes();
        let mut off = start;
        while off < end {
            let n = chunk.min(end - off);
            let part = bytes
                .get(off as usize..(off + n) as usize)
                .ok_or_else(|| self.corrupt(format!("file ends before byte {}", off + n)))?;
            f(off, part)?;
            off += n;
        }
        Ok(())
    }

    /// Structural verification, since RocketMQ files have no checksums:
    /// magic, sizes, header counts against the slots and chains, every
    /// pointer in bounds, no cycles, every item reachable exactly once from
    /// the slot its hash selects, no impossible values. The first hard
    /// problem is an error naming the byte; softer findings are warnings.
    pub fn verify(&self) -> Result<Report> {
        self.source.check_len()?;
        match self.layout {
            Layout::Compacted => self.verify_compacted(),
            Layout::Unsealed => self.verify_unsealed(),
        }
    }

    /// Checks one item's values (not its links).
    fn check_item(&self, it: &Item, report: &mut Report) -> Result<()> {
        let at = it.position;
        if it.hash < 0 {
            return Err(self.corrupt(format!(
                "item at byte {at}: negative hash {} (RocketMQ cannot place it in a slot)",
                it.hash
            )));
        }
        if it.queue_id < 0 || it.size < 0 || it.offset < 0 {
            return Err(self.corrupt(format!(
                "item at byte {at}: impossible values (queueId {}, offset {}, size {})",
                it.queue_id, it.offset, it.size
            )));
        }
        let Some(ms) = self
            .header
            .begin_ms
            .checked_add(i64::from(it.time_diff) * 1000)
        else {
            return Err(self.corrupt(format!(
                "item at byte {at}: time begin + {} s overflows",
                it.time_diff
            )));
        };
        if report.items == 0 {
            report.min_ms = ms;
            report.max_ms = ms;
        } else {
            report.min_ms = report.min_ms.min(ms);
            report.max_ms = report.max_ms.max(ms);
        }
        // timeDiff is truncated to whole seconds, hence the 999 ms of slack.
        if ms > self.header.end_ms.saturating_add(999) {
            report.warn(format!(
                "item at byte {at}: time {ms} is after the header's end time {} \
                 (RocketMQ's recovery rewrites the end time from the begin time, #10656)",
                self.header.end_ms
            ));
        }
        report.items += 1;
        Ok(())
    }

    fn verify_compacted(&self) -> Result<Report> {
        let s = self.max_slots;
        let count = self.header.item_count as u32;
        let items_at = self.items_offset();
        let expected = items_at + COMPACT_ITEM_LEN * u64::from(count);
        if self.len != expected {
            return Err(self.corrupt(format!(
                "file is {} bytes, but {s} slots and {count} items make {expected}: {}",
                self.len,
                if self.len < expected {
                    "partial (cut short)"
                } else {
                    "extended"
                }
            )));
        }
        let mut report = Report {
            min_ms: self.header.begin_ms,
            max_ms: self.header.begin_ms,
            ..Report::default()
        };
        // Pass 1, the slot table: runs must tile the items in slot order
        // (an empty slot holds the write cursor). `first[s]` is the index of
        // slot s's first item; first[S] = count. Two halves on two threads:
        // the second starts at the position its first slot records, and the
        // first half must end exactly there.
        let mut first = vec![0u32; s as usize + 1];
        let mid = if s >= (1 << 20) { s / 2 } else { s };
        let mid_cursor = if mid < s {
            let mut rec = [0u8; 8];
            self.read_at(slot_position(mid), &mut rec)?;
            let pos = be_i32(&rec, 0);
            if pos < items_at as i32 || pos as u64 > expected {
                return Err(self.corrupt(format!(
                    "slot {mid} at byte {}: run position {pos} is outside the items \
                     (bytes {items_at}..{expected})",
                    slot_position(mid)
                )));
            }
            pos as u64
        } else {
            expected
        };
        let (low, high) = first.split_at_mut(mid as usize);
        let passes = std::thread::scope(|scope| {
            let other = (mid < s)
                .then(|| scope.spawn(|| self.tile_slots(mid, s, mid_cursor, expected, high)));
            let mine = self.tile_slots(0, mid, items_at, expected, low);
            let theirs = other.map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (mine, theirs)
        });
        let low_pass = passes.0?;
        let mut cursor = low_pass.end;
        let mut runs = vec![low_pass];
        if let Some(high_pass) = passes.1 {
            if low_pass.end != mid_cursor {
                return Err(self.corrupt(format!(
                    "slot {mid} at byte {}: run position {mid_cursor}, expected {} \
                     (runs tile the items in slot order)",
                    slot_position(mid),
                    low_pass.end
                )));
            }
            let high_pass = high_pass?;
            cursor = high_pass.end;
            runs.push(high_pass);
        }
        if cursor != expected {
            return Err(self.corrupt(format!(
                "the slot runs end at byte {cursor}, the items at byte {expected}: \
                 {} items belong to no slot",
                (expected - cursor) / COMPACT_ITEM_LEN
            )));
        }
        if let Some(last) = first.last_mut() {
            *last = count;
        }
        for pass in &runs {
            report.used_slots += pass.used;
            report.longest_run = report.longest_run.max(pass.longest);
            if let Some((slot, n)) = pass.first_long {
                report.warn(format!(
                    "{} slot(s) hold more than 1024 items, the first slot {slot} at byte {} with {n}; \
                     RocketMQ reads only the first 1024 items of a slot, so older items of their \
                     keys are unreachable",
                    pass.long_runs,
                    slot_position(slot)
                ));
                report.warning_count += pass.long_runs - 1;
            }
        }
        self.check_used_slots(&report)?;
        // Pass 2, the items: each must lie in the run of the slot its hash
        // selects, with possible values. Two halves on two threads; each
        // chunk is scanned branch-free and explained only if it fails.
        let fast = FastMod::new(s);
        let late_after = self
            .header
            .end_ms
            .saturating_add(999)
            .saturating_sub(self.header.begin_ms);
        let per_chunk = (CHUNK_BYTES as u64 / COMPACT_ITEM_LEN) as u32;
        let halves = if count >= 4 * per_chunk { 2 } else { 1 };
        let split = (count / halves).div_ceil(per_chunk) * per_chunk;
        let ranges = [(0, split.min(count)), (split.min(count), count)];
        let first = &first;
        let scan_range = |(k0, k1): (u32, u32)| -> Result<Scan> {
            let mut total = Scan::empty();
            let start = items_at + COMPACT_ITEM_LEN * u64::from(k0);
            let end = items_at + COMPACT_ITEM_LEN * u64::from(k1);
            self.stream(start, end, COMPACT_ITEM_LEN, |off, chunk| {
                let k = ((off - items_at) / COMPACT_ITEM_LEN) as u32;
                let scan = scan_compacted(chunk, k, first, fast, late_after);
                if scan.bad {
                    return Err(self.explain_compacted(chunk, off, k, first, fast));
                }
                if scan.late > 0 && total.late_at.is_none() {
                    total.late_at = late_position(chunk, off, late_after);
                }
                total.merge(&scan);
                Ok(())
            })?;
            Ok(total)
        };
        let scans: Vec<Result<Scan>> = if halves == 2 {
            std::thread::scope(|scope| {
                let other = scope.spawn(|| scan_range(ranges[1]));
                let mine = scan_range(ranges[0]);
                let theirs = other
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                vec![mine, theirs]
            })
        } else {
            vec![scan_range((0, count))]
        };
        let mut total = Scan::empty();
        for scan in scans {
            let scan = scan?;
            if total.late_at.is_none() {
                total.late_at = scan.late_at;
            }
            total.merge(&scan);
        }
        if count > 0 {
            let ms = |d: i32| {
                self.header
                    .begin_ms
                    .checked_add(i64::from(d) * 1000)
                    .ok_or_else(|| self.corrupt(format!("byte 4: begin time + {d} s overflows")))
            };
            report.min_ms = ms(total.min_diff)?;
            report.max_ms = ms(total.max_diff)?;
        }
        report.items = count;
        if let Some(at) = total.late_at {
            report.warning_count += total.late - 1;
            report.warn(format!(
                "{} item(s) have a time after the header's end time {}, the first at byte {at} \
                 (RocketMQ's recovery rewrites the end time from the begin time, #10656)",
                total.late, self.header.end_ms
            ));
        }
        Ok(report)
    }

    /// Checks slots `s0..s1` tile the items from byte `cursor` on, filling
    /// `first` (their first item indexes).
    fn tile_slots(
        &self,
        s0: u32,
        s1: u32,
        cursor: u64,
        expected: u64,
        first: &mut [u32],
    ) -> Result<SlotPass> {
        let items_at = self.items_offset();
        let mut pass = SlotPass {
            end: cursor,
            used: 0,
            longest: 0,
            long_runs: 0,
            first_long: None,
        };
        let mut out = first.iter_mut();
        self.stream(slot_position(s0), slot_position(s1), SLOT_LEN, |off, chunk| {
            for (i, rec) in chunk.chunks_exact(SLOT_LEN as usize).enumerate() {
                let (pos, len) = match <&[u8; 8]>::try_from(rec) {
                    Ok(r) => (
                        i32::from_be_bytes([r[0], r[1], r[2], r[3]]),
                        i32::from_be_bytes([r[4], r[5], r[6], r[7]]),
                    ),
                    Err(_) => (-1, -1),
                };
                let cursor = pass.end;
                if i64::from(pos) != cursor as i64 || len < 0 || cursor + len as u64 > expected || len % 28 != 0 {
                    let rec_at = off + i as u64 * SLOT_LEN;
                    let slot = ((rec_at - HEADER_LEN) / SLOT_LEN) as u32;
                    return Err(if i64::from(pos) != cursor as i64 {
                        self.corrupt(format!(
                            "slot {slot} at byte {rec_at}: run position {pos}, expected {cursor} \
                             (runs tile the items in slot order)"
                        ))
                    } else {
                        self.corrupt(format!(
                            "slot {slot} at byte {rec_at}: run of {len} bytes at {pos} is not whole \
                             items inside the items (bytes {items_at}..{expected})"
                        ))
                    });
                }
                if let Some(f) = out.next() {
                    *f = ((cursor - items_at) / COMPACT_ITEM_LEN) as u32;
                }
                pass.end = cursor + len as u64;
                if len > 0 {
                    let n = len as u32 / COMPACT_ITEM_LEN as u32;
                    pass.used += 1;
                    pass.longest = pass.longest.max(n);
                    if len as u64 > MAX_SEGMENT_RUN_BYTES {
                        pass.long_runs += 1;
                        if pass.first_long.is_none() {
                            let slot = ((off + i as u64 * SLOT_LEN - HEADER_LEN) / SLOT_LEN) as u32;
                            pass.first_long = Some((slot, n));
                        }
                    }
                }
            }
            Ok(())
        })?;
        Ok(pass)
    }

    /// The first problem in a chunk that [`scan_compacted`] flagged.
    fn explain_compacted(
        &self,
        chunk: &[u8],
        off: u64,
        k0: u32,
        first: &[u32],
        fast: FastMod,
    ) -> Error {
        let mut scratch = Report::default();
        for (i, raw) in chunk.chunks_exact(COMPACT_ITEM_LEN as usize).enumerate() {
            let at = off + i as u64 * COMPACT_ITEM_LEN;
            let k = k0 + i as u32;
            let it = decode_item(raw, self.header.begin_ms, at);
            if let Err(e) = self.check_item(&it, &mut scratch) {
                return e;
            }
            let slot = fast.rem(it.hash as u32);
            let (s0, s1) = (
                first.get(slot as usize).copied().unwrap_or(0),
                first.get(slot as usize + 1).copied().unwrap_or(0),
            );
            if !(s0..s1).contains(&k) {
                let owner = first.partition_point(|&f| f <= k).saturating_sub(1);
                return self.corrupt(format!(
                    "item at byte {at}: hash {} belongs to slot {slot}, found in the run of slot {owner}",
                    it.hash
                ));
            }
        }
        self.corrupt(format!(
            "bytes {off}..{}: a bad item",
            off + chunk.len() as u64
        ))
    }

    fn check_used_slots(&self, report: &Report) -> Result<()> {
        if report.used_slots as i64 != i64::from(self.header.slot_count) {
            return Err(self.corrupt(format!(
                "byte 20: header counts {} used slots, the slot table has {}",
                self.header.slot_count, report.used_slots
            )));
        }
        Ok(())
    }

    fn verify_unsealed(&self) -> Result<Report> {
        let s = self.max_slots;
        let count = self.header.item_count as u32;
        let expected = self.items_offset() + ITEM_LEN * u64::from(self.max_items);
        if self.len != expected {
            return Err(self.corrupt(format!(
                "file is {} bytes, but {s} slots and {} items make {expected}: {}",
                self.len,
                self.max_items,
                if self.len < expected {
                    "cut short"
                } else {
                    "extended"
                }
            )));
        }
        let mut report = Report {
            min_ms: self.header.begin_ms,
            max_ms: self.header.begin_ms,
            ..Report::default()
        };
        let fast = FastMod::new(s);
        // slot_of[i]: the slot of item i's hash; referenced: a bit per item
        // set by the one slot or item that links to it.
        let n = count as usize + 1;
        let mut slot_of = vec![0u32; n];
        let mut referenced = vec![0u64; n.div_ceil(64)];
        let mut chain_len = vec![0u32; s as usize];
        let mut mark = |idx: u32| -> bool {
            let (w, b) = ((idx / 64) as usize, 1u64 << (idx % 64));
            match referenced.get_mut(w) {
                Some(word) if *word & b == 0 => {
                    *word |= b;
                    true
                }
                _ => false,
            }
        };
        let first = item_position(s, 1);
        let last = item_position(s, count + 1);
        self.stream(first, last, ITEM_LEN, |off, chunk| {
            for (i, raw) in chunk.chunks_exact(ITEM_LEN as usize).enumerate() {
                let at = off + i as u64 * ITEM_LEN;
                let idx = ((at - first) / ITEM_LEN) as u32 + 1;
                let it = decode_item(raw, self.header.begin_ms, at);
                self.check_item(&it, &mut report)?;
                let slot = fast.rem(it.hash as u32);
                if let Some(x) = slot_of.get_mut(idx as usize) {
                    *x = slot;
                }
                if let Some(c) = chain_len.get_mut(slot as usize) {
                    *c += 1;
                }
                let next = it.next;
                if next < 0 || next as u32 >= idx {
                    return Err(self.corrupt(format!(
                        "item {idx} at byte {at}: link to item {next} does not point to an earlier \
                         item (a cycle or a wild pointer)"
                    )));
                }
                if next > 0 {
                    let next = next as u32;
                    let their = slot_of.get(next as usize).copied().unwrap_or(u32::MAX);
                    if their != slot {
                        return Err(self.corrupt(format!(
                            "item {idx} at byte {at}: links to item {next} of slot {their}, but \
                             it is in slot {slot}"
                        )));
                    }
                    if !mark(next) {
                        return Err(self.corrupt(format!(
                            "item {idx} at byte {at}: links to item {next}, which another item \
                             already links to (chains merge)"
                        )));
                    }
                }
            }
            Ok(())
        })?;
        // Slot heads, after the items (their slots are known now).
        let mut slots = SeqReader::new(self, HEADER_LEN, self.items_offset(), SLOT_LEN);
        for slot in 0..s {
            let rec_at = slot_position(slot);
            let rec = slots.next()?;
            let (head, unused) = (be_i32(&rec, 0), be_i32(&rec, 4));
            if unused != 0 {
                return Err(self.corrupt(format!(
                    "slot {slot} at byte {}: the unused half holds {unused}, not 0",
                    rec_at + 4
                )));
            }
            if head == 0 {
                continue;
            }
            if head < 0 || head as u32 > count {
                return Err(self.corrupt(format!(
                    "slot {slot} at byte {rec_at}: head item {head} is not one of the {count} items"
                )));
            }
            let head = head as u32;
            let theirs = slot_of.get(head as usize).copied().unwrap_or(u32::MAX);
            if theirs != slot {
                return Err(self.corrupt(format!(
                    "slot {slot} at byte {rec_at}: head item {head} belongs to slot {theirs}"
                )));
            }
            if !mark(head) {
                return Err(self.corrupt(format!(
                    "slot {slot} at byte {rec_at}: head item {head} is also linked from another item"
                )));
            }
            report.used_slots += 1;
        }
        // Every item 1..=count linked exactly once.
        for idx in 1..=count {
            let (w, b) = ((idx / 64) as usize, 1u64 << (idx % 64));
            if referenced.get(w).is_none_or(|word| word & b == 0) {
                return Err(self.corrupt(format!(
                    "item {idx} at byte {}: no slot or item links to it (unreachable)",
                    item_position(s, idx)
                )));
            }
        }
        report.longest_run = chain_len.iter().copied().max().unwrap_or(0);
        if report.longest_run > MAX_QUERY_HOPS {
            let worst = chain_len.iter().filter(|&&c| c > MAX_QUERY_HOPS).count();
            report.warn(format!(
                "{worst} slot(s) chain more than 512 items (longest {}); RocketMQ follows only \
                 512 links, so older items of their keys are unreachable",
                report.longest_run
            ));
        }
        self.check_used_slots(&report)?;
        Ok(report)
    }

    /// Calls `f` with batches of items in put order (oldest first): item
    /// index order for unsealed files; for compacted files each slot's run
    /// backwards (a run is newest first; the order across slots is lost in
    /// compaction, and does not matter: a key's items share one slot).
    fn for_each_in_put_order(&self, mut f: impl FnMut(&[Item]) -> Result<()>) -> Result<()> {
        let begin = self.header.begin_ms;
        let mut batch: Vec<Item> = Vec::with_capacity(1 << 16);
        match self.layout {
            Layout::Unsealed => {
                let first = item_position(self.max_slots, 1);
                let last = item_position(self.max_slots, self.header.item_count as u32 + 1);
                self.stream(first, last, ITEM_LEN, |off, chunk| {
                    batch.clear();
                    batch.extend(
                        chunk
                            .chunks_exact(ITEM_LEN as usize)
                            .enumerate()
                            .map(|(i, raw)| decode_item(raw, begin, off + i as u64 * ITEM_LEN)),
                    );
                    f(&batch)
                })
            }
            Layout::Compacted => {
                let mut slots = SeqReader::new(self, HEADER_LEN, self.items_offset(), SLOT_LEN);
                let mut buf = Vec::new();
                for _ in 0..self.max_slots {
                    let rec = slots.next()?;
                    let (pos, len) = (be_i32(&rec, 0), be_i32(&rec, 4));
                    if len <= 0 || pos <= 0 {
                        continue;
                    }
                    // Backwards, a chunk at a time.
                    let (pos, len) = (pos as u64, len as u64);
                    let mut end = pos + len;
                    while end > pos {
                        let start = end
                            .saturating_sub(
                                CHUNK_BYTES as u64 / COMPACT_ITEM_LEN * COMPACT_ITEM_LEN,
                            )
                            .max(pos);
                        buf.resize((end - start) as usize, 0);
                        self.read_at(start, &mut buf)?;
                        batch.clear();
                        batch.extend(
                            buf.chunks_exact(COMPACT_ITEM_LEN as usize)
                                .enumerate()
                                .rev()
                                .map(|(i, raw)| {
                                    decode_item(raw, begin, start + i as u64 * COMPACT_ITEM_LEN)
                                }),
                        );
                        f(&batch)?;
                        end = start;
                    }
                }
                Ok(())
            }
        }
    }

    /// Verifies this file, then writes its items, in put order, into a new
    /// unsealed index file of ours at `dest` (which must not exist), keyed
    /// by [`import_key`]`(topic_id, hash)`, timestamps `begin + timeDiff *
    /// 1000`. The file is closed cleanly; sealing it adds the checksums.
    /// An empty file imports nothing and creates nothing.
    pub fn import_to(&self, dest: &Path) -> Result<(Report, Option<ImportReport>)> {
        let report = self.verify()?;
        let count = report.items;
        if count == 0 {
            return Ok((report, None));
        }
        if report.min_ms < 0 {
            return Err(self.corrupt(format!(
                "an item's time is {} ms, before 1970: cannot be imported",
                report.min_ms
            )));
        }
        let begin = u64::try_from(self.header.begin_ms.max(0)).unwrap_or(0);
        let out = IndexFile::create(dest, count, count, begin)?;
        let result = (|| {
            let mut crc = 0u32;
            let mut written = 0u32;
            let mut cols = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
            self.for_each_in_put_order(|items| {
                let (fps, queues, offsets, sizes, times) = &mut cols;
                fps.clear();
                queues.clear();
                offsets.clear();
                sizes.clear();
                times.clear();
                for it in items {
                    let fp = fingerprint(&import_key(it.topic_id, it.hash));
                    // verify() checked these are non-negative.
                    let (q, o, sz, t) = (
                        it.queue_id as u32,
                        it.offset as u64,
                        it.size as u32,
                        it.timestamp_ms.max(0) as u64,
                    );
                    let mut rec = [0u8; 32];
                    rec[..8].copy_from_slice(&fp.to_le_bytes());
                    rec[8..16].copy_from_slice(&o.to_le_bytes());
                    rec[16..24].copy_from_slice(&t.to_le_bytes());
                    rec[24..28].copy_from_slice(&q.to_le_bytes());
                    rec[28..].copy_from_slice(&sz.to_le_bytes());
                    crc = crc32c_append(crc, &rec);
                    fps.push(fp);
                    queues.push(q);
                    offsets.push(o);
                    sizes.push(sz);
                    times.push(t);
                }
                let batch = Batch {
                    fingerprints: fps,
                    queue_ids: queues,
                    offsets,
                    sizes,
                    timestamps_ms: times,
                };
                let put = out.put_batch(&batch)?;
                written += put as u32;
                if put != items.len() {
                    return Err(self.corrupt("more items than the header counts"));
                }
                Ok(())
            })?;
            if written != count {
                return Err(
                    self.corrupt(format!("read {written} items, the header counts {count}"))
                );
            }
            out.close()?;
            Ok(ImportReport {
                count,
                min_ms: report.min_ms as u64,
                max_ms: report.max_ms.max(0) as u64,
                content_crc: crc,
            })
        })();
        match result {
            Ok(imported) => Ok((report, Some(imported))),
            Err(e) => {
                let _ = out.close();
                let _ = std::fs::remove_file(dest);
                Err(e)
            }
        }
    }
}

/// What one half of the slot table pass found.
#[derive(Clone, Copy)]
struct SlotPass {
    /// Byte after the last run.
    end: u64,
    used: u32,
    longest: u32,
    long_runs: u64,
    first_long: Option<(u32, u32)>,
}

/// Branch-free summary of a chunk of compacted items.
#[derive(Clone, Copy)]
struct Scan {
    bad: bool,
    late: u64,
    late_at: Option<u64>,
    min_diff: i32,
    max_diff: i32,
}

impl Scan {
    fn empty() -> Self {
        Self {
            bad: false,
            late: 0,
            late_at: None,
            min_diff: i32::MAX,
            max_diff: i32::MIN,
        }
    }

    fn merge(&mut self, other: &Scan) {
        self.bad |= other.bad;
        self.late += other.late;
        self.min_diff = self.min_diff.min(other.min_diff);
        self.max_diff = self.max_diff.max(other.max_diff);
    }
}

/// Scans compacted items `k0..` in `chunk`: flags a negative hash, queue
/// id, offset or size, and an item outside the run of its hash's slot;
/// counts items later than `late_after` ms past the begin time.
#[inline(never)]
fn scan_compacted(chunk: &[u8], k0: u32, first: &[u32], fast: FastMod, late_after: i64) -> Scan {
    #[inline(always)]
    fn word(r: &[u8; 28], at: usize) -> i32 {
        i32::from_be_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]])
    }
    let mut out = Scan::empty();
    let mut bad = false;
    let mut late = 0u64;
    let (mut lo, mut hi) = (i32::MAX, i32::MIN);
    let mut k = k0;
    for raw in chunk.chunks_exact(COMPACT_ITEM_LEN as usize) {
        let Ok(r) = <&[u8; 28]>::try_from(raw) else {
            continue;
        };
        let hash = word(r, 0);
        let signs = hash | word(r, 8) | word(r, 12) | word(r, 20);
        let diff = word(r, 24);
        let slot = fast.rem(hash as u32) as usize;
        let s0 = first.get(slot).copied().unwrap_or(0);
        let s1 = first.get(slot + 1).copied().unwrap_or(0);
        bad |= (signs < 0) | (k.wrapping_sub(s0) >= s1.wrapping_sub(s0));
        late += u64::from(i64::from(diff) * 1000 > late_after);
        lo = lo.min(diff);
        hi = hi.max(diff);
        k = k.wrapping_add(1);
    }
    out.bad = bad;
    out.late = late;
    out.min_diff = lo;
    out.max_diff = hi;
    out
}

/// Byte position of the first item in `chunk` later than `late_after`.
fn late_position(chunk: &[u8], off: u64, late_after: i64) -> Option<u64> {
    chunk
        .chunks_exact(COMPACT_ITEM_LEN as usize)
        .position(|raw| i64::from(be_i32(raw, 24)) * 1000 > late_after)
        .map(|i| off + i as u64 * COMPACT_ITEM_LEN)
}

fn read_source(source: &Source, name: &str, off: u64, buf: &mut [u8]) -> Result<()> {
    source.read_exact_at(off, buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::corrupt(
                name,
                format!(
                    "file ends before byte {} (cut short while open?)",
                    off + buf.len() as u64
                ),
            )
        } else {
            Error::io(name, e)
        }
    })
}

/// Layout from the header and slot 0 when the caller did not say: the
/// begin magic is always unsealed; with the end magic, a compacted file's
/// slot 0 holds the run position `28 + 8S` (past every item index) and the
/// exact size `28 + 8S + 28C`, an unsealed file's slot 0 a head index <= C
/// and a zero unused half.
fn detect_layout(h: &Header, slot0: Option<(i32, i32)>, len: u64) -> Layout {
    if h.magic == BEGIN_MAGIC {
        return Layout::Unsealed;
    }
    let Some((pos, run)) = slot0 else {
        return Layout::Compacted;
    };
    let plausible = pos > HEADER_LEN as i32 && (pos as u64 - HEADER_LEN).is_multiple_of(SLOT_LEN);
    let exact = plausible && pos as u64 + COMPACT_ITEM_LEN * h.item_count as u64 == len;
    let not_a_head = pos > h.item_count || run != 0;
    if exact || (plausible && not_a_head) {
        Layout::Compacted
    } else {
        Layout::Unsealed
    }
}

fn compacted_geometry(
    name: &str,
    h: &Header,
    slot0: Option<(i32, i32)>,
    len: u64,
    hints: Hints,
) -> Result<(u32, u32)> {
    let count = h.item_count as u32;
    if let Some(items) = hints.max_items {
        if items != count {
            return Err(Error::corrupt(
                name,
                format!("byte 24: the header counts {count} items, expected {items}"),
            ));
        }
    }
    let from_slot0 = match slot0 {
        Some((pos, _))
            if pos > HEADER_LEN as i32 && (pos as u64 - HEADER_LEN).is_multiple_of(SLOT_LEN) =>
        {
            Some(((pos as u64 - HEADER_LEN) / SLOT_LEN) as u32)
        }
        _ => None,
    };
    let slots = match (hints.max_slots, from_slot0) {
        (Some(s), Some(t)) if s != t => {
            return Err(Error::corrupt(
                name,
                format!(
                    "byte 28: slot 0's run starts at byte {}, so the file has {t} slots, not {s}",
                    slot_position(t)
                ),
            ))
        }
        (Some(s), _) => s,
        (None, Some(t)) => t,
        (None, None) => {
            return Err(Error::corrupt(
                name,
                format!(
                    "byte 28: slot 0's run position {} is not 28 + 8 * slots, and no max_slots was given",
                    slot0.map_or(0, |s| s.0)
                ),
            ))
        }
    };
    let expected = HEADER_LEN + SLOT_LEN * u64::from(slots);
    if len < expected {
        return Err(Error::corrupt(
            name,
            format!("file is {len} bytes, shorter than its {slots}-slot table ({expected} bytes): partial"),
        ));
    }
    Ok((slots, count))
}

fn unsealed_geometry(name: &str, h: &Header, len: u64, hints: Hints) -> Result<(u32, u32)> {
    let body = len - HEADER_LEN;
    let derive_items = |s: u32| -> Option<u32> {
        let rest = body.checked_sub(SLOT_LEN * u64::from(s))?;
        (rest.is_multiple_of(ITEM_LEN) && rest > 0)
            .then(|| u32::try_from(rest / ITEM_LEN).ok())
            .flatten()
    };
    let derive_slots = |i: u32| -> Option<u32> {
        let rest = body.checked_sub(ITEM_LEN * u64::from(i))?;
        (rest.is_multiple_of(SLOT_LEN) && rest > 0)
            .then(|| u32::try_from(rest / SLOT_LEN).ok())
            .flatten()
    };
    let size_error = |s: String| {
        Error::corrupt(
            name,
            format!("file is {len} bytes, which does not fit {s} (cut short, extended, or another geometry)"),
        )
    };
    let geometry = match (hints.max_slots, hints.max_items) {
        (Some(s), Some(i)) => {
            if HEADER_LEN + SLOT_LEN * u64::from(s) + ITEM_LEN * u64::from(i) != len {
                return Err(size_error(format!("{s} slots and {i} items")));
            }
            (s, i)
        }
        (Some(s), None) => (
            s,
            derive_items(s).ok_or_else(|| size_error(format!("{s} slots")))?,
        ),
        (None, Some(i)) => (
            derive_slots(i).ok_or_else(|| size_error(format!("{i} items")))?,
            i,
        ),
        (None, None) => {
            let default_len = HEADER_LEN
                + SLOT_LEN * u64::from(DEFAULT_SLOTS)
                + ITEM_LEN * u64::from(DEFAULT_ITEMS);
            if len == default_len {
                (DEFAULT_SLOTS, DEFAULT_ITEMS)
            } else if body.is_multiple_of(SLOT_LEN + 4 * ITEM_LEN) && body > 0 {
                let s = u32::try_from(body / (SLOT_LEN + 4 * ITEM_LEN))
                    .map_err(|_| size_error("any geometry".into()))?;
                (s, s.saturating_mul(4))
            } else if len
                < HEADER_LEN
                    + SLOT_LEN * u64::from(h.slot_count as u32)
                    + ITEM_LEN * (u64::from(h.item_count as u32) + 1)
            {
                return Err(Error::corrupt(
                    name,
                    format!(
                        "file is {len} bytes, too short for the {} used slots and {} items its header counts: cut short",
                        h.slot_count, h.item_count
                    ),
                ));
            } else {
                return Err(Error::invalid(
                    "max_slots",
                    format!(
                        "{name}: {len} bytes fits neither RocketMQ's default geometry nor items = 4 * slots; \
                         give max_slots or max_items"
                    ),
                ));
            }
        }
    };
    Ok(geometry)
}

/// Sequential reader of fixed-size records in `start..end`, in 1 MiB reads.
struct SeqReader<'a> {
    file: &'a RocketMqFile,
    next: u64,
    end: u64,
    rec: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl<'a> SeqReader<'a> {
    fn new(file: &'a RocketMqFile, start: u64, end: u64, rec: u64) -> Self {
        Self {
            file,
            next: start,
            end,
            rec,
            buf: Vec::new(),
            pos: 0,
        }
    }

    fn next(&mut self) -> Result<[u8; 8]> {
        let rec = self.rec as usize;
        if self.pos + rec > self.buf.len() {
            if self.next + self.rec > self.end {
                return Err(self
                    .file
                    .corrupt(format!("read past byte {} of the table", self.end)));
            }
            let n = ((1u64 << 20) / self.rec * self.rec).min(self.end - self.next);
            self.buf.resize(n as usize, 0);
            self.file.read_at(self.next, &mut self.buf)?;
            self.next += n;
            self.pos = 0;
        }
        let mut out = [0u8; 8];
        if let Some(src) = self.buf.get(self.pos..self.pos + rec.min(8)) {
            out[..src.len()].copy_from_slice(src);
        }
        self.pos += rec;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal writer, following RocketMQ's putKey and compactToNewFile.
    struct Writer {
        slots: u32,
        items: u32,
        bytes: Vec<u8>,
        begin: i64,
        end: i64,
        used: i32,
        count: i32,
    }

    impl Writer {
        fn new(slots: u32, items: u32, begin: i64) -> Self {
            let len = item_position(slots, items) as usize;
            let mut w = Self {
                slots,
                items,
                bytes: vec![0; len],
                begin,
                end: 0,
                used: 0,
                count: 0,
            };
            w.header();
            w
        }

        fn header(&mut self) {
            let end = self.count as u32 + 1 == self.items;
            let magic = if end { END_MAGIC } else { BEGIN_MAGIC };
            self.bytes[0..4].copy_from_slice(&magic.to_be_bytes());
            self.bytes[4..12].copy_from_slice(&self.begin.to_be_bytes());
            self.bytes[12..20].copy_from_slice(&self.end.to_be_bytes());
            self.bytes[20..24].copy_from_slice(&self.used.to_be_bytes());
            self.bytes[24..28].copy_from_slice(&self.count.to_be_bytes());
        }

        fn put(
            &mut self,
            topic: &str,
            topic_id: i32,
            queue: i32,
            key: &str,
            offset: i64,
            ts: i64,
        ) -> bool {
            if self.count as u32 + 1 >= self.items {
                return false;
            }
            let hash = key_hash(topic, key);
            let sp = slot_position(hash as u32 % self.slots) as usize;
            let old = i32::from_be_bytes(self.bytes[sp..sp + 4].try_into().unwrap());
            self.count += 1;
            let at = item_position(self.slots, self.count as u32) as usize;
            let diff = ((ts - self.begin) / 1000) as i32;
            let it = &mut self.bytes[at..at + 32];
            it[0..4].copy_from_slice(&hash.to_be_bytes());
            it[4..8].copy_from_slice(&topic_id.to_be_bytes());
            it[8..12].copy_from_slice(&queue.to_be_bytes());
            it[12..20].copy_from_slice(&offset.to_be_bytes());
            it[20..24].copy_from_slice(&100i32.to_be_bytes());
            it[24..28].copy_from_slice(&diff.to_be_bytes());
            it[28..32].copy_from_slice(&old.to_be_bytes());
            self.bytes[sp..sp + 4].copy_from_slice(&self.count.to_be_bytes());
            if old <= 0 {
                self.used += 1;
            }
            self.end = self.end.max(ts);
            self.header();
            true
        }

        fn compact(&self) -> Vec<u8> {
            let items_at = (HEADER_LEN + SLOT_LEN * u64::from(self.slots)) as usize;
            let mut out = vec![0u8; items_at + 28 * self.count as usize];
            out[..28].copy_from_slice(&self.bytes[..28]);
            out[0..4].copy_from_slice(&END_MAGIC.to_be_bytes());
            let mut w = items_at;
            for s in 0..self.slots {
                let sp = slot_position(s) as usize;
                let mut idx = i32::from_be_bytes(self.bytes[sp..sp + 4].try_into().unwrap());
                let begin = w;
                while idx > 0 {
                    let at = item_position(self.slots, idx as u32) as usize;
                    out[w..w + 28].copy_from_slice(&self.bytes[at..at + 28]);
                    idx = i32::from_be_bytes(self.bytes[at + 28..at + 32].try_into().unwrap());
                    w += 28;
                }
                out[sp..sp + 4].copy_from_slice(&(begin as i32).to_be_bytes());
                out[sp + 4..sp + 8].copy_from_slice(&((w - begin) as i32).to_be_bytes());
            }
            out
        }
    }

    fn open(bytes: Vec<u8>) -> Result<RocketMqFile> {
        RocketMqFile::from_bytes("t".into(), bytes, Hints::default())
    }

    #[test]
    fn constants_and_hash() {
        assert_eq!(BEGIN_MAGIC as i32, -1_127_939_447);
        assert_eq!(END_MAGIC as i32, -1_127_939_451);
        assert_eq!(key_hash("TopicTest", "MessageKey"), 638_347_386);
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(slot_position(2), 44);
        assert_eq!(slot_position(5), 68);
        assert_eq!(item_position(5, 2), 132);
        assert_eq!(item_position(5, 5), 228);
        for d in [1u32, 2, 3, 5, 7, 500, 5_000_000, u32::MAX] {
            let f = FastMod::new(d);
            for x in [0u32, 1, 2, 4, 999, 638_347_386, i32::MAX as u32, u32::MAX] {
                assert_eq!(f.rem(x), x % d, "{x} % {d}");
            }
        }
    }

    #[test]
    fn unsealed_and_compacted_answer_alike() {
        let mut w = Writer::new(5, 20, 1_000_000);
        for t in 0..5 {
            for i in 0..3 {
                assert!(w.put(
                    &format!("TopicTest{t}"),
                    t,
                    i,
                    "MessageKey",
                    i64::from(t * 10 + i),
                    1_000_000 + i64::from(i) * 1000
                ));
            }
        }
        let u = open(w.bytes.clone()).unwrap();
        assert_eq!(u.layout(), Layout::Unsealed);
        assert_eq!((u.max_slots(), u.max_items()), (5, 20));
        let r = u.verify().unwrap();
        assert_eq!((r.items, r.used_slots), (15, 5));
        let c = open(w.compact()).unwrap();
        assert_eq!(c.layout(), Layout::Compacted);
        assert_eq!(c.len(), 28 + 40 + 15 * 28);
        assert_eq!(c.verify().unwrap().items, 15);
        for f in [&u, &c] {
            let hits = f
                .query("TopicTest1", "MessageKey", 0, i64::MAX, 64, None)
                .unwrap();
            assert_eq!(hits.len(), 3);
            assert_eq!(hits[0].offset, 12, "newest first");
            assert!(f
                .query("TopicTest", "MessageKey", 0, i64::MAX, 64, None)
                .unwrap()
                .is_empty());
            assert!(f
                .query("TopicTest1", "MessageKey1", 0, i64::MAX, 64, None)
                .unwrap()
                .is_empty());
            assert_eq!(
                f.query("TopicTest1", "MessageKey", 0, i64::MAX, 2, None)
                    .unwrap()
                    .len(),
                2
            );
            assert!(f
                .query("TopicTest1", "MessageKey", 0, i64::MAX, 64, Some(2))
                .unwrap()
                .is_empty());
            assert_eq!(
                f.query("TopicTest1", "MessageKey", 1_001_000, 1_001_000, 64, None)
                    .unwrap()
                    .len(),
                1
            );
        }
    }

    #[test]
    fn full_file_holds_nineteen() {
        let mut w = Writer::new(5, 20, 0);
        let mut n = 0;
        while w.put("T", 0, 0, "k", n, n * 1000) {
            n += 1;
        }
        assert_eq!(n, 19);
        let f = open(w.bytes.clone()).unwrap();
        assert_eq!(f.header().magic, END_MAGIC);
        assert_eq!(f.verify().unwrap().items, 19);
        let c = open(w.compact()).unwrap();
        assert_eq!(c.layout(), Layout::Compacted);
        assert_eq!(c.verify().unwrap().items, 19);
    }

    #[test]
    fn damage_is_caught_without_panics() {
        let mut w = Writer::new(7, 28, 5000);
        for i in 0..25 {
            w.put("T", 1, 0, &format!("k{}", i % 9), i, 5000 + i * 1000);
        }
        for bytes in [w.bytes.clone(), w.compact()] {
            let good = open(bytes.clone()).unwrap();
            good.verify().unwrap();
            let hints = Hints {
                max_slots: Some(7),
                ..Hints::default()
            };
            for cut in [0, 10, 28, 40, bytes.len() - 1] {
                let r = RocketMqFile::from_bytes("t".into(), bytes[..cut].to_vec(), hints)
                    .and_then(|f| f.verify().map(|_| ()));
                assert!(matches!(r, Err(Error::Corrupt { .. })), "cut {cut}: {r:?}");
            }
            // Every single-byte flip: an error or a clean answer, never a panic.
            for pos in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[pos] ^= 0x5A;
                if let Ok(f) = open(bad) {
                    let _ = f.verify();
                    let _ = f.query("T", "k1", 0, i64::MAX, 100, None);
                }
            }
        }
    }

    #[test]
    fn cycle_is_caught() {
        let mut w = Writer::new(5, 20, 0);
        w.put("T", 0, 0, "a", 1, 0);
        w.put("T", 0, 0, "a", 2, 0);
        // item 1 links to item 2: a cycle 2 -> 1 -> 2.
        let at = item_position(5, 1) as usize + 28;
        w.bytes[at..at + 4].copy_from_slice(&2i32.to_be_bytes());
        let f = open(w.bytes.clone()).unwrap();
        let err = f.verify().unwrap_err().to_string();
        assert!(err.contains("item 1 at byte 100"), "{err}");
        // Queries stop after 512 hops, as RocketMQ's do.
        assert_eq!(f.query("T", "a", 0, 10, 10_000, None).unwrap().len(), 512);
    }

    #[test]
    fn import_keys_match_python_layout() {
        // tieredindex.layout.index_key("rocketmq:imported", "3#-5")
        let mut want = 17u32.to_le_bytes().to_vec();
        want.extend_from_slice(b"rocketmq:imported3#-5");
        assert_eq!(import_key(3, -5), want);
    }

    #[test]
    fn import_writes_our_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::new(5, 20, 1_700_000_000_000);
        for i in 0..12 {
            w.put(
                "TopicA",
                4,
                1,
                &format!("k{}", i % 3),
                i * 10,
                1_700_000_000_000 + i * 1500,
            );
        }
        for (n, bytes) in [w.bytes.clone(), w.compact()].into_iter().enumerate() {
            let f = open(bytes).unwrap();
            let dest = dir.path().join(format!("{n}.tix"));
            let (_, imported) = f.import_to(&dest).unwrap();
            let imported = imported.unwrap();
            assert_eq!(imported.count, 12);
            let ours = IndexFile::open(&dest).unwrap();
            let fp = fingerprint(&import_key(4, key_hash("TopicA", "k1")));
            let got = ours.query(fp, 0, u64::MAX >> 1, 100).unwrap();
            let want = f.query("TopicA", "k1", 0, i64::MAX, 100, Some(4)).unwrap();
            assert_eq!(got.len(), 4);
            let got: Vec<_> = got.iter().map(|e| (e.offset, e.timestamp_ms)).collect();
            let want: Vec<_> = want
                .iter()
                .map(|e| (e.offset as u64, e.timestamp_ms as u64))
                .collect();
            assert_eq!(got, want);
        }
    }
}
