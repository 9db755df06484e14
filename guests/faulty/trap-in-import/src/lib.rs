//! A counter whose migration panics: swapping it in over a counter traps in the import phase,
//! and the host must keep the old version serving.

use hotswap_guest::{App, MigrateError};
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Counter {
    value: i64,
}

impl App for Counter {
    const STATE_VERSION: u32 = 2;

    fn migrate(from_version: u32, _old_state: &[u8]) -> Result<Self, MigrateError> {
        panic!("trap-in-import: migration from state version {from_version} crashed on purpose");
    }

    fn message(&mut self, _input: &[u8]) -> Vec<u8> {
        format!("trap-in-import: value={}", self.value).into_bytes()
    }
}

hotswap_guest::export_app!(Counter);
