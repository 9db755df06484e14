//! A counter whose message handler panics on `panic`. The host reports the panic's message,
//! moves the state into a fresh instance, and goes on serving.

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
            b"panic" => panic!(
                "panic-in-handler: the handler panicked on purpose at value {}",
                self.value
            ),
            b"inc" => self.value += 1,
            _ => {}
        }
        format!("panic-in-handler: value={}", self.value).into_bytes()
    }
}

hotswap_guest::export_app!(Counter);
