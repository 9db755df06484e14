//! The guard against taking over an unrelated app's state.
//!
//! MessagePack with named fields lets fields come and go, and `#[serde(default)]` fills in what
//! is missing. The flip side: state with *none* of the app's fields would decode into an
//! all-default state, and the real state would be silently lost (say, a module of a different
//! app written over the watched file). So at an import without migration, the state must share
//! at least one top-level key with the state as this code writes it back, or it is refused.
//!
//! The keys this code writes are read off the decoded state by serializing it into a
//! serializer that records only top-level keys: a struct's fields, a flattened struct's
//! (`#[serde(flatten)]` serializes as a map of unknown length), or an enum's variant. A state
//! that serializes as a map of known length (a `BTreeMap` or `HashMap` at the top) holds data,
//! not a schema, and is not judged; nor is one with more than [`MAX_KEYS`] top-level keys.

use crate::MigrateError;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::ser::{self, Impossible, Serialize, Serializer};
use std::fmt;

/// The most top-level keys recorded; a state with more is not judged.
const MAX_KEYS: usize = 1024;

/// Refuses `state` if it is a non-empty map none of whose keys `app` (decoded from it) writes
/// back. Stops at the first shared key, so it reads little of a large state.
pub(crate) fn check_shared<A: Serialize>(state: &[u8], app: &A) -> Result<(), MigrateError> {
    let mut keys = Keys::default();
    if app.serialize(&mut keys).is_err() || !keys.judged {
        return Ok(());
    }
    let mut decoder = hotswap_msgpack::Deserializer::new(state);
    // A state that is not a map, or has keys that are not strings, is for `decode` to judge.
    let Ok(Some(found)) = (&mut decoder).deserialize_any(ForeignKeys(&keys.names)) else {
        return Ok(());
    };
    let ours = match keys.names.is_empty() {
        true => "none".to_owned(),
        false => keys.names.join(", "),
    };
    Err(MigrateError::new(format!(
        "the state has none of this app's fields (it has {}; this app's state has {ours}): it was \
         written by a different app; if this app replaced all of its fields, raise \
         STATE_VERSION and implement `migrate`",
        found.join(", "),
    )))
}

/// Visits the state's top-level map: `None` as soon as a key is one of `ours`, else the keys
/// it has (`None` too for an empty map).
struct ForeignKeys<'a>(&'a [String]);

impl<'de> Visitor<'de> for ForeignKeys<'_> {
    type Value = Option<Vec<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if self.0.contains(&key) {
                return Ok(None);
            }
            keys.push(key);
            map.next_value::<IgnoredAny>()?;
        }
        Ok((!keys.is_empty()).then_some(keys))
    }
}

/// A serializer that records the top-level keys of what it is given, and nothing else.
#[derive(Default)]
struct Keys {
    names: Vec<String>,
    /// Whether the value has a schema of keys to judge by.
    judged: bool,
}

/// Why recording stopped (not an error of the state's).
#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not judged")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl Keys {
    fn record(&mut self, key: &str) -> Result<(), Stop> {
        if self.names.len() == MAX_KEYS {
            self.judged = false;
            return Err(Stop);
        }
        self.names.push(key.to_owned());
        Ok(())
    }
}

macro_rules! not_judged {
    ($($method:ident($($arg:ty),*) -> $out:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$out, Stop> {
            Err(Stop)
        })*
    };
}

impl<'a> Serializer for &'a mut Keys {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Impossible<(), Stop>;
    type SerializeTuple = Impossible<(), Stop>;
    type SerializeTupleStruct = Impossible<(), Stop>;
    type SerializeTupleVariant = Impossible<(), Stop>;
    type SerializeMap = &'a mut Keys;
    type SerializeStruct = &'a mut Keys;
    type SerializeStructVariant = Impossible<(), Stop>;

