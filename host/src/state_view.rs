//! The app's state as an operator reads it (`hotswap state`): the SDK's MessagePack, decoded
//! into a readable JSON form.

use serde_json::json;

/// The text a person reads and the JSON a script reads, for state bytes written by
/// `state_version`.
pub fn show(bytes: &[u8], state_version: u32) -> (String, serde_json::Value) {
    let decoded: Option<serde_json::Value> = hotswap_msgpack::from_slice(bytes).ok();
    let message = match &decoded {
        Some(value) => serde_json::to_string_pretty(value).unwrap_or_default(),
        None => format!("({} bytes that are not MessagePack)", bytes.len()),
    };
    let state = json!({
        "state_version": state_version,
        "bytes": bytes.len(),
        "value": decoded,
    });
    (message, state)
}
