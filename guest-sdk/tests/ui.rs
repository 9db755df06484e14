//! Misusing `export_app!` is a compile error with a helpful message. The expected messages are
//! checked in beside the cases, as `ui/*.stderr`.

#[test]
fn macro_misuse_is_a_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
