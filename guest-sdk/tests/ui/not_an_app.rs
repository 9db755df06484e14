// A type that does not implement `App` cannot be registered.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Notes {
    lines: Vec<String>,
}

hotswap_guest::export_app!(Notes);

fn main() {}
