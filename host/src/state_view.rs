//! The app's state as an operator reads it (`hotswap state`): any MessagePack value, shown in
//! the readable form of [`hotswap_msgpack::value`] (non-string keys, binary, extension types,
//! NaN and infinities, 128-bit integers included), as pretty JSON.

use serde_json::json;

/// The text a person reads and the JSON a script reads, for state bytes written by
/// `state_version`. Bytes that are not one MessagePack value are shown as their size and why.
pub fn show(bytes: &[u8], state_version: u32) -> (String, serde_json::Value) {
    let parsed = hotswap_msgpack::value::parse(bytes);
    let value = parsed
        .as_ref()
        .ok()
        .and_then(|v| serde_json::to_value(v).ok());
    let message = match (&parsed, &value) {
        (_, Some(value)) => serde_json::to_string_pretty(value).unwrap_or_default(),
        (Err(e), None) => format!("({} bytes that are not MessagePack: {e})", bytes.len()),
        (Ok(_), None) => format!("({} bytes that JSON cannot show)", bytes.len()),
    };
    let state = json!({
        "state_version": state_version,
        "bytes": bytes.len(),
        "value": value,
    });
    (message, state)
}
