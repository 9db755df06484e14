//! Which types can be kept in place across a swap, and the description of their layout that
//! the host compares, old version against new, before it lets the new code adopt the memory.
//!
//! A type can be kept in place when its bytes mean the same thing to the next version of the
//! code: it holds no pointer into the module's code or static data (no `fn`, no `dyn`, no
//! `&'static`, no `HashMap`, whose empty table points at a static), only owned values and heap
//! pointers. [`InPlace`] says so; `#[derive(InPlace)]` implements it for a struct or an enum
//! whose fields all are, and it is implemented here for the standard types that are.
//!
//! The description is text, one line per type reachable from the app's state, each type
//! numbered in the order it is first reached (`#0` is the runtime), with its size, alignment
//! and, for a struct, each field's name, type and offset. Its first lines name the SDK, the
//! compiler and the allocator, whose versions the layout of the standard types and of the heap
//! depends on. Two versions whose descriptions are equal lay their state out the same.
use core::any::TypeId;
use core::fmt::{self, Write};

/// A type whose values can stay in linear memory while a new version of the code takes over.
///
/// Derive it (`#[derive(hotswap_guest::InPlace)]`) for the app's state type and every struct or
/// enum it holds; see "Keeping the state in place" in the crate docs.
///
/// # Safety
///
/// A value of the type must hold no pointer into the module's code or static data, and
/// [`InPlace::describe`] must describe every type whose values it holds, with its real size,
/// alignment and field offsets. The derive does both.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be kept in place across a swap",
    label = "not `InPlace`",
    note = "derive `hotswap_guest::InPlace` on your own structs and enums; `HashMap` and `HashSet` cannot be (an empty one points into the module's static data): use `BTreeMap`/`BTreeSet`; `fn`, `dyn` and references point into code or static data and cannot be either",
    note = "or keep the state by value: `export_app!(App)` without `in_place`"
)]
pub unsafe trait InPlace: 'static {
    /// Writes this type's line: [`Describer::begin`], then its parts.
    fn describe(d: &mut Describer<'_>);
}

/// The SDK's version, in the description.
const SDK: &str = concat!("hotswap-guest ", env!("CARGO_PKG_VERSION"));
/// The compiler's version (the SDK's build script asks `rustc --version`).
const RUSTC: &str = env!("HOTSWAP_RUSTC");
/// A hash of the flags the SDK was compiled with (`RUSTFLAGS`), 0 for none.
const RUSTFLAGS: &str = env!("HOTSWAP_RUSTFLAGS");
/// The allocator and its version, pinned in Cargo.toml.
pub(crate) const ALLOCATOR: &str = "dlmalloc 0.2.14";
/// The most types a description holds (a state that reaches more is not kept in place).
const MAX_TYPES: usize = 1024;

