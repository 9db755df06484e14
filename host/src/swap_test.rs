//! `hotswap test OLD NEW --events FILE`: proves a reload before it is deployed. The events
//! run on OLD alone and on NEW alone, then, at every event boundary (or an even sample of
//! them), with a swap: OLD → OLD and NEW → NEW (a swap to the same version must change no
//! later reply and no exported byte), OLD → NEW (no trap, error or refused import; with
//! `same_behaviour`, OLD's replies), and OLD → NEW → OLD (a round trip must lose nothing), when
//! the state versions allow a swap back.

use crate::actor::Input;
use crate::app::App;
use crate::runtime::{Prepared, Runtime};
use crate::text::escape;
use anyhow::Context as _;
use serde::Serialize;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A module under test: its display name and bytes.
pub struct Version {
    /// The name messages use (`OLD`, `NEW`, with the file's name).
    pub label: String,
    name: String,
    bytes: Vec<u8>,
}

impl Version {
    /// Reads a module file (regular files only, capped as `runtime` says).
    pub fn read(runtime: &Runtime, label: &str, path: &Path) -> anyhow::Result<Version> {
        let bytes = crate::compile::read_module(path, runtime.config().max_module)?;
        let name = crate::compile::display_name(path);
        Ok(Version {
            label: format!("{label} ({name})"),
            name,
            bytes,
        })
    }

    fn prepare(&self, runtime: &Runtime) -> anyhow::Result<Prepared> {
        runtime
            .prepare(&self.name, &self.bytes)
            .with_context(|| format!("{} cannot be loaded", self.label))
    }
}

/// The largest event script read.
const MAX_SCRIPT: u64 = 64 << 20;

/// The most events a script may hold.
const MAX_EVENTS: usize = 100_000;

/// What one event gave: its reply (for HTTP, the whole response encoded; for a tick, nothing)
/// or why it failed.
type Outcome = Result<Vec<u8>, String>;

/// One run of the events: every outcome, the state exported at the end, and the swaps that
/// were refused (with the boundary).
struct Line {
    outcomes: Vec<Outcome>,
    end_state: Outcome,
    refused: Option<(usize, String)>,
    /// The state version after the last swap.
    state_version: u32,
}

/// Reads an event script: one message per line (what `hotswap run` reads on stdin), or a
/// journal segment recorded by `hotswap run --durable` (its events; its swaps are ignored).
pub fn read_events(path: &Path) -> anyhow::Result<Vec<Input>> {
    let bytes = crate::persist::read_file(path, MAX_SCRIPT)?;
    if bytes.starts_with(&hotswap_abi::persist::JOURNAL_MAGIC) {
        return crate::persist::journal::inputs_of_segment(&bytes)
            .with_context(|| format!("{} is not a readable journal segment", path.display()));
    }
    let mut events: Vec<Input> = bytes
        .split(|&b| b == b'\n')
        .map(|line| Input::Message(line.strip_suffix(b"\r").unwrap_or(line).to_vec()))
        .collect();
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        events.pop();
    }
    if events.len() > MAX_EVENTS {
        anyhow::bail!(
            "{} holds {} events; a test replays at most {MAX_EVENTS} (each boundary replays \
             them all): cut the script",
            path.display(),
            events.len()
        );
    }
    Ok(events)
}

/// Runs `events` on a fresh `first`, making each swap in `swaps` (boundary, version) before the
/// event at that index (at the end for `events.len()`).
fn run_line(
    runtime: &Arc<Runtime>,
    first: &Version,
    swaps: &[(usize, &Version)],
    events: &[Input],
) -> anyhow::Result<Line> {
    let mut app = App::start(runtime.clone(), first.prepare(runtime)?)
        .with_context(|| format!("{} cannot start", first.label))?;
    let mut outcomes = Vec::with_capacity(events.len());
    let mut refused = None;
    for at in 0..=events.len() {
        for (_, version) in swaps.iter().filter(|(k, _)| *k == at) {
            if refused.is_none()
                && let Err(e) = app.swap(version.prepare(runtime)?)
            {
                refused = Some((at, e.error.to_string()));
            }
        }
        if let Some(input) = events.get(at) {
            outcomes.push(deliver(&mut app, input));
        }
    }
    let end_state = app.export_state().map_err(|e| e.to_string());
    Ok(Line {
        outcomes,
        end_state,
        refused,
        state_version: app.state_version(),
    })
}

