//! The SDK's state evolution rules, each with a test.

use hotswap::SwapError;
use hotswap_tests::*;

/// Adding a field (with a default) and removing one needs no migration: kv v2 drops v1's
/// `last_key` and adds `reads`, at the same state version.
#[test]
fn add_and_remove_fields_need_no_migration() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V1);
    send(&mut app, "set k v");
    let report = swap(&mut app, KV_V2);
    assert_eq!((report.from_state_version, report.to_state_version), (1, 1));
    assert_eq!(
        send(&mut app, "reads"),
        "kv v2: 0",
        "the added field starts at its default"
    );
    assert_eq!(send(&mut app, "get k"), "kv v2: v");
    assert_eq!(send(&mut app, "reads"), "kv v2: 1");
    // The removed field is gone from what v2 exports.
    let exported = state(&mut app);
    assert!(
        !contains(&exported, b"last_key"),
        "v2 still carries last_key"
    );
    assert!(contains(&exported, b"reads"));
}

/// A rename and a type change go through `migrate`, which reads the old shape.
#[test]
fn rename_and_retype_migrate_explicitly() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V2);
    send(&mut app, "set k v");
    send(&mut app, "get k");
    let report = swap(&mut app, KV_V3);
    assert_eq!((report.from_state_version, report.to_state_version), (1, 2));
    assert_eq!(send(&mut app, "get k"), "kv v3: v");
    assert_eq!(
        send(&mut app, "writes k"),
        "kv v3: 1",
        "migrate built the new record type"
    );
    assert_eq!(
        send(&mut app, "reads"),
        "kv v3: 2",
        "the renamed map kept its reads"
    );
    let exported = state(&mut app);
    assert!(contains(&exported, b"records") && !contains(&exported, b"entries"));
}

/// Straight from v1 to v3: the migration also reads state written before `reads` existed.
#[test]
fn migration_reads_every_older_shape() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V1);
    send(&mut app, "set k v");
    swap(&mut app, KV_V3);
    assert_eq!(send(&mut app, "get k"), "kv v3: v");
    assert_eq!(send(&mut app, "reads"), "kv v3: 1");
}

/// A swap to code with an older state version is refused before the pause, with a message that
/// says so (going back is a rollback, not a swap).
#[test]
fn older_code_is_refused() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V3);
    send(&mut app, "set k v");
    let before = state(&mut app);
    let refused = app.swap(prepare(&runtime, KV_V1)).unwrap_err();
    assert!(
        matches!(refused.error, SwapError::Downgrade { running: 2, new: 1 }),
        "{refused}"
    );
    assert!(
        refused.to_string().contains(
            "the new version's state version 1 is lower than the running version's 2: a swap never goes back"
        ),
        "{refused}"
    );
    assert_eq!(state(&mut app), before);
}

/// State from a different app at the same state version shares none of the app's fields: it is
/// refused rather than silently replaced by an all-default state.
#[test]
fn an_unrelated_apps_state_is_refused() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V3);
    send(&mut app, "set k v");
    let before = state(&mut app);
    // refuse-migration is a counter at state version 2, like kv v3.
    let refused = app.swap(prepare(&runtime, REFUSE_MIGRATION)).unwrap_err();
    assert!(matches!(refused.error, SwapError::Refused(_)), "{refused}");
    assert!(
        refused.to_string().contains("the state has none of this app's fields (it has records, reads; this app's state has value)"),
        "{refused}"
    );
    assert_eq!(state(&mut app), before);
}

/// The chain v1 → v2 → v3 keeps every record of a larger state.
#[test]
fn chain_keeps_every_record() {
    let runtime = runtime();
    let mut app = start(&runtime, KV_V1);
    assert_eq!(send(&mut app, "fill 20000"), "kv v1: 20000");
    swap(&mut app, KV_V2);
    send(&mut app, "set 00000000007 changed");
    swap(&mut app, KV_V3);
    assert_eq!(send(&mut app, "count"), "kv v3: 20000");
    assert_eq!(send(&mut app, "get 00000000007"), "kv v3: changed");
    assert_eq!(send(&mut app, "get 00000000019999"), "kv v3: (none)");
    assert_eq!(send(&mut app, "get 00000019999"), "kv v3: value-0000019999");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
