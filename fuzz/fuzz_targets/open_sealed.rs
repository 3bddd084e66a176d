//! Arbitrary bytes as a sealed object: open, verify, query and the range
//! reader must return an answer or an error, never panic or fault.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    _native::fuzzing::sealed_bytes(data);
});
