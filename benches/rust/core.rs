//! Criterion benches of the bare Rust core (no Python in the loop).
//!
//! Run: `cargo bench --bench core` (results in `target/criterion/`).
//! `benches/report_core.py` reads `put_batch/fill_default_20M` to compare the
//! Python batch path with the bare Rust loop.
//!
//! - `crc32c/{1KiB,1MiB,64MiB}`: throughput of `checksum::crc32c`.
//! - `put_batch/fill_default_20M`: fills a RocketMQ-default file (5,000,000
//!   slots, 20,000,000 entries) with `put_batch` in batches of 1,000,000,
//!   fingerprints precomputed; one iteration = one whole fresh file (page
//!   faults of the fresh map included, create and close not timed).
//!   `put_batch/fill_default_20M_keys` does the same but hashes each batch's
//!   keys (`String`s, one per put, in put order) inside the timed loop: the
//!   whole job of the Python `put_batch(keys, ...)`, without Python.
//!   `put_batch/fill_1_10_2M` and `put_batch/fill_1_100_200k` do the same
//!   at 1/10 and 1/100 of the default size.
//! - `seal/full_1_10`: seals a full file of 1/10 the default size (500,000
//!   slots, 2,000,000 entries), fsync included; `seal/copy_1_10` is
//!   `std::fs::copy` of that unsealed file (what `cp` does), as an anchor.
//! - `sealed_query/*`: `SealedIndex::query` on that sealed file, keys with
//!   exactly 10 entries each.
//!
//! With `TIX_BENCH_QUICK=1` (`make bench-quick`) every group is short and
//! only the 1/100 size is used (`put_batch/fill_1_100_200k`,
//! `seal/{full,copy}_1_100`): a check that the benches still run.
//!
//! Bench files go to `$TIEREDINDEX_BENCH_DIR` (default: the system temp dir)
//! and are deleted afterwards.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use _native::checksum::crc32c;
use _native::index::{Batch, IndexFile};
use _native::keyhash::fingerprint;
use _native::SealedIndex;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

const DEFAULT_SLOTS: u32 = 5_000_000;
const DEFAULT_CAPACITY: u32 = 20_000_000;
const BATCH: usize = 1_000_000;
/// Every key is put this many times (so a query finds up to 10 entries).
const PUTS_PER_KEY: usize = 10;
const BEGIN_MS: u64 = 1_700_000_000_000;

/// splitmix64: a small, fast, deterministic generator for keys and shuffles.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

/// Columns of `n` entries: `n / PUTS_PER_KEY` random keys (`key-<16 hex>`),
/// each put `PUTS_PER_KEY` times in shuffled order.
struct Columns {
    key_fps: Vec<u64>,
    fingerprints: Vec<u64>,
    /// The same keys as strings, one allocation per put in put order (as the
    /// Python bench hands `put_batch` one `str` per put): for the fill that
    /// hashes them, the Python path's job without Python.
    keys: Vec<String>,
    queue_ids: Vec<u32>,
    offsets: Vec<u64>,
    sizes: Vec<u32>,
    timestamps_ms: Vec<u64>,
}

impl Columns {
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = Rng(seed);
        let distinct = n / PUTS_PER_KEY;
        let distinct_keys: Vec<String> = (0..distinct)
            .map(|_| format!("key-{:016x}", rng.next()))
            .collect();
        let key_fps: Vec<u64> = distinct_keys
            .iter()
            .map(|k| fingerprint(k.as_bytes()))
            .collect();
        let mut order: Vec<u32> = (0..n).map(|i| (i % distinct) as u32).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        Self {
            fingerprints: order.iter().map(|&k| key_fps[k as usize]).collect(),
            keys: order
                .iter()
                .map(|&k| distinct_keys[k as usize].clone())
                .collect(),
            queue_ids: (0..n).map(|i| (i % 8) as u32).collect(),
            offsets: (0..n).map(|i| i as u64 * 1024).collect(),
            sizes: (0..n).map(|i| 200 + (i % 1000) as u32).collect(),
            timestamps_ms: (0..n).map(|i| BEGIN_MS + i as u64 / 1000).collect(),
            key_fps,
        }
    }

    fn batch(&self, range: std::ops::Range<usize>) -> Batch<'_> {
        Batch {
            fingerprints: &self.fingerprints[range.clone()],
            queue_ids: &self.queue_ids[range.clone()],
            offsets: &self.offsets[range.clone()],
            sizes: &self.sizes[range.clone()],
            timestamps_ms: &self.timestamps_ms[range],
        }
    }

    fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// Puts everything in batches of `BATCH`; returns the time spent. With
    /// `hash_keys`, each batch's fingerprints are computed from the key
    /// strings inside the timed loop, as the Python binding does; without,
    /// the precomputed ones are used (the kernel alone).
    fn fill(&self, file: &IndexFile, hash_keys: bool) -> Duration {
        let start = Instant::now();
        let mut hashed = Vec::with_capacity(if hash_keys { BATCH } else { 0 });
        let mut at = 0;
        while at < self.len() {
            let end = (at + BATCH).min(self.len());
            let mut batch = self.batch(at..end);
            if hash_keys {
                hashed.clear();
                hashed.extend(self.keys[at..end].iter().map(|k| fingerprint(k.as_bytes())));
                batch.fingerprints = &hashed;
            }
            let written = file.put_batch(&batch).expect("put_batch");
            assert_eq!(written, end - at, "file filled early");
            at = end;
        }
        start.elapsed()
    }
}

