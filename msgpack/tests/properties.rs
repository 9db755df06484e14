//! Properties of the codec over generated values and bytes, checked against rmp-serde.
//!
//! Each property runs `CASES` cases by default, sized so that `cargo test --release` stays
//! quick; `PROPTEST_CASES=100000 cargo test --release -p hotswap-msgpack --test properties`
//! runs a longer search.

use hotswap_abi::http::Bytes;
use hotswap_msgpack::{CHUNK_SLACK, from_slice, to_vec, value, write_chunked};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Debug;

/// The cases each property runs unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 4096;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES);
    ProptestConfig::with_cases(cases)
}

/// Floats equal to another with the same bits, NaN included.
macro_rules! bitwise_floats {
    ($($name:ident($float:ty)),*) => {$(
        #[derive(Clone, Copy, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        struct $name($float);

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.to_bits() == other.0.to_bits()
            }
        }
    )*};
}

bitwise_floats!(F32(f32), F64(f64));

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct UnitStruct;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Newtype(u16);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TupleStruct(i8, String);

/// Every scalar serde knows, and the small compounds around them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Scalars {
    flag: bool,
    signed: (i8, i16, i32, i64, i128),
    unsigned: (u8, u16, u32, u64, u128),
    floats: (F32, F64),
    ch: char,
    text: String,
    bytes: Bytes,
    maybe: Option<i32>,
    unit: (),
    unit_struct: UnitStruct,
    newtype: Newtype,
    tuple_struct: TupleStruct,
    numbers: Vec<u16>,
}

/// A recursive value: every kind of enum variant, sequences, maps with str and int keys, and
/// structs inside them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Tree {
    Nothing,
    Leaf(Box<Scalars>),
    Pair(i64, String),
    Named { count: Option<u64>, ratio: F64 },
    List(Vec<Tree>),
    ByName(BTreeMap<String, Tree>),
    ById(BTreeMap<i64, Tree>),
    ByByte(BTreeMap<u8, Tree>),
    Node(Box<Node>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Node {
    label: String,
    children: Vec<Tree>,
    first: Option<Tree>,
    pair: (Tree, u32),
}

/// Integers at every MessagePack format boundary (±2^k and its neighbours), and in between.
fn int<T>() -> BoxedStrategy<T>
where
    T: Arbitrary + TryFrom<i128> + Clone + Debug + 'static,
{
    let edges: Vec<T> = [0u32, 4, 5, 7, 8, 15, 16, 31, 32, 63, 64, 126]
        .into_iter()
        .flat_map(|k| {
            let p = 1i128 << k;
            [p - 1, p, p + 1, -p - 1, -p, -p + 1]
        })
        .chain([i128::MIN, i128::MAX])
        .filter_map(|v| T::try_from(v).ok())
        .collect();
    prop_oneof![any::<T>(), select(edges)].boxed()
}

fn f32s() -> impl Strategy<Value = F32> {
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0,
        f32::MIN_POSITIVE,
    ];
    prop_oneof![
        any::<f32>(),
        any::<u32>().prop_map(f32::from_bits),
        select(special.to_vec())
    ]
    .prop_map(F32)
}

fn f64s() -> impl Strategy<Value = F64> {
    let special = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0, f64::MAX];
    prop_oneof![
        any::<f64>(),
        any::<u64>().prop_map(f64::from_bits),
        select(special.to_vec())
    ]
    .prop_map(F64)
}

/// Strings of every header size up to str 16, ASCII and not.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,40}",
        any::<String>(),
        vec(any::<char>(), 0..300).prop_map(String::from_iter),
    ]
}

