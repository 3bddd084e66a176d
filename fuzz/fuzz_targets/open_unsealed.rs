//! Arbitrary bytes as an unsealed file: open (with crash recovery), verify,
//! query, salvage and seal must return an answer or an error, never panic or
//! fault.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    _native::fuzzing::unsealed_bytes(data);
});
