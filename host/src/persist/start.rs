//! Starting an app whose state is kept: restored from the state directory when it holds a
//! snapshot (then swapped to the module given, if that differs from the one the journal ended
//! in), or started fresh and snapshotted before it takes its first event.

use super::StateDir;
use super::keeper::{Keeper, PersistOptions};
use super::restore::{Restored, restore};
use super::snapshot::{self, Snapshot};
use crate::app::App;
use crate::compile::{ModuleHash, display_name, read_module};
use crate::persist::journal::Release;
use crate::runtime::Runtime;
use crate::text::{counted, format_duration, log};
use anyhow::Context as _;
use std::path::Path;
use std::sync::Arc;

/// Starts the app in `path` with the state kept in `options.dir`.
pub fn start(
    runtime: &Arc<Runtime>,
    path: &Path,
    options: &PersistOptions,
) -> anyhow::Result<(App, Keeper)> {
    let dir = Arc::new(StateDir::open(&options.dir)?);
    let module = read_module(path, runtime.config().max_module)?;
    let name = display_name(path);
    let (mut app, keeper) = match restore(runtime, &dir)? {
        None => fresh(runtime, &dir, &name, &module, options)?,
        Some(restored) => resumed(runtime, &dir, restored, &name, &module, options)?,
    };
    if options.durable {
        app.keep_swapped_states();
    }
    Ok((app, keeper))
}

/// A fresh start: the app starts, its module and its first snapshot are written, then it runs.
fn fresh(
    runtime: &Arc<Runtime>,
    dir: &Arc<StateDir>,
    name: &str,
    module: &[u8],
    options: &PersistOptions,
) -> anyhow::Result<(App, Keeper)> {
    let prepared = runtime
        .prepare(name, module)
        .with_context(|| format!("cannot load {name}"))?;
    let mut app =
        App::start(runtime.clone(), prepared).with_context(|| format!("cannot start {name}"))?;
    let hash = dir.keep_module(name, module)?;
    let state = app
        .export_state()
        .map_err(|e| anyhow::anyhow!("cannot export the first state: {e}"))?;
    let first = Snapshot {
        seq: 0,
        state_version: app.state_version(),
        module: hash,
        state,
    };
    snapshot::write(dir, &first)?;
    log(format_args!(
        "state kept in {}: a fresh start (snapshot at record 0)",
        dir.root().display()
    ));
    Ok((app, Keeper::start(dir.clone(), options, 0, None)?))
}

/// A restored app, swapped to `module` if the journal ended in another one. A swap that is
/// refused refuses the start, and the state directory is left as it was.
fn resumed(
    runtime: &Arc<Runtime>,
    dir: &Arc<StateDir>,
    restored: Restored,
    name: &str,
    module: &[u8],
    options: &PersistOptions,
) -> anyhow::Result<(App, Keeper)> {
    let Restored {
        mut app,
        snapshot_seq,
        seq,
        replayed,
        diverged,
        swaps,
        took,
        last_swap,
    } = restored;
    log(format_args!(
        "restored {} from {}: snapshot at record {snapshot_seq}, {} and {} replayed{}, in {}",
        app.module(),
        dir.root().display(),
        counted(replayed, "event"),
        counted(swaps, "swap"),
        match diverged {
            0 => String::new(),
            n => format!(" ({n} read other clock or random values than recorded)"),
        },
        format_duration(took)
    ));
    if app.module().hash == ModuleHash::of(module) {
        let mut keeper = Keeper::start(dir.clone(), options, seq, last_swap)?;
        if replayed > 0 {
            // The next restore starts here instead of replaying the same events again.
            let _ = keeper.snapshot(&mut app, None);
        }
        return Ok((app, keeper));
    }
    let from = (app.module().hash, app.state_version());
    if options.durable {
        app.keep_swapped_states();
    }
    let prepared = runtime
        .prepare(name, module)
        .with_context(|| format!("cannot load {name}"))?;
    let report = app.swap(prepared).map_err(|refused| {
        anyhow::anyhow!(
            "{name} cannot take the restored state: {}; {} is left as it was: start with a \
             module that can take it (the last one run is kept as {})",
            refused.error,
            dir.root().display(),
            dir.module_path(&from.0).display()
        )
    })?;
    dir.keep_module(name, module)?;
    log(format_args!("{report}"));
    let mut keeper = Keeper::start(dir.clone(), options, seq, last_swap)?;
    keeper.swapped(&mut app, from, Release::Nothing);
    Ok((app, keeper))
}
