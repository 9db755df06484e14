//! The MessagePack codec that the Hotswap host and its guests share, for state and HTTP messages.
//!
//! # Encoding
//!
//! serde's data model maps onto MessagePack as [`rmp-serde`](https://docs.rs/rmp-serde)'s
//! `to_vec_named` maps it, byte for byte, so state written by either decodes with the other:
//!
//! | serde | MessagePack |
//! |---|---|
//! | `bool`, integers, `f32`, `f64` | bool; the smallest int format that holds the value; float 32, float 64 |
//! | `i128`, `u128` | bin 8 of the 16 big-endian bytes |
//! | `char`, `str` | str (UTF-8) |
//! | bytes | bin |
//! | `None`, `()` | nil |
//! | `Some(v)`, newtype struct | `v` |
//! | unit struct | an empty array |
//! | sequence, tuple, tuple struct | array |
//! | map | map |
//! | struct | map from field name (str) to value |
//! | unit variant | str: the variant's name |
//! | newtype, tuple, struct variant | a map of one entry, from the variant's name to the value, array or struct map |
//!
//! Encoding refuses a value that nests deeper than [`MAX_DEPTH`] levels of arrays and maps,
//! which decoding would refuse.
//!
//! Decoding accepts every int format for every integer type (range-checked by serde), structs
//! as maps or arrays, and a bin where a sequence of bytes is expected. A string that is not
//! UTF-8 is offered as bytes.
//!
//! Why not `rmp-serde` itself: state crosses every swap inside the pause, and this codec writes
//! straight into a `Vec` and reads straight from a slice. BENCHMARKS.md has the measurements.
//!
//! # Untrusted input
//!
//! Decoding never reads outside the input, caps how deep arrays and maps nest
//! ([`MAX_DEPTH`]), never reserves memory from a length it has not checked against the bytes
//! left, and refuses bytes left over after the value.
//!
//! [`value::parse`] reads any MessagePack value without a type to decode it into (extensions
//! included), under the same rules, and [`value::Value`] shows it in a readable form.

#![no_std]
#![deny(missing_docs)]

extern crate alloc;

pub mod value;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;
use serde::de::{self, DeserializeSeed, Visitor};
use serde::ser::{self, Serialize};

/// How deep arrays and maps may nest, in encoding and in decoding alike: each level costs the
/// decoder some stack, and a guest's stack is small (1 MiB by default).
///
/// Both sides count the same way: every array and map is a level, whatever serde type it holds
/// (sequence, tuple, map, struct, unit struct), and a newtype, tuple or struct variant is the
/// map of one entry around its content, so a level more. A value that encodes decodes; one that
/// nests deeper is refused when it is written, not when it is read back.
pub const MAX_DEPTH: u32 = 256;

/// Why a value could not be encoded or decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl core::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

fn error(message: impl Into<String>) -> Error {
    Error(message.into())
}

/// Encodes `value`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    write(&mut out, value)?;
    Ok(out)
}

/// Encodes `value` at the end of `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    value.serialize(&mut Serializer {
        out,
        flush_at: usize::MAX,
        flush: &mut |_| {},
        depth: 0,
    })
}

/// How many bytes past `chunk` the buffer of [`write_chunked`] may hold: at most a number
/// (9 bytes) and a str header (5 bytes) are written between two points where it is flushed.
pub const CHUNK_SLACK: usize = 14;

/// Encodes `value` into `out` in pieces handed to `flush`. What is left in `out` at the end is
/// the last piece; the pieces in order are exactly the bytes [`write()`] gives.
///
/// `out` is handed to `flush` and cleared before an element of an array or a key or value of a
/// map once it holds `chunk` bytes or more, and before the payload of a str or bin that would
/// not fit in what is left of the chunk (the payload's header goes with `out`). Such a payload
/// of `chunk` bytes or more is then handed to `flush` as a piece of its own, straight from the
/// value, without a copy; a shorter one starts the next piece in `out`.
///
/// So, starting empty, `out` never holds more than `chunk +` [`CHUNK_SLACK`] bytes, and an
/// `out` with that much capacity never grows, however large the value or its strings. A piece
/// handed to `flush` may be shorter than `chunk` but never empty; the last piece left in `out`
/// may be empty. A `chunk` of 0 counts as 1.
///
/// The exception: an array or map whose length serde does not give beforehand (`collect_seq`
/// over a filtered iterator, say) is written with a placeholder header that is patched at its
/// end, so nothing is flushed while it is open: `out` holds all of it, strings included, and is
/// flushed at the next element after it closes.
pub fn write_chunked<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    chunk: usize,
    flush: &mut dyn FnMut(&[u8]),
    value: &T,
) -> Result<(), Error> {
    value.serialize(&mut Serializer {
        out,
        flush_at: chunk.max(1),
        flush,
        depth: 0,
    })
}

/// Decodes a `T` that takes up all of `bytes`.
pub fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Error> {
    let mut deserializer = Deserializer::new(bytes);
    let value = T::deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Writes MessagePack to a `Vec`, handing it to `flush` in pieces (see [`write_chunked`]).
struct Serializer<'a> {
    out: &'a mut Vec<u8>,
    /// How full `out` may get before it is flushed; `usize::MAX` never flushes.
    flush_at: usize,
    flush: &'a mut dyn FnMut(&[u8]),
    /// How many arrays and maps are open around what is written next.
    depth: u32,
}

