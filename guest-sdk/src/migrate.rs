//! Taking state over from an older version: [`MigrateError`] to refuse it, [`decode`] to read
//! an old shape, [`encode`] to write one (in tests of a migration).

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;

/// Why state could not be taken over: shown by the host when it refuses a swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateError(String);

impl MigrateError {
    /// A refusal with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MigrateError {}

impl From<String> for MigrateError {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for MigrateError {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// Decodes state bytes as `T`: use it in [`App::migrate`](crate::App::migrate) to read an old version's shape.
pub fn decode<T: DeserializeOwned>(state: &[u8]) -> Result<T, MigrateError> {
    hotswap_msgpack::from_slice(state).map_err(|e| {
        MigrateError::new(format!(
            "cannot decode the state as `{}`: {e}",
            std::any::type_name::<T>()
        ))
    })
}

/// Encodes a value the way the SDK encodes state (MessagePack, named fields).
///
/// Useful in tests of [`App::migrate`](crate::App::migrate), to produce an old version's bytes.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail; a Serialize impl that errors is the app's bug.
    if let Err(e) = hotswap_msgpack::write(&mut out, value) {
        panic!("cannot encode `{}`: {e}", std::any::type_name::<T>());
    }
    out
}
