//! Notes, whose state type puts its fields at the top level through `#[serde(flatten)]`.
//!
//! Written over a running counter (a different app, same state version), its module must be
//! refused: decoding the counter's `{value: 15}` into this shape gives an empty, all-default
//! state, and the counter would be lost. The SDK's guard judges the state by the keys this code
//! writes back, which `flatten` does not hide.
//!
//! Messages: `add TEXT` adds a note; `list` replies with them, one per line.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

/// The notes themselves.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Notes {
    notes: Vec<String>,
}

/// All of the app's state: the notes, flattened into the top level.
#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct State {
    #[serde(flatten)]
    inner: Notes,
}

impl App for State {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        let input = String::from_utf8_lossy(input);
        if let Some(text) = input.strip_prefix("add ") {
            self.inner.notes.push(text.to_owned());
        }
        format!("flatten-state: {}", self.inner.notes.join(" | ")).into_bytes()
    }
}

hotswap_guest::export_app!(State);
