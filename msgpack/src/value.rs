//! Any MessagePack value, read without knowing its type, and a readable form of it: what
//! `hotswap state` shows of a guest's state.
//!
//! [`parse`] reads bytes that nobody vouches for as [`from_slice`](crate::from_slice) does: it
//! never reads outside them, caps nesting at [`MAX_DEPTH`](crate::MAX_DEPTH), never reserves
//! memory from a length it has not checked against the bytes left, and refuses bytes left over
//! after the value.
//!
//! # The readable form
//!
//! [`Value`]'s `Serialize` writes each value as the table says, for `serde_json` or any other
//! human-readable format. Where JSON has no such value, an object with `$`-keys stands for it:
//!
//! | MessagePack | [`Value`] | readable form |
//! |---|---|---|
//! | nil | `Nil` | unit (JSON `null`) |
//! | bool | `Bool` | the bool |
//! | positive fixint, uint 8 to 64 | `UInt` | the number |
//! | negative fixint, int 8 to 64 | `Int` | the number |
//! | float 32, float 64, finite | `F32`, `F64` | the number |
//! | float 32, float 64: NaN, ±infinity | `F32`, `F64` | `{"$float": "NaN"}`, `{"$float": "inf"}`, `{"$float": "-inf"}` |
//! | str, UTF-8 | `Str` | the string |
//! | str, not UTF-8 | `NonUtf8Str` | `{"$str": "<hex>"}` |
//! | bin | `Bin` | `{"$bin": "<hex>"}` |
//! | bin of 16 bytes (how `i128` and `u128` are stored) | `Bin` | `{"$bin": "<hex>", "$u128": "<decimal>", "$i128": "<decimal>"}` |
//! | array | `Array` | a sequence |
//! | map whose keys are all UTF-8 strs | `Map` | a map, entries in order (repeated keys too) |
//! | any other map | `Map` | `{"$map": [[key, value], ...]}`, entries in order |
//! | ext | `Ext` | `{"$ext": <type, -128 to 127>, "$data": "<hex>"}` |
//!
//! Hex is lowercase, two digits a byte; the decimals are strings because JSON numbers do not
//! hold 128 bits everywhere.
//!
//! This is a form to read, not a format to read back: a map whose real key is `$bin`,
//! `$float`, `$str`, `$map` or `$ext` looks like the stand-in for another value, and f32 and
//! f64 look alike.

use crate::{Deserializer, Error, as_str, unsupported};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use serde::ser::{Serialize, SerializeMap, Serializer};

/// A MessagePack value of any kind, as it was written.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// nil.
    Nil,
    /// true or false.
    Bool(bool),
    /// A positive fixint or a uint 8, 16, 32 or 64.
    UInt(u64),
    /// A negative fixint or an int 8, 16, 32 or 64 (which may hold a positive number too).
    Int(i64),
    /// A float 32.
    F32(f32),
    /// A float 64.
    F64(f64),
    /// A str of UTF-8.
    Str(String),
    /// A str whose bytes are not UTF-8.
    NonUtf8Str(Vec<u8>),
    /// A bin: bytes.
    Bin(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// A map: its entries in the order they were written, keys of any kind, repeats kept.
    Map(Vec<(Value, Value)>),
    /// An extension: its type and its data.
    Ext(i8, Vec<u8>),
}

