//! The writable hash-slot index file (layout in `format.rs`).
//!
//! One `RwLock` guards a file: puts, flush, seal and close take it for
//! writing, queries for reading, so concurrent callers are always correct.
//! Seal holds the write lock from the moment it stops intake until the
//! sealed copy is written, so no put can slip in between (RocketMQ compacts
//! first and seals after, losing keys written in that window).

use std::path::{Path, PathBuf};

use parking_lot::RwLock;

use crate::checksum::crc32c;
use crate::entry::{check_query_args, finish_query, Entry};
use crate::error::{Error, Result};
use crate::format::*;
use crate::keyhash::slot_of;
use crate::mapping::{sync_parent_dir, temp_path, FileMap};
use crate::sealed::{write_sealed, SealedIndex};

/// Largest offset and timestamp accepted: they are i64 in Java peers and
/// numpy, so the top bit stays clear.
pub const MAX_OFFSET: u64 = i64::MAX as u64;
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// How far ahead `put_batch` prefetches slot heads.
const PREFETCH_AHEAD: usize = 8;

/// What `open()` found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The file had not been closed cleanly, so its summary was rebuilt.
    pub recovered: bool,
    /// Non-empty entry slots past the valid prefix that were dropped (torn
    /// or never completed writes).
    pub dropped_entries: u64,
}

struct Inner {
    map: Option<FileMap>,
    slots: u32,
    capacity: u32,
    begin_ms: u64,
    entries_offset: usize,
    count: u32,
    used_slots: u32,
    max_timestamp: u64,
    sealed: bool,
}

/// Chain steps a query may take in [`IndexFile::try_query`], the fast path
/// the Python edge runs holding the GIL (about 50 µs of cache misses); a
/// longer chain (a hot key, or a crowded slot) is walked by
/// [`IndexFile::query`] with the GIL released.
pub const SHORT_WALK: u32 = 256;

/// An [`IndexFile`]'s figures, read together under one lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub slots: u32,
    pub capacity: u32,
    pub count: u32,
    pub used_slots: u32,
    pub begin_ms: u64,
    pub end_ms: u64,
    pub sealed: bool,
    pub closed: bool,
}

impl Summary {
    fn of(inner: &Inner) -> Self {
        Summary {
            slots: inner.slots,
            capacity: inner.capacity,
            count: inner.count,
            used_slots: inner.used_slots,
            begin_ms: inner.begin_ms,
            end_ms: inner.end_ms(),
            sealed: inner.sealed,
            closed: inner.map.is_none(),
        }
    }
}

pub struct IndexFile {
    path: PathBuf,
    inner: RwLock<Inner>,
    open_report: OpenReport,
    /// The process that opened it (see `mapping.rs` on `fork()`).
    owner: u32,
}

/// The fields of one put, already range-checked.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry {
    pub fingerprint: u64,
    pub queue_id: u32,
    pub offset: u64,
    pub size: u32,
    pub timestamp_ms: u64,
}

impl NewEntry {
    pub fn check(&self) -> Result<()> {
        if self.offset > MAX_OFFSET {
            return Err(Error::invalid(
                "offset",
                format!("offset {} is above 2^63-1", self.offset),
            ));
        }
        if self.timestamp_ms > MAX_TIMESTAMP {
            return Err(Error::invalid(
                "timestamp_ms",
                format!("timestamp_ms {} is above 2^63-1", self.timestamp_ms),
            ));
        }
        Ok(())
    }
}

/// Columns of a batch put, all the same length.
pub struct Batch<'a> {
    pub fingerprints: &'a [u64],
    pub queue_ids: &'a [u32],
    pub offsets: &'a [u64],
    pub sizes: &'a [u32],
    pub timestamps_ms: &'a [u64],
}

impl Batch<'_> {
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    /// Checks lengths and ranges, before anything is written.
    pub fn check(&self) -> Result<()> {
        let n = self.fingerprints.len();
        for (name, len) in [
            ("queue_ids", self.queue_ids.len()),
            ("offsets", self.offsets.len()),
            ("sizes", self.sizes.len()),
            ("timestamps_ms", self.timestamps_ms.len()),
        ] {
            if len != n {
                return Err(Error::invalid(
                    name,
                    format!("has {len} values but keys has {n}"),
                ));
            }
        }
        if let Some(i) = self.offsets.iter().position(|&o| o > MAX_OFFSET) {
            return Err(Error::invalid(
                "offsets",
                format!("offsets[{i}] = {} is above 2^63-1", self.offsets[i]),
            ));
        }
        if let Some(i) = self.timestamps_ms.iter().position(|&t| t > MAX_TIMESTAMP) {
            return Err(Error::invalid(
                "timestamps_ms",
                format!(
                    "timestamps_ms[{i}] = {} is above 2^63-1",
                    self.timestamps_ms[i]
                ),
            ));
        }
        Ok(())
    }
}

/// Encodes entry `index` into its 40 bytes.
#[inline]
fn encode_entry(out: &mut [u8], index: u32, e: &NewEntry, prev: u32) {
    write_u64(out, E_OFF_FINGERPRINT, e.fingerprint);
    write_u64(out, E_OFF_OFFSET, e.offset);
    write_u64(out, E_OFF_TIMESTAMP, e.timestamp_ms);
    write_u32(out, E_OFF_QUEUE, e.queue_id);
    write_u32(out, E_OFF_SIZE, e.size);
    write_u32(out, E_OFF_PREV, prev);
    let crc = entry_crc(index, &out[..E_OFF_CRC]);
    write_u32(out, E_OFF_CRC, crc);
}

/// CRC32C of (index LE ++ body). One buffer, one call: the per-call cost
/// dominates for 40 bytes.
#[inline]
fn entry_crc(index: u32, body: &[u8]) -> u32 {
    let mut buf = [0u8; 4 + E_OFF_CRC];
    buf[..4].copy_from_slice(&index.to_le_bytes());
    buf[4..].copy_from_slice(body);
    crc32c(&buf)
}

/// A decoded unsealed entry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredEntry {
    pub fingerprint: u64,
    pub offset: u64,
    pub timestamp_ms: u64,
    pub queue_id: u32,
    pub size: u32,
    pub prev: u32,
}

/// Decodes entry `index` if its checksum holds and it is not all zeros.
#[inline]
fn decode_entry(raw: &[u8], index: u32) -> Option<StoredEntry> {
    if raw.iter().all(|&b| b == 0) {
        return None;
    }
    if read_u32(raw, E_OFF_CRC) != entry_crc(index, &raw[..E_OFF_CRC]) {
        return None;
    }
    Some(StoredEntry {
        fingerprint: read_u64(raw, E_OFF_FINGERPRINT),
        offset: read_u64(raw, E_OFF_OFFSET),
        timestamp_ms: read_u64(raw, E_OFF_TIMESTAMP),
        queue_id: read_u32(raw, E_OFF_QUEUE),
        size: read_u32(raw, E_OFF_SIZE),
        prev: read_u32(raw, E_OFF_PREV),
    })
}