impl Serializer<'_> {
    /// Opens an array or map: refuses a level past [`MAX_DEPTH`], as the decoder would.
    #[inline]
    fn enter(&mut self) -> Result<(), Error> {
        if self.depth >= MAX_DEPTH {
            return Err(error(alloc::format!(
                "the value nests deeper than {MAX_DEPTH} levels of arrays and maps \
                 (hotswap_msgpack::MAX_DEPTH), which no decoder here reads back"
            )));
        }
        self.depth += 1;
        Ok(())
    }

    /// The map of one entry that holds a newtype, tuple or struct variant, up to its content.
    fn variant(&mut self, variant: &str) -> Result<(), Error> {
        self.enter()?;
        self.map(1)?;
        self.str(variant)
    }

    /// Before an element of an array, or a key or value of a map: hands a full buffer to
    /// `flush`.
    #[inline]
    fn between_elements(&mut self) {
        if self.out.len() >= self.flush_at {
            (self.flush)(self.out);
            self.out.clear();
        }
    }

    #[inline]
    fn uint(&mut self, v: u64) {
        let out = &mut *self.out;
        if v < 0x80 {
            out.push(v as u8);
        } else if v <= u8::MAX.into() {
            out.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= u16::MAX.into() {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u32::MAX.into() {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    #[inline]
    fn int(&mut self, v: i64) {
        if v >= 0 {
            return self.uint(v as u64);
        }
        let out = &mut *self.out;
        if v >= -32 {
            out.push(v as u8);
        } else if v >= i8::MIN.into() {
            out.extend_from_slice(&[0xd0, v as u8]);
        } else if v >= i16::MIN.into() {
            out.push(0xd1);
            out.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i32::MIN.into() {
            out.push(0xd2);
            out.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            out.push(0xd3);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// A str, bin, array or map header: the fix form if `fix` allows one, else 8/16/32-bit.
    #[inline]
    fn header(&mut self, len: usize, fix: Option<(u8, usize)>, wide: [u8; 3]) -> Result<(), Error> {
        let out = &mut *self.out;
        match fix {
            Some((marker, max)) if len <= max => out.push(marker | len as u8),
            _ if len <= u8::MAX as usize && wide[0] != 0 => {
                out.extend_from_slice(&[wide[0], len as u8])
            }
            _ if len <= u16::MAX as usize => {
                out.push(wide[1]);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
            _ => {
                let len = u32::try_from(len)
                    .map_err(|_| error(alloc::format!("{len} is too long for MessagePack")))?;
                out.push(wide[2]);
                out.extend_from_slice(&len.to_be_bytes());
            }
        }
        Ok(())
    }

    /// Whether a str or bin of `len` bytes and its header would overflow the chunk.
    #[inline]
    fn overflows(&self, len: usize) -> bool {
        len + 5 > self.flush_at.saturating_sub(self.out.len())
    }

    /// A str or bin that does not fit in what is left of the chunk: its header ends the piece in
    /// `out`, and a payload of a chunk or more is a piece of its own, handed over uncopied.
    #[cold]
    fn spill(
        &mut self,
        payload: &[u8],
        fix: Option<(u8, usize)>,
        wide: [u8; 3],
    ) -> Result<(), Error> {
        self.header(payload.len(), fix, wide)?;
        (self.flush)(self.out);
        self.out.clear();
        if payload.len() < self.flush_at {
            self.out.extend_from_slice(payload);
        } else {
            (self.flush)(payload);
        }
        Ok(())
    }

    #[inline]
    fn str(&mut self, v: &str) -> Result<(), Error> {
        if self.overflows(v.len()) {
            return self.spill(v.as_bytes(), Some((0xa0, 31)), [0xd9, 0xda, 0xdb]);
        }
        // Most strings in state are short: one byte of header, and no call for it.
        if v.len() < 32 {
            push_short(self.out, 0xa0 | v.len() as u8, v.as_bytes());
            return Ok(());
        } else {
            self.out.reserve(5 + v.len());
            self.header(v.len(), None, [0xd9, 0xda, 0xdb])?;
        }
        self.out.extend_from_slice(v.as_bytes());
        Ok(())
    }

    #[inline]
    fn array(&mut self, len: usize) -> Result<(), Error> {
        self.header(len, Some((0x90, 15)), [0, 0xdc, 0xdd])
    }

    #[inline]
    fn map(&mut self, len: usize) -> Result<(), Error> {
        self.header(len, Some((0x80, 15)), [0, 0xde, 0xdf])
    }

    /// An array or map whose length comes at the end: a placeholder header, patched by
    /// [`Compound::finish`].
    fn unknown_len(&mut self) -> usize {
        let at = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        at
    }
}

/// Appends `marker` and `bytes` (fewer than 32) with a few fixed-size moves. In a wasm guest,
/// a copy of unknown length compiles to `memory.copy`, a call out to the host that costs more
/// than the copy itself for a short string.
#[inline]
fn push_short(out: &mut Vec<u8>, marker: u8, bytes: &[u8]) {
    let n = bytes.len();
    debug_assert!(n < 32);
    out.reserve(1 + n);
    // SAFETY: `reserve` made room for `1 + n` bytes after `out.len()`; every write below lies
    // in `dst[..1 + n]`, every read in `bytes[..n]`, and all of them are initialised before
    // `set_len`.
    unsafe {
        let dst = out.as_mut_ptr().add(out.len());
        dst.write(marker);
        let (src, dst) = (bytes.as_ptr(), dst.add(1));
        macro_rules! move_ends {
            ($t:ty) => {{
                let size = core::mem::size_of::<$t>();
                dst.cast::<$t>()
                    .write_unaligned(src.cast::<$t>().read_unaligned());
                dst.add(n - size)
                    .cast::<$t>()
                    .write_unaligned(src.add(n - size).cast::<$t>().read_unaligned());
            }};
        }
        if n >= 16 {
            move_ends!(u128);
        } else if n >= 8 {
            move_ends!(u64);
        } else if n >= 4 {
            move_ends!(u32);
        } else if n > 0 {
            *dst = *src;
            *dst.add(n / 2) = *src.add(n / 2);
            *dst.add(n - 1) = *src.add(n - 1);
        }
        out.set_len(out.len() + 1 + n);
    }
}

/// A sequence, map or struct being written: counts entries when the length was not given.
struct Compound<'s, 'a> {
    ser: &'s mut Serializer<'a>,
    /// For an unknown length: the placeholder header, patched at the end.
    pending: Option<Pending>,
    count: usize,
    /// The levels of nesting it opened: 1, or 2 for a variant's map around its array or map.
    levels: u32,
}

/// An array or map whose length is written at its end.
struct Pending {
    /// Where its placeholder header is in `out`.
    at: usize,
    is_map: bool,
    /// The serializer's `flush_at`, put back at the end: nothing is flushed while the
    /// placeholder is in the buffer.
    flush_at: usize,
}

impl<'s, 'a> Compound<'s, 'a> {
    /// Writes the header of an array or map of `len` entries (a placeholder if unknown).
    fn begin(ser: &'s mut Serializer<'a>, len: Option<usize>, is_map: bool) -> Result<Self, Error> {
        ser.enter()?;
        let pending = match len {
            Some(len) if is_map => ser.map(len).map(|()| None)?,
            Some(len) => ser.array(len).map(|()| None)?,
            None => Some(Pending {
                at: ser.unknown_len(),
                is_map,
                flush_at: core::mem::replace(&mut ser.flush_at, usize::MAX),
            }),
        };
        Ok(Compound {
            ser,
            pending,
            count: 0,
            levels: 1,
        })
    }

    /// The content of a variant (see [`Serializer::variant`]), which has opened a level.
    fn in_variant(mut self) -> Self {
        self.levels += 1;
        self
    }

    fn finish(self) -> Result<(), Error> {
        self.ser.depth -= self.levels;
        let Some(Pending {
            at,
            is_map,
            flush_at,
        }) = self.pending
        else {
            return Ok(());
        };
        self.ser.flush_at = flush_at;
        // Write the real header after the content, then move it into place.
        let content = at + 5;
        let end = self.ser.out.len();
        if is_map {
            self.ser.map(self.count)?;
        } else {
            self.ser.array(self.count)?;
        }
        let header: Vec<u8> = self.ser.out.drain(end..).collect();
        let out = &mut *self.ser.out;
        out.copy_within(content..end, at + header.len());
        out[at..at + header.len()].copy_from_slice(&header);
        out.truncate(end - (5 - header.len()));
        Ok(())
    }
}

/// `serialize_*` for the integers up to 64 bits: the smallest int format that holds the value.
macro_rules! integers {
    ($($method:ident($t:ty) => $write:ident as $wide:ty;)*) => {$(
        fn $method(self, v: $t) -> Result<(), Error> {
            self.$write(v as $wide);
            Ok(())
        }
    )*};
}

impl<'s, 'a> ser::Serializer for &'s mut Serializer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Compound<'s, 'a>;
    type SerializeTuple = Compound<'s, 'a>;
    type SerializeTupleStruct = Compound<'s, 'a>;
    type SerializeTupleVariant = Compound<'s, 'a>;
    type SerializeMap = Compound<'s, 'a>;
    type SerializeStruct = Compound<'s, 'a>;
    type SerializeStructVariant = Compound<'s, 'a>;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }

    integers! {
        serialize_i8(i8) => int as i64;
        serialize_i16(i16) => int as i64;
        serialize_i32(i32) => int as i64;
        serialize_i64(i64) => int as i64;
        serialize_u8(u8) => uint as u64;
        serialize_u16(u16) => uint as u64;
        serialize_u32(u32) => uint as u64;
        serialize_u64(u64) => uint as u64;
    }

    fn serialize_i128(self, v: i128) -> Result<(), Error> {
        self.serialize_bytes(&v.to_be_bytes())
    }

    fn serialize_u128(self, v: u128) -> Result<(), Error> {
        self.serialize_bytes(&v.to_be_bytes())
    }

    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        self.out.push(0xca);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        self.out.push(0xcb);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }

    fn serialize_char(self, v: char) -> Result<(), Error> {
        self.str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        self.str(v)
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        if self.overflows(v.len()) {
            return self.spill(v, None, [0xc4, 0xc5, 0xc6]);
        }
        self.out.reserve(5 + v.len());
        self.header(v.len(), None, [0xc4, 0xc5, 0xc6])?;
        self.out.extend_from_slice(v);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.out.push(0xc0);
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        // An empty array: a level to a decoder that reads it as any value.
        self.enter()?;
        self.depth -= 1;
        self.array(0)
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.variant(variant)?;
        value.serialize(&mut *self)?;
        self.depth -= 1;
        Ok(())
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Compound<'s, 'a>, Error> {
        Compound::begin(self, len, false)
    }

    fn serialize_tuple(self, len: usize) -> Result<Compound<'s, 'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        self.variant(variant)?;
        Ok(self.serialize_seq(Some(len))?.in_variant())
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Compound<'s, 'a>, Error> {
        Compound::begin(self, len, true)
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Compound<'s, 'a>, Error> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Compound<'s, 'a>, Error> {
        self.variant(variant)?;
        Ok(self.serialize_map(Some(len))?.in_variant())
    }
}

impl ser::SerializeSeq for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.ser.between_elements();
        self.count += 1;
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

/// The compound kinds whose length is always known: elements or fields, written in order.
macro_rules! known_length {
    ($($kind:ident :: $method:ident;)*) => {$(
        impl ser::$kind for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
                self.ser.between_elements();
                value.serialize(&mut *self.ser)
            }

            fn end(self) -> Result<(), Error> {
                self.finish()
            }
        }
    )*};
}

known_length! {
    SerializeTuple::serialize_element;
    SerializeTupleStruct::serialize_field;
    SerializeTupleVariant::serialize_field;
}

impl ser::SerializeMap for Compound<'_, '_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        self.ser.between_elements();
        self.count += 1;
        key.serialize(&mut *self.ser)
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.ser.between_elements();
        value.serialize(&mut *self.ser)
    }

    fn end(self) -> Result<(), Error> {
        self.finish()
    }
}

/// Structs and struct variants: each field as its name, then its value.
macro_rules! named_fields {
    ($($kind:ident),*) => {$(
        impl ser::$kind for Compound<'_, '_> {
            type Ok = ();
            type Error = Error;

            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), Error> {
                self.ser.str(key)?;
                value.serialize(&mut *self.ser)
            }

            fn end(self) -> Result<(), Error> {
                self.finish()
            }
        }
    )*};
}

named_fields!(SerializeStruct, SerializeStructVariant);

// ---------------------------------------------------------------------------------------------
// Decoding

/// Reads MessagePack from a slice, borrowing strings and bytes from it.
///
/// [`from_slice`] is the usual entry point; a `Deserializer` of its own serves to read only part
/// of the input (a visitor may stop early) or to check the end with [`Deserializer::end`].
pub struct Deserializer<'de> {
    input: &'de [u8],
    depth: u32,
}

