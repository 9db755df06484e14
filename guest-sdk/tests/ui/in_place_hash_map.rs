// A state kept in place cannot hold a `HashMap`: an empty one points into the module's static
// data, which the next version of the code overwrites.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Default, Serialize, Deserialize, hotswap_guest::InPlace)]
struct Store {
    entries: HashMap<String, String>,
}

impl hotswap_guest::App for Store {
    fn message(&mut self, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }
}

hotswap_guest::export_app!(Store, in_place);

fn main() {}
