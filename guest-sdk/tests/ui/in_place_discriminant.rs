// An enum with fields kept in place needs its explicit discriminants as literals: their
// values are part of the layout its description must capture.
const BASE: u8 = 3;

#[derive(hotswap_guest::InPlace)]
#[repr(u8)]
enum Event {
    Start = BASE,
    Stop(u32) = 9,
}

fn main() {}
