// `export_app!` needs the app's type.
hotswap_guest::export_app!();

fn main() {}
