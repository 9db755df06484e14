// The state must be serializable to cross a swap.
#[derive(Default)]
struct Counter {
    value: i64,
}

impl hotswap_guest::App for Counter {
    fn message(&mut self, _input: &[u8]) -> Vec<u8> {
        self.value += 1;
        Vec::new()
    }
}

hotswap_guest::export_app!(Counter);

fn main() {}
