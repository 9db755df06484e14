//! Key-value store, version 3: a renamed and retyped field, through an explicit migration.
//!
//! `entries: map<String, String>` became `records: map<String, Record>`, where a record also
//! counts how often it was written. That is not a compatible change, so `STATE_VERSION` is 2 and
//! `migrate` reads the old shape (kept below as `StoreV1`) and builds the new one, like Erlang's
//! `code_change`. Commands: those of version 2, plus `writes KEY`.

use hotswap_guest::{App, MigrateError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// State, shape 2.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Store {
    // Decoded in bulk: a large map takes over faster at a swap (see `hotswap_guest::de`).
    #[serde(deserialize_with = "hotswap_guest::de::btree_map")]
    records: BTreeMap<String, Record>,
    reads: u64,
}

/// One value and the number of times it was written.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Record {
    value: String,
    writes: u32,
}

/// State, shape 1, as versions 1 and 2 wrote it (version 1 had no `reads`: it defaults to 0).
/// Its values were plain strings; they are read straight into records, so the migration builds
/// the new map once, while decoding, rather than decoding the old map and converting it.
#[derive(Default, Deserialize)]
#[serde(default)]
struct StoreV1 {
    #[serde(deserialize_with = "records_from_strings")]
    entries: BTreeMap<String, Record>,
    reads: u64,
}

/// A version-1 value becomes a record written once.
impl From<String> for Record {
    fn from(value: String) -> Self {
        Record { value, writes: 1 }
    }
}

fn records_from_strings<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, Record>, D::Error> {
    hotswap_guest::de::btree_map_from::<D, String, String, Record>(deserializer)
}

impl App for Store {
    const STATE_VERSION: u32 = 2;

    fn migrate(from_version: u32, old_state: &[u8]) -> Result<Self, MigrateError> {
        match from_version {
            1 => {
                let old: StoreV1 = hotswap_guest::decode(old_state)?;
                Ok(Store {
                    records: old.entries,
                    reads: old.reads,
                })
            }
            other => Err(MigrateError::new(format!(
                "kv v3 cannot migrate state version {other}"
            ))),
        }
    }

    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(input);
        let mut words = text.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("set"), Some(key), Some(value)) => {
                let record = self.records.entry(key.to_owned()).or_default();
                record.value = value.to_owned();
                record.writes += 1;
                "ok".to_owned()
            }
            (Some("get"), Some(key), None) => {
                self.reads += 1;
                self.records
                    .get(key)
                    .map(|r| r.value.clone())
                    .unwrap_or_else(|| "(none)".into())
            }
            (Some("writes"), Some(key), None) => {
                self.records.get(key).map_or(0, |r| r.writes).to_string()
            }
            (Some("del"), Some(key), None) => match self.records.remove(key) {
                Some(_) => "ok".to_owned(),
                None => "(none)".to_owned(),
            },
            (Some("count"), None, None) => self.records.len().to_string(),
            (Some("reads"), None, None) => self.reads.to_string(),
            _ => "error: expected set KEY VALUE | get KEY | writes KEY | del KEY | count | reads"
                .to_owned(),
        };
        format!("kv v3: {reply}").into_bytes()
    }
}

hotswap_guest::export_app!(Store);
