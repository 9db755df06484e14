//! The in-place swap: a new version whose state layout equals the running one's takes over
//! the running instance's linear memory, state and all, instead of having the state carried
//! over by value. The pause then costs the same at any state size (BENCHMARKS.md, "In place").
//!
//! Strategy: before the pause, `path` decides whether the swap may go in place, and says why
//! not when it may not (the by-value path is then taken, as before). During the pause, `swap`
//! saves the few bytes below the heap that the new module's static data will cover, clears
//! them, instantiates the new module on the old memory (its data segments are written there,
//! its bss starts zeroed) and asks it to adopt the state (`hotswap_adopt`). If any of that
//! fails, the memory is put back as it was (its size and those bytes), and the old instance
//! serves on: it has not run since, and nothing it owns above the heap's base was touched
//! (the new code allocates and frees nothing before it has adopted the state).
//!
//! The ABI crate's docs ("Keeping the state in place") give the contract and the design.

use crate::compile::Compiled;
use crate::error::SwapError;
use crate::guest::{Adopter, Guest};
use crate::text::escape;
use hotswap_abi::IN_PLACE_HEAP_BASE;
use std::ops::Range;
use std::time::{Duration, Instant};

/// What of linear memory a module's code claims before any of it runs: its data segments and
/// its initial memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statics {
    /// The lowest byte any active data segment writes.
    pub data_start: u64,
    /// The initial memory's size in bytes: static data and bss lie below it.
    pub initial_end: u64,
}

impl Statics {
    /// Reads them from module bytes (binary, or WAT text); an error says why the module cannot
    /// take over a memory (several memories, a data segment at a computed address).
    pub fn of(bytes: &[u8]) -> Result<Statics, String> {
        let binary = wat::parse_bytes(bytes).map_err(|e| format!("unreadable module: {e}"))?;
        let mut memories = 0;
        let mut initial_end = 0;
        let mut data_start = u64::MAX;
        for payload in wasmparser::Parser::new(0).parse_all(&binary) {
            let unreadable = |e: wasmparser::BinaryReaderError| format!("unreadable module: {e}");
            match payload.map_err(unreadable)? {
                wasmparser::Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        if let wasmparser::TypeRef::Memory(_) = import.map_err(unreadable)?.ty {
                            memories += 1;
                        }
                    }
                }
                wasmparser::Payload::MemorySection(reader) => {
                    for memory in reader {
                        memories += 1;
                        initial_end = memory.map_err(unreadable)?.initial.saturating_mul(64 << 10);
                    }
                }
                wasmparser::Payload::DataSection(reader) => {
                    for data in reader {
                        let data = data.map_err(unreadable)?;
                        if let wasmparser::DataKind::Active { offset_expr, .. } = data.kind {
                            data_start = data_start.min(const_offset(&offset_expr)?);
                        }
                    }
                }
                _ => {}
            }
        }
        if memories != 1 {
            return Err(format!("the module has {memories} memories, not one"));
        }
        // Without data segments nothing says where static data starts: claim everything.
        let data_start = if data_start == u64::MAX {
            0
        } else {
            data_start
        };
        Ok(Statics {
            data_start: data_start.min(initial_end),
            initial_end,
        })
    }

    /// The bytes an instance of this module claims in a memory it adopts, if they lie below
    /// the in-place heap's base.
    fn window(&self) -> Result<Range<usize>, String> {
        let base = u64::from(IN_PLACE_HEAP_BASE);
        if self.initial_end > base {
            return Err(format!(
                "its static data and initial memory ({} bytes) reach past the in-place heap's \
                 base ({base} bytes)",
                self.initial_end
            ));
        }
        Ok(self.data_start as usize..self.initial_end as usize)
    }
}

/// The bytes a module's instance claims in a memory it adopts (see [`Statics::window`]).
pub(crate) fn window(compiled: &Compiled) -> Result<Range<usize>, String> {
    (compiled.statics.as_ref().map_err(Clone::clone)).and_then(Statics::window)
}

/// What an in-place swap to a prepared version needs, made before the pause: the `Store` to
/// instantiate in, and a buffer (its pages already faulted in) for the bytes its static data
/// replaces.
pub(crate) struct Ready {
    adopter: Adopter,
    window: Range<usize>,
    saved: Vec<u8>,
}

impl Ready {
    pub(crate) fn new(adopter: Adopter, window: Range<usize>) -> Ready {
        // Not zeros: a zeroed allocation may be pages not faulted in yet.
        let saved = vec![0xa5; window.len()];
        Ready {
            adopter,
            window,
            saved,
        }
    }
}

/// A data segment's offset, when it is a constant: exactly `i32.const N` (extended constant
/// expressions such as `i32.const A i32.const B i32.add` are computed addresses).
fn const_offset(expr: &wasmparser::ConstExpr<'_>) -> Result<u64, String> {
    let mut ops = expr.get_operators_reader();
    match (ops.read(), ops.read(), ops.eof()) {
        (Ok(wasmparser::Operator::I32Const { value }), Ok(wasmparser::Operator::End), true) => {
            Ok(u64::from(value as u32))
        }
        _ => Err("a data segment is placed at a computed address".into()),
    }
}

