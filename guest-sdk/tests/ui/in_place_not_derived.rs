// `export_app!(App, in_place)` needs the state to be `InPlace`: derived, not assumed.
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
struct Store {
    count: u64,
}

impl hotswap_guest::App for Store {
    fn message(&mut self, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }
}

hotswap_guest::export_app!(Store, in_place);

fn main() {}
