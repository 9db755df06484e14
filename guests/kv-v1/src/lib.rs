//! Key-value store, version 1: the start of a schema-evolution chain (v1 → v2 → v3).
//!
//! Messages are text commands: `set KEY VALUE`, `get KEY`, `del KEY`, `count`, and
//! `fill N`, which adds N generated records (`KEY = 11-digit number`, 16-byte value) so tests
//! and benchmarks can make state of any size.
//!
//! `guests/in-place/kv` builds this same code with the feature `in-place`: the state then stays
//! in linear memory across a swap to a version with the same layout (`export_app!(Store,
//! in_place)`), and the feature `next` (`guests/in-place/kv-next`) makes such a version, whose
//! replies say `kv v1 (next)`.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the replies name this version.
const NAME: &str = if cfg!(feature = "next") {
    "kv v1 (next)"
} else {
    "kv v1"
};

/// State, shape 1. Version 2 removes `last_key` and adds a field, with no migration code.
#[derive(Default, Serialize, Deserialize)]
#[cfg_attr(feature = "in-place", derive(hotswap_guest::InPlace))]
#[serde(default)]
struct Store {
    // Decoded in bulk: a large map takes over faster at a swap (see `hotswap_guest::de`).
    #[serde(deserialize_with = "hotswap_guest::de::btree_map")]
    entries: BTreeMap<String, String>,
    last_key: String,
}

impl App for Store {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(input);
        let mut words = text.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("set"), Some(key), Some(value)) => {
                self.entries.insert(key.to_owned(), value.to_owned());
                self.last_key = key.to_owned();
                "ok".to_owned()
            }
            (Some("get"), Some(key), None) => self
                .entries
                .get(key)
                .cloned()
                .unwrap_or_else(|| "(none)".into()),
            (Some("del"), Some(key), None) => match self.entries.remove(key) {
                Some(_) => "ok".to_owned(),
                None => "(none)".to_owned(),
            },
            (Some("count"), None, None) => self.entries.len().to_string(),
            (Some("fill"), Some(n), None) => match n.parse::<u64>() {
                Ok(n) => {
                    let start = self.entries.len() as u64;
                    for i in start..start + n {
                        self.entries
                            .insert(format!("{i:011}"), format!("value-{i:010}"));
                    }
                    self.entries.len().to_string()
                }
                Err(e) => format!("error: fill N: {e}"),
            },
            _ => "error: expected set KEY VALUE | get KEY | del KEY | count | fill N".to_owned(),
        };
        format!("{NAME}: {reply}").into_bytes()
    }
}

#[cfg(not(feature = "in-place"))]
hotswap_guest::export_app!(Store);
#[cfg(feature = "in-place")]
hotswap_guest::export_app!(Store, in_place);
