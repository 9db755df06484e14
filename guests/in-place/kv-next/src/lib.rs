//! kv-v1's code, its state kept in place, its replies saying `kv v1 (next)`: a new version
//! with the same layout as `guests/in-place/kv`. It is `guests/kv-v1/src/lib.rs` built with the
//! features `in-place` and `next`.
#[path = "../../../kv-v1/src/lib.rs"]
mod kv;
