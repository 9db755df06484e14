// Function pointers, trait objects and `&'static` point into the module's code or static data:
// none can be kept in place.
#[derive(hotswap_guest::InPlace)]
struct Handlers {
    on_event: fn(u32) -> u32,
}

#[derive(hotswap_guest::InPlace)]
struct Plugins {
    plugins: Vec<Box<dyn Fn()>>,
}

#[derive(hotswap_guest::InPlace)]
struct Names {
    greeting: &'static str,
}

fn main() {}