fn scalars() -> impl Strategy<Value = Scalars> {
    let signed = (int(), int(), int(), int(), int());
    let unsigned = (int(), int(), int(), int(), int());
    let small = (any::<bool>(), (f32s(), f64s()), any::<char>(), text());
    let more = (
        vec(any::<u8>(), 0..300).prop_map(Bytes),
        proptest::option::of(int()),
        any::<u16>().prop_map(Newtype),
        (int(), text()).prop_map(|(i, s)| TupleStruct(i, s)),
        vec(int(), 0..40),
    );
    (signed, unsigned, small, more).prop_map(
        |(
            signed,
            unsigned,
            (flag, floats, ch, text),
            (bytes, maybe, newtype, tuple_struct, numbers),
        )| {
            Scalars {
                flag,
                signed,
                unsigned,
                floats,
                ch,
                text,
                bytes,
                maybe,
                unit: (),
                unit_struct: UnitStruct,
                newtype,
                tuple_struct,
                numbers,
            }
        },
    )
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![
        Just(Tree::Nothing),
        scalars().prop_map(|s| Tree::Leaf(Box::new(s))),
        (int(), text()).prop_map(|(i, s)| Tree::Pair(i, s)),
        (proptest::option::of(int()), f64s())
            .prop_map(|(count, ratio)| Tree::Named { count, ratio }),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let node = (
            text(),
            vec(inner.clone(), 0..4),
            proptest::option::of(inner.clone()),
            (inner.clone(), int()),
        );
        prop_oneof![
            vec(inner.clone(), 0..20).prop_map(Tree::List),
            btree_map(text(), inner.clone(), 0..6).prop_map(Tree::ByName),
            btree_map(int(), inner.clone(), 0..6).prop_map(Tree::ById),
            btree_map(int(), inner, 0..18).prop_map(Tree::ByByte),
            node.prop_map(|(label, children, first, pair)| {
                Tree::Node(Box::new(Node {
                    label,
                    children,
                    first,
                    pair,
                }))
            }),
        ]
    })
}

/// Decodes `bytes` every way there is; none of them may panic.
fn decode_every_way(bytes: &[u8]) {
    let _ = from_slice::<Tree>(bytes);
    let _ = from_slice::<Scalars>(bytes);
    let _ = from_slice::<IgnoredAny>(bytes);
    let _ = value::parse(bytes);
}

/// A change to an encoding.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
    /// Overwrites a byte with a marker that claims a length or a type.
    Marker(Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let markers = [
        0xc1, 0xc4, 0xc6, 0xc7, 0xc9, 0xd4, 0xd8, 0xd9, 0xdb, 0xdc, 0xdd, 0xde, 0xdf, 0x9f, 0x8f,
        0xbf, 0xff,
    ];
    prop_oneof![
        (any::<Index>(), 0..8u8).prop_map(|(i, bit)| Mutation::FlipBit(i, bit)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), select(markers.to_vec())).prop_map(|(i, m)| Mutation::Marker(i, m)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    if len == 0 {
        return;
    }
    match mutation {
        Mutation::FlipBit(i, bit) => bytes[i.index(len)] ^= 1 << bit,
        Mutation::Truncate(i) => bytes.truncate(i.index(len)),
        Mutation::Insert(i, b) => bytes.insert(i.index(len + 1), *b),
        Mutation::Marker(i, m) => bytes[i.index(len)] = *m,
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn encodes_as_rmp_serde_does_and_decodes_back(tree in tree(), chunk in 1..200usize) {
        let ours = to_vec(&tree).unwrap();
        prop_assert_eq!(&ours, &rmp_serde::to_vec_named(&tree).unwrap());
        prop_assert_eq!(&from_slice::<Tree>(&ours).unwrap(), &tree);
        prop_assert_eq!(&rmp_serde::from_slice::<Tree>(&ours).unwrap(), &tree);
        prop_assert!(value::parse(&ours).is_ok());
        // In pieces: the same bytes, from a buffer that never grows past its bound.
        let mut out = Vec::with_capacity(chunk + CHUNK_SLACK);
        let capacity = out.capacity();
        let mut joined = Vec::new();
        write_chunked(&mut out, chunk, &mut |p| joined.extend_from_slice(p), &tree).unwrap();
        prop_assert_eq!(out.capacity(), capacity);
        joined.extend_from_slice(&out);
        prop_assert_eq!(joined, ours);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        decode_every_way(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(tree in tree(), mutations in vec(mutation(), 1..6)) {
        let mut bytes = to_vec(&tree).unwrap();
        for m in &mutations {
            mutate(&mut bytes, m);
            decode_every_way(&bytes);
        }
    }
}
