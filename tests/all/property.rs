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

/// kv-v1's code, by value or kept in place (two builds with the same layout).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kv {
    ByValue,
    InPlace,
    InPlaceNext,
}

impl Kv {
    fn path(self) -> &'static str {
        match self {
            Kv::ByValue => KV_V1,
            Kv::InPlace => KV_IN_PLACE,
            Kv::InPlaceNext => KV_IN_PLACE_NEXT,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kv::InPlaceNext => "kv v1 (next)",
            _ => "kv v1",
        }
    }
}

#[derive(Clone, Debug)]
enum KvOp {
    Set(u8, u16),
    Del(u8),
    Get(u8),
    Fill(u16),
    Swap(Kv),
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    let kv = prop_oneof![Just(Kv::ByValue), Just(Kv::InPlace), Just(Kv::InPlaceNext)];
    prop_oneof![
        4 => (any::<u8>(), any::<u16>()).prop_map(|(k, v)| KvOp::Set(k, v)),
        2 => any::<u8>().prop_map(KvOp::Del),
        3 => any::<u8>().prop_map(KvOp::Get),
        1 => (0..3000u16).prop_map(KvOp::Fill),
        3 => kv.prop_map(KvOp::Swap),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random events and swaps among kv-v1's builds, both paths mixed, against a model: every
    /// reply matches it, every swap takes the path it should, and after every swap the state
    /// exports the same bytes as before it.
    #[test]
    fn kv_events_and_swaps_in_place_and_by_value_match_the_model(ops in prop::collection::vec(kv_op(), 1..40)) {
        let runtime = runtime();
        let mut running = Kv::InPlace;
        let mut app = start(&runtime, running.path());
        let mut model = std::collections::BTreeMap::new();
        for op in ops {
            let name = running.name();
            match op {
                KvOp::Set(k, v) => {
                    model.insert(format!("k{k}"), format!("v{v}"));
                    prop_assert_eq!(send(&mut app, &format!("set k{k} v{v}")), format!("{name}: ok"));
                }
                KvOp::Del(k) => {
                    let had = model.remove(&format!("k{k}")).is_some();
                    let said = if had { "ok" } else { "(none)" };
                    prop_assert_eq!(send(&mut app, &format!("del k{k}")), format!("{name}: {said}"));
                }
                KvOp::Get(k) => {
                    let value = model.get(&format!("k{k}")).cloned().unwrap_or_else(|| "(none)".into());
                    prop_assert_eq!(send(&mut app, &format!("get k{k}")), format!("{name}: {value}"));
                }
                KvOp::Fill(n) => {
                    let start = model.len();
                    for i in start..start + usize::from(n) {
                        model.insert(format!("{i:011}"), format!("value-{i:010}"));
                    }
                    prop_assert_eq!(send(&mut app, &format!("fill {n}")), format!("{name}: {}", model.len()));
                }
                KvOp::Swap(next) => {
                    let before = state(&mut app);
                    let report = swap(&mut app, next.path());
                    let in_place = running != Kv::ByValue && next != Kv::ByValue;
                    prop_assert_eq!(report.path.reason().is_none(), in_place, "{}", report);
                    prop_assert_eq!(state(&mut app), before);
                    running = next;
                }
            }
        }
        prop_assert_eq!(send(&mut app, "count"), format!("{}: {}", running.name(), model.len()));
    }
}
