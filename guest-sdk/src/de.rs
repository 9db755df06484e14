//! Serde helpers that make large state decode faster during a swap's pause.

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// Decodes a `BTreeMap` in bulk, for use as
/// `#[serde(deserialize_with = "hotswap_guest::de::btree_map")]` on a map field.
///
/// serde's own `BTreeMap` decoding inserts one entry at a time, searching the tree from its
/// root for each. A map is encoded in key order, so collecting the entries and building the
/// tree from them in one pass gives the same map faster (BENCHMARKS.md has the effect on the
/// swap pause). Entries out of order are sorted; on duplicate keys the
/// last one wins, as with repeated inserts.
pub fn btree_map<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    V: Deserialize<'de>,
{
    btree_map_from::<D, K, V, V>(deserializer)
}

/// [`btree_map`] for a migration: decodes each value as the old type `Old` and converts it
/// into the new `V` as it goes, so a map whose value type changed is built once, in bulk,
/// with no intermediate map. In [`App::migrate`](crate::App::migrate), on the old shape's
/// field:
///
/// ```
/// # use std::collections::BTreeMap;
/// # use serde::{Deserialize, Deserializer};
/// struct Record { value: String, writes: u32 }
///
/// impl From<String> for Record {
///     fn from(value: String) -> Self {
///         Record { value, writes: 1 }
///     }
/// }
///
/// /// The old shape: values were plain strings; read them as records.
/// #[derive(Deserialize)]
/// struct StoreV1 {
///     #[serde(deserialize_with = "records_from_strings")]
///     entries: BTreeMap<String, Record>,
/// }
///
/// fn records_from_strings<'de, D: Deserializer<'de>>(
///     d: D,
/// ) -> Result<BTreeMap<String, Record>, D::Error> {
///     hotswap_guest::de::btree_map_from::<D, String, String, Record>(d)
/// }
/// ```
pub fn btree_map_from<'de, D, K, Old, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
where
    D: Deserializer<'de>,
    K: Deserialize<'de> + Ord,
    Old: Deserialize<'de> + Into<V>,
{
    struct Entries<K, Old, V>(PhantomData<(K, Old, V)>);

    impl<'de, K, Old, V> Visitor<'de> for Entries<K, Old, V>
    where
        K: Deserialize<'de> + Ord,
        Old: Deserialize<'de> + Into<V>,
    {
        type Value = BTreeMap<K, V>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            // The size hint comes from the (untrusted) bytes: cap what it reserves up front.
            let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
            while let Some((key, value)) = map.next_entry::<K, Old>()? {
                entries.push((key, value.into()));
            }
            Ok(BTreeMap::from_iter(entries))
        }
    }

    deserializer.deserialize_map(Entries::<K, Old, V>(PhantomData))
}
