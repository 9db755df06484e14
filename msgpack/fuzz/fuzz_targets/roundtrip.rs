//! Arbitrary values: encoded as rmp-serde encodes them, decoded back equal, and written in
//! chunks from a buffer that never grows past its bound.
#![no_main]

use hotswap_msgpack::{CHUNK_SLACK, from_slice, to_vec, value, write_chunked};
use hotswap_msgpack_fuzz::Tree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (Tree, u16)| {
    let (tree, chunk) = input;
    let bytes = match to_vec(&tree) {
        Ok(bytes) => bytes,
        Err(e) => {
            assert!(e.to_string().contains("MAX_DEPTH"), "{e}");
            return;
        }
    };
    assert_eq!(bytes, rmp_serde::to_vec_named(&tree).unwrap());
    assert_eq!(from_slice::<Tree>(&bytes).unwrap(), tree);
    assert!(value::parse(&bytes).is_ok());

    let chunk = usize::from(chunk % 1024) + 1;
    let mut out = Vec::with_capacity(chunk + CHUNK_SLACK);
    let capacity = out.capacity();
    let mut joined = Vec::new();
    write_chunked(&mut out, chunk, &mut |p| joined.extend_from_slice(p), &tree).unwrap();
    assert_eq!(out.capacity(), capacity);
    joined.extend_from_slice(&out);
    assert_eq!(joined, bytes);
});