impl<'de> Deserializer<'de> {
    /// A deserializer reading `input` from its start.
    pub fn new(input: &'de [u8]) -> Self {
        Deserializer { input, depth: 0 }
    }

    /// Refuses bytes left over after the value.
    pub fn end(&self) -> Result<(), Error> {
        match self.input.len() {
            0 => Ok(()),
            left => Err(error(alloc::format!(
                "{left} bytes left over after the value"
            ))),
        }
    }

    #[inline]
    fn peek(&self) -> Result<u8, Error> {
        self.input.first().copied().ok_or_else(truncated)
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, Error> {
        let (&first, rest) = self.input.split_first().ok_or_else(truncated)?;
        self.input = rest;
        Ok(first)
    }

    #[inline]
    fn take(&mut self, len: usize) -> Result<&'de [u8], Error> {
        if len > self.input.len() {
            return Err(truncated());
        }
        let (taken, rest) = self.input.split_at(len);
        self.input = rest;
        Ok(taken)
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut bytes = [0; N];
        bytes.copy_from_slice(self.take(N)?);
        Ok(bytes)
    }

    /// The length that follows an 8/16/32-bit str, bin, array or map marker.
    #[inline]
    fn len(&mut self, width: u8) -> Result<usize, Error> {
        Ok(match width {
            0 => self.byte()?.into(),
            1 => u16::from_be_bytes(self.be()?).into(),
            _ => u32::from_be_bytes(self.be()?) as usize,
        })
    }

