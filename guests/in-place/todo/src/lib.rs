//! todo-v1's code, its state kept in place: `guests/todo-v1/src/lib.rs` built with the feature
//! `in-place`.
#[path = "../../../todo-v1/src/lib.rs"]
mod todo;
