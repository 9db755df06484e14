//! The actor's side of a deployment ([`crate::deploy`]): a new version goes through its plan's
//! steps in order (trial, shadow run, commit, canary), one deployment at a time. A failure at
//! any step before the commit refuses the swap, the running version untouched; a canary that
//! trips rolls the committed swap back through the journal. The waiting client is answered
//! once, when the deployment ends.

use super::{Actor, Command, Event, Incoming, Reply, answer, log};
use crate::control::Response;
use crate::deploy::{Canary, Outcome, Plan, Shadow, throwaway};
use crate::error::SwapError;
use crate::runtime::Prepared;
use crate::text::{bytes, counted, format_duration};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// The deployment under way, if any, and how the last one ended.
#[derive(Default)]
pub struct Deployments {
    current: Option<Deployment>,
    /// How the last deployment ended, in a line.
    last: Option<String>,
    /// Deployments refused before their commit (a trial or shadow run failed, or cancelled).
    pub refused: u64,
    /// Swaps rolled back (by a canary, or by `hotswap rollback`).
    pub rolled_back: u64,
}

/// What a deployment's step needs of each live event.
pub enum Watch {
    /// Nothing: no step watches live events.
    Nothing,
    /// Whether it failed, and why (a canary).
    Failures,
    /// The event and what it gave, its reply copied if `replies` (a shadow run).
    Outcomes {
        /// The shadow run compares replies.
        replies: bool,
    },
}

/// What the actor hands a watching step for an event ([`Watch`]).
pub enum Watched {
    /// Why the event failed (naming the event), if it did.
    Failure(Option<String>),
    /// The event and what the running version gave.
    Event(super::Input, Outcome),
}

/// A deployment under way.
struct Deployment {
    /// The new version, `name@hash`.
    to: String,
    plan: Plan,
    origin: PathBuf,
    reply: Reply,
    stage: Stage,
    tried: bool,
    shadowed: bool,
    /// What its steps said so far.
    notes: Vec<String>,
    started: Instant,
}

enum Stage {
    /// Between steps.
    Starting,
    /// The trial runs on its own thread, which holds the prepared version; it stops early
    /// once `cancel` is set.
    Trial { cancel: Arc<AtomicBool> },
    /// The new version shadows the live events until `shadow.until`.
    Shadow {
        shadow: Box<Shadow>,
        prepared: Box<Prepared>,
    },
    /// Committed; rolled back if it fails too often before `canary.until`.
    Canary { canary: Canary, response: Response },
}

impl Deployment {
    fn deadline(&self) -> Option<Instant> {
        match &self.stage {
            Stage::Shadow { shadow, .. } => Some(shadow.until),
            Stage::Canary { canary, .. } => Some(canary.until),
            _ => None,
        }
    }
}

impl Stage {
    fn name(&self) -> &'static str {
        match self {
            Stage::Starting => "starting",
            Stage::Trial { .. } => "trial",
            Stage::Shadow { .. } => "shadow run",
            Stage::Canary { .. } => "canary",
        }
    }
}

impl Deployments {
    /// When the step under way ends by itself (a shadow run or a canary window).
    pub fn deadline(&self) -> Option<Instant> {
        self.current.as_ref()?.deadline()
    }

    /// What the step under way needs of each live event, for [`Actor::watch_event`].
    pub fn watching(&self) -> Watch {
        match self.current.as_ref().map(|d| &d.stage) {
            Some(Stage::Shadow { shadow, .. }) => Watch::Outcomes {
                replies: shadow.expect_same,
            },
            Some(Stage::Canary { .. }) => Watch::Failures,
            _ => Watch::Nothing,
        }
    }

    /// The deployment under way, for `hotswap status`.
    pub fn status(&self) -> Option<String> {
        let d = self.current.as_ref()?;
        let left = |until: Instant| format!("{:.1} s left", (until - Instant::now()).as_secs_f64());
        let detail = match &d.stage {
            Stage::Shadow { shadow, .. } => format!(
                "{} shadowed, {}",
                counted(shadow.events, "event"),
                left(shadow.until)
            ),
            Stage::Canary { canary, .. } => format!(
                "{}, {} of at most {}, {}",
                counted(canary.events, "event"),
                counted(canary.errors, "failure"),
                canary.max_errors,
                left(canary.until)
            ),
            _ => String::new(),
        };
        Some(format!("deploying {}: {} {detail}", d.to, d.stage.name()))
    }