/// Writes a layout description, visiting each type once.
pub struct Describer<'a> {
    out: &'a mut dyn Write,
    seen: [TypeId; MAX_TYPES],
    pending: [fn(&mut Describer<'_>); MAX_TYPES],
    count: usize,
    next: usize,
    /// Whether the current line has a part yet (for the commas).
    parts: bool,
    failed: fmt::Result,
}

impl<'a> Describer<'a> {
    /// Describes `T` and every type it reaches, after the header lines, into `out`.
    pub(crate) fn run<T: InPlace>(out: &'a mut dyn Write, heap_base: u32) -> fmt::Result {
        let mut d = Describer {
            out,
            seen: [TypeId::of::<()>(); MAX_TYPES],
            pending: [|_| {}; MAX_TYPES],
            count: 0,
            next: 0,
            parts: false,
            failed: Ok(()),
        };
        let (header_size, header_align) = crate::heap::HEADER;
        let format = crate::heap::HEADER_FORMAT;
        let header = format_args!(
            "{SDK}\nrustc {RUSTC} flags {RUSTFLAGS}\nheap {ALLOCATOR} at {heap_base} header {format} size {header_size} align {header_align}\ntarget {} {}-endian {}-bit pointers\n",
            std::env::consts::ARCH,
            if cfg!(target_endian = "little") {
                "little"
            } else {
                "big"
            },
            usize::BITS,
        );
        d.failed = d.out.write_fmt(header);
        d.reference::<T>();
        while d.next < d.count {
            let describe = d.pending[d.next];
            d.next += 1;
            describe(&mut d);
            d.failed = d.failed.and_then(|()| d.out.write_str("}\n"));
        }
        d.failed
    }

    /// The number of type `T` in this description, describing it later if it is new.
    pub fn reference<T: InPlace>(&mut self) -> usize {
        let id = TypeId::of::<T>();
        if let Some(at) = self.seen[..self.count].iter().position(|seen| *seen == id) {
            return at;
        }
        if self.count == MAX_TYPES {
            self.failed = Err(fmt::Error);
            return MAX_TYPES;
        }
        self.seen[self.count] = id;
        self.pending[self.count] = T::describe;
        self.count += 1;
        self.count - 1
    }

    /// Starts the line of a type: its kind (`struct`, `enum`, `std`), name, size and alignment.
    pub fn begin(&mut self, kind: &str, name: &str, size: usize, align: usize) {
        let line = format_args!(
            "#{} {kind} {name} size {size} align {align} {{",
            self.next - 1
        );
        self.parts = false;
        self.failed = self.failed.and_then(|()| self.out.write_fmt(line));
    }

    /// Adds a part to the current line: a field, a variant, a type parameter.
    pub fn part(&mut self, part: fmt::Arguments<'_>) {
        let comma = if self.parts { ", " } else { "" };
        self.parts = true;
        self.failed = self
            .failed
            .and_then(|()| self.out.write_str(comma))
            .and_then(|()| self.out.write_fmt(part));
    }
}

/// FNV-1a over everything written: the fingerprint of a description, made without allocating.
pub(crate) struct Fnv(pub(crate) u64);

impl Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(())
    }
}

/// The fingerprint of `T`'s description (never 0); 0 if it could not be written.
pub(crate) fn fingerprint<T: InPlace>(heap_base: u32) -> u64 {
    let mut fnv = Fnv(0xcbf2_9ce4_8422_2325);
    match Describer::run::<T>(&mut fnv, heap_base) {
        Ok(()) => fnv.0 | 1,
        Err(_) => 0,
    }
}

/// A leaf: a type with no parts.
macro_rules! leaf {
    ($($t:ty),*) => {$(
        // SAFETY: a plain value, no pointers.
        unsafe impl InPlace for $t {
            fn describe(d: &mut Describer<'_>) {
                d.begin("std", stringify!($t), size_of::<Self>(), align_of::<Self>());
            }
        }
    )*};
}
leaf!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    core::time::Duration
);

/// A standard generic type: its parameters are its parts.
macro_rules! generic {
    ($name:literal, $t:ident <$($p:ident),*>) => {
        // SAFETY: the standard collections and boxes hold heap pointers only (an empty one
        // holds a dangling pointer or none, never a static's address), and their parameters
        // are `InPlace`.
        unsafe impl<$($p: InPlace),*> InPlace for $t<$($p),*> {
            fn describe(d: &mut Describer<'_>) {
                d.begin("std", $name, size_of::<Self>(), align_of::<Self>());
                $( let n = d.reference::<$p>(); d.part(format_args!("#{n}")); )*
            }
        }
    };
}
use std::collections::{BTreeMap, BTreeSet, VecDeque};
generic!("Vec", Vec<T>);
generic!("VecDeque", VecDeque<T>);
generic!("Box", Box<T>);
generic!("Option", Option<T>);
generic!("Result", Result<T, E>);
generic!("BTreeMap", BTreeMap<K, V>);
generic!("BTreeSet", BTreeSet<T>);

