//! Counter, version 1. The smallest app: one number.
//!
//! Messages: `inc` adds 5 and replies with the new value; `get` replies with the value.
//! Version 2 (`../counter-v2`) keeps the same state and adds 1 instead: after a swap, the value
//! counted so far by this version is still there, and the next `inc` runs the new code.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

/// All of the app's state. `#[serde(default)]` lets later versions add fields freely.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Counter {
    value: i64,
}

/// How much `inc` adds; the only thing version 2 changes.
const STEP: i64 = 5;

impl App for Counter {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        match input {
            b"inc" => self.value += STEP,
            b"get" => {}
            _ => return b"error: expected inc or get".to_vec(),
        }
        format!("counter v1: value={}", self.value).into_bytes()
    }
}

// Generates the module's exports; see `hotswap_abi` for the contract they implement.
hotswap_guest::export_app!(Counter);
