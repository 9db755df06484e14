//! A planted bug for trials, shadow runs and canaries: counter version 2 (the same state, `inc`
//! adds 1) rewritten with a bug: a command it does not know panics, where counter v1 answers
//! `error: expected inc or get`. Every other event works, so a plain swap succeeds and the bug
//! shows only when such a command arrives.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Counter {
    value: i64,
}

impl App for Counter {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        match input {
            b"inc" => self.value += 1,
            b"get" => {}
            // The bug: an unknown command was thought impossible.
            other => panic!("unknown command {:?}", String::from_utf8_lossy(other)),
        }
        format!("counter v2: value={}", self.value).into_bytes()
    }
}

hotswap_guest::export_app!(Counter);