/// `TIX_BENCH_QUICK` set (and not `0`): short groups, small files.
fn quick() -> bool {
    std::env::var("TIX_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Measurement time: `full` normally, about a second in quick mode.
fn measure(full: u64) -> Duration {
    if quick() {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(full)
    }
}

fn warm_up() -> Duration {
    if quick() {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(1)
    }
}

fn bench_dir() -> tempfile::TempDir {
    let parent = std::env::var_os("TIEREDINDEX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("tieredindex-bench-")
        .tempdir_in(parent)
        .expect("bench dir")
}

fn crc32c_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    group.warm_up_time(warm_up());
    group.measurement_time(measure(3));
    let mut rng = Rng(42);
    let data: Vec<u8> = (0..64 << 20).map(|_| rng.next() as u8).collect();
    for (name, len) in [("1KiB", 1 << 10), ("1MiB", 1 << 20), ("64MiB", 64 << 20)] {
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(name, |b| b.iter(|| crc32c(black_box(&data[..len]))));
    }
    group.finish();
}

fn put_batch_benches(c: &mut Criterion) {
    let dir = bench_dir();
    // (name, fraction of the default size, measurement seconds)
    let sizes: &[(&str, u32, u64)] = if quick() {
        &[("fill_1_100_200k", 100, 1)]
    } else {
        &[
            ("fill_1_100_200k", 100, 3),
            ("fill_1_10_2M", 10, 5),
            ("fill_default_20M", 1, 25),
        ]
    };
    let mut group = c.benchmark_group("put_batch");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(warm_up());
    let mut serial = 0u32;
    for &(name, div, secs) in sizes {
        let (slots, capacity) = (DEFAULT_SLOTS / div, DEFAULT_CAPACITY / div);
        let cols = Columns::new(capacity as usize, 1);
        group.measurement_time(measure(secs));
        group.throughput(Throughput::Elements(u64::from(capacity)));
        // `<name>`: fingerprints given (the kernel alone); `<name>_keys`:
        // hashed from the key strings in the timed loop (the Python path's job).
        for (bench_name, hash_keys) in [(name.to_string(), false), (format!("{name}_keys"), true)] {
            group.bench_function(bench_name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        serial += 1;
                        let path = dir.path().join(format!("fill-{serial}.idx"));
                        let file =
                            IndexFile::create(&path, slots, capacity, BEGIN_MS).expect("create");
                        total += cols.fill(&file, hash_keys);
                        assert_eq!(file.count(), capacity);
                        drop(file); // close = msync of the whole file, not timed
                        std::fs::remove_file(&path).expect("remove");
                    }
                    total
                });
            });
        }
    }
    group.finish();
}

fn seal_and_query_benches(c: &mut Criterion) {
    let dir = bench_dir();
    let (div, tag) = if quick() {
        (100, "1_100")
    } else {
        (10, "1_10")
    };
    let (slots, capacity) = (DEFAULT_SLOTS / div, DEFAULT_CAPACITY / div);
    let cols = Columns::new(capacity as usize, 2);
    let source = dir.path().join(format!("full-{tag}.idx"));
    let file = IndexFile::create(&source, slots, capacity, BEGIN_MS).expect("create");
    cols.fill(&file, false);
    file.flush().expect("flush");
    let source_len = std::fs::metadata(&source).expect("stat").len();

    let mut group = c.benchmark_group("seal");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(warm_up());
    group.measurement_time(measure(5));
    group.throughput(Throughput::Bytes(source_len));
    let timed_to_fresh = |dest: &Path, op: &dyn Fn(&Path)| {
        let _ = std::fs::remove_file(dest);
        let start = Instant::now();
        op(dest);
        let took = start.elapsed();
        std::fs::remove_file(dest).expect("remove");
        took
    };
    let dest = dir.path().join("sealed.tix");
    group.bench_function(format!("full_{tag}"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    timed_to_fresh(&dest, &|d| {
                        let sealed = file.seal(d, true).expect("seal");
                        assert_eq!(sealed.count(), capacity);
                    })
                })
                .sum()
        });
    });
    let copy = dir.path().join("copy.idx");
    group.bench_function(format!("copy_{tag}"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    timed_to_fresh(&copy, &|d| {
                        std::fs::copy(&source, d).expect("copy");
                    })
                })
                .sum()
        });
    });
    group.finish();

    let sealed = file.seal(&dest, true).expect("seal");
    drop(sealed);
    let sealed = SealedIndex::open_path(&dest).expect("open sealed");
    let mut group = c.benchmark_group("sealed_query");
    group.warm_up_time(warm_up());
    group.measurement_time(measure(3));
    group.throughput(Throughput::Elements(1));
    let end = i64::MAX as u64;
    let hot = cols.key_fps[0];
    group.bench_function("same_key_10_entries", |b| {
        b.iter(|| {
            let hits = sealed.query(black_box(hot), 0, end, 64).expect("query");
            assert_eq!(hits.len(), PUTS_PER_KEY);
            hits
        });
    });
    let mut next = 0usize;
    group.bench_function("random_keys_10_entries", |b| {
        b.iter(|| {
            next = (next + 7919) % cols.key_fps.len();
            let hits = sealed.query(cols.key_fps[next], 0, end, 64).expect("query");
            assert_eq!(hits.len(), PUTS_PER_KEY);
            hits
        });
    });
    group.finish();
    drop(file);
}

criterion_group!(
    benches,
    crc32c_benches,
    put_batch_benches,
    seal_and_query_benches
);
criterion_main!(benches);