fn deliver(app: &mut App, input: &Input) -> Outcome {
    let outcome = match input {
        Input::Message(bytes) => app.message(bytes).map_err(|e| e.to_string()),
        Input::Tick { now_ms } => app
            .tick(*now_ms)
            .map(|()| Vec::new())
            .map_err(|e| e.to_string()),
        Input::Http(request) => match app.http(request) {
            Ok(response) if response.status >= 500 => {
                Err(format!("answered HTTP {}", response.status))
            }
            Ok(response) => Ok(hotswap_msgpack::to_vec(&response).unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        },
    };
    outcome.map_err(|e| escape(&e, 300))
}

/// Something a reload would get wrong.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// What kind: `fails`, `refused`, `not-transparent`, `differs`, `round-trip`.
    pub kind: &'static str,
    /// What makes two findings the same one.
    #[serde(skip)]
    key: String,
    /// The line a person reads.
    pub message: String,
    /// The swap's boundary (the number of events before it), if a swap is involved.
    pub boundary: Option<usize>,
    /// The event (0-based) where it shows, if one does.
    pub event: Option<usize>,
    /// How many boundaries show the same finding.
    pub boundaries: usize,
    /// The shortest run that shows it: the events, in order, with `-- swap --` lines.
    pub reproduction: Vec<String>,
}

/// The outcome of `hotswap test`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Events in the script.
    pub events: usize,
    /// Boundaries a swap was tried at.
    pub boundaries: usize,
    /// Runs made.
    pub runs: usize,
    /// Everything found, the first occurrence of each kind and pair of versions.
    pub findings: Vec<Finding>,
}

/// The settings of a test.
pub struct Options {
    /// Also compare NEW's replies with OLD's (a refactor).
    pub same_behaviour: bool,
    /// Try a swap at no more than this many boundaries (evenly spread, first and last
    /// included).
    pub max_boundaries: usize,
    /// Stop (with an error) once the test has run this long.
    pub max_time: Duration,
}

/// Runs the whole test.
pub fn run(
    runtime: &Arc<Runtime>,
    old: &Version,
    new: &Version,
    events: &[Input],
    options: &Options,
) -> anyhow::Result<Report> {
    let mut found = Found::new(events);
    let old_alone = run_line(runtime, old, &[], events)?;
    let new_alone = run_line(runtime, new, &[], events)?;
    for (line, version) in [(&old_alone, old), (&new_alone, new)] {
        found.failures(line, &version.label, None);
        found.end_state(line, &version.label);
    }
    let boundaries = sample(events.len(), options.max_boundaries);
    let (started, mut said) = (Instant::now(), Instant::now());
    let mut runs = 2;
    for (done, &k) in boundaries.iter().enumerate() {
        if started.elapsed() > options.max_time {
            anyhow::bail!(
                "stopped after {done} of {} boundaries: the test took longer than --max-time \
                 ({} s); a version may be slow or looping (each call may take --timeout)",
                boundaries.len(),
                options.max_time.as_secs()
            );
        }
        if said.elapsed() > PROGRESS_EVERY {
            crate::text::log(format_args!(
                "tested {done} of {} boundaries",
                boundaries.len()
            ));
            said = Instant::now();
        }
        runs += boundary(
            runtime,
            (old, new),
            (&old_alone, &new_alone),
            k,
            events,
            options,
            &mut found,
        )?;
    }
    Ok(Report {
        events: events.len(),
        boundaries: boundaries.len(),
        runs,
        findings: found.findings,
    })
}

/// How often a long test says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The runs with a swap at boundary `k`; how many were made.
fn boundary(
    runtime: &Arc<Runtime>,
    (old, new): (&Version, &Version),
    (old_alone, new_alone): (&Line, &Line),
    k: usize,
    events: &[Input],
    options: &Options,
    found: &mut Found<'_>,
) -> anyhow::Result<usize> {
    for (version, alone) in [(old, old_alone), (new, new_alone)] {
        let line = run_line(runtime, version, &[(k, version)], events)?;
        found.refusal(&line, version, version);
        found.compare("not-transparent", &line, alone, k, (version, version));
    }
    let swapped = run_line(runtime, old, &[(k, new)], events)?;
    found.refusal(&swapped, old, new);
    found.failures(&swapped, &new.label, Some(k));
    found.end_state(&swapped, &new.label);
    if options.same_behaviour {
        found.compare("differs", &swapped, old_alone, k, (old, new));
    }
    if swapped.refused.is_some() || swapped.state_version != old_alone.state_version {
        return Ok(3);
    }
    let back = run_line(runtime, old, &[(k, new), (k, old)], events)?;
    found.refusal(&back, new, old);
    found.compare("round-trip", &back, old_alone, k, (new, old));
    Ok(4)
}

/// Up to `max` boundaries of `0..=n`, evenly spread, both ends included.
fn sample(n: usize, max: usize) -> Vec<usize> {
    let max = max.max(2);
    if n < max {
        return (0..=n).collect();
    }
    let mut picked: Vec<usize> = (0..max).map(|i| i * n / (max - 1)).collect();
    picked.dedup();
    picked
}

/// The findings so far, each kept once (with how many boundaries showed it).
struct Found<'a> {
    events: &'a [Input],
    findings: Vec<Finding>,
}

/// Where a finding shows: the swap's boundary, the event (0-based), and how many events a
/// reproduction needs.
struct At {
    boundary: Option<usize>,
    event: Option<usize>,
    events: usize,
}

impl<'a> Found<'a> {
    fn new(events: &'a [Input]) -> Self {
        Found {
            events,
            findings: Vec::new(),
        }
    }

