//! What the app reports: counters, swaps committed and refused, failed events, and how a lost
//! instance's recovery went; and the formats they are printed in.

use crate::error::{CallError, SwapError};
pub use crate::text::{bytes, format_duration};
use std::fmt;
use std::time::Duration;

/// Counters an operator can read.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Events handled (messages, ticks and HTTP requests), failed ones included.
    pub events: u64,
    /// Swaps committed.
    pub swaps: u64,
    /// Swaps refused.
    pub refused: u64,
    /// Times the state was moved into a fresh instance after a trap.
    pub recoveries: u64,
    /// The pause of the last committed swap.
    pub last_pause: Option<Duration>,
    /// Size of the state at the last swap.
    pub last_state_len: Option<usize>,
    /// Why the serving instance may be damaged, when a failure left it serving (it could not be
    /// moved into a fresh instance); cleared by the next swap or recovery.
    pub damaged: Option<String>,
}

/// How long each phase of a swap's pause took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// The old instance encoding its state.
    pub export: Duration,
    /// Copying the state bytes into the new instance: the host's share. The pieces that the
    /// old instance streams are copied during its export (this counts them, not the export).
    pub copy: Duration,
    /// The new instance decoding (and migrating) the state.
    pub import: Duration,
    /// The new instance exporting the state once, discarded: the proof that it can.
    pub verify: Duration,
    /// From the start of the export to the commit: how long events were held.
    pub pause: Duration,
}

/// A committed swap.
#[derive(Clone, Debug)]
pub struct SwapReport {
    /// The old module, `name@hash`.
    pub from: String,
    /// The new module, `name@hash`.
    pub to: String,
    /// The state version the old code wrote.
    pub from_state_version: u32,
    /// The state version the new code writes.
    pub to_state_version: u32,
    /// Bytes of state carried over.
    pub state_len: usize,
    /// Compile time (zero when the module came from the cache).
    pub compile_time: Duration,
    /// Whether the compiled module came from the cache.
    pub cached: bool,
    /// Compile + check + instantiate, before the pause.
    pub prepare_time: Duration,
    /// The pause and its phases.
    pub phases: Phases,
    /// How the state crossed: in place, by value and why, or not at all (a shadow run's).
    pub path: SwapPath,
}

/// How the state crossed a swap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwapPath {
    /// The new instance took over the old one's memory, with these steps' times.
    InPlace(crate::in_place::Timing),
    /// Exported by the old code, imported by the new; why it could not stay in place.
    ByValue(String),
    /// Nothing crossed: the new version kept the state it built in its shadow run.
    ShadowState,
}

impl SwapPath {
    /// `in place`, `by value`, or `shadow state`.
    pub fn name(&self) -> &'static str {
        match self {
            SwapPath::InPlace(_) => "in place",
            SwapPath::ByValue(_) => "by value",
            SwapPath::ShadowState => "shadow state",
        }
    }

    /// Why the state went by value (none when it did not).
    pub fn reason(&self) -> Option<&str> {
        match self {
            SwapPath::ByValue(reason) => Some(reason),
            SwapPath::InPlace(_) | SwapPath::ShadowState => None,
        }
    }
}

impl fmt::Display for SwapReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let compile = if self.cached {
            "cached".to_owned()
        } else {
            format!("compile {}", format_duration(self.compile_time))
        };
        let p = &self.phases;
        if self.path == SwapPath::ShadowState {
            return write!(
                f,
                "swapped {} → {}: state v{} → v{}, the new version kept the state it built in its shadow run (nothing carried over), {compile}, pause {}",
                self.from,
                self.to,
                self.from_state_version,
                self.to_state_version,
                format_duration(p.pause),
            );
        }
        if let SwapPath::InPlace(t) = &self.path {
            return write!(
                f,
                "swapped {} → {}: state v{} → v{} kept in place (same layout), {compile}, pause {} (clear {} + instantiate {} + adopt {})",
                self.from,
                self.to,
                self.from_state_version,
                self.to_state_version,
                format_duration(p.pause),
                format_duration(t.clear),
                format_duration(t.instantiate),
                format_duration(t.adopt),
            );
        }
        write!(
            f,
            "swapped {} → {}: state v{} → v{}, {} by value, {compile}, pause {} (export {} + copy {} + import {} + verify {})",
            self.from,
            self.to,
            self.from_state_version,
            self.to_state_version,
            bytes(self.state_len),
            format_duration(p.pause),
            format_duration(p.export),
            format_duration(p.copy),
            format_duration(p.import),
            format_duration(p.verify),
        )?;
        match self.path.reason() {
            Some(reason) => write!(f, " (not in place: {reason})"),
            None => Ok(()),
        }
    }
}

/// What became of an instance that a failure may have damaged (a trap, a timeout, a broken
/// contract): its state is moved into a fresh instance of the same module if the failing step
/// left time for that within its `--timeout`.
#[derive(Debug)]
pub enum Recovery {
    /// The state now lives in a fresh instance.
    Moved,
    /// The failure used up the step's time: the instance keeps serving as it is.
    NoTimeLeft,
    /// Moving the state failed; the instance keeps serving as it is.
    Failed(SwapError),
}

impl Recovery {
    /// The note appended to a failure's message; `cause` is that message, not repeated.
    fn note(&self, cause: &dyn fmt::Display, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::Moved => write!(f, " (the state was moved into a fresh instance)"),
            Recovery::NoTimeLeft => write!(
                f,
                " (the instance keeps serving: the failure used up the --timeout, leaving no time to move its state into a fresh instance)"
            ),
            Recovery::Failed(e) if e.to_string().ends_with(&cause.to_string()) => write!(
                f,
                " (moving the state into a fresh instance failed the same way; the instance keeps serving)"
            ),
            Recovery::Failed(e) => write!(
                f,
                " (moving the state into a fresh instance failed: {e}; the instance keeps serving)"
            ),
        }
    }
}

/// A refused swap: the old version is still running, with its state untouched.
#[derive(Debug)]
pub struct SwapRefused {
    /// What was attempted (`name@hash`, or the name when it never compiled).
    pub attempted: String,
    /// Why it was refused.
    pub error: SwapError,
    /// The version still running, `name@hash`.
    pub running: String,
    /// Its state version.
    pub state_version: u32,
    /// If the running instance was lost (it failed while exporting): what became of it.
    pub recovery: Option<Recovery>,
}

impl fmt::Display for SwapRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "swap to {} refused: {}; still running {} (state v{})",
            self.attempted, self.error, self.running, self.state_version
        )?;
        let cause = match &self.error {
            SwapError::Export(e) => e as &dyn fmt::Display,
            other => other,
        };
        self.recovery.as_ref().map_or(Ok(()), |r| r.note(cause, f))
    }
}

impl std::error::Error for SwapRefused {}

/// A failed event.
#[derive(Debug)]
pub struct EventError {
    /// What the call returned.
    pub error: CallError,
    /// If the instance was lost: what became of it.
    pub recovery: Option<Recovery>,
}

impl fmt::Display for EventError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        self.recovery
            .as_ref()
            .map_or(Ok(()), |r| r.note(&self.error, f))
    }
}

impl std::error::Error for EventError {}