/// Reads the one MessagePack value that takes up all of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Value, Error> {
    let mut de = Deserializer::new(bytes);
    let value = read(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Reads one value, with its arrays and maps.
fn read(de: &mut Deserializer<'_>) -> Result<Value, Error> {
    let marker = de.byte()?;
    Ok(match marker {
        0x00..=0x7f => Value::UInt(marker.into()),
        0x80..=0x8f => map(de, (marker & 0x0f).into())?,
        0x90..=0x9f => array(de, (marker & 0x0f).into())?,
        0xa0..=0xbf => str(de, (marker & 0x1f).into())?,
        0xc0 => Value::Nil,
        0xc1 => return Err(unsupported(marker)),
        0xc2 => Value::Bool(false),
        0xc3 => Value::Bool(true),
        0xc4..=0xc6 => {
            let len = de.len(marker - 0xc4)?;
            Value::Bin(de.take(len)?.to_vec())
        }
        0xc7..=0xc9 => {
            let len = de.len(marker - 0xc7)?;
            ext(de, len)?
        }
        0xca => Value::F32(f32::from_be_bytes(de.be()?)),
        0xcb => Value::F64(f64::from_be_bytes(de.be()?)),
        0xcc => Value::UInt(de.byte()?.into()),
        0xcd => Value::UInt(u16::from_be_bytes(de.be()?).into()),
        0xce => Value::UInt(u32::from_be_bytes(de.be()?).into()),
        0xcf => Value::UInt(u64::from_be_bytes(de.be()?)),
        0xd0 => Value::Int((de.byte()? as i8).into()),
        0xd1 => Value::Int(i16::from_be_bytes(de.be()?).into()),
        0xd2 => Value::Int(i32::from_be_bytes(de.be()?).into()),
        0xd3 => Value::Int(i64::from_be_bytes(de.be()?)),
        0xd4..=0xd8 => ext(de, 1 << (marker - 0xd4))?,
        0xd9..=0xdb => {
            let len = de.len(marker - 0xd9)?;
            str(de, len)?
        }
        0xdc | 0xdd => {
            let len = de.len(marker - 0xdc + 1)?;
            array(de, len)?
        }
        0xde | 0xdf => {
            let len = de.len(marker - 0xde + 1)?;
            map(de, len)?
        }
        0xe0..=0xff => Value::Int((marker as i8).into()),
    })
}

fn str(de: &mut Deserializer<'_>, len: usize) -> Result<Value, Error> {
    let bytes = de.take(len)?;
    Ok(match as_str(bytes) {
        Some(s) => Value::Str(s.into()),
        None => Value::NonUtf8Str(bytes.to_vec()),
    })
}

fn ext(de: &mut Deserializer<'_>, len: usize) -> Result<Value, Error> {
    let kind = de.byte()? as i8;
    Ok(Value::Ext(kind, de.take(len)?.to_vec()))
}

fn array(de: &mut Deserializer<'_>, len: usize) -> Result<Value, Error> {
    de.nested(|de| {
        // Every element takes at least a byte: reserve no more than the input could hold.
        let mut items = Vec::with_capacity(len.min(de.input.len()));
        for _ in 0..len {
            items.push(read(de)?);
        }
        Ok(Value::Array(items))
    })
}

fn map(de: &mut Deserializer<'_>, len: usize) -> Result<Value, Error> {
    de.nested(|de| {
        // Every entry takes at least two bytes.
        let mut entries = Vec::with_capacity(len.min(de.input.len() / 2));
        for _ in 0..len {
            let key = read(de)?;
            entries.push((key, read(de)?));
        }
        Ok(Value::Map(entries))
    })
}

impl Serialize for Value {
    /// The readable form that the [module docs](self) describe.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Nil => s.serialize_unit(),
            Value::Bool(v) => s.serialize_bool(*v),
            Value::UInt(v) => s.serialize_u64(*v),
            Value::Int(v) => s.serialize_i64(*v),
            Value::F32(v) if v.is_finite() => s.serialize_f32(*v),
            Value::F64(v) if v.is_finite() => s.serialize_f64(*v),
            Value::F32(v) => tagged(s, "$float", &non_finite((*v).into())),
            Value::F64(v) => tagged(s, "$float", &non_finite(*v)),
            Value::Str(v) => s.serialize_str(v),
            Value::NonUtf8Str(v) => tagged(s, "$str", &Text(Hex(v))),
            Value::Bin(v) => bin(s, v),
            Value::Array(items) => s.collect_seq(items),
            Value::Map(entries) if entries.iter().all(|(k, _)| matches!(k, Value::Str(_))) => {
                s.collect_map(entries.iter().map(|(k, v)| (k, v)))
            }
            Value::Map(entries) => tagged(s, "$map", &Pairs(entries)),
            Value::Ext(kind, data) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("$ext", kind)?;
                map.serialize_entry("$data", &Text(Hex(data)))?;
                map.end()
            }
        }
    }
}

/// `{key: value}`.
fn tagged<S: Serializer, T: Serialize + ?Sized>(
    s: S,
    key: &str,
    value: &T,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(1))?;
    map.serialize_entry(key, value)?;
    map.end()
}

fn non_finite(v: f64) -> &'static str {
    if v.is_nan() {
        "NaN"
    } else if v > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// `{"$bin": hex}`, with the 128-bit integers that 16 bytes may be.
fn bin<S: Serializer>(s: S, bytes: &[u8]) -> Result<S::Ok, S::Error> {
    let Ok(wide) = <[u8; 16]>::try_from(bytes) else {
        return tagged(s, "$bin", &Text(Hex(bytes)));
    };
    let mut map = s.serialize_map(Some(3))?;
    map.serialize_entry("$bin", &Text(Hex(bytes)))?;
    map.serialize_entry("$u128", &Text(u128::from_be_bytes(wide)))?;
    map.serialize_entry("$i128", &Text(i128::from_be_bytes(wide)))?;
    map.end()
}

/// Serializes as the string its `Display` writes.
struct Text<T>(T);

