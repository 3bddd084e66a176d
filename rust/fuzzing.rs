//! Entry points for the fuzz targets (fuzz/) and for the bounded replay of
//! random inputs that `cargo test` runs on stable Rust. Each takes
//! arbitrary bytes and exercises every reader; errors are fine, panics are
//! not.

use crate::index::{salvage, IndexFile};
use crate::keyhash::fingerprint;
use crate::sealed::{Footer, SealedIndex};

/// Opens `data` as a sealed object from memory and through the range reader.
pub fn sealed_bytes(data: &[u8]) {
    let len = data.len() as u64;
    if let Ok(index) = SealedIndex::from_bytes("fuzz".into(), data.to_vec()) {
        for key in [&b"a"[..], b"key-1", b""] {
            let _ = index.query(fingerprint(key), 0, u64::MAX >> 1, 100);
        }
        let _ = index.verify();
    }
    if data.len() >= 40 {
        let _ = Footer::footer_len(&data[data.len() - 40..], len, "fuzz");
    }
    if let Ok(footer) = Footer::parse(data, len, "fuzz") {
        let fp = fingerprint(b"a");
        let (start, end) = footer.geometry.slot_record(fp);
        let (start, end) = footer.geometry.block_span(start, end);
        if let Some(span) = data.get(start as usize..end as usize) {
            if footer.verify_span(start, span, "fuzz").is_ok() {
                if let Ok(run) = footer.slot_run(start, span, fp, "fuzz") {
                    let (s, e) = footer.geometry.entries_range(run.0, run.1);
                    let (s, e) = footer.geometry.block_span(s, e);
                    if let Some(span) = data.get(s as usize..e as usize) {
                        let _ = footer.match_run(s, span, run, fp, 0, u64::MAX >> 1, 10, "fuzz");
                    }
                }
            }
        }
    }
}

/// Writes `data` to a file and opens it as an unsealed index file (which
/// recovers it if it looks unclean), then queries, verifies, salvages and
/// seals it.
pub fn unsealed_bytes(data: &[u8]) {
    let Ok(dir) = tempfile_dir() else { return };
    let path = dir.join("f.tix");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    if let Ok(file) = IndexFile::open(&path) {
        let _ = file.query(fingerprint(b"a"), 0, u64::MAX >> 1, 100);
        let _ = file.verify();
        let _ = file.seal(&dir.join("f.sealed"), false);
        let _ = file.close();
    }
    let _ = salvage(&path, &dir.join("salvaged.tix"));
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tix-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::NewEntry;

    /// A small valid unsealed file and its sealed form, as seeds.
    fn seeds() -> (Vec<u8>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let f = IndexFile::create(&dir.path().join("u.tix"), 4, 64, 0).unwrap();
        for i in 0..40u64 {
            let key = [b'a' + (i % 3) as u8];
            f.put(&NewEntry {
                fingerprint: fingerprint(&key),
                queue_id: 1,
                offset: i,
                size: 2,
                timestamp_ms: i,
            })
            .unwrap();
        }
        f.flush().unwrap();
        let unsealed = std::fs::read(dir.path().join("u.tix")).unwrap();
        f.seal(&dir.path().join("s.tix"), true).unwrap();
        (unsealed, std::fs::read(dir.path().join("s.tix")).unwrap())
    }

    /// Stable-Rust stand-in for the fuzzers: seeded mutations of valid files.
    #[test]
    fn mutated_inputs_never_panic() {
        let (unsealed, sealed) = seeds();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..300 {
            for seed in [&sealed, &unsealed] {
                let mut data = seed.clone();
                match next() % 4 {
                    0 => {
                        let at = (next() as usize) % data.len();
                        data[at] ^= 1 << (next() % 8);
                    }
                    1 => data.truncate((next() as usize) % data.len()),
                    2 => data.extend((0..next() % 100).map(|_| next() as u8)),
                    _ => {
                        for _ in 0..1 + next() % 16 {
                            let at = (next() as usize) % data.len();
                            data[at] = next() as u8;
                        }
                    }
                }
                if round % 2 == 0 {
                    sealed_bytes(&data);
                }
                unsealed_bytes(&data);
            }
        }
    }
}