    /// The deployment under way and the last one's end, for `hotswap status --json`.
    pub fn status_json(&self) -> serde_json::Value {
        json!({
            "current": self.current.as_ref().map(|d| json!({
                "to": d.to,
                "stage": d.stage.name(),
                "plan": d.plan,
                "seconds": d.started.elapsed().as_secs_f64(),
            })),
            "last": self.last,
            "refused": self.refused,
            "rolled_back": self.rolled_back,
        })
    }
}

impl Actor {
    /// A prepared version arrives: swapped in now (a plain plan), or its deployment begins.
    /// One deployment at a time: while one is under way, any other version is refused.
    pub(super) fn deploy(
        &mut self,
        prepared: Box<Prepared>,
        origin: PathBuf,
        reply: Reply,
        plan: Plan,
    ) {
        let to = prepared.compiled().to_string();
        // The watcher found the module that runs already (a `hotswap reload` got there
        // first, say): nothing to deploy. Only a reload asked for by hand swaps to itself.
        if reply.is_none() && prepared.compiled().hash == self.app.module().hash {
            return log(format_args!("{to}: already running; nothing to do"));
        }
        let durable = self.keeper.as_ref().is_some_and(|k| k.durable());
        let allowed = match &self.deployments.current {
            Some(d) => Err(format!(
                "the deployment of {} is under way ({}): wait for it to end",
                d.to,
                d.stage.name()
            )),
            None => plan.check(durable, self.keeper.is_some()),
        };
        if let Err(why) = allowed {
            return self.refuse(to, SwapError::Deploy(why), reply);
        }
        if plan.is_plain() {
            let _ = self.swap(Incoming::Prepared(prepared), origin, reply, "");
            return;
        }
        log(format_args!("{to}: deploying with {}", plan.describe()));
        let d = Deployment {
            to,
            plan,
            origin,
            reply,
            stage: Stage::Starting,
            tried: false,
            shadowed: false,
            notes: Vec::new(),
            started: Instant::now(),
        };
        self.advance(d, prepared);
    }

    /// The next step of a deployment: its trial, its shadow run, or its commit.
    fn advance(&mut self, d: Deployment, prepared: Box<Prepared>) {
        if d.plan.trial.is_some() && !d.tried {
            self.start_trial(d, prepared);
        } else if d.plan.shadow_ms.is_some() && !d.shadowed {
            self.start_shadow(d, prepared);
        } else {
            self.commit(d, Incoming::Prepared(prepared));
        }
    }

    /// Exports a copy of the running state (events wait meanwhile, as for any export).
    fn copy_state(&mut self) -> Result<(Vec<u8>, u32), SwapError> {
        let state = (self.app.export_state()).map_err(|e| SwapError::Export(e.error))?;
        Ok((state, self.app.state_version()))
    }

    /// Starts the trial on its own thread; its verdict comes back as [`Command::Trialed`].
    fn start_trial(&mut self, mut d: Deployment, prepared: Box<Prepared>) {
        let (state, version) = match self.copy_state() {
            Ok(copy) => copy,
            Err(error) => return self.fail(d, error),
        };
        let Some(dir) = self.keeper.as_ref().map(|k| k.dir().clone()) else {
            return self.fail(d, SwapError::Trial("this host keeps no journal".into()));
        };
        let n = d.plan.trial.unwrap_or(0) as usize;
        let runtime = self.app.runtime().clone();
        let events = self.events.clone();
        let cancel = Arc::new(AtomicBool::new(false));
        let cancelled = cancel.clone();
        let trial = move || {
            crate::serve::background_priority();
            let verdict = crate::persist::journal::last_inputs(&dir, n)
                .map_err(|e| format!("cannot read the journal: {e:#}"))
                .and_then(|inputs| {
                    let copy = (state.as_slice(), version);
                    crate::deploy::trial(&runtime, prepared.compiled(), copy, &inputs, &cancelled)
                });
            let _ = events.send(Event::Command(Command::Trialed { verdict, prepared }));
        };
        let spawned = std::thread::Builder::new()
            .name("hotswap-trial".into())
            .spawn(trial);
        if let Err(e) = spawned {
            let why = format!("cannot start the trial's thread: {e}");
            return self.fail(d, SwapError::Trial(why));
        }
        d.stage = Stage::Trial { cancel };
        self.deployments.current = Some(d);
    }

