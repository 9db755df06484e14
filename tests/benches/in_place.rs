//! The in-place swap against the by-value one, by record count (the Erlang anchor's sizes), and
//! what keeping the state in place costs per event.
//!
//! `cargo bench -p hotswap-tests --bench in_place` (add `-- --quick` for a smoke run). The
//! swaps are kv-v1's code to the same code built as a new version: `kv-in-place` →
//! `kv-in-place-next` (same layout, in place) beside `kv-v1` → `kv-v2` (by value, the same swap
//! as the `swap` bench's "same layout" row). Run `../shared/anchors/erlang/run.sh` in the same
//! session for Erlang's unchanged-state upgrade at the same record counts.

use hotswap::report::format_duration;
use hotswap::{App, Runtime, SwapPath};
use hotswap_tests::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runtime = bench_runtime();
    pauses(&runtime, quick);
    println!();
    per_event(&runtime, quick);
}

/// The pause of each swap at each record count, medians.
fn pauses(runtime: &Arc<Runtime>, quick: bool) {
    println!("## Swap pause by record count, unchanged layout (medians)");
    println!();
    println!(
        "| swap | records | runs | clear | instantiate | adopt | **pause** | by value: export + import + verify |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let counts: &[(usize, usize)] = if quick {
        &[(1_000, 5), (10_000, 3)]
    } else {
        &[(1_000, 21), (10_000, 21), (100_000, 11), (1_000_000, 7)]
    };
    for &(records, runs) in counts {
        for (kind, from, to) in [
            (
                "in place: kv-in-place → kv-in-place-next",
                KV_IN_PLACE,
                KV_IN_PLACE_NEXT,
            ),
            ("by value: kv-v1 → kv-v2", KV_V1, KV_V2),
        ] {
            let mut rows = Vec::new();
            for _ in 0..runs {
                // The previous run's memory is being unmapped on the host's dropping thread.
                std::thread::sleep(Duration::from_millis(10 + records as u64 / 10_000));
                rows.push(one_swap(runtime, from, to, records));
            }
            let pick = |f: &dyn Fn(&(hotswap::Phases, SwapPath)) -> Duration| {
                format_duration(median(rows.iter().map(f).collect()))
            };
            let timing = |f: fn(&hotswap::in_place::Timing) -> Duration| {
                move |row: &(hotswap::Phases, SwapPath)| match &row.1 {
                    SwapPath::InPlace(t) => f(t),
                    _ => Duration::ZERO,
                }
            };
            println!(
                "| {kind} | {records} | {runs} | {} | {} | {} | **{}** | {} |",
                pick(&timing(|t| t.clear)),
                pick(&timing(|t| t.instantiate)),
                pick(&timing(|t| t.adopt)),
                pick(&|row| row.0.pause),
                pick(&|row| row.0.export + row.0.import + row.0.verify),
            );
        }
    }
}

/// A fresh app of `from` filled with `records` records, swapped to `to` as `hotswap run` would
/// (the new version readied before the pause).
fn one_swap(
    runtime: &Arc<Runtime>,
    from: &str,
    to: &str,
    records: usize,
) -> (hotswap::Phases, SwapPath) {
    let mut app = start(runtime, from);
    let filled = send(&mut app, &format!("fill {records}"));
    assert!(filled.ends_with(&format!(": {records}")), "{filled}");
    let mut prepared = runtime.prepare_file(to.as_ref()).expect("prepare");
    if prepared.layout().is_none() {
        // What `hotswap run` does before a by-value pause.
        let state = records * 29;
        prepared.reserve_state(state + state / 100 + 64).unwrap();
        prepared.warm_heap(app.memory_size()).unwrap();
    }
    let report = app.swap(prepared).unwrap_or_else(|e| panic!("{e}"));
    let expected_in_place = to == KV_IN_PLACE_NEXT;
    assert_eq!(
        matches!(report.path, SwapPath::InPlace(_)),
        expected_in_place,
        "{report}"
    );
    let count = send(&mut app, "count");
    assert!(count.ends_with(&format!(": {records}")), "{count}");
    (report.phases, report.path)
}

/// Events per second of the same code with its state by value and in place: kv's `set` and
/// `get` and todo's `POST /hit`, alternating rounds so that drift hits both alike.
fn per_event(runtime: &Arc<Runtime>, quick: bool) {
    let (events, rounds) = if quick { (20_000, 3) } else { (200_000, 9) };
    println!(
        "## Per event, state by value against in place (median of {rounds} rounds of {events} events, ns per event)"
    );
    println!();
    println!("| guest, events | by value | in place | in place / by value |");
    println!("|---|---|---|---|");
    let kv = |app: &mut App, i: usize| {
        let message = if i.is_multiple_of(2) {
            format!("set key{} value-{i}", i % 10_000)
        } else {
            format!("get key{}", i % 10_000)
        };
        std::hint::black_box(app.message(message.as_bytes()).unwrap());
    };
    let todo = |app: &mut App, _: usize| {
        let request = hotswap_guest::http::Request {
            method: "POST".into(),
            path: "/hit".into(),
            ..Default::default()
        };
        std::hint::black_box(app.http(&request).unwrap());
    };
    let cases: [(&str, &str, &str, &Event); 2] = [
        ("kv, `set`/`get` over 10,000 keys", KV_V1, KV_IN_PLACE, &kv),
        ("todo, `POST /hit`", TODO_V1, TODO_IN_PLACE, &todo),
    ];
    for (name, by_value, in_place, event) in cases {
        let mut apps = [start(runtime, by_value), start(runtime, in_place)];
        let mut times = [Vec::new(), Vec::new()];
        for round in 0..=rounds {
            for (which, app) in apps.iter_mut().enumerate() {
                let started = Instant::now();
                for i in 0..events {
                    event(app, i);
                }
                // Round 0 warms up (the maps fill, the pages fault in).
                if round > 0 {
                    times[which].push(started.elapsed() / events as u32);
                }
            }
        }
        let [by_value, in_place] = times.map(median);
        println!(
            "| {name} | {} | {} | {:.3}× |",
            by_value.as_nanos(),
            in_place.as_nanos(),
            in_place.as_secs_f64() / by_value.as_secs_f64()
        );
    }
}

/// One event of a per-event row: the app, and the event's number.
type Event = dyn Fn(&mut App, usize);

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}
