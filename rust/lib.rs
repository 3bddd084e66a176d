//! tieredindex core: a hash-slot message index over a memory-mapped file,
//! its sealed (compact, checksummed, immutable) form, and CRC32C.
//!
//! Everything here is plain Rust; the Python bindings live in `py.rs` behind
//! the `python` feature, so `cargo test` needs no interpreter.

pub mod checksum;
pub mod entry;
pub mod error;
pub mod faults;
pub mod format;
pub mod fuzzing;
pub mod index;
pub mod keyhash;
pub mod mapping;
pub mod rocketmq;
pub mod sealed;

#[cfg(feature = "python")]
mod py;

pub use entry::Entry;
pub use error::{Error, Result};
pub use index::IndexFile;
pub use sealed::SealedIndex;