impl<T: fmt::Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Bytes as lowercase hex.
struct Hex<'a>(&'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A map's entries as a sequence of `[key, value]` pairs.
struct Pairs<'a>(&'a [(Value, Value)]);

impl Serialize for Pairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::{MAX_DEPTH, to_vec};
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;
    use alloc::vec;
    use serde::Serialize;
    use serde_json::json;

    /// The readable form of `bytes`, as JSON text (which keeps the order of map entries).
    fn shown(bytes: &[u8]) -> String {
        serde_json::to_string(&parse(bytes).unwrap()).unwrap()
    }

    fn shown_value<T: Serialize>(value: &T) -> serde_json::Value {
        serde_json::to_value(parse(&to_vec(value).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn scalars_read_as_themselves() {
        assert_eq!(parse(&[0xc0]).unwrap(), Value::Nil);
        assert_eq!(shown_value(&()), json!(null));
        assert_eq!(shown_value(&(true, false)), json!([true, false]));
        assert_eq!(
            parse(&to_vec(&u64::MAX).unwrap()).unwrap(),
            Value::UInt(u64::MAX)
        );
        assert_eq!(shown_value(&u64::MAX), json!(u64::MAX));
        assert_eq!(
            parse(&to_vec(&i64::MIN).unwrap()).unwrap(),
            Value::Int(i64::MIN)
        );
        assert_eq!(
            shown_value(&(-1i8, 200u8, -300i16, 70_000u32)),
            json!([-1, 200, -300, 70_000])
        );
        // An int format holding a positive number.
        assert_eq!(parse(&[0xd0, 0x05]).unwrap(), Value::Int(5));
        assert_eq!(parse(&to_vec(&1.5f32).unwrap()).unwrap(), Value::F32(1.5));
        assert_eq!(shown_value(&(1.5f32, -0.1f64)), json!([1.5, -0.1]));
        assert_eq!(shown_value(&"héllo"), json!("héllo"));
    }

    #[test]
    fn what_json_lacks_is_shown_with_dollar_keys() {
        let floats = (f32::NAN, f64::NAN, f32::INFINITY, f64::NEG_INFINITY);
        assert_eq!(
            shown_value(&floats),
            json!([{"$float": "NaN"}, {"$float": "NaN"}, {"$float": "inf"}, {"$float": "-inf"}])
        );
        assert_eq!(
            parse(&[0xa2, 0xff, 0xfe]).unwrap(),
            Value::NonUtf8Str(vec![0xff, 0xfe])
        );
        assert_eq!(shown(&[0xa2, 0xff, 0xfe]), r#"{"$str":"fffe"}"#);
        let bytes = hotswap_abi::http::Bytes(vec![0x00, 0xab, 0x10]);
        assert_eq!(shown_value(&bytes), json!({"$bin": "00ab10"}));
        assert_eq!(shown(&[0xc4, 0x00]), r#"{"$bin":""}"#);
        for wide in [-5i128, i128::MIN, i128::MAX, 0] {
            let hex: String = wide
                .to_be_bytes()
                .iter()
                .map(|b| std::format!("{b:02x}"))
                .collect();
            let expected = json!({
                "$bin": hex,
                "$u128": (wide as u128).to_string(),
                "$i128": wide.to_string(),
            });
            assert_eq!(shown_value(&wide), expected);
            assert_eq!(shown_value(&(wide as u128)), expected);
        }
        assert_eq!(
            json!({"$bin": "fffffffffffffffffffffffffffffffb", "$u128": "340282366920938463463374607431768211451", "$i128": "-5"}),
            shown_value(&-5i128)
        );
        // fixext 1, fixext 16, ext 8 and ext 32.
        assert_eq!(
            parse(&[0xd4, 0x05, 0xab]).unwrap(),
            Value::Ext(5, vec![0xab])
        );
        assert_eq!(shown(&[0xd4, 0x05, 0xab]), r#"{"$ext":5,"$data":"ab"}"#);
        let fixext16: Vec<u8> = [0xd8, 0x80].into_iter().chain(0..16).collect();
        assert_eq!(
            parse(&fixext16).unwrap(),
            Value::Ext(-128, (0..16).collect())
        );
        assert_eq!(
            shown(&[0xc7, 0x03, 0xff, 1, 2, 0xee]),
            r#"{"$ext":-1,"$data":"0102ee"}"#
        );
        assert_eq!(
            shown(&[0xc9, 0, 0, 0, 0, 0x7f]),
            r#"{"$ext":127,"$data":""}"#
        );
    }

    #[test]
    fn maps_keep_their_order_and_any_keys() {
        #[derive(Serialize)]
        struct Backwards {
            zebra: u8,
            apple: (),
        }
        let text = shown(
            &to_vec(&Backwards {
                zebra: 1,
                apple: (),
            })
            .unwrap(),
        );
        assert_eq!(text, r#"{"zebra":1,"apple":null}"#);
        let by_id: BTreeMap<u32, &str> = [(2, "two"), (1, "one")].into();
        assert_eq!(
            shown_value(&by_id),
            json!({"$map": [[1, "one"], [2, "two"]]})
        );
        // One key that is not a str is enough; repeated keys are kept.
        let mixed = [0x83, 0xa1, b'a', 0x01, 0x07, 0x02, 0xa1, b'a', 0x03];
        assert_eq!(shown(&mixed), r#"{"$map":[["a",1],[7,2],["a",3]]}"#);
        assert_eq!(
            shown(&[0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02]),
            r#"{"a":1,"a":2}"#
        );
        assert_eq!(shown(&[0x80]), "{}");
        // A key that is a str but not UTF-8 is not a JSON key either.
        assert_eq!(
            shown(&[0x81, 0xa1, 0xff, 0xc0]),
            r#"{"$map":[[{"$str":"ff"},null]]}"#
        );
    }

    #[derive(Serialize)]
    enum Shape {
        Dot,
        Circle(f64),
        Line(i8, i8),
        Named { at: BTreeMap<i16, Option<f32>> },
    }

    #[derive(Serialize)]
    struct Mix {
        id: u128,
        shapes: Vec<Shape>,
        tags: BTreeMap<String, Vec<u8>>,
        blob: hotswap_abi::http::Bytes,
        nothing: Option<u8>,
    }

    fn mix() -> Mix {
        Mix {
            id: 1,
            shapes: vec![
                Shape::Dot,
                Shape::Circle(f64::INFINITY),
                Shape::Line(-1, 1),
                Shape::Named {
                    at: [(-3, Some(f32::NAN)), (4, None)].into(),
                },
            ],
            tags: [("t".into(), vec![1, 2])].into(),
            blob: hotswap_abi::http::Bytes(vec![0xde, 0xad]),
            nothing: None,
        }
    }

    #[test]
    fn a_nested_mix_reads_as_a_whole() {
        let expected = json!({
            "id": {"$bin": "00000000000000000000000000000001", "$u128": "1", "$i128": "1"},
            "shapes": [
                "Dot",
                {"Circle": {"$float": "inf"}},
                {"Line": [-1, 1]},
                {"Named": {"at": {"$map": [[-3, {"$float": "NaN"}], [4, null]]}}},
            ],
            "tags": {"t": [1, 2]},
            "blob": {"$bin": "dead"},
            "nothing": null,
        });
        assert_eq!(shown_value(&mix()), expected);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut bytes = to_vec(&(mix(), "a string of some length", [1.5f64; 3])).unwrap();
        // An ext 8 and a non-UTF-8 str inside the outer array (which gets one more element).
        bytes[0] += 2;
        bytes.extend_from_slice(&[0xc7, 0x02, 0x01, 0xaa, 0xbb, 0xa2, 0xff, 0xfe]);
        assert!(parse(&bytes).is_ok());
        for len in 0..bytes.len() {
            assert!(parse(&bytes[..len]).is_err(), "{len}");
        }
        let trailing = [0xc0, 0xc0];
        assert_eq!(
            parse(&trailing).unwrap_err().to_string(),
            "1 bytes left over after the value"
        );
        assert!(parse(&[0xc1]).unwrap_err().to_string().contains("0xc1"));
        // Lengths far beyond the input reserve nothing and fail at the end of the input.
        for huge in [
            [0xdd, 0xff, 0xff, 0xff, 0xff],
            [0xdf, 0xff, 0xff, 0xff, 0xff],
            [0xc6, 0xff, 0xff, 0xff, 0xff],
            [0xc9, 0xff, 0xff, 0xff, 0xff],
        ] {
            assert!(
                parse(&huge)
                    .unwrap_err()
                    .to_string()
                    .contains("ends in the middle")
            );
        }
    }

    #[test]
    fn nesting_is_capped_as_for_typed_decoding() {
        let nested = |depth: usize| -> Vec<u8> {
            core::iter::repeat_n(0x81, depth - 1)
                .flat_map(|m| [m, 0xc0])
                .chain([0x90])
                .collect()
        };
        assert!(parse(&nested(MAX_DEPTH as usize)).is_ok());
        let refused = parse(&nested(MAX_DEPTH as usize + 1)).unwrap_err();
        assert!(
            refused.to_string().contains("deeper than 256 levels"),
            "{refused}"
        );
        let deep: Vec<u8> = core::iter::repeat_n(0x91, 100_000).collect();
        assert!(parse(&deep).is_err());
    }
}
