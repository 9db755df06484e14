//! A planted bug for `hotswap test`: a new version of kv v1 that stores numbers, whose
//! migration assumes every value kv v1 holds is one. It traps on the first state that holds
//! another value (`set b x`), so the swap is refused from that event on, and only there:
//! `hotswap test kv_v1.wasm trapping_migration.wasm` names the boundary and the events.

use hotswap_guest::{App, MigrateError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Numbers {
    entries: BTreeMap<String, i64>,
}

/// kv v1's state.
#[derive(Default, Deserialize)]
#[serde(default)]
struct StoreV1 {
    entries: BTreeMap<String, String>,
}

impl App for Numbers {
    const STATE_VERSION: u32 = 2;

    fn migrate(from_version: u32, old_state: &[u8]) -> Result<Self, MigrateError> {
        if from_version != 1 {
            return Err(MigrateError::new(format!(
                "no migration from v{from_version}"
            )));
        }
        let old: StoreV1 = hotswap_guest::decode(old_state)?;
        let entries = old
            .entries
            .into_iter()
            // The bug: `unwrap` on a value that need not be a number.
            .map(|(key, value)| (key, value.parse().unwrap()))
            .collect();
        Ok(Numbers { entries })
    }

    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(input);
        let mut words = text.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("set"), Some(key), Some(value)) => match value.parse() {
                Ok(n) => {
                    self.entries.insert(key.to_owned(), n);
                    "ok".to_owned()
                }
                Err(_) => "error: not a number".to_owned(),
            },
            (Some("get"), Some(key), None) => self
                .entries
                .get(key)
                .map_or("(none)".to_owned(), i64::to_string),
            (Some("count"), None, None) => self.entries.len().to_string(),
            _ => "error: expected set KEY NUMBER | get KEY | count".to_owned(),
        };
        format!("numbers: {reply}").into_bytes()
    }
}

hotswap_guest::export_app!(Numbers);
