//! Reads what the host lets it see through WASI: `env KEY` replies with an environment
//! variable, `read PATH` with a file's contents, `write PATH TEXT` writes a file. Used to test
//! `hotswap run --env` and `--dir`; it counts the requests it served as its state.

use hotswap_guest::App;
use serde::{Deserialize, Serialize};

#[derive(Default, Serialize, Deserialize)]
#[serde(default)]
struct Probe {
    served: u64,
}

impl App for Probe {
    fn message(&mut self, input: &[u8]) -> Vec<u8> {
        self.served += 1;
        let text = String::from_utf8_lossy(input);
        let mut words = text.splitn(3, ' ');
        let reply = match (words.next(), words.next(), words.next()) {
            (Some("env"), Some(key), None) => {
                std::env::var(key).unwrap_or_else(|e| format!("error: {e}"))
            }
            (Some("read"), Some(path), None) => {
                std::fs::read_to_string(path).unwrap_or_else(|e| format!("error: {e}"))
            }
            (Some("write"), Some(path), Some(content)) => match std::fs::write(path, content) {
                Ok(()) => "ok".to_owned(),
                Err(e) => format!("error: {e}"),
            },
            _ => "error: expected env KEY | read PATH | write PATH TEXT".to_owned(),
        };
        format!("probe #{}: {reply}", self.served).into_bytes()
    }
}

hotswap_guest::export_app!(Probe);
