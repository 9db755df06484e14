//! Step 5: deploying a version without fear. Before the commit, a **trial** (the new version
//! imports a copy of the state in a throwaway instance and replays the last journaled events)
//! and a **shadow run** (for a while, it also handles a copy of every live event while the old
//! version keeps answering; its answers are compared, then discarded). After the commit, a
//! **canary** (if the new version fails more than a given number of times within a window,
//! the host rolls the swap back through the journal by itself).
//!
//! Strategy: a [`Plan`] rides with the prepared version from the control socket (or the
//! watcher) to the actor. The trial runs on its own thread, on a copy of the state the actor
//! exported, while the old version serves; its verdict comes back to the actor as a command.
//! The shadow instance lives on the actor's thread, and is fed each event after the old
//! version's reply has been handed on, so clients see only the old version's answers, in the
//! same order as ever. A failure is an event that traps, times out, breaks the ABI or returns
//! an error status, or an HTTP response with a 5xx status.

use crate::actor::Input;
use crate::app::App;
use crate::compile::Compiled;
use crate::persist::journal::Release;
use crate::runtime::Runtime;
use crate::text::{counted, escape, format_duration};
use hotswap_abi::http;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The most events a trial replays.
pub const MAX_TRIAL: u64 = 100_000;

/// The longest a trial may take, all its events together (each event has the call time limit
/// besides): a version that makes every event wait for its time limit is refused by then.
pub const TRIAL_TIME: Duration = Duration::from_secs(600);

/// The longest shadow run or canary window.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// How a new version is deployed: what it must get through before and after its commit. The
/// default is a plain swap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Plan {
    /// Replay the last N journaled events on a copy of the state first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trial: Option<u64>,
    /// Shadow the live events for this many milliseconds before the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow_ms: Option<u64>,
    /// In the shadow run, every reply must also be the old version's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub expect_same: bool,
    /// Commit the shadow instance with the state it built itself (no export, no import).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_shadow_state: bool,
    /// Watch the new version for this many milliseconds after the commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_ms: Option<u64>,
    /// The failures the canary tolerates; one more rolls the swap back.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_errors: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Plan {
    /// Why this plan cannot run on this host, if it cannot: a trial needs the journal, a canary
    /// needs it to roll back, and keeping the shadow's state needs a host whose state is not
    /// kept on disk (the journal could not rebuild it).
    pub fn check(&self, durable: bool, keeps_state: bool) -> Result<(), String> {
        let window = |ms: Option<u64>, flag: &str| match ms {
            Some(ms) if ms == 0 || Duration::from_millis(ms) > MAX_WINDOW => {
                Err(format!("{flag} must be longer than 0 and at most 24 hours"))
            }
            _ => Ok(()),
        };
        window(self.shadow_ms, "--shadow")?;
        window(self.canary_ms, "--canary")?;
        if self.trial.is_some_and(|n| n == 0 || n > MAX_TRIAL) {
            return Err(format!("--trial must be 1 to {MAX_TRIAL} events"));
        }
        if (self.expect_same || self.keep_shadow_state) && self.shadow_ms.is_none() {
            return Err("--expect-same and --keep-shadow-state need --shadow".into());
        }
        if self.keep_shadow_state && !self.expect_same {
            return Err("--keep-shadow-state needs --expect-same (the shadow's state is kept only when its every reply matched)".into());
        }
        if self.max_errors > 0 && self.canary_ms.is_none() {
            return Err("--max-errors needs --canary".into());
        }
        let journal = "replays the journal: run the host with --state-dir DIR --durable";
        if self.trial.is_some() && !durable {
            return Err(format!("--trial {journal}"));
        }
        if self.canary_ms.is_some() && !durable {
            return Err(
                "--canary rolls back through the journal: run the host with --state-dir DIR --durable"
                    .into(),
            );
        }
        if self.keep_shadow_state && keeps_state {
            return Err("--keep-shadow-state: the state the new version built in its shadow run is not in the journal or snapshots, so this host (with --state-dir) could not restore it: drop --keep-shadow-state".into());
        }
        Ok(())
    }

    /// Whether this is the default plan (for serialization).
    pub fn is_default(&self) -> bool {
        *self == Plan::default()
    }

    /// Whether anything happens besides a plain swap.
    pub fn is_plain(&self) -> bool {
        self.trial.is_none() && self.shadow_ms.is_none() && self.canary_ms.is_none()
    }

    /// The plan in words, for the log and the waiting client: "a trial of 100 events, a
    /// shadow run of 30 s, a canary of 60 s (at most 0 failures)".
    pub fn describe(&self) -> String {
        let mut steps = Vec::new();
        if let Some(n) = self.trial {
            steps.push(format!(
                "a trial of the last {}",
                counted(n, "journaled event")
            ));
        }
        if let Some(ms) = self.shadow_ms {
            let same = if self.expect_same {
                ", replies compared"
            } else {
                ""
            };
            steps.push(format!("a shadow run of {}{same}", seconds(ms)));
        }
        if let Some(ms) = self.canary_ms {
            steps.push(format!(
                "a canary of {} (rolled back after {})",
                seconds(ms),
                counted(self.max_errors + 1, "failure")
            ));
        }
        steps.join(", ")
    }
}

