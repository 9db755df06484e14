use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Counter {
    value: i64,
}

impl hotswap_guest::App for Counter {
    const STATE_VERSION: u32 = 3_000_000_000;

    fn message(&mut self, _input: &[u8]) -> Vec<u8> {
        Vec::new()
    }
}

hotswap_guest::export_app!(Counter);

fn main() {}
