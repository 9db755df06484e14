// `export_app!` takes exactly one type.
hotswap_guest::export_app!(First, Second);

fn main() {}