/// Milliseconds as people read them: `500 ms`, `30 s`.
fn seconds(ms: u64) -> String {
    match ms % 1000 {
        0 => format!("{} s", ms / 1000),
        _ => format!("{ms} ms"),
    }
}

/// An event in a few words, for a message that names it: `message "put a 1"`, `tick`,
/// `HTTP POST /items`. Guest-facing text is escaped and capped.
pub fn describe_input(input: &Input) -> String {
    match input {
        Input::Message(bytes) => format!(
            "message \"{}\"",
            escape(&String::from_utf8_lossy(bytes), 80)
        ),
        Input::Tick { now_ms } => format!("tick at {now_ms} ms"),
        Input::Http(request) => format!(
            "HTTP {} {}",
            escape(&request.method, 16),
            escape(&request.path, 120)
        ),
    }
}

/// What an event gave: a reply to compare, or why it failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A message's reply line, or nothing (a tick).
    Reply(Vec<u8>),
    /// An HTTP response below 500.
    Http(http::Response),
    /// A failure, in words.
    Failed(String),
}

impl Outcome {
    /// What the actor is about to send for an event (its reply, not yet released), given why
    /// the event failed if it did. The reply is copied only when `replies` asks for it (to be
    /// compared); otherwise a success is an empty reply.
    pub fn of_release(release: &Release, failure: Option<String>, replies: bool) -> Outcome {
        match (failure, release) {
            (Some(why), _) => Outcome::Failed(why),
            (None, _) if !replies => Outcome::Reply(Vec::new()),
            (None, Release::Stdout(line)) => Outcome::Reply(line.clone()),
            (None, Release::Http(_, response)) => Outcome::Http(response.clone()),
            (None, _) => Outcome::Reply(Vec::new()),
        }
    }

    fn of_http(response: http::Response) -> Outcome {
        match response.status {
            500.. => Outcome::Failed(format!("HTTP status {}", response.status)),
            _ => Outcome::Http(response),
        }
    }

    /// Whether the event failed.
    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Failed(_))
    }
}

/// Delivers one event to `app` and says what it gave. Replies are copied: this is for trials
/// and shadows, not for serving.
pub fn deliver(app: &mut App, input: &Input) -> Outcome {
    let failed = |e: crate::report::EventError| Outcome::Failed(e.to_string());
    match input {
        Input::Message(bytes) => match app.message(bytes) {
            Ok(mut reply) => {
                reply.push(b'\n');
                Outcome::Reply(reply)
            }
            Err(e) => failed(e),
        },
        Input::Tick { now_ms } => app
            .tick(*now_ms)
            .map_or_else(failed, |()| Outcome::Reply(Vec::new())),
        Input::Http(request) => app.http(request).map_or_else(failed, Outcome::of_http),
    }
}

/// A throwaway app of `compiled` holding a copy of the state (exported by the running version
/// at `version`).
pub fn throwaway(
    runtime: &Arc<Runtime>,
    compiled: &Compiled,
    state: &[u8],
    version: u32,
) -> Result<App, String> {
    let prepared = runtime
        .prepare_compiled(compiled)
        .map_err(|e| e.to_string())?;
    App::resume(runtime.clone(), prepared, state, version)
        .map_err(|e| format!("it does not take a copy of the state: {e}"))
}