impl Inner {
    fn map(&self, path: &Path) -> Result<&FileMap> {
        self.map.as_ref().ok_or_else(|| Error::Closed {
            path: path.to_path_buf(),
        })
    }

    fn map_mut(&mut self, path: &Path) -> Result<&mut FileMap> {
        self.map.as_mut().ok_or_else(|| Error::Closed {
            path: path.to_path_buf(),
        })
    }

    fn end_ms(&self) -> u64 {
        if self.count == 0 {
            self.begin_ms
        } else {
            self.max_timestamp
        }
    }

    #[inline]
    fn entry_range(&self, index: u32) -> std::ops::Range<usize> {
        let start = self.entries_offset + index as usize * ENTRY_LEN;
        start..start + ENTRY_LEN
    }

    /// Writes the dynamic header (state, counts, end time) and its CRC.
    /// Writes the dynamic header (not synced). `count` is what it claims a
    /// sync made durable: every caller passes entries already on disk.
    fn write_dynamic_header(&mut self, state: u32, count: u32) {
        let (used, end) = (self.used_slots, self.end_ms());
        let slots_len = self.slots as usize * SLOT_LEN;
        let Some(map) = self.map.as_mut() else { return };
        // Kept only for a file at rest: while open, puts change the table.
        let slots_crc = if state == STATE_OPEN {
            0
        } else {
            crc32c(&map.bytes()[HEADER_LEN..HEADER_LEN + slots_len])
        };
        let h = &mut map.bytes_mut()[..HEADER_LEN];
        write_u32(h, U_OFF_STATE, state);
        write_u32(h, U_OFF_COUNT, count);
        write_u32(h, U_OFF_USED_SLOTS, used);
        write_u32(h, U_OFF_SLOTS_CRC, slots_crc);
        write_u64(h, U_OFF_END, end);
        let crc = crc32c(&h[U_OFF_STATE..U_OFF_DYNAMIC_CRC]);
        write_u32(h, U_OFF_DYNAMIC_CRC, crc);
    }

    /// Appends one checked entry; false when full or sealed.
    #[inline]
    fn put_one(&mut self, e: &NewEntry) -> bool {
        if self.sealed || self.count >= self.capacity {
            return false;
        }
        let index = self.count;
        let slot_off = HEADER_LEN + slot_of(e.fingerprint, self.slots) as usize * SLOT_LEN;
        let range = self.entry_range(index);
        let Some(map) = self.map.as_mut() else {
            return false;
        };
        let bytes = map.bytes_mut();
        let head = read_u32(bytes, slot_off);
        encode_entry(&mut bytes[range], index, e, head);
        // The entry is complete before the slot points at it.
        write_u32(bytes, slot_off, index + 1);
        if head == 0 {
            self.used_slots += 1;
        }
        if self.count == 0 || e.timestamp_ms > self.max_timestamp {
            self.max_timestamp = e.timestamp_ms;
        }
        self.count += 1;
        true
    }

    /// msync of everything written since the last sync, then of the header
    /// that counts it: within one msync the kernel writes pages in no set
    /// order, so a header synced with its entries could reach the disk
    /// before them. After this, a header whose CRC holds is a durable lower
    /// bound (see the crash rules in `format`). Costs a second device flush.
    fn sync(&mut self, path: &Path, state: u32) -> Result<()> {
        let end = self.entry_range(self.count).start;
        // The header in the map is still the last synced one here.
        self.map(path)?.sync_range(0, end)?;
        self.write_dynamic_header(state, self.count);
        self.map(path)?.sync_range(0, HEADER_LEN)?;
        Ok(())
    }

    /// Rebuilds count, used slots, end time and the slot table from the
    /// longest valid prefix of entries. Returns how many non-zero entry
    /// records past that prefix were dropped (zeroed), and where the last
    /// of them ends. `durable` entries
    /// were made durable by a flush (the dynamic header's count, when its
    /// CRC holds): a prefix shorter than that is damage, not a torn tail,
    /// and is an error, with nothing in the file changed.
    fn rebuild(&mut self, path: &Path, durable: u32) -> Result<(u64, usize)> {
        let (slots, capacity, entries_offset) = (self.slots, self.capacity, self.entries_offset);
        let map = self.map_mut(path)?;
        let bytes = map.bytes();
        // Built aside and written into the map only once the prefix is
        // known to be sound: a damaged file is left exactly as found.
        let mut table = vec![0u8; slots as usize * SLOT_LEN];
        let (mut count, mut used, mut max_ts) = (0u32, 0u32, 0u64);
        while count < capacity {
            let start = entries_offset + count as usize * ENTRY_LEN;
            // The slot table is read at random: ask for the slot of an entry
            // a few ahead while this one is checked (as put_batch does).
            let ahead = start + PREFETCH_AHEAD * ENTRY_LEN;
            if let Some(raw) = bytes.get(ahead..ahead + 8) {
                let slot = slot_of(read_u64(raw, 0), slots) as usize;
                crate::mapping::prefetch(&table, slot * SLOT_LEN);
            }
            let Some(e) = decode_entry(&bytes[start..start + ENTRY_LEN], count) else {
                break;
            };
            let slot_off = slot_of(e.fingerprint, slots) as usize * SLOT_LEN;
            let head = read_u32(&table, slot_off);
            // An entry must link to the slot's newest earlier entry; anything
            // else was not written by a put of ours.
            if e.prev != head {
                break;
            }
            write_u32(&mut table, slot_off, count + 1);
            if head == 0 {
                used += 1;
            }
            if count == 0 || e.timestamp_ms > max_ts {
                max_ts = e.timestamp_ms;
            }
            count += 1;
        }
        if count < durable {
            return Err(Error::corrupt(
                path.display().to_string(),
                format!(
                    "entry {count} fails its checksum or chain link, but a flush made {durable} \
                     entries durable: damage, not a torn tail"
                ),
            ));
        }
        // Drop (zero) every non-zero record past the prefix, not just the
        // run right after it: power loss can leave a gap (pages never
        // written) before later records that did reach the disk, and once
        // puts fill the gap those stale records would chain on after them
        // at the next rebuild. Only regions that may hold data are read.
        let prefix_end = entries_offset + count as usize * ENTRY_LEN;
        let file_end = entries_offset + capacity as usize * ENTRY_LEN;
        let regions = map.data_regions(prefix_end, file_end);
        let bytes = map.bytes_mut();
        bytes[HEADER_LEN..HEADER_LEN + table.len()].copy_from_slice(&table);
        let (mut dropped, mut zeroed_end) = (0u64, prefix_end);
        for (from, to) in regions {
            let first = (from - entries_offset) / ENTRY_LEN;
            let last = (to - entries_offset).div_ceil(ENTRY_LEN);
            for i in first..last {
                let start = entries_offset + i * ENTRY_LEN;
                let raw = &mut bytes[start..start + ENTRY_LEN];
                if raw.iter().any(|&b| b != 0) {
                    raw.fill(0);
                    dropped += 1;
                    zeroed_end = start + ENTRY_LEN;
                }
            }
        }
        self.count = count;
        self.used_slots = used;
        self.max_timestamp = max_ts;
        Ok((dropped, zeroed_end))
    }
}