    fn str<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Error> {
        let bytes = self.take(len)?;
        match as_str(bytes) {
            Some(s) => visitor.visit_borrowed_str(s),
            // As rmp-serde does: a visitor that takes bytes may have them.
            None => visitor
                .visit_borrowed_bytes(bytes)
                .map_err(|_: Error| error("a string is not valid UTF-8")),
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, Error>) -> Result<T, Error> {
        if self.depth >= MAX_DEPTH {
            return Err(error(alloc::format!(
                "arrays and maps nest deeper than {MAX_DEPTH} levels \
                 (hotswap_msgpack::MAX_DEPTH)"
            )));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// An array (visited as a sequence) or a map, of `len` entries.
    fn compound<V: Visitor<'de>>(
        &mut self,
        len: usize,
        is_map: bool,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.nested(|de| {
            let mut access = Access { de, left: len };
            let value = if is_map {
                visitor.visit_map(&mut access)?
            } else {
                visitor.visit_seq(&mut access)?
            };
            access.finished(if is_map { "map" } else { "array" })?;
            Ok(value)
        })
    }

    /// Decodes any value, `bin` as bytes if `bytes`, else as a sequence of `u8`.
    fn any<V: Visitor<'de>>(&mut self, visitor: V, bytes: bool) -> Result<V::Value, Error> {
        let marker = self.byte()?;
        match marker {
            0x00..=0x7f => visitor.visit_u8(marker),
            0x80..=0x8f => self.compound((marker & 0x0f).into(), true, visitor),
            0x90..=0x9f => self.compound((marker & 0x0f).into(), false, visitor),
            0xa0..=0xbf => self.str((marker & 0x1f).into(), visitor),
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xc4..=0xc6 => {
                let len = self.len(marker - 0xc4)?;
                let data = self.take(len)?;
                if bytes {
                    visitor.visit_borrowed_bytes(data)
                } else {
                    visitor.visit_seq(de::value::SeqDeserializer::new(data.iter().copied()))
                }
            }
            0xca => visitor.visit_f32(f32::from_be_bytes(self.be()?)),
            0xcb => visitor.visit_f64(f64::from_be_bytes(self.be()?)),
            0xcc => visitor.visit_u8(self.byte()?),
            0xcd => visitor.visit_u16(u16::from_be_bytes(self.be()?)),
            0xce => visitor.visit_u32(u32::from_be_bytes(self.be()?)),
            0xcf => visitor.visit_u64(u64::from_be_bytes(self.be()?)),
            0xd0 => visitor.visit_i8(self.byte()? as i8),
            0xd1 => visitor.visit_i16(i16::from_be_bytes(self.be()?)),
            0xd2 => visitor.visit_i32(i32::from_be_bytes(self.be()?)),
            0xd3 => visitor.visit_i64(i64::from_be_bytes(self.be()?)),
            0xd9..=0xdb => {
                let len = self.len(marker - 0xd9)?;
                self.str(len, visitor)
            }
            0xdc | 0xdd => {
                let len = self.len(marker - 0xdc + 1)?;
                self.compound(len, false, visitor)
            }
            0xde | 0xdf => {
                let len = self.len(marker - 0xde + 1)?;
                self.compound(len, true, visitor)
            }
            0xe0..=0xff => visitor.visit_i8(marker as i8),
            0xc1 | 0xc7..=0xc9 | 0xd4..=0xd8 => Err(unsupported(marker)),
        }
    }

    /// Skips one value without visiting it, iteratively (no recursion, whatever the nesting).
    fn skip(&mut self) -> Result<(), Error> {
        let mut values: u64 = 1;
        while values > 0 {
            values -= 1;
            let marker = self.byte()?;
            let skip = match marker {
                0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => 0,
                0x80..=0x8f => {
                    values += 2 * u64::from(marker & 0x0f);
                    0
                }
                0x90..=0x9f => {
                    values += u64::from(marker & 0x0f);
                    0
                }
                0xa0..=0xbf => (marker & 0x1f).into(),
                0xc4..=0xc6 => self.len(marker - 0xc4)?,
                0xd9..=0xdb => self.len(marker - 0xd9)?,
                0xca | 0xce | 0xd2 => 4,
                0xcb | 0xcf | 0xd3 => 8,
                0xcc | 0xd0 => 1,
                0xcd | 0xd1 => 2,
                0xdc | 0xdd => {
                    values += self.len(marker - 0xdc + 1)? as u64;
                    0
                }
                0xde | 0xdf => {
                    values += 2 * self.len(marker - 0xde + 1)? as u64;
                    0
                }
                _ => return Err(unsupported(marker)),
            };
            self.take(skip)?;
        }
        Ok(())
    }
}

#[inline]
/// The error for the markers Hotswap's encoding never uses: 0xc1 and the extension types.
fn unsupported(marker: u8) -> Error {
    if marker == 0xc1 {
        error("0xc1 is not a MessagePack marker")
    } else {
        error("MessagePack extension types are not part of Hotswap's encoding")
    }
}

fn truncated() -> Error {
    error("the MessagePack ends in the middle of a value")
}

/// `bytes` as a `str` if they are UTF-8. ASCII, the common case, is checked eight bytes at a
/// time.
#[inline]
fn as_str(bytes: &[u8]) -> Option<&str> {
    let mut words = bytes.chunks_exact(8);
    let ascii = words.by_ref().all(|w| {
        u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) & 0x8080_8080_8080_8080
            == 0
    }) && words.remainder().iter().all(|b| *b < 0x80);
    if ascii {
        // SAFETY: every byte is below 0x80, and ASCII is UTF-8.
        Some(unsafe { core::str::from_utf8_unchecked(bytes) })
    } else {
        core::str::from_utf8(bytes).ok()
    }
}

