// A type kept in place cannot borrow, and a union cannot be described.
#[derive(hotswap_guest::InPlace)]
struct Borrowed<'a> {
    name: &'a str,
}

#[derive(hotswap_guest::InPlace)]
union Either {
    a: u32,
    b: f32,
}

fn main() {}
