//! Misusing the SDK's registration macro is a compile error with a helpful message.
//! The expected messages are checked in under `tests/ui/*.stderr`.

#[test]
fn macro_misuse_is_a_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail(concat!(env!("CARGO_MANIFEST_DIR"), "/ui/*.rs"));
}