    not_judged! {
        serialize_bool(bool) -> (); serialize_i8(i8) -> (); serialize_i16(i16) -> ();
        serialize_i32(i32) -> (); serialize_i64(i64) -> (); serialize_u8(u8) -> ();
        serialize_u16(u16) -> (); serialize_u32(u32) -> (); serialize_u64(u64) -> ();
        serialize_f32(f32) -> (); serialize_f64(f64) -> (); serialize_char(char) -> ();
        serialize_str(&str) -> (); serialize_bytes(&[u8]) -> (); serialize_none() -> ();
        serialize_unit() -> (); serialize_unit_struct(&'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Stop> {
        self.judged = true;
        self.record(variant)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        self.judged = true;
        self.record(variant)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self, Stop> {
        // A map of known length is data; `#[serde(flatten)]` writes a struct as a map of
        // unknown length.
        match len {
            Some(_) => Err(Stop),
            None => {
                self.judged = true;
                Ok(self)
            }
        }
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        self.judged = true;
        Ok(self)
    }
}

impl ser::SerializeStruct for &mut Keys {
    type Ok = ();
    type Error = Stop;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        self.record(key)
    }

    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

impl ser::SerializeMap for &mut Keys {
    type Ok = ();
    type Error = Stop;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Stop> {
        let key = key.serialize(KeyName)?;
        self.record(&key)
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, _: &T) -> Result<(), Stop> {
        Ok(())
    }

    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

/// A map key as a string; any other key stops the recording.
struct KeyName;

impl Serializer for KeyName {
    type Ok = String;
    type Error = Stop;
    type SerializeSeq = Impossible<String, Stop>;
    type SerializeTuple = Impossible<String, Stop>;
    type SerializeTupleStruct = Impossible<String, Stop>;
    type SerializeTupleVariant = Impossible<String, Stop>;
    type SerializeMap = Impossible<String, Stop>;
    type SerializeStruct = Impossible<String, Stop>;
    type SerializeStructVariant = Impossible<String, Stop>;

    fn serialize_str(self, v: &str) -> Result<String, Stop> {
        Ok(v.to_owned())
    }

    not_judged! {
        serialize_bool(bool) -> String; serialize_i8(i8) -> String; serialize_i16(i16) -> String;
        serialize_i32(i32) -> String; serialize_i64(i64) -> String; serialize_u8(u8) -> String;
        serialize_u16(u16) -> String; serialize_u32(u32) -> String; serialize_u64(u64) -> String;
        serialize_f32(f32) -> String; serialize_f64(f64) -> String; serialize_char(char) -> String;
        serialize_bytes(&[u8]) -> String; serialize_none() -> String; serialize_unit() -> String;
        serialize_unit_struct(&'static str) -> String;
        serialize_unit_variant(&'static str, u32, &'static str) -> String;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<String, Stop> {
        Err(Stop)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<String, Stop> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<String, Stop> {
        Err(Stop)
    }
}

#[cfg(test)]
mod tests {
    use super::check_shared;
    use serde::{Deserialize, Serialize};
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Counter {
        value: i64,
    }

    fn counter() -> Vec<u8> {
        crate::encode(&Counter { value: 15 })
    }

    /// Decodes `state` as the app would, then judges it.
    fn judge<A: Serialize + for<'de> Deserialize<'de>>(state: &[u8]) -> Result<(), String> {
        let app: A = crate::decode(state).map_err(|e| e.to_string())?;
        check_shared(state, &app).map_err(|e| e.to_string())
    }

    #[derive(Default, Serialize, Deserialize)]
    #[serde(default)]
    struct Notes {
        notes: Vec<String>,
    }

    #[test]
    fn every_state_shape_is_judged() {
        #[derive(Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Flat {
            #[serde(flatten)]
            inner: Notes,
        }
        #[derive(Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Wrapped(Notes);
        #[derive(Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Optional {
            #[serde(skip_serializing_if = "Option::is_none")]
            value: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            other: Option<i64>,
        }
        // Foreign: the counter's state would decode into all defaults.
        assert!(
            judge::<Notes>(&counter())
                .unwrap_err()
                .contains("has value; this app's state has notes")
        );
        assert!(
            judge::<Flat>(&counter())
                .unwrap_err()
                .contains("none of this app's fields")
        );
        assert!(
            judge::<Wrapped>(&counter())
                .unwrap_err()
                .contains("none of this app's fields")
        );
        // The same app: shared keys.
        judge::<Notes>(&crate::encode(&Notes {
            notes: vec!["a".into()],
        }))
        .unwrap();
        judge::<Flat>(&crate::encode(&Notes::default())).unwrap();
        judge::<Optional>(&counter()).unwrap();
        // Data maps and empty states are not judged.
        judge::<BTreeMap<String, i64>>(&counter()).unwrap();
        judge::<Notes>(&crate::encode(&BTreeMap::<String, i64>::new())).unwrap();
    }

    #[test]
    fn enums_are_judged_by_variant() {
        #[derive(Serialize, Deserialize)]
        enum Phase {
            Idle,
            Running { since: u64 },
        }
        judge::<Phase>(&crate::encode(&Phase::Running { since: 3 })).unwrap();
        judge::<Phase>(&crate::encode(&Phase::Idle)).unwrap();
        assert!(judge::<Phase>(&counter()).is_err(), "a counter is no enum");
    }
}
