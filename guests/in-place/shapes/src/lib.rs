//! An app that keeps its state in place, in one shape per feature (see Cargo.toml): the host
//! must take the by-value path for a swap between any two of them, and say why.
//!
//! Messages: `add NAME` adds an entry and a tag, `mark NAME` marks an entry, `show` prints
//! the whole state. Every reply starts with the shape's name.

use hotswap_guest::{App, InPlace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// This build's shape.
const SHAPE: &str = if cfg!(feature = "field") {
    "field"
} else if cfg!(feature = "collection") {
    "collection"
} else if cfg!(feature = "variant") {
    "variant"
} else if cfg!(feature = "order") {
    "order"
} else {
    "base"
};

#[cfg(not(feature = "order"))]
#[derive(Default, Serialize, Deserialize, InPlace)]
#[serde(default)]
struct State {
    count: u64,
    label: String,
    tags: Vec<Tag>,
    entries: BTreeMap<String, Entry>,
    #[cfg(feature = "field")]
    added: u64,
}

#[cfg(feature = "order")]
#[derive(Default, Serialize, Deserialize, InPlace)]
#[serde(default)]
struct State {
    label: String,
    count: u64,
    tags: Vec<Tag>,
    entries: BTreeMap<String, Entry>,
}

#[cfg(not(feature = "collection"))]
type Tag = String;

/// A tag: the same bytes as a `String`, but another type.
#[cfg(feature = "collection")]
#[derive(Default, Serialize, Deserialize, InPlace)]
#[serde(transparent)]
struct Tag(String);

#[derive(Default, Serialize, Deserialize, InPlace)]
#[serde(default)]
struct Entry {
    kind: Kind,
    notes: Vec<u32>,
}

#[derive(Default, Serialize, Deserialize, InPlace, Debug)]
enum Kind {
    #[default]
    Plain,
    Marked,
    #[cfg(feature = "variant")]
    Urgent,
}

impl App for State {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(input);
        let reply = match text.split_once(' ') {
            Some(("add", name)) => {
                self.count += 1;
                self.label = name.to_owned();
                self.tags.push(tag(name));
                let entry = self.entries.entry(name.to_owned()).or_default();
                entry.notes.push(self.count as u32);
                format!("added {name}")
            }
            Some(("mark", name)) => match self.entries.get_mut(name) {
                Some(entry) => {
                    entry.kind = Kind::Marked;
                    format!("marked {name}")
                }
                None => format!("no entry {name}"),
            },
            _ if text == "show" => self.show(),
            _ => "expected add NAME | mark NAME | show".to_owned(),
        };
        format!("{SHAPE}: {reply}").into_bytes()
    }
}

impl State {
    /// The whole state, in the same words in every shape.
    fn show(&self) -> String {
        let tags: Vec<&str> = self.tags.iter().map(tag_text).collect();
        let entries: Vec<String> = (self.entries.iter())
            .map(|(name, e)| format!("{name}={:?}{:?}", e.kind, e.notes))
            .collect();
        format!(
            "count={} label={} tags={tags:?} entries={entries:?}",
            self.count, self.label
        )
    }
}

#[cfg(not(feature = "collection"))]
fn tag(name: &str) -> Tag {
    name.to_owned()
}

#[cfg(feature = "collection")]
fn tag(name: &str) -> Tag {
    Tag(name.to_owned())
}

#[cfg(not(feature = "collection"))]
fn tag_text(tag: &Tag) -> &str {
    tag
}

#[cfg(feature = "collection")]
fn tag_text(tag: &Tag) -> &str {
    &tag.0
}

hotswap_guest::export_app!(State, in_place);
