//! The SDK's helpers, run natively. (The macro's compile errors are tested in
//! `guest-sdk/tests/ui.rs`, where trybuild needs only the SDK's own dependencies.)

/// `hotswap_guest::de::btree_map` builds the same map as serde's one-by-one inserts, including
/// for entries out of order and duplicate keys (the last one wins).
#[test]
fn bulk_map_decoding_matches_inserts() {
    use serde::ser::SerializeMap;
    use std::collections::BTreeMap;

    /// Entries encoded as a MessagePack map in exactly this order, duplicates included.
    struct Entries(Vec<(&'static str, u32)>);
    impl serde::Serialize for Entries {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }
    #[derive(serde::Deserialize)]
    struct Bulk(#[serde(deserialize_with = "hotswap_guest::de::btree_map")] BTreeMap<String, u32>);

    for entries in [
        vec![],
        vec![("a", 1), ("b", 2), ("c", 3)],
        vec![("c", 3), ("a", 1), ("b", 2)],
        vec![("a", 1), ("b", 2), ("a", 7), ("c", 3), ("b", 9)],
    ] {
        let bytes = hotswap_guest::encode(&Entries(entries.clone()));
        let bulk: Bulk = hotswap_guest::decode(&bytes).unwrap();
        let inserted: BTreeMap<String, u32> = hotswap_guest::decode(&bytes).unwrap();
        assert_eq!(bulk.0, inserted, "{entries:?}");
    }
}
