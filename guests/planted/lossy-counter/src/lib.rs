//! A planted bug for `hotswap test`: counter v1's state plus a field that never reaches the
//! exported state. `#[serde(skip)]` keeps `incs` out of the state's bytes, so every swap (to
//! any version, this one included) silently resets it, and the replies that show it change.
//! `hotswap test counter_v1.wasm lossy_counter.wasm` reports the swap NEW → NEW as not
//! transparent.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Counter {
    value: i64,
    /// The bug: counted, shown, and lost at every swap.
    #[serde(skip)]
    incs: u64,
}

impl App for Counter {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        match input {
            b"inc" => {
                self.value += 5;
                self.incs += 1;
            }
            b"get" => {}
            _ => return b"error: expected inc or get".to_vec(),
        }
        format!("lossy counter: value={} ({} incs)", self.value, self.incs).into_bytes()
    }
}

hotswap_guest::export_app!(Counter);