fn check_geometry(slots: u32, capacity: u32) -> Result<()> {
    if slots == 0 || slots > MAX_SLOTS {
        return Err(Error::invalid(
            "slots",
            format!("slots must be 1 to {MAX_SLOTS}, got {slots}"),
        ));
    }
    if capacity == 0 || capacity > MAX_CAPACITY {
        return Err(Error::invalid(
            "capacity",
            format!("capacity must be 1 to {MAX_CAPACITY}, got {capacity}"),
        ));
    }
    Ok(())
}

/// Ends the name of a file [`IndexFile::create`] is still making; one left
/// by a crash holds nothing (no put can have reached it).
pub const CREATING_SUFFIX: &str = "creating";

/// An error about the temporary file of a create, told of the file made.
fn about(path: &Path, err: Error) -> Error {
    match err {
        Error::Io { source, .. } => Error::io(path, source),
        other => other,
    }
}

impl IndexFile {
    /// Creates, preallocates and maps a new file holding exactly `capacity`
    /// entries.
    ///
    /// Atomic: the file is made under a temporary name beside `path`
    /// (`.NAME.PID.NANOS.creating`, see [`CREATING_SUFFIX`]) and renamed to
    /// `path`, without replacing anything, once its header is on disk. A
    /// crash meanwhile leaves no file at `path` (its journal record then
    /// says no put reached it), never a preallocated one without a header,
    /// which recovery would take for a damaged file; the store's recovery
    /// removes the temporary file.
    pub fn create(path: &Path, slots: u32, capacity: u32, begin_ms: u64) -> Result<Self> {
        check_geometry(slots, capacity)?;
        if begin_ms > MAX_TIMESTAMP {
            return Err(Error::invalid(
                "begin_ms",
                format!("begin_ms {begin_ms} is above 2^63-1"),
            ));
        }
        let entries_offset = entries_offset_usize(slots)?;
        // Only the rename below guarantees it; this spares a preallocation.
        if std::fs::symlink_metadata(path).is_ok() {
            let exists = std::io::Error::from_raw_os_error(libc::EEXIST);
            return Err(Error::io(path, exists));
        }
        let tmp = temp_path(path, CREATING_SUFFIX);
        let mut map = FileMap::create(&tmp, unsealed_file_len(slots, capacity))
            .map_err(|e| about(path, e))?;
        crate::faults::fault_point("create.after_preallocate");
        let h = &mut map.bytes_mut()[..HEADER_LEN];
        h[U_OFF_MAGIC..U_OFF_MAGIC + 8].copy_from_slice(&UNSEALED_MAGIC);
        write_u16(h, U_OFF_VERSION, FORMAT_VERSION);
        write_u16(h, U_OFF_HEADER_LEN, HEADER_LEN as u16);
        write_u32(h, U_OFF_SLOTS, slots);
        write_u32(h, U_OFF_CAPACITY, capacity);
        write_u64(h, U_OFF_BEGIN, begin_ms);
        let crc = crc32c(&h[..U_OFF_STATIC_CRC]);
        write_u32(h, U_OFF_STATIC_CRC, crc);
        let mut inner = Inner {
            map: Some(map),
            slots,
            capacity,
            begin_ms,
            entries_offset,
            count: 0,
            used_slots: 0,
            max_timestamp: 0,
            sealed: false,
        };
        inner.write_dynamic_header(STATE_OPEN, 0);
        // On disk in this order: the header (msync), then the name (rename,
        // directory fsync) before create returns. No crash leaves a named
        // file without a header.
        let mut named = false;
        let made = inner.map_mut(path).and_then(|m| {
            m.sync_range(0, HEADER_LEN).map_err(|e| about(path, e))?;
            m.rename_no_replace(path)?;
            named = true;
            sync_parent_dir(path)
        });
        if let Err(e) = made {
            drop(inner);
            let _ = std::fs::remove_file(if named { path } else { &tmp });
            return Err(e);
        }
        Ok(Self {
            path: path.to_path_buf(),
            inner: RwLock::new(inner),
            owner: crate::mapping::process_id(),
            open_report: OpenReport::default(),
        })
    }

