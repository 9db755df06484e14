//! The in-place swap: versions whose state layout is equal hand over the linear memory itself;
//! any other swap goes by value and says why.

use hotswap::SwapPath;
use hotswap_tests::*;

/// The path a swap took, panicking with the swap line if it is not the expected one.
fn by_value_reason(report: &hotswap::SwapReport) -> &str {
    report
        .path
        .reason()
        .unwrap_or_else(|| panic!("expected a swap by value: {report}"))
}

fn assert_in_place(report: &hotswap::SwapReport) {
    assert!(
        matches!(report.path, SwapPath::InPlace(_)),
        "expected a swap in place: {report}"
    );
    assert!(report.to_string().contains("kept in place"), "{report}");
}

/// kv-v1's code kept in place: a swap to a build with the same layout (kv-in-place-next)
/// keeps the memory, and the state reads back identical; a swap to kv-v2 goes by value.
#[test]
pub fn kv_in_place() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_IN_PLACE);
    assert_eq!(send(&mut app, "fill 5000"), "kv v1: 5000");
    assert_eq!(send(&mut app, "set alpha one"), "kv v1: ok");
    let before = state(&mut app);
    let memory = app.memory_size();

    let report = swap(&mut app, KV_IN_PLACE_NEXT);
    assert_in_place(&report);
    assert_eq!(report.state_len, 0, "nothing was carried by value");
    assert_eq!(send(&mut app, "get alpha"), "kv v1 (next): one");
    assert_eq!(send(&mut app, "count"), "kv v1 (next): 5001");
    assert_eq!(state(&mut app), before, "the state reads back identical");
    assert!(app.memory_size() >= memory);

    // And back, and on: the new code allocates and frees in the adopted heap.
    assert_eq!(send(&mut app, "set beta two"), "kv v1 (next): ok");
    assert_eq!(send(&mut app, "del alpha"), "kv v1 (next): ok");
    assert_in_place(&swap(&mut app, KV_IN_PLACE));
    assert_eq!(send(&mut app, "get beta"), "kv v1: two");
    assert_eq!(send(&mut app, "get alpha"), "kv v1: (none)");
    assert_eq!(send(&mut app, "get 00000004999"), "kv v1: value-0000004999");

    // To a version that does not keep its state in place: by value, saying so.
    let report = swap(&mut app, KV_V2);
    assert_eq!(
        by_value_reason(&report),
        "the new version does not keep its state in place"
    );
    assert!(
        report
            .to_string()
            .contains("(not in place: the new version does not keep its state in place)"),
        "{report}"
    );
    assert_eq!(send(&mut app, "get beta"), "kv v2: two");
}

/// A version that keeps its state in place takes it by value from one that does not, then keeps
/// it in place from there on.
#[test]
pub fn kv_in_place_next() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V1);
    send(&mut app, "set k v");
    let report = swap(&mut app, KV_IN_PLACE);
    assert_eq!(
        by_value_reason(&report),
        "the running version does not keep its state in place"
    );
    assert_eq!(send(&mut app, "get k"), "kv v1: v");
    // Imported by value, then kept in place from there on.
    assert_in_place(&swap(&mut app, KV_IN_PLACE_NEXT));
    assert_eq!(send(&mut app, "get k"), "kv v1 (next): v");
}

/// todo-v1's code kept in place, over HTTP: in place to itself, then by value (migrated) to
/// todo-v2.
#[test]
pub fn todo_in_place() {
    let runtime = runtime();
    let mut app = start(&runtime, TODO_IN_PLACE);
    let post = |app: &mut hotswap::App, body: &str| {
        let request = hotswap_guest::http::Request {
            method: "POST".into(),
            path: "/todos".into(),
            body: hotswap_guest::http::Bytes(body.as_bytes().to_vec()),
            ..Default::default()
        };
        app.http(&request).expect("POST /todos").status
    };
    assert_eq!(post(&mut app, "milk"), 201);
    assert_eq!(post(&mut app, "bread"), 201);
    assert_in_place(&swap(&mut app, TODO_IN_PLACE));
    assert_eq!(send(&mut app, "x"), "todo-v1: 2 to-dos, 0 hits");
    let report = swap(&mut app, TODO_V2);
    assert_eq!(
        by_value_reason(&report),
        "the new version does not keep its state in place"
    );
    assert!(send(&mut app, "x").contains("2 to-dos"));
}

