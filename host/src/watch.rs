//! Watching a module file for new versions (`hotswap run --watch`).
//!
//! Strategy: watch the file's directory, not the file: a watch on the file itself goes silent
//! after the first atomic rename. Cargo replaces its output by remove + create (a hard link) with
//! no write events, an editor or `cp` writes in place, a deploy script renames; so act on
//! create, rename-to, close-after-write and data changes that name the file, never on a remove
//! alone. Wait until the directory has been quiet for the debounce interval, read the file, and
//! pass it on only if its content differs from the last content passed on. A half-written file
//! is passed on like any other (and refused by the checks); the next change is picked up.

use crate::compile::ModuleHash;
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What the watcher saw.
#[derive(Debug)]
pub enum Change {
    /// The file has new content.
    Content(Vec<u8>),
    /// The watcher or a read failed; watching goes on.
    Error(String),
}

/// A running watch; dropping it stops watching.
pub struct ModuleWatcher {
    _watcher: RecommendedWatcher,
}

/// Watches `path` and calls `on_change` (on the watcher's own thread) with each new content.
/// `current` is the hash of the content already running, which is not passed on again.
pub fn watch(
    path: &Path,
    current: ModuleHash,
    debounce: Duration,
    mut on_change: impl FnMut(Change) + Send + 'static,
) -> anyhow::Result<ModuleWatcher> {
    use anyhow::Context as _;
    let path =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let Some(name) = path.file_name().map(|n| n.to_owned()) else {
        anyhow::bail!("{} names no file to watch", path.display());
    };

    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx).context("cannot start a file watcher")?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch directory {}", dir.display()))?;

    let names_file =
        move |event: &notify::Event| event.paths.iter().any(|p| p.file_name() == Some(&name));
    let relevant = move |event: &notify::Result<notify::Event>| matches!(event, Ok(event) if brings_content(&event.kind) && names_file(event));
    std::thread::Builder::new()
        .name("hotswap-watch".into())
        .spawn(move || {
            let mut last = current;
            // Ends when the watcher is dropped (its sender closes the channel).
            while let Ok(event) = rx.recv() {
                if let Err(e) = &event {
                    on_change(Change::Error(format!("file watcher: {e}")));
                }
                if !relevant(&event) {
                    continue;
                }
                // Debounce: wait until the file itself has been quiet for `debounce`. Other files
                // in the directory (a log next to the module, say) may stay busy meanwhile.
                let mut quiet_from = Instant::now();
                loop {
                    let remaining = debounce.saturating_sub(quiet_from.elapsed());
                    match rx.recv_timeout(remaining) {
                        Ok(event) if relevant(&event) => quiet_from = Instant::now(),
                        Ok(_) => {}
                        Err(mpsc::RecvTimeoutError::Timeout) => break,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                match std::fs::read(&path) {
                    Ok(bytes) => {
                        let hash = ModuleHash::of(&bytes);
                        if hash != last {
                            last = hash;
                            on_change(Change::Content(bytes));
                        }
                    }
                    // Gone again (a remove after the create): wait for the next change.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => on_change(Change::Error(format!(
                        "cannot read {}: {e}",
                        path.display()
                    ))),
                }
            }
        })?;
    Ok(ModuleWatcher { _watcher: watcher })
}

/// Whether an event kind may leave new content under the name.
fn brings_content(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_))
            | EventKind::Modify(ModifyKind::Any)
            | EventKind::Modify(ModifyKind::Name(
                RenameMode::To | RenameMode::Both | RenameMode::Any
            ))
            | EventKind::Access(AccessKind::Close(AccessMode::Write))
    )
}