    /// A trial's verdict: on to the next step, or the swap refused.
    pub(super) fn trialed(&mut self, verdict: Result<String, String>, prepared: Box<Prepared>) {
        let Some(mut d) = self.deployments.current.take() else {
            return; // Cancelled meanwhile.
        };
        if !matches!(d.stage, Stage::Trial { .. }) || d.to != prepared.compiled().to_string() {
            self.deployments.current = Some(d);
            return;
        }
        match verdict {
            Ok(line) => {
                log(format_args!("{}: {line}", d.to));
                d.notes.push(line);
                d.tried = true;
                d.stage = Stage::Starting;
                self.advance(d, prepared);
            }
            Err(why) => self.fail(d, SwapError::Trial(why)),
        }
    }

    /// Starts the shadow run: the new version imports a copy of the state in a throwaway
    /// instance, and from now on handles every live event after the running version.
    fn start_shadow(&mut self, mut d: Deployment, prepared: Box<Prepared>) {
        let started = Instant::now();
        let (state, version) = match self.copy_state() {
            Ok(copy) => copy,
            Err(error) => return self.fail(d, error),
        };
        let runtime = self.app.runtime().clone();
        let app = match throwaway(&runtime, prepared.compiled(), &state, version) {
            Ok(app) => app,
            Err(why) => return self.fail(d, SwapError::Shadow(why)),
        };
        let ms = d.plan.shadow_ms.unwrap_or(0);
        log(format_args!(
            "{}: shadow run for {ms} ms: a copy of the state ({}) exported and imported in {}; the running version keeps answering",
            d.to,
            bytes(state.len()),
            format_duration(started.elapsed())
        ));
        let shadow = Shadow {
            app,
            until: Instant::now() + std::time::Duration::from_millis(ms),
            expect_same: d.plan.expect_same,
            events: 0,
            matched: 0,
        };
        d.stage = Stage::Shadow {
            shadow: Box::new(shadow),
            prepared,
        };
        self.deployments.current = Some(d);
    }

    /// An event the running version handled, while a shadow run or a canary watches.
    pub(super) fn watch_event(&mut self, watched: Watched) {
        let Some(d) = &mut self.deployments.current else {
            return;
        };
        match (&mut d.stage, watched) {
            (Stage::Shadow { shadow, .. }, Watched::Event(input, outcome)) => {
                if let Err(why) = shadow.feed(&input, Some(&outcome)) {
                    let d = self.deployments.current.take().expect("matched above");
                    self.fail(d, SwapError::Shadow(why));
                }
            }
            (Stage::Canary { canary, .. }, Watched::Failure(failure)) => {
                let tripped = canary.count(failure);
                if tripped {
                    let d = self.deployments.current.take().expect("matched above");
                    self.trip(d);
                }
            }
            _ => {}
        }
    }

    /// The step under way has reached its deadline: a clean shadow run commits, a quiet
    /// canary passes.
    pub(super) fn deployment_due(&mut self) {
        let Some(mut d) = self.deployments.current.take() else {
            return;
        };
        let due = d.deadline().is_some_and(|at| at <= Instant::now());
        if !due {
            self.deployments.current = Some(d);
            return;
        }
        match std::mem::replace(&mut d.stage, Stage::Starting) {
            Stage::Shadow { shadow, prepared } => {
                let matched = match d.plan.expect_same {
                    true => format!(", every reply the same ({})", shadow.matched),
                    false => String::new(),
                };
                let line = format!(
                    "shadow run passed: {} without a failure{matched}",
                    counted(shadow.events, "live event")
                );
                log(format_args!("{}: {line}", d.to));
                d.notes.push(line);
                d.shadowed = true;
                if d.plan.keep_shadow_state {
                    drop(prepared);
                    self.commit(d, Incoming::Shadow(Box::new(shadow.app)));
                } else {
                    self.advance(d, prepared);
                }
            }
            Stage::Canary {
                canary,
                mut response,
            } => {
                let line = format!(
                    "canary passed: {}, {} (at most {} allowed) in {}",
                    counted(canary.events, "event"),
                    counted(canary.errors, "failure"),
                    canary.max_errors,
                    format_duration(d.started.elapsed())
                );
                log(format_args!("{}: {line}", d.to));
                response.message = format!("{}; {line}", response.message);
                self.deployments.last = Some(response.message.clone());
                answer(d.reply, response);
            }
            stage => {
                d.stage = stage;
                self.deployments.current = Some(d);
            }
        }
    }

