//! Untrusted bytes, decoded every way the host and the guests decode them: no panic, no read
//! out of bounds, no runaway allocation; and what decodes re-encodes to the same value.
#![no_main]

use hotswap_msgpack::{from_slice, to_vec, value};
use hotswap_msgpack_fuzz::{Record, Tree};
use libfuzzer_sys::fuzz_target;
use serde::de::IgnoredAny;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = from_slice::<Tree>(data) {
        // Nesting may exceed the limit once re-encoded (a unit variant written as a map is
        // shorter, never longer), so only an encoding that succeeds is checked.
        if let Ok(bytes) = to_vec(&tree) {
            assert_eq!(from_slice::<Tree>(&bytes).unwrap(), tree);
        }
    }
    let _ = from_slice::<Record>(data);
    let _ = from_slice::<IgnoredAny>(data);
    if let Ok(value) = value::parse(data) {
        // The readable form of any value is valid JSON.
        serde_json::to_string(&value).unwrap();
    }
});
