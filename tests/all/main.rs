//! Hotswap's integration tests: one binary. Guests are built from source by `build.rs`;
//! malformed modules are inline WAT.

mod cli;
mod deploy;
mod evolution;
mod failures;
mod guests;
mod hostile;
mod http;
mod in_place;
mod limits;
mod memory;
mod metrics;
mod operators;
mod persist;
mod property;
mod reloads;
mod scaffold;
mod sdk;
mod testing;
mod watch;

/// Every example guest has a test named after it in `guests.rs`: adding a guest without one is
/// a compile error here.
macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use crate::guests::$name as _;
    };
}
hotswap_tests::foreach_guest!(assert_test_exists);