    /// Reopens a file after a clean close or a crash. Everything comes from
    /// the header; a file not closed cleanly is rebuilt from its valid
    /// entries (a torn tail is dropped).
    pub fn open(path: &Path) -> Result<Self> {
        let name = path.display().to_string();
        let mut header = [0u8; HEADER_LEN];
        let map = FileMap::open(path, |len, file| {
            use std::os::unix::fs::FileExt;
            if len < HEADER_LEN as u64 {
                return Err(Error::corrupt(
                    &name,
                    format!("file is {len} bytes, shorter than the {HEADER_LEN}-byte header"),
                ));
            }
            file.read_exact_at(&mut header, 0)
                .map_err(|e| Error::io(path, e))?;
            let (slots, capacity) = parse_static_header(&header, &name)?;
            let expected = unsealed_file_len(slots, capacity);
            if len != expected {
                return Err(Error::corrupt(
                    &name,
                    format!("file is {len} bytes but its header ({slots} slots, capacity {capacity}) needs {expected}"),
                ));
            }
            Ok(expected)
        })?;
        let (slots, capacity) = parse_static_header(&header, &name)?;
        let begin_ms = read_u64(&header, U_OFF_BEGIN);
        let state = read_u32(&header, U_OFF_STATE);
        let dynamic_ok =
            read_u32(&header, U_OFF_DYNAMIC_CRC) == crc32c(&header[U_OFF_STATE..U_OFF_DYNAMIC_CRC]);
        let mut inner = Inner {
            map: Some(map),
            slots,
            capacity,
            begin_ms,
            entries_offset: entries_offset_usize(slots)?,
            count: read_u32(&header, U_OFF_COUNT),
            used_slots: read_u32(&header, U_OFF_USED_SLOTS),
            max_timestamp: read_u64(&header, U_OFF_END),
            sealed: state == STATE_SEALED,
        };
        let slots_len = slots as usize * SLOT_LEN;
        let summary_trusted = dynamic_ok
            && matches!(state, STATE_CLOSED | STATE_SEALED)
            && inner.count <= capacity
            && inner.used_slots <= slots
            && inner.used_slots <= inner.count
            // A slot table that changed at rest would send queries astray.
            && read_u32(&header, U_OFF_SLOTS_CRC)
                == crc32c(&inner.map(path)?.bytes()[HEADER_LEN..HEADER_LEN + slots_len]);
        let durable = if dynamic_ok {
            read_u32(&header, U_OFF_COUNT).min(capacity)
        } else {
            0
        };
        let mut report = OpenReport::default();
        if summary_trusted {
            // A clean file still gets its last entry checked, so a file
            // whose tail was lost after the close is not trusted blindly.
            if inner.count > 0 {
                let last = inner.count - 1;
                let raw = &inner.map(path)?.bytes()[inner.entry_range(last)];
                if decode_entry(raw, last).is_none() {
                    return Err(Error::corrupt(
                        &name,
                        format!("entry {last} (the last) fails its checksum"),
                    ));
                }
            }
        }
        // What the header may claim durable: a clean file's count; after a
        // rebuild, only what the last flush made durable (the rebuilt prefix
        // may sit in the page cache alone after a kill -9; the next flush
        // syncs it and counts it).
        let mut claimed = inner.count;
        if !summary_trusted {
            report.recovered = true;
            let (dropped, zeroed_end) = inner.rebuild(path, durable)?;
            report.dropped_entries = dropped;
            claimed = durable;
            // Stale records zeroed past the prefix reach the disk now: no
            // later flush covers them, and after a power loss they could
            // chain on to the entries put from here on.
            let prefix_end = inner.entry_range(inner.count).start;
            inner
                .map(path)?
                .sync_range(prefix_end, zeroed_end - prefix_end)?;
        }
        if !inner.sealed {
            // Mark the file open for writing, durably, so a crash from here
            // on makes the next open rebuild.
            inner.write_dynamic_header(STATE_OPEN, claimed);
            inner.map(path)?.sync_range(0, HEADER_LEN)?;
        }
        Ok(Self {
            path: path.to_path_buf(),
            inner: RwLock::new(inner),
            owner: crate::mapping::process_id(),
            open_report: report,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn open_report(&self) -> OpenReport {
        self.open_report
    }

    /// The file's figures at one instant. Blocks while a put, flush or
    /// seal holds the file; see [`IndexFile::try_summary`].
    pub fn summary(&self) -> Summary {
        Summary::of(&self.inner.read())
    }

    /// As [`IndexFile::summary`], or `None` at once if a writer holds the
    /// file (the Python edge then waits without the GIL).
    pub fn try_summary(&self) -> Option<Summary> {
        self.inner.try_read().map(|inner| Summary::of(&inner))
    }

    pub fn slots(&self) -> u32 {
        self.inner.read().slots
    }

    pub fn capacity(&self) -> u32 {
        self.inner.read().capacity
    }

    pub fn count(&self) -> u32 {
        self.inner.read().count
    }

    pub fn used_slots(&self) -> u32 {
        self.inner.read().used_slots
    }

    pub fn begin_ms(&self) -> u64 {
        self.inner.read().begin_ms
    }

    pub fn end_ms(&self) -> u64 {
        self.inner.read().end_ms()
    }

    pub fn sealed(&self) -> bool {
        self.inner.read().sealed
    }

    pub fn closed(&self) -> bool {
        self.inner.read().map.is_none()
    }

    /// Puts one entry. `Ok(false)`, writing nothing, when full or sealed.
    pub fn put(&self, e: &NewEntry) -> Result<bool> {
        e.check()?;
        let mut inner = self.inner.write();
        inner.map(&self.path)?.check_len()?;
        Ok(inner.put_one(e))
    }

    /// As [`IndexFile::put`], but `None` at once if the lock is busy, so a
    /// caller can wait elsewhere (the bindings wait without the GIL).
    pub fn try_put(&self, e: &NewEntry) -> Option<Result<bool>> {
        if let Err(err) = e.check() {
            return Some(Err(err));
        }
        let mut inner = self.inner.try_write()?;
        Some(
            inner
                .map(&self.path)
                .and_then(FileMap::check_len)
                .map(|()| inner.put_one(e)),
        )
    }

    /// As [`IndexFile::query`], but `None` at once if the lock is busy or
    /// the key's slot chain is longer than [`SHORT_WALK`] steps.
    pub fn try_query(
        &self,
        fingerprint: u64,
        begin_ms: u64,
        end_ms: u64,
        max_count: usize,
    ) -> Option<Result<Vec<Entry>>> {
        let inner = self.inner.try_read()?;
        self.query_locked(
            &inner,
            fingerprint,
            begin_ms,
            end_ms,
            max_count,
            Some(SHORT_WALK),
        )
        .transpose()
    }

    /// Puts a prefix of the batch, as much as fits, and returns its length.
    pub fn put_batch(&self, batch: &Batch<'_>) -> Result<usize> {
        batch.check()?;
        let mut inner = self.inner.write();
        inner.map(&self.path)?.check_len()?;
        // Fault in the pages this batch will append to in one call.
        let fits = batch.len().min((inner.capacity - inner.count) as usize) as u32;
        let from = inner.entry_range(inner.count).start;
        let to = inner.entry_range(inner.count + fits).start;
        inner.map(&self.path)?.populate_write(from, to - from);
        for i in 0..batch.len() {
            // The slot head is a cache miss in a large slot table: ask for
            // the one a few entries ahead while this one is written.
            if let Some(&ahead) = batch.fingerprints.get(i + PREFETCH_AHEAD) {
                let slot_off = HEADER_LEN + slot_of(ahead, inner.slots) as usize * SLOT_LEN;
                inner.map(&self.path)?.prefetch(slot_off);
            }
            let e = NewEntry {
                fingerprint: batch.fingerprints[i],
                queue_id: batch.queue_ids[i],
                offset: batch.offsets[i],
                size: batch.sizes[i],
                timestamp_ms: batch.timestamps_ms[i],
            };
            if !inner.put_one(&e) {
                return Ok(i);
            }
        }
        Ok(batch.len())
    }

    /// Entries of the key with this fingerprint and `begin_ms <= t <=
    /// end_ms`, newest first, at most `max_count`. Every entry read is
    /// checked; a bad one is an error, never an answer.
    pub fn query(
        &self,
        fingerprint: u64,
        begin_ms: u64,
        end_ms: u64,
        max_count: usize,
    ) -> Result<Vec<Entry>> {
        let inner = self.inner.read();
        let walked = self.query_locked(&inner, fingerprint, begin_ms, end_ms, max_count, None)?;
        Ok(walked.unwrap_or_default()) // never None without a step limit
    }

    /// `Ok(None)` when the slot's chain is longer than `max_steps`.
    fn query_locked(
        &self,
        inner: &Inner,
        fingerprint: u64,
        begin_ms: u64,
        end_ms: u64,
        max_count: usize,
        max_steps: Option<u32>,
    ) -> Result<Option<Vec<Entry>>> {
        check_query_args(begin_ms, end_ms, max_count)?;
        let map = inner.map(&self.path)?;
        map.check_len()?;
        let bytes = map.bytes();
        let slot = slot_of(fingerprint, inner.slots);
        let mut link = read_u32(bytes, HEADER_LEN + slot as usize * SLOT_LEN);
        let mut hits = Vec::new();
        let mut steps = 0u32;
        while link != 0 {
            if max_steps.is_some_and(|most| steps == most) {
                return Ok(None);
            }
            steps += 1;
            let index = link - 1;
            if index >= inner.count {
                return Err(self.corrupt(format!(
                    "slot {slot} links to entry {index}, past the {} written",
                    inner.count
                )));
            }
            let range = inner.entry_range(index);
            let at = range.start;
            let Some(e) = decode_entry(&bytes[range], index) else {
                return Err(self.corrupt(format!("entry {index} at byte {at} fails its checksum")));
            };
            if e.prev >= link {
                return Err(self.corrupt(format!(
                    "entry {index} at byte {at} links forward to {}",
                    e.prev
                )));
            }
            if e.fingerprint == fingerprint && (begin_ms..=end_ms).contains(&e.timestamp_ms) {
                hits.push(Entry {
                    queue_id: e.queue_id,
                    offset: e.offset,
                    size: e.size,
                    timestamp_ms: e.timestamp_ms,
                });
            }
            link = e.prev;
        }
        Ok(Some(finish_query(hits, max_count)))
    }

    /// msync: on return every entry put so far is on stable storage.
    pub fn flush(&self) -> Result<()> {
        let mut inner = self.inner.write();
        inner.map(&self.path)?.check_len()?;
        let state = if inner.sealed {
            STATE_SEALED
        } else {
            STATE_OPEN
        };
        inner.sync(&self.path, state)
    }

    /// Stops writes (for good: the file is marked sealed on disk), then
    /// writes the sealed form to `dest`, which must not exist. With
    /// `durable`, the sealed file and its name are fsynced before returning;
    /// without, the caller keeps this unsealed file (which is synced either
    /// way) until the sealed copy's checksum has been verified elsewhere
    /// (the store re-hashes it while uploading), saving one fsync of the
    /// whole object.
    pub fn seal(&self, dest: &Path, durable: bool) -> Result<SealedIndex> {
        let mut inner = self.inner.write();
        inner.map(&self.path)?.check_len()?;
        if dest.exists() {
            // With its errno, as the OS gives it for create's refusal:
            // Python's FileExistsError then has errno EEXIST, not 0.
            return Err(Error::io(
                dest,
                std::io::Error::from_raw_os_error(libc::EEXIST),
            ));
        }
        inner.sealed = true;
        inner.sync(&self.path, STATE_SEALED)?;
        let map = inner.map(&self.path)?;
        let entries = &map.bytes()[inner.entries_offset..inner.entry_range(inner.count).start];
        let name = self.path.display().to_string();
        let sealed_from = SealSource {
            name: &name,
            entries,
            count: inner.count,
            slots: inner.slots,
            begin_ms: inner.begin_ms,
            end_ms: inner.end_ms(),
        };
        write_sealed(dest, &sealed_from, durable)?;
        SealedIndex::open_path(dest)
    }

    /// Flushes, records a clean close, and releases the map and the lock.
    /// Closing twice is a no-op.
    pub fn close(&self) -> Result<()> {
        let mut inner = self.inner.write();
        if inner.map.is_none() {
            return Ok(());
        }
        let result = inner.map(&self.path)?.check_len().and_then(|()| {
            let state = if inner.sealed {
                STATE_SEALED
            } else {
                STATE_CLOSED
            };
            inner.sync(&self.path, state)
        });
        inner.map = None;
        result
    }

    /// Checks every entry and chain link; `Ok(count)` when all hold.
    pub fn verify(&self) -> Result<u32> {
        let inner = self.inner.read();
        let map = inner.map(&self.path)?;
        map.check_len()?;
        let bytes = map.bytes();
        let mut heads = vec![0u32; inner.slots as usize];
        for index in 0..inner.count {
            let range = inner.entry_range(index);
            let at = range.start;
            let Some(e) = decode_entry(&bytes[range], index) else {
                return Err(self.corrupt(format!("entry {index} at byte {at} fails its checksum")));
            };
            let slot = slot_of(e.fingerprint, inner.slots) as usize;
            if e.prev != heads[slot] {
                return Err(self.corrupt(format!(
                    "entry {index} at byte {at} has a broken chain link"
                )));
            }
            heads[slot] = index + 1;
        }
        for (slot, &head) in heads.iter().enumerate() {
            if read_u32(bytes, HEADER_LEN + slot * SLOT_LEN) != head {
                return Err(self.corrupt(format!(
                    "slot {slot} at byte {} does not hold its newest entry",
                    HEADER_LEN + slot * SLOT_LEN
                )));
            }
        }
        Ok(inner.count)
    }

    /// The entries of the valid prefix, in put order (for salvage).
    pub fn entries(&self) -> Result<Vec<(u64, Entry)>> {
        let inner = self.inner.read();
        let map = inner.map(&self.path)?;
        map.check_len()?;
        let mut out = Vec::with_capacity(inner.count as usize);
        for index in 0..inner.count {
            let range = inner.entry_range(index);
            let Some(e) = decode_entry(&map.bytes()[range], index) else {
                break;
            };
            out.push((
                e.fingerprint,
                Entry {
                    queue_id: e.queue_id,
                    offset: e.offset,
                    size: e.size,
                    timestamp_ms: e.timestamp_ms,
                },
            ));
        }
        Ok(out)
    }

    fn corrupt(&self, what: String) -> Error {
        Error::corrupt(self.path.display(), what)
    }
}

/// What [`salvage`] kept and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SalvageReport {
    pub kept: u64,
    pub damaged: u64,
}

/// Copies every entry of the damaged unsealed file `src` whose checksum
/// holds into a new file `dest`, in put order. A damaged entry in the
/// middle costs that entry alone, not the ones after it. The geometry comes
/// from the static header; if that is damaged too, from the entries
/// themselves ([`infer_geometry`]): one flipped bit in 28 bytes must not
/// lose every entry of the file.
pub fn salvage(src: &Path, dest: &Path) -> Result<SalvageReport> {
    let name = src.display().to_string();
    let map = crate::mapping::ReadMap::open(src)?;
    let bytes = map.bytes();
    if bytes.len() < HEADER_LEN {
        return Err(Error::corrupt(
            &name,
            "too short for a header; nothing to salvage",
        ));
    }
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(&bytes[..HEADER_LEN]);
    let (entries_offset, slots, capacity, begin_ms) = match parse_static_header(&header, &name) {
        Ok((slots, capacity)) => (
            entries_offset_usize(slots)?,
            slots,
            capacity,
            read_u64(&header, U_OFF_BEGIN),
        ),
        Err(header_error) => {
            if header[..8] == SEALED_MAGIC {
                return Err(header_error);
            }
            let Some(found) = infer_geometry(bytes) else {
                return Err(Error::corrupt(
                    &name,
                    format!("{header_error}, and no entries were found to tell its geometry"),
                ));
            };
            // The begin time was in the damaged header: the oldest entry's
            // time stands in for it (entries may sit below it, never the file).
            let mut oldest = u64::MAX;
            for_each_intact_entry(bytes, found.entries_offset, found.capacity, |e| {
                oldest = oldest.min(e.timestamp_ms);
                Ok(())
            })?;
            let oldest = if oldest == u64::MAX { 0 } else { oldest };
            (found.entries_offset, found.slots, found.capacity, oldest)
        }
    };
    let out = IndexFile::create(dest, slots, capacity, begin_ms)?;
    let mut report = SalvageReport::default();
    let nonzero = for_each_intact_entry(bytes, entries_offset, capacity, |e| {
        let entry = NewEntry {
            fingerprint: e.fingerprint,
            queue_id: e.queue_id,
            offset: e.offset,
            size: e.size,
            timestamp_ms: e.timestamp_ms,
        };
        if entry.check().is_ok() && out.put(&entry)? {
            report.kept += 1;
        }
        Ok(())
    })?;
    report.damaged = nonzero - report.kept;
    out.flush()?;
    out.close()?;
    Ok(report)
}

/// Visits every entry of an unsealed file's entry area that verifies, in
/// put order, and returns how many entry slots hold anything (an all-zero
/// slot is never an entry): those that verify and those that do not.
fn for_each_intact_entry(
    bytes: &[u8],
    entries_offset: usize,
    capacity: u32,
    mut visit: impl FnMut(StoredEntry) -> Result<()>,
) -> Result<u64> {
    let mut nonzero = 0u64;
    for index in 0..capacity {
        let start = entries_offset + index as usize * ENTRY_LEN;
        let Some(raw) = bytes.get(start..start + ENTRY_LEN) else {
            break;
        };
        if raw.iter().any(|&b| b != 0) {
            nonzero += 1;
            if let Some(e) = decode_entry(raw, index) {
                visit(e)?;
            }
        }
    }
    Ok(nonzero)
}

/// Where the entries of an unsealed file start, found without its header.
struct FoundGeometry {
    entries_offset: usize,
    capacity: u32,
    /// A slot count whose table ends at `entries_offset` (the original's
    /// or another: entries are put again by fingerprint, any count will do).
    slots: u32,
}

/// How many entries are tried at each candidate offset.
const GEOMETRY_PROBES: u32 = 8;

/// The geometry of an unsealed file whose static header is damaged, from
/// its entries. The entry area starts at a 64-byte-aligned offset E; each
/// entry's CRC mixes in its index, so at the right E entry i verifies as
/// entry i, and almost nowhere else. The lowest E where at least two of
/// [`GEOMETRY_PROBES`] entries verify wins (one, if no E has two: a file of
/// one entry); a CRC that holds by chance, in the slot table, would need
/// two to. The entries tried are the first ones at or after the first byte
/// past the header that is not zero: a zeroed start (a torn first page)
/// holds none. The capacity is what fits from E to the end of the file, so
/// a file cut short, or longer than it was made, still has its entries
/// found (an intact header salvages such a file too).
fn infer_geometry(bytes: &[u8]) -> Option<FoundGeometry> {
    let len = bytes.len();
    let first = unsealed_entries_offset(1) as usize;
    // No byte past the header holds anything: no entry to find.
    let nonzero = HEADER_LEN + bytes.get(HEADER_LEN..)?.iter().position(|&b| b != 0)?;
    for needed in [2, 1] {
        let mut e = first;
        while e + ENTRY_LEN <= len {
            if let Ok(capacity) = u32::try_from((len - e) / ENTRY_LEN) {
                let slots = u32::try_from((e - HEADER_LEN) / SLOT_LEN).unwrap_or(0);
                // The entry holding the first nonzero byte, if E is below it.
                let skip = u32::try_from(nonzero.saturating_sub(e) / ENTRY_LEN).unwrap_or(u32::MAX);
                let hits = (skip..capacity.min(skip.saturating_add(GEOMETRY_PROBES)))
                    .filter(|&i| {
                        let at = e + i as usize * ENTRY_LEN;
                        let raw = &bytes[at..at + ENTRY_LEN];
                        raw.iter().any(|&b| b != 0) && decode_entry(raw, i).is_some()
                    })
                    .count();
                if hits >= needed && check_geometry(slots, capacity).is_ok() {
                    return Some(FoundGeometry {
                        entries_offset: e,
                        capacity,
                        slots,
                    });
                }
            }
            e += 64;
        }
    }
    None
}

impl Drop for IndexFile {
    fn drop(&mut self) {
        // In a forked child, close() would write the child's view of the
        // header into the parent's live file, and its lock may have been
        // held by a parent's thread at the fork (held for good here): the
        // map and the descriptor just go, nothing written.
        if self.owner != crate::mapping::process_id() {
            return;
        }
        // Best effort: an unclean drop is safe anyway (the next open rebuilds).
        let _ = self.close();
    }
}

/// What sealing needs from an unsealed file.
pub(crate) struct SealSource<'a> {
    pub name: &'a str,
    /// `count` unsealed entry records, in put order.
    pub entries: &'a [u8],
    pub count: u32,
    pub slots: u32,
    pub begin_ms: u64,
    pub end_ms: u64,
}

impl SealSource<'_> {
    /// Decodes entry `index`, or says which one is bad.
    #[inline]
    pub fn entry(&self, index: u32) -> Result<StoredEntry> {
        let start = index as usize * ENTRY_LEN;
        decode_entry(&self.entries[start..start + ENTRY_LEN], index).ok_or_else(|| {
            Error::corrupt(
                self.name,
                format!("entry {index} fails its checksum; not sealing"),
            )
        })
    }
}

