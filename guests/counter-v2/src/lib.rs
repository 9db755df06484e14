//! Counter, version 2: same state as version 1, new behaviour.
//!
//! Messages: `inc` adds 1 (version 1 added 5) and replies with the new value; `get` replies
//! with the value. The state is the same struct as version 1's, so a swap needs no migration.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

/// All of the app's state. `#[serde(default)]` lets later versions add fields freely.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Counter {
    value: i64,
}

/// How much `inc` adds; the only thing that changed since version 1.
const STEP: i64 = 1;

impl App for Counter {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        match input {
            b"inc" => self.value += STEP,
            b"get" => {}
            _ => return b"error: expected inc or get".to_vec(),
        }
        format!("counter v2: value={}", self.value).into_bytes()
    }
}

// Generates the module's exports; see `hotswap_abi` for the contract they implement.
hotswap_guest::export_app!(Counter);
