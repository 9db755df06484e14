//! A planted bug for `hotswap test --same-behaviour`: a refactor of counter v1 meant to change
//! nothing, which changed one reply (the one to an unknown command). The state and every other
//! reply are counter v1's, so only comparing replies finds it.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Counter {
    value: i64,
}

impl App for Counter {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        let step = match input {
            b"inc" => 5,
            b"get" => 0,
            // The bug: counter v1 says "error: expected inc or get".
            _ => return b"error: unknown command".to_vec(),
        };
        self.value += step;
        format!("counter v1: value={}", self.value).into_bytes()
    }
}

hotswap_guest::export_app!(Counter);