fn entries_offset_usize(slots: u32) -> Result<usize> {
    usize::try_from(unsealed_entries_offset(slots))
        .map_err(|_| Error::invalid("slots", "too many slots"))
}

/// Checks magic, version and static CRC; returns (slots, capacity).
fn parse_static_header(h: &[u8; HEADER_LEN], name: &str) -> Result<(u32, u32)> {
    if h[..8] == SEALED_MAGIC {
        return Err(Error::corrupt(
            name,
            "this is a sealed file; open it with SealedIndex.open",
        ));
    }
    if h[..8] != UNSEALED_MAGIC {
        return Err(Error::corrupt(
            name,
            "bad magic at byte 0: not a tieredindex file",
        ));
    }
    let crc = read_u32(h, U_OFF_STATIC_CRC);
    if crc != crc32c(&h[..U_OFF_STATIC_CRC]) {
        return Err(Error::corrupt(
            name,
            "header checksum mismatch (bytes 0..28)",
        ));
    }
    let version = read_u16(h, U_OFF_VERSION);
    if version != FORMAT_VERSION {
        return Err(Error::corrupt(
            name,
            format!("unsupported format version {version}"),
        ));
    }
    if read_u16(h, U_OFF_HEADER_LEN) as usize != HEADER_LEN {
        return Err(Error::corrupt(name, "bad header length at byte 10"));
    }
    let (slots, capacity) = (read_u32(h, U_OFF_SLOTS), read_u32(h, U_OFF_CAPACITY));
    check_geometry(slots, capacity)
        .map_err(|e| Error::corrupt(name, format!("bad geometry: {e}")))?;
    Ok((slots, capacity))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyhash::fingerprint;

    fn entry(key: &str, offset: u64, ts: u64) -> NewEntry {
        NewEntry {
            fingerprint: fingerprint(key.as_bytes()),
            queue_id: 1,
            offset,
            size: 10,
            timestamp_ms: ts,
        }
    }

    /// A child forked while a file is open: every use is refused, its exit
    /// writes nothing to the file, and it does not keep the file locked
    /// once the parent closed it.
    #[test]
    fn a_forked_child_is_refused_writes_nothing_and_holds_no_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tix");
        let f = IndexFile::create(&path, 5, 20, 1000).unwrap();
        f.put(&entry("k", 1, 1000)).unwrap();
        f.flush().unwrap();
        let before = std::fs::read(&path).unwrap();
        // SAFETY: the child makes only the calls below, then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let refused = |r: Result<()>| matches!(r, Err(Error::Forked { owner, .. }) if owner != std::process::id());
            let ok = refused(f.put(&entry("k", 2, 1001)).map(|_| ()))
                && refused(f.flush())
                && refused(f.query(fingerprint(b"k"), 0, u64::MAX >> 1, 3).map(|_| ()));
            drop(f); // as at an interpreter's exit: nothing written
            std::thread::sleep(std::time::Duration::from_millis(1500));
            // SAFETY: ends the child without running the test harness's exit.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the child's drop wrote to the file"
        );
        f.close().unwrap();
        // The child still lives: its copies must not hold the lock.
        let g = IndexFile::open(&path).unwrap();
        assert_eq!(g.count(), 1);
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "child: {status}"
        );
    }

    #[test]
    fn put_query_full_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tix");
        let f = IndexFile::create(&path, 5, 20, 1000).unwrap();
        for i in 0..20 {
            assert!(f.put(&entry("k", i, 1000 + i)).unwrap());
        }
        assert!(!f.put(&entry("k", 99, 5000)).unwrap());
        let got = f.query(fingerprint(b"k"), 0, u64::MAX >> 1, 3).unwrap();
        assert_eq!(
            got.iter().map(|e| e.offset).collect::<Vec<_>>(),
            vec![19, 18, 17]
        );
        f.close().unwrap();
        let g = IndexFile::open(&path).unwrap();
        assert!(!g.open_report().recovered);
        assert_eq!((g.count(), g.used_slots(), g.end_ms()), (20, 1, 1019));
        assert_eq!(g.verify().unwrap(), 20);
    }

    #[test]
    fn crash_image_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tix");
        let f = IndexFile::create(&path, 7, 100, 0).unwrap();
        for i in 0..50 {
            f.put(&entry(&format!("k{}", i % 4), i, i)).unwrap();
        }
        // What a kill -9 leaves: the mapped bytes, header still "open".
        let image = std::fs::read(&path).unwrap();
        drop(f);
        let crashed = dir.path().join("crashed.tix");
        std::fs::write(&crashed, &image).unwrap();
        let g = IndexFile::open(&crashed).unwrap();
        assert!(g.open_report().recovered);
        assert_eq!(g.count(), 50);
        assert_eq!(g.query(fingerprint(b"k1"), 0, 100, 100).unwrap().len(), 13);
    }

    #[test]
    fn batch_checks_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let f = IndexFile::create(&dir.path().join("b.tix"), 4, 10, 0).unwrap();
        let fps = [1u64, 2];
        let bad = Batch {
            fingerprints: &fps,
            queue_ids: &[0, 0],
            offsets: &[0, u64::MAX],
            sizes: &[0, 0],
            timestamps_ms: &[0, 0],
        };
        assert!(matches!(
            f.put_batch(&bad),
            Err(Error::InvalidArgument {
                name: "offsets",
                ..
            })
        ));
        let short = Batch {
            fingerprints: &fps,
            queue_ids: &[0],
            offsets: &[0, 0],
            sizes: &[0, 0],
            timestamps_ms: &[0, 0],
        };
        assert!(matches!(
            f.put_batch(&short),
            Err(Error::InvalidArgument {
                name: "queue_ids",
                ..
            })
        ));
        assert_eq!(f.count(), 0);
    }

    #[test]
    fn salvage_keeps_entries_after_a_damaged_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.tix");
        let f = IndexFile::create(&path, 3, 100, 0).unwrap();
        for i in 0..30 {
            f.put(&entry(&format!("k{}", i % 3), i, i)).unwrap();
        }
        f.close().unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        let at = unsealed_entries_offset(3) as usize + 10 * ENTRY_LEN + 3;
        raw[at] ^= 0xFF;
        std::fs::write(&path, &raw).unwrap();
        let report = salvage(&path, &dir.path().join("s.tix")).unwrap();
        assert_eq!(
            report,
            SalvageReport {
                kept: 29,
                damaged: 1
            }
        );
        let g = IndexFile::open(&dir.path().join("s.tix")).unwrap();
        assert_eq!(g.count(), 29);
        assert_eq!(g.verify().unwrap(), 29);
        let k1 = g.query(fingerprint(b"k1"), 0, 100, 100).unwrap();
        assert_eq!(k1.len(), 9); // entry 10 was k1
    }

    /// A file of `n` entries (keys k0..k6, times 1000 + i) with its static
    /// header damaged by `damage`; returns the path.
    fn with_damaged_header(dir: &Path, slots: u32, n: u64, damage: impl Fn(&mut [u8])) -> PathBuf {
        let path = dir.join("d.tix");
        let f = IndexFile::create(&path, slots, 1000, 500).unwrap();
        for i in 0..n {
            f.put(&entry(&format!("k{}", i % 7), i, 1000 + i)).unwrap();
        }
        f.close().unwrap();
        let mut raw = std::fs::read(&path).unwrap();
        damage(&mut raw);
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(IndexFile::open(&path), Err(Error::Corrupt { .. })));
        path
    }

    #[test]
    fn salvage_finds_the_geometry_when_the_static_header_is_damaged() {
        type Damage = fn(&mut [u8]);
        let damages: [(&str, Damage); 4] = [
            ("a bit of the slot count", |raw| raw[13] ^= 0x01),
            ("a bit of the capacity", |raw| raw[17] ^= 0x40),
            ("the magic", |raw| raw[1] ^= 0x02),
            ("the whole header zeroed", |raw| raw[..HEADER_LEN].fill(0)),
        ];
        for slots in [1, 16, 100, 5000] {
            for (what, damage) in damages {
                let dir = tempfile::tempdir().unwrap();
                let path = with_damaged_header(dir.path(), slots, 300, damage);
                let dest = dir.path().join("s.tix");
                let report =
                    salvage(&path, &dest).unwrap_or_else(|e| panic!("{what}, {slots} slots: {e}"));
                assert_eq!(
                    report,
                    SalvageReport {
                        kept: 300,
                        damaged: 0
                    },
                    "{what}, {slots} slots"
                );
                let g = IndexFile::open(&dest).unwrap();
                assert_eq!(g.verify().unwrap(), 300);
                assert_eq!(g.capacity(), 1000);
                let k3 = g.query(fingerprint(b"k3"), 0, u64::MAX >> 1, 1000).unwrap();
                let mut offsets: Vec<u64> = k3.iter().map(|e| e.offset).collect();
                offsets.sort_unstable();
                assert_eq!(
                    offsets,
                    (0..300).filter(|i| i % 7 == 3).collect::<Vec<_>>(),
                    "{what}"
                );
            }
        }
    }

    #[test]
    fn salvage_without_a_header_finds_the_entries_of_a_file_cut_short_or_extended() {
        // The geometry came only from an entry area filling the file to its
        // end: a file cut short, or with bytes after its end, lost every
        // entry (an intact header salvages the same file whole).
        type Change = fn(&mut Vec<u8>);
        let changes: [(&str, Change); 4] = [
            ("cut 17 bytes short", |raw| raw.truncate(raw.len() - 17)),
            ("cut inside its entries", |raw| {
                raw.truncate(unsealed_entries_offset(16) as usize + 300 * ENTRY_LEN + 3)
            }),
            ("10 zero bytes after its end", |raw| raw.extend([0u8; 10])),
            ("33 bytes after its end", |raw| raw.extend([0xA5u8; 33])),
        ];
        for (what, change) in changes {
            let dir = tempfile::tempdir().unwrap();
            let path = with_damaged_header(dir.path(), 16, 300, |raw| raw[13] ^= 0x01);
            let mut raw = std::fs::read(&path).unwrap();
            change(&mut raw);
            std::fs::write(&path, &raw).unwrap();
            let dest = dir.path().join("s.tix");
            let report = salvage(&path, &dest).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                report,
                SalvageReport {
                    kept: 300,
                    damaged: 0
                },
                "{what}"
            );
            assert_eq!(
                IndexFile::open(&dest).unwrap().verify().unwrap(),
                300,
                "{what}"
            );
        }
    }

    #[test]
    fn salvage_without_a_header_skips_a_zeroed_start() {
        // A torn first page, zeroed: header, slot table and the first
        // entries. The entries after it are found, not lost with them.
        for slots in [16, 64] {
            let dir = tempfile::tempdir().unwrap();
            let path = with_damaged_header(dir.path(), slots, 300, |raw| raw[..4096].fill(0));
            let first_kept =
                (4096 - unsealed_entries_offset(slots) as usize).div_ceil(ENTRY_LEN) as u64;
            let report = salvage(&path, &dir.path().join("s.tix"))
                .unwrap_or_else(|e| panic!("{slots} slots: {e}"));
            assert_eq!(report.kept, 300 - first_kept, "{slots} slots");
            let g = IndexFile::open(&dir.path().join("s.tix")).unwrap();
            let k3 = g.query(fingerprint(b"k3"), 0, u64::MAX >> 1, 1000).unwrap();
            let mut offsets: Vec<u64> = k3.iter().map(|e| e.offset).collect();
            offsets.sort_unstable();
            let want: Vec<u64> = (first_kept..300).filter(|i| i % 7 == 3).collect();
            assert_eq!(offsets, want, "{slots} slots");
        }
    }

    #[test]
    fn salvage_without_a_header_finds_a_single_entry_and_refuses_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = with_damaged_header(dir.path(), 64, 1, |raw| raw[..HEADER_LEN].fill(0));
        let report = salvage(&path, &dir.path().join("one.tix")).unwrap();
        assert_eq!(
            report,
            SalvageReport {
                kept: 1,
                damaged: 0
            }
        );
        let empty = dir.path().join("e");
        std::fs::create_dir(&empty).unwrap();
        let path = with_damaged_header(&empty, 64, 0, |raw| raw[..HEADER_LEN].fill(0));
        let err = salvage(&path, &empty.join("none.tix")).unwrap_err();
        assert!(err.to_string().contains("no entries were found"), "{err}");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn create_leaves_the_named_file_only_and_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tix");
        IndexFile::create(&path, 4, 10, 0).unwrap().close().unwrap();
        assert_eq!(names_in(dir.path()), ["c.tix"]);
        std::fs::write(&path, b"precious").unwrap();
        let refused = IndexFile::create(&path, 4, 10, 0);
        assert!(
            matches!(&refused, Err(Error::Io { path: p, source }) if p == &path && source.kind() == std::io::ErrorKind::AlreadyExists),
            "{:?}",
            refused.err()
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
        assert_eq!(names_in(dir.path()), ["c.tix"]);
    }

    /// The child of `killed_create_leaves_no_named_file`.
    #[test]
    #[ignore = "run by killed_create_leaves_no_named_file, in a child it kills"]
    fn create_in_a_child() {
        if let Some(path) = std::env::var_os("TIX_CREATE_PATH") {
            IndexFile::create(Path::new(&path), 16, 1000, 0).unwrap();
        }
    }

    #[test]
    fn killed_create_leaves_no_named_file() {
        use std::os::unix::process::ExitStatusExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.tix");
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "index::tests::create_in_a_child", "--ignored"])
            .env("TIEREDINDEX_FAULTS", "create.after_preallocate:kill")
            .env("TIX_CREATE_PATH", &path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        // Killed with the space taken and no header: no file has the name
        // (a store's journal then says it was never created), only a
        // temporary file its recovery removes.
        assert!(!path.exists());
        let left = names_in(dir.path());
        assert!(
            left.len() == 1 && left[0].starts_with(".k.tix.") && left[0].ends_with(".creating"),
            "{left:?}"
        );
        IndexFile::create(&path, 4, 10, 0).unwrap();
    }

    #[test]
    fn second_writer_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.tix");
        let _f = IndexFile::create(&path, 4, 10, 0).unwrap();
        assert!(matches!(IndexFile::open(&path), Err(Error::Locked { .. })));
    }

    #[test]
    fn truncated_under_us_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.tix");
        let f = IndexFile::create(&path, 4, 1000, 0).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        assert!(matches!(
            f.put(&entry("k", 0, 0)),
            Err(Error::Corrupt { .. })
        ));
        assert!(matches!(f.query(1, 0, 1, 1), Err(Error::Corrupt { .. })));
    }
}