    /// Commits the deployment's version; then its canary, or its answer.
    fn commit(&mut self, mut d: Deployment, new: Incoming) {
        let canary = Canary::of(&d.plan);
        // With a canary, the client is answered when it ends.
        let reply = match canary {
            Some(_) => None,
            None => d.reply.take(),
        };
        let notes = d.notes.join("; ");
        let response = match self.swap(new, d.origin.clone(), reply, &notes) {
            Ok(response) => response,
            Err(refused) => {
                self.deployments.last = Some(refused.clone());
                return answer(d.reply, Response::failed(refused));
            }
        };
        match canary {
            Some(canary) => {
                log(format_args!(
                    "{}: canary for {} ms: failure {} within it rolls the swap back",
                    d.to,
                    d.plan.canary_ms.unwrap_or(0),
                    canary.max_errors + 1
                ));
                d.stage = Stage::Canary { canary, response };
                self.deployments.current = Some(d);
            }
            None => self.deployments.last = Some(response.message),
        }
    }

    /// The canary tripped: the swap is rolled back through the journal.
    fn trip(&mut self, d: Deployment) {
        let Stage::Canary { canary, response } = d.stage else {
            return;
        };
        let why = format!(
            "canary: {} failed {} within {} of its commit (last: {})",
            d.to,
            counted(canary.errors, "time"),
            format_duration(d.started.elapsed()),
            canary.last_error.as_deref().unwrap_or("none")
        );
        log(format_args!("{why}: rolling back"));
        let Some(keeper) = &mut self.keeper else {
            return answer(d.reply, Response::failed(why));
        };
        let message = match keeper.rollback(&mut self.app, None) {
            Ok(()) => {
                self.origin = keeper.dir().module_path(&self.app.module().hash);
                self.deployments.rolled_back += 1;
                format!(
                    "{}; {why}: rolled back to {}",
                    response.message,
                    self.app.module()
                )
            }
            Err(e) => {
                log(format_args!("canary: the rollback failed: {e}"));
                format!(
                    "{}; {why}; the rollback failed ({e}): still running {}",
                    response.message, d.to
                )
            }
        };
        self.deployments.last = Some(message.clone());
        answer(d.reply, Response::failed(message));
    }

    /// A deployment that fails before its commit: the swap is refused, and said why.
    fn fail(&mut self, d: Deployment, error: SwapError) {
        self.deployments.refused += 1;
        let refused = self.app.refused(d.to.clone(), error);
        log(format_args!("{refused}"));
        self.deployments.last = Some(refused.to_string());
        answer(d.reply, Response::failed(refused.to_string()));
    }

    /// Ends the deployment under way, if any, because of `why` (a stop, a rollback): refused
    /// before its commit; after it, its client told the canary was cut short.
    pub(super) fn cancel_deployment(&mut self, why: &str) {
        let Some(d) = self.deployments.current.take() else {
            return;
        };
        match d.stage {
            Stage::Canary { canary, response } => {
                let message = format!(
                    "{}; canary cut short after {} ({}): {why}",
                    response.message,
                    counted(canary.events, "event"),
                    counted(canary.errors, "failure"),
                );
                log(format_args!("{}: canary cut short: {why}", d.to));
                self.deployments.last = Some(message.clone());
                answer(d.reply, Response::failed(message));
            }
            stage => {
                if let Stage::Trial { cancel } = &stage {
                    cancel.store(true, Ordering::Relaxed);
                }
                let error = SwapError::Deploy(format!("{why} during its {}", stage.name()));
                self.fail(Deployment { stage, ..d }, error);
            }
        }
    }
}