    /// Adds a finding, or counts it again if one with the same `key` was seen.
    fn add(&mut self, kind: &'static str, key: &str, message: String, at: At) {
        if let Some(seen) = self.findings.iter_mut().find(|f| f.key == key) {
            seen.boundaries += 1;
            return;
        }
        let mut reproduction: Vec<String> =
            self.events[..at.events].iter().map(show_input).collect();
        if let Some(k) = at.boundary {
            reproduction.insert(k.min(reproduction.len()), "-- swap --".into());
        }
        self.findings.push(Finding {
            kind,
            key: key.to_owned(),
            message,
            boundary: at.boundary,
            event: at.event,
            boundaries: 1,
            reproduction,
        });
    }

    fn failures(&mut self, line: &Line, label: &str, boundary: Option<usize>) {
        let from = boundary.unwrap_or(0);
        let failed = line
            .outcomes
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, o)| o.is_err());
        if let Some((j, Err(why))) = failed {
            let after =
                boundary.map_or(String::new(), |k| format!(" after a swap at boundary {k}"));
            let message = format!("{label} fails event {}{after}: {why}", j + 1);
            let key = format!("fails {label} {}", boundary.is_some());
            let at = At {
                boundary,
                event: Some(j),
                events: j + 1,
            };
            self.add("fails", &key, message, at);
        }
    }

    /// A version that cannot export the state it ends with: its next swap would be refused.
    fn end_state(&mut self, line: &Line, label: &str) {
        if let Err(why) = &line.end_state {
            let message = format!("{label} cannot export its state after the last event: {why}");
            let at = At {
                boundary: None,
                event: None,
                events: self.events.len(),
            };
            self.add("fails", &format!("export {label}"), message, at);
        }
    }

    fn refusal(&mut self, line: &Line, from: &Version, to: &Version) {
        if let Some((k, why)) = &line.refused {
            let swap = format!("the swap {} → {}", from.label, to.label);
            let message = format!("{swap} is refused at boundary {k}: {}", escape(why, 300));
            let at = At {
                boundary: Some(*k),
                event: None,
                events: *k,
            };
            self.add("refused", &format!("refused {swap}"), message, at);
        }
    }

    /// Finds where `line` (with a swap `from` → `to` at `k`) departs from `reference`.
    fn compare(
        &mut self,
        kind: &'static str,
        line: &Line,
        reference: &Line,
        k: usize,
        swap: (&Version, &Version),
    ) {
        if line.refused.is_some() {
            return;
        }
        let swap = format!("the swap {} → {}", swap.0.label, swap.1.label);
        let compare_state = kind != "differs";
        let key = format!("{kind} {swap}");
        let differs = (k..line.outcomes.len()).find(|&j| line.outcomes[j] != reference.outcomes[j]);
        if let Some(j) = differs {
            let message = format!(
                "{swap} at boundary {k} changes what follows: event {} gives {} instead of {}",
                j + 1,
                show_outcome(&line.outcomes[j]),
                show_outcome(&reference.outcomes[j])
            );
            let at = At {
                boundary: Some(k),
                event: Some(j),
                events: j + 1,
            };
            self.add(kind, &key, message, at);
        } else if compare_state && line.end_state != reference.end_state {
            let message =
                format!("{swap} at boundary {k} changes the state exported after the last event");
            let at = At {
                boundary: Some(k),
                event: None,
                events: self.events.len(),
            };
            self.add(kind, &key, message, at);
        }
    }
}

fn show_input(input: &Input) -> String {
    match input {
        Input::Message(bytes) => escape(&String::from_utf8_lossy(bytes), 120),
        Input::Tick { now_ms } => format!("(tick at {now_ms} ms)"),
        Input::Http(request) => escape(&format!("(HTTP {} {})", request.method, request.path), 120),
    }
}

fn show_outcome(outcome: &Outcome) -> String {
    match outcome {
        Ok(reply) => format!("{:?}", escape(&String::from_utf8_lossy(reply), 120)),
        Err(why) => format!("a failure ({why})"),
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for finding in &self.findings {
            let more = match finding.boundaries {
                1 => String::new(),
                n => format!(" (at {n} boundaries; the first shown)"),
            };
            writeln!(f, "FAIL {}{more}", finding.message)?;
            writeln!(f, "  reproduce with these events, in order:")?;
            for line in finding.reproduction.iter().take(20) {
                writeln!(f, "    {line}")?;
            }
            if finding.reproduction.len() > 20 {
                writeln!(f, "    ... ({} lines in all)", finding.reproduction.len())?;
            }
        }
        use crate::text::counted;
        let verdict = match self.findings.len() {
            0 => "ok".to_owned(),
            n => counted(n as u64, "finding"),
        };
        write!(
            f,
            "{verdict}: {}, a swap tried at {}, {}",
            counted(self.events as u64, "event"),
            match self.boundaries {
                1 => "1 boundary".to_owned(),
                n => format!("{n} boundaries"),
            },
            counted(self.runs as u64, "run")
        )
    }
}
