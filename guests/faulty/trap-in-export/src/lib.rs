//! A counter whose state export traps once after the message `arm`: the swap fails in its
//! first phase, and the host must keep this version serving with its state intact.

use hotswap_guest::App;
use serde::{Deserialize, Serialize, Serializer};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by `arm`, consumed by the next export. Not part of the state.
static ARMED: AtomicBool = AtomicBool::new(false);

/// Same shape as the counter's state.
#[derive(Default, Deserialize)]
#[serde(default)]
struct Counter {
    value: i64,
}

impl Serialize for Counter {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if ARMED.swap(false, Ordering::SeqCst) {
            panic!("trap-in-export: export failed on purpose");
        }
        #[derive(Serialize)]
        struct Shape {
            value: i64,
        }
        Shape { value: self.value }.serialize(serializer)
    }
}

impl App for Counter {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        match input {
            b"arm" => ARMED.store(true, Ordering::SeqCst),
            b"inc" => self.value += 1,
            _ => {}
        }
        format!("trap-in-export: value={}", self.value).into_bytes()
    }
}

hotswap_guest::export_app!(Counter);
