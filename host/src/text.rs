//! Text that comes from a guest (error and panic messages, function names, its stdout and
//! stderr) on its way to a log or a client: control characters escaped, length capped, an empty
//! message said to be empty. A guest must not be able to forge a host log line, move a
//! terminal's cursor, colour it, or flood the log. And durations and sizes as people read them.

use std::fmt::Write as _;
use std::time::Duration;

/// The most characters of one guest message that are kept.
pub const MAX_GUEST_TEXT: usize = 1000;

/// Guest bytes as text for a log: UTF-8 (invalid sequences replaced), escaped, capped at
/// [`MAX_GUEST_TEXT`] characters.
pub fn guest_text(bytes: &[u8]) -> String {
    escape(&String::from_utf8_lossy(bytes), MAX_GUEST_TEXT)
}

/// `text` with control and bidirectional-formatting characters escaped (`\n`, `\u{1b}`, ...),
/// cut after `max_chars` characters with a note of how much was left out; an empty text reads
/// `(empty)`.
pub fn escape(text: &str, max_chars: usize) -> String {
    if text.is_empty() {
        return "(empty)".into();
    }
    let mut out = String::with_capacity(text.len().min(max_chars + 16));
    for (count, (at, c)) in text.char_indices().enumerate() {
        if count == max_chars {
            let _ = write!(out, "… ({} more bytes)", text.len() - at);
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_bidi_control(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Characters that reorder how the text around them is displayed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// A duration for people: µs below a millisecond, ms with two decimals above.
pub fn format_duration(d: Duration) -> String {
    match d.as_secs_f64() * 1e3 {
        ms if ms < 1.0 => format!("{:.0} µs", ms * 1e3),
        ms => format!("{ms:.2} ms"),
    }
}

/// `n` of `noun`, plural unless one: `1 event`, `2 events`.
pub fn counted(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// A byte count in B, KiB or MiB.
pub fn bytes(n: usize) -> String {
    match n {
        n if n < 1 << 10 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{:.1} MiB", n as f64 / (1 << 20) as f64),
    }
}

/// The host's own log line: a `tracing` event at INFO (target `hotswap`), written as
/// `hotswap: MESSAGE` on stderr unless [`init_log`] chose JSON. Without a subscriber (the
/// library in another program), the line goes to stderr as it is; a closed stderr is not the
/// host's failure: the line is dropped.
pub fn log(message: std::fmt::Arguments<'_>) {
    emit("hotswap", message);
}

/// A line of the guest's own output (already escaped): target `guest`, `guest: LINE`.
pub fn guest_log(line: &str) {
    emit("guest", format_args!("{line}"));
}

fn emit(target: &'static str, message: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if !tracing::dispatcher::has_been_set() {
        let _ = writeln!(std::io::stderr().lock(), "{target}: {message}");
    } else if target == "guest" {
        tracing::info!(target: "guest", "{message}");
    } else {
        tracing::info!(target: "hotswap", "{message}");
    }
}

/// How the host writes its log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line a person reads: `hotswap: MESSAGE` (`guest: LINE` for the guest's output).
    #[default]
    Human,
    /// One JSON object per line (timestamp, level, target, message), for log shippers.
    Json,
}

/// The log's filter without `RUST_LOG`: the host's lines and the guest's output, and only
/// warnings from the libraries underneath.
const DEFAULT_FILTER: &str = "warn,hotswap=info,guest=info";

/// Installs the log's subscriber: `format` on stderr, filtered by `RUST_LOG` (default: the host's lines and the guest's output at `info`;
/// `RUST_LOG=guest=off` silences the guest's output, for one).
pub fn init_log(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let (filter, bad) = match std::env::var("RUST_LOG") {
        Ok(spec) => match EnvFilter::try_new(&spec) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(DEFAULT_FILTER), Some(format!("{e}"))),
        },
        Err(_) => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.event_format(HumanLine).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!(target: "hotswap", "RUST_LOG is not a valid filter ({}): using the default filter", escape(&e, 200));
    }
}

/// `TARGET: MESSAGE`, the log's human format.
struct HumanLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for HumanLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "{}: ", event.metadata().target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Bytes as lowercase hex.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// Hex (either case) back to bytes; `None` if it is not hex.
pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) || !hex.is_ascii() {
        return None;
    }
    hex.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_length_capped() {
        assert_eq!(
            guest_text(b"no\nhotswap: swapped fake\r\x1b[31mred\x1b[0m"),
            "no\\nhotswap: swapped fake\\r\\u{1b}[31mred\\u{1b}[0m"
        );
        assert_eq!(guest_text(b""), "(empty)");
        assert_eq!(guest_text("a\u{202e}b".as_bytes()), "a\\u{202e}b");
        assert_eq!(guest_text(b"caf\xc3\xa9 \xff"), "café \u{fffd}");
        let long = "x".repeat(60_000);
        let shown = guest_text(long.as_bytes());
        assert!(shown.starts_with(&"x".repeat(MAX_GUEST_TEXT)));
        assert!(shown.ends_with("… (59000 more bytes)"), "{shown}");
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(super::to_hex(&[0, 0xab, 0x10]), "00ab10");
        assert_eq!(super::from_hex("00AB10"), Some(vec![0, 0xab, 0x10]));
        for bad in ["0", "zz", "é0"] {
            assert_eq!(super::from_hex(bad), None, "{bad}");
        }
    }
}