/// The elements of an array or the entries of a map; `left` counts what remains.
struct Access<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> Access<'_, 'de> {
    /// The next element, or the next entry's key.
    fn next<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    fn finished(&self, what: &str) -> Result<(), Error> {
        match self.left {
            0 => Ok(()),
            left => Err(error(alloc::format!(
                "the {what} has {left} more entries than the type reads"
            ))),
        }
    }
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.next(seed)
    }

    fn size_hint(&self) -> Option<usize> {
        // Every element takes at least one byte: never promise more than the input holds.
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        self.next(seed)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.de)
    }

    fn size_hint(&self) -> Option<usize> {
        // Every entry takes at least two bytes.
        Some(self.left.min(self.de.input.len() / 2))
    }
}

/// An enum as a map of one entry: the variant's name, then its content.
struct Variant<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    /// False for a unit variant written as its bare name.
    has_content: bool,
}

impl<'de> de::EnumAccess<'de> for Variant<'_, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let name = seed.deserialize(&mut *self.de)?;
        Ok((name, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        if self.has_content {
            de::Deserialize::deserialize(&mut *self.de)
        } else {
            Ok(())
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        if !self.has_content {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"newtype variant",
            ));
        }
        seed.deserialize(&mut *self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, Error> {
        if !self.has_content {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"tuple variant",
            ));
        }
        de::Deserializer::deserialize_tuple(&mut *self.de, len, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        if !self.has_content {
            return Err(de::Error::invalid_type(
                de::Unexpected::UnitVariant,
                &"struct variant",
            ));
        }
        self.de.any(visitor, false)
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.any(visitor, true)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == 0xc0 {
            self.input = &self.input[1..];
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.peek()? {
            0xc0 => {
                self.input = &self.input[1..];
                visitor.visit_unit()
            }
            // An empty array is a level, as it is to the encoder and to any other reader.
            0x90 => self.nested(|de| {
                de.input = &de.input[1..];
                visitor.visit_unit()
            }),
            _ => self.any(visitor, true),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let len = match self.peek()? {
            marker @ 0x80..=0x8f => Some(usize::from(marker & 0x0f)),
            0xde | 0xdf => None,
            _ => {
                return visitor.visit_enum(Variant {
                    de: self,
                    has_content: false,
                });
            }
        };
        let marker = self.byte()?;
        let len = match len {
            Some(len) => len,
            None => self.len(marker - 0xde + 1)?,
        };
        if len != 1 {
            return Err(error(alloc::format!(
                "an enum is a map of one entry, not {len}"
            )));
        }
        self.nested(|de| {
            visitor.visit_enum(Variant {
                de,
                has_content: true,
            })
        })
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == 0xc4 && self.input.get(1) == Some(&16) {
            self.take(2)?;
            return visitor.visit_i128(i128::from_be_bytes(self.be()?));
        }
        self.any(visitor, true)
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == 0xc4 && self.input.get(1) == Some(&16) {
            self.take(2)?;
            return visitor.visit_u128(u128::from_be_bytes(self.be()?));
        }
        self.any(visitor, true)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.any(visitor, false)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.any(visitor, false)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.any(visitor, false)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.any(visitor, false)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.skip()?;
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 u8 u16 u32 u64 f32 f64 char str string bytes byte_buf unit map
        identifier
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use serde::{Deserialize, Serialize};
    use std::format;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Unit;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Newtype(u32);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pair(i8, String);

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Kind {
        Plain,
        Wrapped(i64),
        Tuple(u8, bool),
        Named { x: f32, y: Option<String> },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Everything {
        flags: (bool, bool),
        signed: Vec<i64>,
        unsigned: Vec<u64>,
        small: (i8, i16, i32, u8, u16, u32),
        wide: (i128, u128),
        floats: (f32, f64),
        chars: Vec<char>,
        strings: Vec<String>,
        bytes: hotswap_abi::http::Bytes,
        byte_seq: Vec<u8>,
        options: Vec<Option<u16>>,
        unit: (),
        unit_struct: Unit,
        newtype: Newtype,
        pair: Pair,
        kinds: Vec<Kind>,
        map: BTreeMap<String, Vec<u32>>,
        int_keys: BTreeMap<i32, Kind>,
    }

    /// Integers at every format boundary, strings and collections at every header boundary.
    fn everything() -> Everything {
        everything_up_to(65_536)
    }

    /// [`everything`] with strings and lists no longer than `max`.
    fn everything_up_to(max: usize) -> Everything {
        let lengths: Vec<usize> = [0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536]
            .into_iter()
            .filter(|&n| n <= max)
            .collect();
        Everything {
            flags: (true, false),
            signed: vec![
                0,
                1,
                -1,
                -32,
                -33,
                127,
                128,
                -128,
                -129,
                255,
                256,
                -32_768,
                -32_769,
                65_535,
                65_536,
                i32::MIN.into(),
                i64::from(i32::MIN) - 1,
                i64::MIN,
                i64::MAX,
            ],
            unsigned: vec![0, 127, 128, 255, 256, 65_535, 65_536, 1 << 32, u64::MAX],
            small: (i8::MIN, i16::MIN, i32::MAX, u8::MAX, u16::MAX, u32::MAX),
            wide: (i128::MIN + 7, u128::MAX - 7),
            floats: (1.5, -0.1),
            chars: vec!['a', 'é', '€', '🦀'],
            strings: (0..40)
                .chain(lengths.iter().copied())
                .map(|n| "ab€d".chars().cycle().take(n).collect())
                .collect(),
            bytes: hotswap_abi::http::Bytes((0..300).map(|i| i as u8).collect()),
            byte_seq: vec![0, 200, 255],
            options: vec![None, Some(0), Some(300)],
            unit: (),
            unit_struct: Unit,
            newtype: Newtype(7),
            pair: Pair(-5, "pair".into()),
            kinds: vec![
                Kind::Plain,
                Kind::Wrapped(-9),
                Kind::Tuple(3, true),
                Kind::Named { x: 2.5, y: None },
                Kind::Named {
                    x: 0.0,
                    y: Some("y".into()),
                },
            ],
            map: lengths[..6]
                .iter()
                .map(|&n| (format!("k{n}"), (0..n as u32).collect()))
                .collect(),
            int_keys: (0..20).map(|i| (i - 10, Kind::Wrapped(i.into()))).collect(),
        }
    }

    #[test]
    fn encodes_as_rmp_serde_does_and_both_read_each_other() {
        let value = everything();
        let ours = to_vec(&value).unwrap();
        assert_eq!(ours, rmp_serde::to_vec_named(&value).unwrap());
        assert_eq!(from_slice::<Everything>(&ours).unwrap(), value);
        assert_eq!(rmp_serde::from_slice::<Everything>(&ours).unwrap(), value);
    }

    #[test]
    fn unknown_lengths_get_the_smallest_header() {
        struct Filtered(usize, bool);
        impl Serialize for Filtered {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                // `filter` hides the length from serde, as iterators in real apps do.
                let items = (0..self.0 * 2).filter(|i| i % 2 == 0).map(|i| i as u32);
                if self.1 {
                    s.collect_map(items.map(|i| (i, i)))
                } else {
                    s.collect_seq(items)
                }
            }
        }
        for len in [0, 3, 15, 16, 70_000] {
            for is_map in [false, true] {
                let value = Filtered(len, is_map);
                let ours = to_vec(&value).unwrap();
                assert_eq!(
                    ours,
                    rmp_serde::to_vec_named(&value).unwrap(),
                    "{len} {is_map}"
                );
                if is_map {
                    assert_eq!(from_slice::<BTreeMap<u32, u32>>(&ours).unwrap().len(), len);
                } else {
                    assert_eq!(from_slice::<Vec<u32>>(&ours).unwrap().len(), len);
                }
            }
        }
    }

    #[test]
    fn chunked_pieces_join_into_the_whole_encoding() {
        fn pieces<T: Serialize>(value: &T, chunk: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
            let (mut flushed, mut out) = (Vec::new(), Vec::new());
            write_chunked(
                &mut out,
                chunk,
                &mut |piece| flushed.push(piece.to_vec()),
                value,
            )
            .unwrap();
            (flushed, out)
        }
        // A known-length map around an unknown-length sequence: nothing may be flushed while
        // the sequence's placeholder header is in the buffer, and flushing resumes after it.
        struct Mixed;
        impl Serialize for Mixed {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use ser::SerializeMap;
                let mut map = s.serialize_map(Some(3))?;
                map.serialize_entry("before", &(0..5_000u32).collect::<Vec<_>>())?;
                let hidden = (0..20_000u32).filter(|i| i % 2 == 0);
                map.serialize_entry("hidden", &Hidden(core::cell::Cell::new(Some(hidden))))?;
                map.serialize_entry("after", &(0..5_000u32).collect::<Vec<_>>())?;
                map.end()
            }
        }
        struct Hidden<I>(core::cell::Cell<Option<I>>);
        impl<I: Iterator<Item = u32>> Serialize for Hidden<I> {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.take().unwrap())
            }
        }
        let whole = to_vec(&everything()).unwrap();
        for chunk in [1, 7, 64, 4096, 1 << 20] {
            let (flushed, last) = pieces(&everything(), chunk);
            assert!(flushed.iter().all(|p| !p.is_empty()), "{chunk}");
            assert_eq!([flushed.concat(), last].concat(), whole, "{chunk}");

            let (flushed, last) = pieces(&Mixed, chunk);
            let joined = [flushed.concat(), last].concat();
            assert_eq!(joined, to_vec(&Mixed).unwrap(), "{chunk}");
            assert_eq!(joined, rmp_serde::to_vec_named(&Mixed).unwrap(), "{chunk}");
        }
        // Small elements: every piece stays within one element (at most 5 bytes) of the chunk.
        let numbers: Vec<u32> = (0..100_000).map(|i| i * 7919).collect();
        let (flushed, last) = pieces(&numbers, 1000);
        assert!(flushed.len() > 100);
        assert!(flushed.iter().all(|p| (1000..1005).contains(&p.len())));
        assert_eq!([flushed.concat(), last].concat(), to_vec(&numbers).unwrap());
    }

    /// A byte string that borrows, so that its pieces can be traced back to it.
    struct Bin<'a>(&'a [u8]);

    impl Serialize for Bin<'_> {
        fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    /// Encodes `value` with [`write_chunked`] into a buffer of `chunk + CHUNK_SLACK` bytes of
    /// capacity, and checks that the pieces join to what [`to_vec`] writes: the pieces (with
    /// where each one lay), the last piece, and whether `out` grew.
    fn traced<T: Serialize + ?Sized>(value: &T, chunk: usize) -> (Vec<(usize, Vec<u8>)>, bool) {
        let mut out = Vec::with_capacity(chunk + CHUNK_SLACK);
        let capacity = out.capacity();
        let mut pieces = Vec::new();
        let mut flush = |p: &[u8]| pieces.push((p.as_ptr() as usize, p.to_vec()));
        write_chunked(&mut out, chunk, &mut flush, value).unwrap();
        let grew = out.capacity() != capacity;
        pieces.push((0, out));
        let joined: Vec<u8> = pieces.iter().flat_map(|(_, p)| p.iter().copied()).collect();
        assert_eq!(joined, to_vec(value).unwrap(), "{chunk}");
        (pieces, grew)
    }

    #[test]
    fn long_strings_and_bins_go_to_flush_uncopied() {
        #[derive(Serialize)]
        enum Wrapped<'a> {
            Text(&'a str),
            Both { text: &'a str, bin: Bin<'a> },
        }
        #[derive(Serialize)]
        struct Holder<'a> {
            text: &'a str,
            bin: Bin<'a>,
            list: Vec<&'a str>,
            bins: Vec<Bin<'a>>,
            map: BTreeMap<&'a str, Bin<'a>>,
            tuple: (u64, &'a str, Bin<'a>, f64),
            variants: Vec<Wrapped<'a>>,
            wide: u128,
        }
        /// A sequence whose length serde does not know: written with a placeholder header.
        struct Unsized<'a>(&'a [String]);
        impl Serialize for Unsized<'_> {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter().filter(|_| true))
            }
        }
        for chunk in [1, 7, 64, 1000, 4096] {
            let sizes = [0, chunk - 1, chunk, chunk + 1, 10 * chunk];
            let texts: Vec<String> = sizes
                .iter()
                .map(|&n| "é".repeat(n / 2) + &"x".repeat(n % 2))
                .collect();
            let raw: Vec<Vec<u8>> = sizes
                .iter()
                .map(|&n| (0..n).map(|i| i as u8).collect())
                .collect();
            let holders: Vec<Holder> = (0..sizes.len())
                .map(|i| Holder {
                    text: &texts[i],
                    bin: Bin(&raw[i]),
                    list: texts.iter().map(|t| t.as_str()).collect(),
                    bins: raw.iter().map(|b| Bin(b)).collect(),
                    map: texts
                        .iter()
                        .map(|t| t.as_str())
                        .zip(raw.iter().map(|b| Bin(b)))
                        .collect(),
                    tuple: (u64::MAX, &texts[i], Bin(&raw[i]), 0.5),
                    variants: vec![
                        Wrapped::Text(&texts[i]),
                        Wrapped::Both {
                            text: &texts[i],
                            bin: Bin(&raw[i]),
                        },
                    ],
                    wide: u128::MAX - i as u128,
                })
                .collect();
            let (pieces, grew) = traced(&holders, chunk);
            let whole = to_vec(&holders).unwrap();
            assert_eq!(whole, rmp_serde::to_vec_named(&holders).unwrap(), "{chunk}");
            assert!(!grew, "{chunk}");
            assert!(
                pieces[..pieces.len() - 1]
                    .iter()
                    .all(|(_, p)| !p.is_empty())
            );
            // Every payload of a chunk or more was handed over from where it lies.
            let handed = |at: usize| pieces.iter().any(|(ptr, _)| *ptr == at);
            for (text, raw) in texts.iter().zip(&raw).filter(|(t, _)| t.len() >= chunk) {
                assert!(handed(text.as_ptr() as usize), "{chunk} {}", text.len());
                assert!(handed(raw.as_ptr() as usize), "{chunk} {}", raw.len());
            }

            // Inside an array of unknown length, nothing is flushed: all of it is buffered.
            // Flushing resumes after it.
            let after = texts[4].clone();
            let unsized_value = (Bin(&raw[4]), Unsized(&texts), &after);
            let (pieces, grew) = traced(&unsized_value, chunk);
            assert!(grew, "{chunk}");
            let handed = |at: *const u8| pieces.iter().any(|(ptr, _)| *ptr == at as usize);
            assert!(texts.iter().all(|t| !handed(t.as_ptr())), "{chunk}");
            assert!(handed(raw[4].as_ptr()) && handed(after.as_ptr()), "{chunk}");
        }
    }

    #[test]
    fn the_chunk_buffer_never_grows_past_its_bound() {
        #[derive(Serialize)]
        struct Numbers {
            a: u64,
            b: f64,
            c: i64,
            tuple: [u64; 20],
            pairs: BTreeMap<u64, i64>,
            nested: Vec<(u64, Option<f64>, Kind)>,
        }
        let numbers = Numbers {
            a: u64::MAX,
            b: 1.5,
            c: i64::MIN,
            tuple: [u64::MAX; 20],
            pairs: (0..500)
                .map(|i| (u64::MAX - i, i64::MIN + i as i64))
                .collect(),
            nested: (0..300)
                .map(|i| {
                    (
                        u64::MAX,
                        Some(0.25),
                        Kind::Named {
                            x: 1.0,
                            y: (i % 3 == 0).then(|| "y".repeat(i)),
                        },
                    )
                })
                .collect(),
        };
        let everything = everything_up_to(256);
        for chunk in (1..=48).chain([64, 100, 1000, 4096]) {
            assert!(!traced(&numbers, chunk).1, "{chunk}");
            assert!(!traced(&everything, chunk).1, "{chunk}");
        }
    }

    #[test]
    fn unknown_fields_are_skipped_whatever_they_hold() {
        #[derive(Serialize)]
        struct Wide {
            keep: u8,
            extra: Everything,
            last: String,
        }
        #[derive(Debug, PartialEq, Deserialize)]
        struct Narrow {
            keep: u8,
            last: String,
        }
        let bytes = to_vec(&Wide {
            keep: 1,
            extra: everything(),
            last: "end".into(),
        })
        .unwrap();
        let narrow: Narrow = from_slice(&bytes).unwrap();
        assert_eq!(
            narrow,
            Narrow {
                keep: 1,
                last: "end".into()
            }
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = to_vec(&everything_up_to(256)).unwrap();
        for len in 0..bytes.len() {
            assert!(from_slice::<Everything>(&bytes[..len]).is_err(), "{len}");
        }
    }

    #[test]
    fn malformed_input_is_refused_with_a_reason() {
        let refused = |bytes: &[u8]| from_slice::<Everything>(bytes).unwrap_err().to_string();
        // An array header claiming 2^32 - 1 elements, with nothing after it.
        assert!(refused(&[0xdd, 0xff, 0xff, 0xff, 0xff]).contains("ends in the middle"));
        let deep: Vec<u8> = core::iter::repeat_n(0x91, 5000).chain([0xc0]).collect();
        assert!(
            from_slice::<de::IgnoredAny>(&deep).is_ok(),
            "skipping is iterative"
        );
        assert!(refused(&[0xc1]).contains("not a MessagePack marker"));
        assert!(refused(&[0xd4, 0, 0]).contains("extension"));
        // The same inside an unknown field, which is skipped rather than decoded.
        let unknown_ext = [0x81, 0xa1, b'z', 0xd4, 0x00, 0x01];
        let err = from_slice::<hotswap_abi::http::Response>(&unknown_ext).unwrap_err();
        assert!(err.to_string().contains("extension"), "{err}");
        let mut trailing = to_vec(&everything()).unwrap();
        trailing.push(0);
        assert_eq!(refused(&trailing), "1 bytes left over after the value");
        assert!(
            from_slice::<String>(&[0xa2, 0xff, 0xfe])
                .unwrap_err()
                .to_string()
                .contains("UTF-8")
        );
        assert_eq!(
            from_slice::<hotswap_abi::http::Bytes>(&[0xa2, 0xff, 0xfe]).unwrap(),
            hotswap_abi::http::Bytes(vec![0xff, 0xfe])
        );
    }

    /// Runs `f` on a thread with a large stack: unoptimised test builds use far more stack per
    /// level of nesting than a release guest.
    fn with_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn nesting_is_capped_on_both_sides() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        struct Tree(Vec<Tree>);
        let tree = |depth: u32| (1..depth).fold(Tree(Vec::new()), |t, _| Tree(vec![t]));
        let nested = |depth| -> Vec<u8> {
            core::iter::repeat_n(0x91, depth - 1)
                .chain([0x90])
                .collect()
        };
        with_stack(move || {
            let at_cap = to_vec(&tree(MAX_DEPTH)).unwrap();
            assert_eq!(at_cap, nested(MAX_DEPTH as usize));
            assert_eq!(from_slice::<Tree>(&at_cap).unwrap(), tree(MAX_DEPTH));

            let too_deep = to_vec(&tree(MAX_DEPTH + 1)).unwrap_err().to_string();
            assert!(too_deep.contains("deeper than 256 levels"), "{too_deep}");
            assert!(too_deep.contains("MAX_DEPTH"), "{too_deep}");
            let refused = from_slice::<Tree>(&nested(MAX_DEPTH as usize + 1)).unwrap_err();
            assert!(
                refused.to_string().contains("deeper than 256 levels"),
                "{refused}"
            );
            assert!(refused.to_string().contains("MAX_DEPTH"), "{refused}");
        });
    }

    #[test]
    fn a_very_deep_value_is_refused_before_the_stack_runs_out() {
        /// `depth` arrays of one element around a nil, built as it is written: no value to drop.
        struct Deep(u32);
        impl Serialize for Deep {
            fn serialize<S: ser::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if self.0 == 0 {
                    return s.serialize_unit();
                }
                s.collect_seq([Deep(self.0 - 1)])
            }
        }
        // On the test's own thread (2 MiB of stack unless RUST_MIN_STACK says otherwise).
        let mut out = Vec::new();
        let refused = write(&mut out, &Deep(50_000)).unwrap_err().to_string();
        assert!(refused.contains("deeper than 256 levels"), "{refused}");
        let refused = write_chunked(&mut Vec::new(), 16, &mut |_| {}, &Deep(50_000));
        assert!(refused.unwrap_err().to_string().contains("MAX_DEPTH"));
        assert!(to_vec(&Deep(MAX_DEPTH)).is_ok());
    }

    #[test]
    fn encoder_and_decoder_count_levels_alike() {
        /// Every way of nesting: each variant kind, and the compounds inside them.
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum Nest {
            End,
            Unit(Unit),
            Boxed(Box<Nest>),
            List(Vec<Nest>),
            Pair(Box<Nest>, u8),
            Named { inner: Box<Nest> },
            Keyed(BTreeMap<u8, Nest>),
            Tuple((Box<Nest>,)),
            Opt(Option<Box<Nest>>),
        }
        fn build(shape: usize, depth: usize) -> Nest {
            let wrap = |inner: Nest| match shape {
                0 => Nest::Boxed(Box::new(inner)),
                1 => Nest::List(vec![inner]),
                2 => Nest::Pair(Box::new(inner), 1),
                3 => Nest::Named {
                    inner: Box::new(inner),
                },
                4 => Nest::Keyed([(7, inner)].into()),
                5 => Nest::Tuple((Box::new(inner),)),
                _ => Nest::Opt(Some(Box::new(inner))),
            };
            let leaf = if depth.is_multiple_of(2) {
                Nest::End
            } else {
                Nest::Unit(Unit)
            };
            (0..depth).fold(leaf, |inner, _| wrap(inner))
        }
        with_stack(|| {
            for shape in 0..7 {
                let mut encoded = 0;
                for depth in 80..300 {
                    let value = build(shape, depth);
                    // rmp-serde has no limit: the same bytes, whether or not ours refuses them.
                    let bytes = rmp_serde::to_vec_named(&value).unwrap();
                    let ours = to_vec(&value);
                    let decoded = from_slice::<Nest>(&bytes);
                    assert_eq!(ours.is_ok(), decoded.is_ok(), "shape {shape} depth {depth}");
                    if let Ok(ours) = ours {
                        assert_eq!(ours, bytes);
                        assert_eq!(decoded.unwrap(), value);
                        encoded += 1;
                    }
                }
                assert!((10..200).contains(&encoded), "shape {shape}: {encoded}");
            }
        });
    }
}
