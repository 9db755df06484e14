//! kv-v1's code, its state kept in place: `guests/kv-v1/src/lib.rs` built with the feature
//! `in-place`.
#[path = "../../../kv-v1/src/lib.rs"]
mod kv;
