//! A counter that refuses older state: its state version is 2 and it does not implement
//! `migrate`, so the SDK's default refuses with a message, and the host keeps the old version.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Counter {
    value: i64,
}

impl App for Counter {
    const STATE_VERSION: u32 = 2;

    fn message(&mut self, _input: &[u8]) -> Vec<u8> {
        format!("refuse-migration: value={}", self.value).into_bytes()
    }
}

hotswap_guest::export_app!(Counter);
