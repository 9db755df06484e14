//! Random sequences of messages and swaps, checked against a model of the counter.

use hotswap_tests::*;
use proptest::prelude::*;

#[derive(Clone, Copy, Debug)]
enum Version {
    V1,
    V2,
    Wat,
}

impl Version {
    fn path(self) -> &'static str {
        match self {
            Version::V1 => COUNTER_V1,
            Version::V2 => COUNTER_V2,
            Version::Wat => COUNTER_WAT,
        }
    }

    fn step(self) -> i64 {
        match self {
            Version::V1 => 5,
            Version::V2 => 1,
            Version::Wat => 10,
        }
    }

    fn reply(self, value: i64) -> String {
        match self {
            Version::V1 => format!("counter v1: value={value}"),
            Version::V2 => format!("counter v2: value={value}"),
            Version::Wat => format!("counter-wat: value={value}"),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Inc,
    Get,
    Swap(Version),
    /// A swap the new version refuses: nothing may change.
    RefusedSwap,
}

fn version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2), Just(Version::Wat)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Inc),
        2 => Just(Op::Get),
        2 => version().prop_map(Op::Swap),
        1 => Just(Op::RefusedSwap),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn messages_and_swaps_match_the_model(first in version(), ops in prop::collection::vec(op(), 1..40)) {
        let runtime = runtime();
        let mut app = start(&runtime, first.path());
        let (mut running, mut value) = (first, 0i64);
        for op in ops {
            match op {
                Op::Inc => {
                    value += running.step();
                    prop_assert_eq!(send(&mut app, "inc"), running.reply(value));
                }
                Op::Get => prop_assert_eq!(send(&mut app, "get"), running.reply(value)),
                Op::Swap(next) => {
                    swap(&mut app, next.path());
                    running = next;
                }
                Op::RefusedSwap => {
                    prop_assert!(app.swap(prepare(&runtime, REFUSE_MIGRATION)).is_err());
                }
            }
        }
        prop_assert_eq!(send(&mut app, "get"), running.reply(value));
    }
}