/// The trial: `compiled` imports a copy of the state (its bytes and version) in a throwaway
/// instance and replays `inputs` through it; the first failure ends it, and so do
/// [`TRIAL_TIME`] and `cancelled`. A summary line, or why it failed (naming the event).
pub fn trial(
    runtime: &Arc<Runtime>,
    compiled: &Compiled,
    (state, version): (&[u8], u32),
    inputs: &[Input],
    cancelled: &AtomicBool,
) -> Result<String, String> {
    let started = Instant::now();
    let mut app = throwaway(runtime, compiled, state, version)?;
    for (at, input) in inputs.iter().enumerate() {
        if cancelled.load(Ordering::Relaxed) {
            return Err("cancelled".into());
        }
        if started.elapsed() > TRIAL_TIME {
            return Err(format!(
                "it took longer than {} s for {} of {} events",
                TRIAL_TIME.as_secs(),
                at,
                inputs.len()
            ));
        }
        if let Outcome::Failed(why) = deliver(&mut app, input) {
            return Err(format!(
                "event {} of {} replayed ({}) failed: {why}",
                at + 1,
                inputs.len(),
                describe_input(input)
            ));
        }
    }
    Ok(format!(
        "trial passed: {} replayed on a copy of the state in {}",
        counted(inputs.len() as u64, "journaled event"),
        format_duration(started.elapsed())
    ))
}

/// A shadow run under way: the new version's throwaway app, fed every live event.
pub struct Shadow {
    /// The app the new version built from a copy of the state.
    pub app: App,
    /// When the run ends.
    pub until: Instant,
    /// Whether replies must match the old version's.
    pub expect_same: bool,
    /// Events shadowed so far.
    pub events: u64,
    /// Replies that matched.
    pub matched: u64,
}

impl Shadow {
    /// Feeds the shadow an event the old version handled with outcome `old` (`None` when its
    /// reply was not kept); why the shadow run fails, if it does.
    pub fn feed(&mut self, input: &Input, old: Option<&Outcome>) -> Result<(), String> {
        self.events += 1;
        let new = deliver(&mut self.app, input);
        let name = || format!("live event {} ({})", self.events, describe_input(input));
        if let Outcome::Failed(why) = &new
            && !old.is_some_and(Outcome::failed)
        {
            return Err(format!("{} failed: {why}", name()));
        }
        if self.expect_same {
            match old {
                Some(old) if *old == new => self.matched += 1,
                Some(old) => {
                    return Err(format!(
                        "{} answered differently: the running version {}, the new version {}",
                        name(),
                        summary(old),
                        summary(&new)
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }
}

/// An outcome in a few words, for a mismatch.
fn summary(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Reply(bytes) => format!("\"{}\"", escape(&String::from_utf8_lossy(bytes), 120)),
        Outcome::Http(r) => format!("{} with {}", r.status, crate::text::bytes(r.body.0.len())),
        Outcome::Failed(why) => format!("failed ({why})"),
    }
}

/// A canary under way: the new version's failures since its commit.
pub struct Canary {
    /// When the window ends.
    pub until: Instant,
    /// The failures tolerated.
    pub max_errors: u64,
    /// Failures so far.
    pub errors: u64,
    /// The last one, in words.
    pub last_error: Option<String>,
    /// Events seen.
    pub events: u64,
}

impl Canary {
    /// A canary of `plan`, starting now, if the plan has one.
    pub fn of(plan: &Plan) -> Option<Canary> {
        let ms = plan.canary_ms?;
        Some(Canary {
            until: Instant::now() + Duration::from_millis(ms),
            max_errors: plan.max_errors,
            errors: 0,
            last_error: None,
            events: 0,
        })
    }

    /// Counts an event, and its failure in words if it failed; whether the swap must now be
    /// rolled back.
    pub fn count(&mut self, failure: Option<String>) -> bool {
        self.events += 1;
        if let Some(failure) = failure {
            self.errors += 1;
            self.last_error = Some(failure);
        }
        self.errors > self.max_errors
    }
}