/// Swaps the base shape to `shape`: by value, with a reason that names the first differing
/// type line (`said`, and `new_text` from the new line), and the state reads back the same in
/// the new shape; then to the same shape again, in place.
fn shape_changes(shape: &str, said: &str, new_text: &str) {
    let runtime = runtime();
    let mut app = start(&runtime, SHAPES_IN_PLACE);
    for message in ["add one", "add two", "mark two", "add three"] {
        send(&mut app, message);
    }
    let before = send(&mut app, "show");
    let report = swap(&mut app, shape);
    let reason = by_value_reason(&report);
    assert!(
        reason.starts_with("the state's layout changed: "),
        "{reason}"
    );
    assert!(
        reason.contains(said) && reason.contains(new_text),
        "{shape}: {reason}"
    );
    let strip = |s: &str| s.split_once(": ").map(|(_, rest)| rest.to_owned());
    assert_eq!(strip(&send(&mut app, "show")), strip(&before), "{shape}");
    assert_in_place(&swap(&mut app, shape));
    assert_eq!(strip(&send(&mut app, "show")), strip(&before), "{shape}");
}

/// The base shape, in place to itself.
#[test]
pub fn shapes_in_place() {
    let runtime = runtime();
    let mut app = start(&runtime, SHAPES_IN_PLACE);
    send(&mut app, "add one");
    assert_in_place(&swap(&mut app, SHAPES_IN_PLACE));
    assert_eq!(
        send(&mut app, "show"),
        r#"base: count=1 label=one tags=["one"] entries=["one=Plain[1]"]"#
    );
}

/// A field added.
#[test]
pub fn shapes_in_place_field() {
    shape_changes(
        SHAPES_IN_PLACE_FIELD,
        "`#4 struct State size 48",
        "added: #",
    );
}

/// `Vec<String>` became `Vec<Tag>`: the same bytes, another type inside a collection.
#[test]
pub fn shapes_in_place_collection() {
    shape_changes(
        SHAPES_IN_PLACE_COLLECTION,
        "`#11 struct Entry",
        "became `#11 struct Tag size 12 align 4 {0: #8 at 0}`",
    );
}

/// A variant added to an enum.
#[test]
pub fn shapes_in_place_variant() {
    shape_changes(SHAPES_IN_PLACE_VARIANT, "enum Kind", "variant Urgent");
}

/// The same fields in another order.
#[test]
pub fn shapes_in_place_order() {
    shape_changes(
        SHAPES_IN_PLACE_ORDER,
        "`#4 struct State size 48 align 8 {count: #7 at 0, label: #8 at 8",
        "became `#4 struct State size 48 align 8 {label: #7 at 8, count: #8 at 0",
    );
}

/// A hand-written module that claims `layout` (so the host lets it adopt the memory), whose
/// data segments cover the running version's static data (4 KiB of 0xAA at 1 MiB), with
/// `adopt` as the body of `hotswap_adopt` and `pages` of initial memory. Its import accepts
/// any state and keeps none.
fn claiming(layout: &str, adopt: &str, pages: u32) -> String {
    let hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("\\{b:02x}"))
            .collect::<String>()
    };
    format!(
        r#"(module
  (memory (export "memory") {pages})
  (data (i32.const 1048576) "{garbage}")
  (data (i32.const 1060000) "{text}")
  (data (i32.const 1075000) "hostile: will not adopt")
  (func (export "hotswap_abi_version") (result i32) i32.const 1)
  (func (export "hotswap_state_version") (result i32) i32.const 1)
  (func (export "hotswap_output") (result i32) i32.const 1070000)
  (func (export "hotswap_reserve") (param i32) (result i32) i32.const 1100000)
  (func (export "hotswap_start") (result i32) i32.const 0)
  (func (export "hotswap_import_state") (param i32 i32) (result i32) i32.const 0)
  (func (export "hotswap_export_state") (result i32) i32.const 0)
  (func (export "hotswap_message") (param i32) (result i32) i32.const 0)
  (func (export "hotswap_tick") (param i64) (result i32) i32.const 0)
  (func (export "hotswap_layout") (result i32)
    (i32.store (i32.const 1070000) (i32.const 1060000))
    (i32.store (i32.const 1070004) (i32.const {len}))
    i32.const 0)
  (func (export "hotswap_adopt") (result i32) {adopt}))"#,
        garbage = hex(&[0xaa; 4096]),
        text = hex(layout.as_bytes()),
        len = layout.len(),
    )
}

/// `hotswap_adopt` bodies that fail: with a message, by trapping, after growing memory.
const REFUSE: &str = "(i32.store (i32.const 1070000) (i32.const 1075000)) (i32.store (i32.const 1070004) (i32.const 23)) i32.const 1";
const TRAP: &str = "unreachable";
const LOOP: &str = "(loop $forever (br $forever)) i32.const 0";
const GROW_THEN_REFUSE: &str = "(drop (memory.grow (i32.const 64))) (i32.store (i32.const 1070000) (i32.const 1075000)) (i32.store (i32.const 1070004) (i32.const 23)) i32.const 1";

