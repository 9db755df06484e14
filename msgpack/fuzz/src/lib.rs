//! The types the fuzz targets decode into and generate: every kind of serde value, nested.

use arbitrary::Arbitrary;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Floats equal to another with the same bits, NaN included.
macro_rules! bitwise_floats {
    ($($name:ident($float:ty)),*) => {$(
        #[derive(Arbitrary, Clone, Copy, Debug, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $float);

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                self.0.to_bits() == other.0.to_bits()
            }
        }
    )*};
}

bitwise_floats!(F32(f32), F64(f64));

/// Bytes written as a MessagePack bin.
#[derive(Arbitrary, Clone, Debug, PartialEq)]
pub struct Bin(pub Vec<u8>);

impl Serialize for Bin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Bin;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bin, E> {
                Ok(Bin(v.to_vec()))
            }
        }
        d.deserialize_bytes(Visit)
    }
}

#[derive(Arbitrary, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnitStruct;

#[derive(Arbitrary, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Newtype(pub u64);

#[derive(Arbitrary, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TupleStruct(pub i32, pub String);

/// Every scalar, every enum variant kind, and every compound, recursively.
#[derive(Arbitrary, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Tree {
    Nothing,
    Flag(bool),
    Signed(i8, i16, i32, i64, i128),
    Unsigned(u8, u16, u32, u64, u128),
    Floats { single: F32, double: F64 },
    Text(String),
    Char(char),
    Bytes(Bin),
    Maybe(Option<Box<Tree>>),
    Unit(UnitStruct),
    Wrapped(Newtype),
    List(Vec<Tree>),
    ByName(BTreeMap<String, Tree>),
    ById(BTreeMap<i64, Tree>),
    Record(Box<Record>),
}

/// A struct among the trees.
#[derive(Arbitrary, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub children: Vec<Tree>,
    pub pair: (u16, Tree),
    pub tuple: TupleStruct,
    pub unit: (),
}
