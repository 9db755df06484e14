//! Key-value store, version 2: a field added and a field removed, no migration code.
//!
//! Same commands as version 1, plus `reads`, which counts the `get`s served since the field was
//! added. `STATE_VERSION` stays 1: state written by version 1 decodes directly, its `last_key`
//! is skipped and `reads` starts at its default, 0.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// State, shape 1 (compatible): `last_key` is gone, `reads` is new.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Store {
    // Decoded in bulk: a large map takes over faster at a swap (see `hotswap_guest::de`).
    #[serde(deserialize_with = "hotswap_guest::de::btree_map")]
    entries: BTreeMap<String, String>,
    reads: u64,
}

impl App for Store {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(input);
        let mut words = text.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("set"), Some(key), Some(value)) => {
                self.entries.insert(key.to_owned(), value.to_owned());
                "ok".to_owned()
            }
            (Some("get"), Some(key), None) => {
                self.reads += 1;
                self.entries
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "(none)".into())
            }
            (Some("del"), Some(key), None) => match self.entries.remove(key) {
                Some(_) => "ok".to_owned(),
                None => "(none)".to_owned(),
            },
            (Some("count"), None, None) => self.entries.len().to_string(),
            (Some("reads"), None, None) => self.reads.to_string(),
            _ => "error: expected set KEY VALUE | get KEY | del KEY | count | reads".to_owned(),
        };
        format!("kv v2: {reply}").into_bytes()
    }
}

hotswap_guest::export_app!(Store);