/// A module that passes the layout check and then fails to adopt (after its data segments
/// overwrote the running version's static data, and after growing memory) is refused, and the
/// running version serves on with its state and static data as they were.
#[test]
fn a_failed_adoption_leaves_the_running_version_as_it_was() {
    let runtime = runtime_with(hotswap::Config {
        inherit_stdio: false,
        call_timeout: std::time::Duration::from_millis(300),
        ..hotswap::Config::default()
    });
    let layout = prepare(&runtime, KV_IN_PLACE)
        .layout()
        .expect("kv-in-place keeps its state in place")
        .to_owned();
    for (adopt, said) in [
        (REFUSE, "hostile: will not adopt"),
        (TRAP, "unreachable"),
        (GROW_THEN_REFUSE, "hostile: will not adopt"),
        (LOOP, "ran longer than the 300 ms call limit"),
    ] {
        let mut app = start(&runtime, KV_IN_PLACE);
        send(&mut app, "fill 2000");
        send(&mut app, "set alpha one");
        let (before, memory) = (state(&mut app), app.memory_size());
        let wat = claiming(&layout, adopt, 18);
        let prepared = runtime
            .prepare("hostile.wat", wat.as_bytes())
            .expect("prepare");
        let refused = app.swap(prepared).expect_err("the adoption fails");
        let text = refused.to_string();
        assert!(
            text.contains("could not adopt the state kept in place") && text.contains(said),
            "{text}"
        );
        assert_eq!(app.memory_size(), memory, "the memory's size is put back");
        assert_eq!(send(&mut app, "get alpha"), "kv v1: one");
        assert_eq!(send(&mut app, "count"), "kv v1: 2001");
        assert_eq!(state(&mut app), before);
        // The running version's own static data is back: its next swap in place works.
        assert_in_place(&swap(&mut app, KV_IN_PLACE_NEXT));
        assert_eq!(send(&mut app, "get alpha"), "kv v1 (next): one");
    }
}

/// A description that differs only in its compiler, its allocator or its SDK line, or a module
/// whose static data would reach the heap: by value, saying why.
#[test]
fn a_different_toolchain_allocator_or_static_size_goes_by_value() {
    let runtime = runtime();
    let layout = prepare(&runtime, KV_IN_PLACE)
        .layout()
        .expect("kv-in-place keeps its state in place")
        .to_owned();
    let replace_line = |prefix: &str, with: &str| {
        let lines: Vec<String> = (layout.lines())
            .map(|l| {
                if l.starts_with(prefix) {
                    with.to_owned()
                } else {
                    l.to_owned()
                }
            })
            .collect();
        assert_ne!(lines.join("\n") + "\n", layout, "{prefix}");
        lines.join("\n") + "\n"
    };
    let cases = [
        (
            replace_line("rustc ", "rustc 1.96.0 (a later compiler)"),
            18,
            "built by another compiler: `rustc ",
        ),
        (
            replace_line("heap ", "heap dlmalloc 0.2.15 at 8388608"),
            18,
            "another allocator: `heap dlmalloc 0.2.14",
        ),
        (
            replace_line("hotswap-guest ", "hotswap-guest 0.2.0"),
            18,
            "built with another version of the SDK",
        ),
        (
            layout.clone(),
            200,
            "the new version: its static data and initial memory (13107200 bytes) reach past the in-place heap's base (8388608 bytes)",
        ),
    ];
    for (text, pages, said) in cases {
        let mut app = start(&runtime, KV_IN_PLACE);
        send(&mut app, "set alpha one");
        let wat = claiming(&text, REFUSE, pages);
        let prepared = runtime
            .prepare("other.wat", wat.as_bytes())
            .expect("prepare");
        let report = app.swap(prepared).unwrap_or_else(|e| panic!("{e}"));
        let reason = by_value_reason(&report);
        assert!(reason.starts_with(said), "{reason}");
    }
}

/// Many swaps in place leave nothing behind: the memory does not grow from one to the next,
/// and the state is the one the first version built.
#[test]
fn swapping_in_place_again_and_again_grows_nothing() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_IN_PLACE);
    send(&mut app, "fill 3000");
    let before = state(&mut app);
    // One round first: the new code's first allocations may grow the heap once.
    assert_in_place(&swap(&mut app, KV_IN_PLACE_NEXT));
    assert_in_place(&swap(&mut app, KV_IN_PLACE));
    let memory = app.memory_size();
    for _ in 0..100 {
        assert_in_place(&swap(&mut app, KV_IN_PLACE_NEXT));
        assert_eq!(send(&mut app, "count"), "kv v1 (next): 3000");
        assert_in_place(&swap(&mut app, KV_IN_PLACE));
    }
    assert_eq!(
        app.memory_size(),
        memory,
        "200 swaps in place grew the memory"
    );
    assert_eq!(state(&mut app), before);
}
