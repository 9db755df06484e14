//! State of every shape an operator must be able to read with `hotswap state`, and nesting the
//! encoding must refuse to write past what decoding reads.
//!
//! Messages: `fill` sets every field; `nest N` makes `chain` N levels deep; `get` replies with a
//! summary.

use hotswap_guest::App;
use hotswap_guest::http::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One level of a chain: each is one more map inside the last.
#[derive(Default, Serialize, Deserialize)]
struct Link {
    next: Option<Box<Link>>,
}

impl Drop for Link {
    /// Unlinks iteratively: the default drop would recurse once per level.
    fn drop(&mut self) {
        let mut next = self.next.take();
        while let Some(mut link) = next {
            next = link.next.take();
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Shapes {
    /// Keys that are not strings.
    by_id: BTreeMap<u32, String>,
    /// Binary (MessagePack bin).
    blob: Bytes,
    /// A 128-bit integer (stored as 16 bytes of bin).
    big: u128,
    /// Floats JSON cannot hold.
    not_a_number: f64,
    infinite: f64,
    /// Nesting, as deep as `nest N` makes it.
    chain: Link,
}

impl App for Shapes {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        let input = String::from_utf8_lossy(input);
        if input == "fill" {
            self.by_id = BTreeMap::from([(1, "one".into()), (7, "seven".into())]);
            self.blob = Bytes(vec![0, 1, 0xfe, 0xff]);
            self.big = u128::MAX - 1;
            self.not_a_number = f64::NAN;
            self.infinite = f64::NEG_INFINITY;
        } else if let Some(depth) = input.strip_prefix("nest ").and_then(|n| n.parse().ok()) {
            let mut chain = Link::default();
            for _ in 0..depth {
                chain = Link {
                    next: Some(Box::new(chain)),
                };
            }
            self.chain = chain;
        }
        let mut depth = 0;
        let mut link = &self.chain;
        while let Some(next) = &link.next {
            depth += 1;
            link = next;
        }
        format!("state-shapes: {} ids, chain {depth} deep", self.by_id.len()).into_bytes()
    }
}

hotswap_guest::export_app!(Shapes);