/// Whether a swap from `old` to `new` may go in place; the reason when it may not. `durable`:
/// the app keeps snapshots, which a swap writes from the state by value.
pub(crate) fn path(
    old: (&Compiled, &Guest),
    new: (&Guest, &Result<Ready, String>),
    durable: bool,
    damaged: bool,
) -> Result<(), String> {
    let Some(old_layout) = old.1.layout() else {
        return Err("the running version does not keep its state in place".into());
    };
    if damaged {
        return Err(
            "the running instance may be damaged: its state goes by value, into a fresh instance"
                .into(),
        );
    }
    let ready = new.1.as_ref().map_err(Clone::clone)?;
    let new_layout = new.0.layout().unwrap_or_default();
    let (from, to) = (old.1.state_version(), new.0.state_version());
    if from != to {
        return Err(format!(
            "the state version changes (v{from} → v{to}): the new code migrates the state"
        ));
    }
    if old_layout != new_layout {
        return Err(difference(old_layout, new_layout));
    }
    if durable {
        return Err("the app is durable: its swaps snapshot the state by value".into());
    }
    window(old.0).map_err(|e| format!("the running version: {e}"))?;
    let Some(mapping) = old.1.mapping() else {
        return Err("the running version has more than one memory".into());
    };
    let (size, limit) = (mapping.size(), old.1.memory_limit());
    if size < ready.window.end {
        return Err("the running memory is smaller than the new static data".into());
    }
    if size > limit {
        return Err(format!(
            "the running memory ({size} bytes) is over the memory limit ({limit} bytes)"
        ));
    }
    Ok(())
}

/// Why two layout descriptions differ, naming the most telling differing line: the SDK, the
/// compiler, the allocator or the target first; then one of the app's own structs and enums
/// (rather than the types that only hold them, whose sizes change with them); then any.
fn difference(old: &str, new: &str) -> String {
    let (mut old, mut new) = (old.lines(), new.lines());
    let differing: Vec<(Option<&str>, Option<&str>)> =
        std::iter::from_fn(|| match (old.next(), new.next()) {
            (None, None) => None,
            pair => Some(pair),
        })
        .filter(|(a, b)| a != b)
        .collect();
    fn line<'a>(pair: &(Option<&'a str>, Option<&'a str>)) -> &'a str {
        pair.0.or(pair.1).unwrap_or_default()
    }
    let own_type = |pair: &&(Option<&str>, Option<&str>)| {
        let mut words = line(pair).split(' ').skip(1);
        matches!(words.next(), Some("struct" | "enum")) && words.next() != Some("Runtime")
    };
    let header = differing.iter().find(|pair| !line(pair).starts_with('#'));
    let Some(pair) = header
        .or_else(|| differing.iter().find(own_type))
        .or(differing.first())
    else {
        return "the layout descriptions differ".into();
    };
    let what = match line(pair).split(' ').next().unwrap_or_default() {
        "hotswap-guest" => "built with another version of the SDK",
        "rustc" => "built by another compiler",
        "heap" => "another allocator",
        "target" => "another target",
        _ => "the state's layout changed",
    };
    let quote = |text: &str| format!("`{}`", escape(text, 160));
    match pair {
        (Some(a), Some(b)) => format!("{what}: {} became {}", quote(a), quote(b)),
        (None, Some(b)) => format!("{what}: a new type {}", quote(b)),
        (Some(a), None) => format!("{what}: no more {}", quote(a)),
        (None, None) => unreachable!("two equal lines are not differing"),
    }
}

/// How long the in-place pause's steps took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    /// Saving and clearing the bytes the new module's static data covers.
    pub clear: Duration,
    /// Instantiating the new module on the memory (its data segments, `_initialize`).
    pub instantiate: Duration,
    /// `hotswap_adopt`.
    pub adopt: Duration,
}

/// The pause of an in-place swap: the new version (checked by [`path`], readied before the
/// pause) takes over `old`'s memory. On failure the memory is as it was and `old` serves on.
pub(crate) fn swap(
    old: &Guest,
    ready: Ready,
    layout: &str,
    budget: Instant,
) -> Result<(Guest, Timing), SwapError> {
    let started = Instant::now();
    let Ready {
        adopter,
        window,
        mut saved,
    } = ready;
    let mapping = (old.mapping().cloned())
        .ok_or_else(|| SwapError::Instantiate("the running memory is not the host's".into()))?;
    let size = mapping.size();
    // SAFETY: between calls, on the app's thread: neither instance runs while this lives.
    let claimed = unsafe { mapping.bytes_mut(window.clone()) }.ok_or_else(|| {
        SwapError::Instantiate("the running memory is smaller than the new static data".into())
    })?;
    saved.copy_from_slice(claimed);
    // SAFETY: as above; `claimed` is not used again.
    unsafe { mapping.zero(window.clone()) };
    let cleared = Instant::now();
    let mut timing = Timing {
        clear: cleared - started,
        ..Timing::default()
    };
    let adopted = adopter
        .instantiate(mapping.clone(), budget)
        .and_then(|mut guest| {
            let instantiated = Instant::now();
            timing.instantiate = instantiated - cleared;
            // The instance was made with the pause's budget; it serves without one.
            let adopted = guest.adopt(layout).map_err(SwapError::Adopt);
            guest.set_budget(None);
            timing.adopt = instantiated.elapsed();
            adopted.map(|()| guest)
        });
    match adopted {
        Ok(guest) => Ok((guest, timing)),
        Err(error) => {
            mapping.shrink_to(size);
            // SAFETY: the new instance is gone and the old one does not run yet.
            if let Some(claimed) = unsafe { mapping.bytes_mut(window) } {
                claimed.copy_from_slice(&saved);
            }
            Err(error)
        }
    }
}