// SAFETY: holds nothing.
unsafe impl<T: ?Sized + 'static> InPlace for core::marker::PhantomData<T> {
    fn describe(d: &mut Describer<'_>) {
        d.begin("std", "PhantomData", 0, 1);
    }
}

/// Tuples: their fields' types and offsets.
macro_rules! tuple {
    ($($p:ident $i:tt),*) => {
        // SAFETY: a tuple of `InPlace` values.
        unsafe impl<$($p: InPlace),*> InPlace for ($($p,)*) {
            fn describe(d: &mut Describer<'_>) {
                d.begin("std", "tuple", size_of::<Self>(), align_of::<Self>());
                $(
                    let n = d.reference::<$p>();
                    d.part(format_args!("{}: #{n} at {}", $i, core::mem::offset_of!(Self, $i)));
                )*
            }
        }
    };
}
tuple!(A 0);
tuple!(A 0, B 1);
tuple!(A 0, B 1, C 2);
tuple!(A 0, B 1, C 2, D 3);
tuple!(A 0, B 1, C 2, D 3, E 4);
tuple!(A 0, B 1, C 2, D 3, E 4, F 5);

// SAFETY: an array of `InPlace` values.
unsafe impl<T: InPlace, const N: usize> InPlace for [T; N] {
    fn describe(d: &mut Describer<'_>) {
        d.begin("std", "array", size_of::<Self>(), align_of::<Self>());
        let n = d.reference::<T>();
        d.part(format_args!("#{n}; {N}"));
    }
}

#[cfg(test)]
mod tests {
    use super::Describer;
    use crate::InPlace;
    use std::collections::BTreeMap;

    /// A recursive type, through a collection and a box.
    #[derive(InPlace)]
    #[allow(dead_code)]
    struct Node {
        value: u32,
        children: Vec<Node>,
        next: Option<Box<Node>>,
    }

    const BASE: u8 = 7;

    /// A unit-only enum whose discriminants come from a constant.
    #[derive(InPlace)]
    #[allow(dead_code)]
    enum Level {
        Low = BASE as isize,
        High,
    }

    #[derive(InPlace)]
    #[allow(dead_code)]
    enum Shape {
        Dot,
        Line(u32, u32),
        Named {
            name: String,
            tags: BTreeMap<String, Level>,
        },
    }

    fn describe<T: InPlace>() -> String {
        let mut text = String::new();
        Describer::run::<T>(&mut text, 1 << 23).expect("describe");
        text
    }

    #[test]
    fn a_recursive_type_is_described_once() {
        let text = describe::<Node>();
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
        assert!(types[0].starts_with("#0 struct Node size "), "{text}");
        assert!(types[0].contains("value: #1 at ") && types[0].contains("children: #2 at "));
        assert!(
            types
                .iter()
                .any(|l| l.starts_with("#2 std Vec") && l.ends_with("{#0}"))
        );
        assert_eq!(types.len(), 5, "{text}");
    }

    #[test]
    fn enums_name_their_variants_fields_and_discriminant_values() {
        let text = describe::<Shape>();
        let shape = text.lines().find(|l| l.starts_with("#0")).unwrap();
        assert!(
            shape.contains("{variant Dot, variant Line (, 0: #1, 1: #1, ), variant Named {, "),
            "{shape}"
        );
        assert!(shape.ends_with("name: #2, tags: #3, }}"), "{shape}");
        let level = text.lines().find(|l| l.contains("enum Level")).unwrap();
        assert!(
            level.ends_with("{variant Low = 7, variant High = 8}"),
            "{level}"
        );
    }

    #[test]
    fn the_header_names_the_sdk_compiler_allocator_and_target() {
        let text = describe::<u8>();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("hotswap-guest "));
        assert!(lines[1].starts_with("rustc rustc 1.") && lines[1].contains(" flags "));
        assert!(lines[2].starts_with("heap dlmalloc 0.2.14 at 8388608 header "));
        assert!(lines[3].starts_with("target "));
    }
}
