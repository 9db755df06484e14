//! `hotswap check NEW --state FILE` and `--against` a running host: would NEW take this state?
//! It runs exactly what a swap runs on the new side (the state-version check, the import or
//! migration, the export that proves NEW can hand the state on) in a throwaway instance, and
//! says what came out. `hotswap state --save FILE` writes the file it reads.

use crate::app::App;
use crate::compile::ModuleHash;
use crate::error::SwapError;
use crate::persist::snapshot::{self, Snapshot};
use crate::runtime::{Prepared, Runtime};
use crate::text::{bytes, escape};
use std::path::Path;
use std::sync::Arc;

/// A state to check against: the bytes and the state version of the code that wrote them.
pub struct Saved {
    /// The state, as the SDK exported it.
    pub state: Vec<u8>,
    /// Its state version.
    pub state_version: u32,
}

/// Reads a state file: a snapshot from `--state-dir`, or a file `hotswap state --save` wrote
/// (the same format).
pub fn read_saved(path: &Path) -> anyhow::Result<Saved> {
    let snapshot = snapshot::read(path).map_err(|why| {
        anyhow::anyhow!(
            "{} is not a state file ({why}): give a snapshot from a --state-dir, or a file \
             written by `hotswap state --save`",
            path.display()
        )
    })?;
    Ok(Saved {
        state: snapshot.state,
        state_version: snapshot.state_version,
    })
}

/// Refuses a path where anything is (a file, a directory, a symlink): a state file is written
/// only where nothing was.
pub fn refuse_existing(path: &Path) -> anyhow::Result<()> {
    if path.symlink_metadata().is_ok() {
        anyhow::bail!(
            "{} exists: give a new file name (nothing was overwritten)",
            path.display()
        );
    }
    Ok(())
}

/// Writes a state file durably (the snapshot format, record 0).
pub fn save(
    path: &Path,
    state: Vec<u8>,
    state_version: u32,
    module: ModuleHash,
) -> anyhow::Result<()> {
    refuse_existing(path)?;
    let snapshot = Snapshot {
        seq: 0,
        state_version,
        module,
        state,
    };
    crate::persist::write_durably(path, &snapshot.to_bytes())
}

/// Whether `prepared` takes `saved` as a swap would: the one-line verdict.
pub fn accepts(
    runtime: &Arc<Runtime>,
    prepared: Prepared,
    saved: &Saved,
) -> Result<String, SwapError> {
    let name = prepared.compiled().to_string();
    let new = prepared.state_version();
    if new < saved.state_version {
        return Err(SwapError::Downgrade {
            running: saved.state_version,
            new,
        });
    }
    let mut app = App::resume(runtime.clone(), prepared, &saved.state, saved.state_version)?;
    let state = app.export_state().map_err(|e| SwapError::Verify(e.error))?;
    let (shown, _) = crate::state_view::show(&state, app.state_version());
    let summary = escape(&shown.split_whitespace().collect::<Vec<_>>().join(" "), 200);
    Ok(format!(
        "{name} accepts the state: state v{} → v{new}, {} → {}: {summary}",
        saved.state_version,
        bytes(saved.state.len()),
        bytes(state.len()),
    ))
}

/// The state a running host exports, as its control socket answers `Export`.
pub fn from_answer(state: Option<&serde_json::Value>) -> anyhow::Result<(Saved, ModuleHash)> {
    let field = |name: &str| state.and_then(|s| s.get(name));
    let parsed = (|| {
        let hex = field("hex")?.as_str()?;
        let module = ModuleHash::from_hex(field("module")?.as_str()?)?;
        let state_version = u32::try_from(field("state_version")?.as_u64()?).ok()?;
        Some((
            Saved {
                state: crate::text::from_hex(hex)?,
                state_version,
            },
            module,
        ))
    })();
    parsed.ok_or_else(|| {
        anyhow::anyhow!("the host's answer holds no exported state (an older host?)")
    })
}
