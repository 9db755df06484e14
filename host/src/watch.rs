//! Watching a module file for new versions (`hotswap run --watch`).
//!
//! Strategy: watch directories, not files: a watch on the file itself goes silent after the
//! first atomic rename. Cargo replaces its output by remove + create (a hard link) with no write
//! events, an editor or `cp` writes in place, a deploy script renames, and a Kubernetes
//! ConfigMap volume makes the file a symlink into a `..data` symlink that the kubelet replaces
//! by renaming a new one over it. So the watcher follows the path's symlinks hop by hop, watches
//! the directory of every path on that chain (the path, each symlink met, the file reached), and
//! acts on any event that names one of them, never on a remove alone. It waits until those have
//! been quiet for the debounce interval, reads the file through the links, passes it on only if
//! its content differs from the last content passed on, and follows the chain again. A
//! half-written file is passed on like any other (and refused by the checks); the next change
//! is picked up.

use crate::compile::{ModuleHash, read_module};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::{BTreeSet, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

/// How many symlinks are followed before giving up (as the kernel does).
const MAX_HOPS: usize = 40;

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
    _watcher: Arc<Mutex<RecommendedWatcher>>,
}

/// Watches `path` and calls `on_change` (on the watcher's own thread) with each new content.
/// `current` is the hash of the content already running, which is not passed on again;
/// `max_len` caps what is read.
pub fn watch(
    path: &Path,
    current: ModuleHash,
    debounce: Duration,
    max_len: u64,
    mut on_change: impl FnMut(Change) + Send + 'static,
) -> anyhow::Result<ModuleWatcher> {
    use anyhow::Context as _;
    let path =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let watcher = notify::recommended_watcher(tx).context("cannot start a file watcher")?;
    let watcher = Arc::new(Mutex::new(watcher));
    let mut chain = Chain::default();
    chain.follow(&path, &watcher).context("cannot watch")?;
    let weak = Arc::downgrade(&watcher);
    std::thread::Builder::new()
        .name("hotswap-watch".into())
        .spawn(move || {
            let mut last = current;
            // Ends when the watcher is dropped (its sender closes the channel).
            while let Ok(event) = rx.recv() {
                if !chain.wait_quiet(event, &rx, debounce, &mut on_change) {
                    continue;
                }
                if let Err(e) = refollow(&mut chain, &path, &weak) {
                    on_change(Change::Error(e));
                }
                match read_module(&path, max_len) {
                    Ok(bytes) => {
                        let hash = ModuleHash::of(&bytes);
                        if hash != last {
                            last = hash;
                            on_change(Change::Content(bytes));
                        }
                    }
                    // Gone again (a remove after the create): wait for the next change.
                    Err(crate::error::SwapError::Read { error, .. })
                        if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => on_change(Change::Error(e.to_string())),
                }
            }
        })?;
    Ok(ModuleWatcher { _watcher: watcher })
}

fn refollow(
    chain: &mut Chain,
    path: &Path,
    watcher: &Weak<Mutex<RecommendedWatcher>>,
) -> Result<(), String> {
    match watcher.upgrade() {
        Some(watcher) => chain
            .follow(path, &watcher)
            .map_err(|e| format!("file watcher: {e:#}")),
        None => Ok(()),
    }
}

/// The paths whose change can change what the watched path reads as, and the directories
/// watched for them.
#[derive(Default)]
struct Chain {
    paths: BTreeSet<PathBuf>,
    dirs: BTreeSet<PathBuf>,
}

impl Chain {
    /// Follows `path` again and watches the directories its chain now goes through.
    fn follow(&mut self, path: &Path, watcher: &Mutex<RecommendedWatcher>) -> anyhow::Result<()> {
        let paths = resolution(path);
        let dirs: BTreeSet<PathBuf> = paths
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        let mut watcher = watcher.lock().unwrap_or_else(|e| e.into_inner());
        for gone in self.dirs.difference(&dirs) {
            let _ = watcher.unwatch(gone);
        }
        for dir in dirs.difference(&self.dirs) {
            // The path's own directory must be watchable; a link's target directory may be
            // missing for now (it is followed again after the next change).
            if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive)
                && dir.as_path() == path.parent().unwrap_or(path)
            {
                anyhow::bail!("cannot watch directory {}: {e}", dir.display());
            }
        }
        self.paths = paths;
        self.dirs = dirs;
        Ok(())
    }

    /// Whether an event may have changed what the path reads as.
    fn relevant(&self, event: &notify::Result<notify::Event>) -> bool {
        matches!(event, Ok(event) if brings_content(&event.kind) && event.paths.iter().any(|p| self.paths.contains(p)))
    }

    /// Given an event: if it is relevant, waits until the chain has been quiet for `debounce`
    /// and says so; other files in the directories (a log next to the module, say) may stay
    /// busy meanwhile.
    fn wait_quiet(
        &self,
        event: notify::Result<notify::Event>,
        rx: &mpsc::Receiver<notify::Result<notify::Event>>,
        debounce: Duration,
        on_change: &mut impl FnMut(Change),
    ) -> bool {
        if let Err(e) = &event {
            on_change(Change::Error(format!("file watcher: {e}")));
        }
        if !self.relevant(&event) {
            return false;
        }
        let mut quiet_from = Instant::now();
        loop {
            match rx.recv_timeout(debounce.saturating_sub(quiet_from.elapsed())) {
                Ok(event) if self.relevant(&event) => quiet_from = Instant::now(),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => return true,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

/// One step of a path being resolved.
enum Part {
    Root,
    Parent,
    Name(std::ffi::OsString),
}

fn parts(path: &Path) -> VecDeque<Part> {
    (path.components())
        .filter_map(|c| match c {
            Component::RootDir => Some(Part::Root),
            Component::ParentDir => Some(Part::Parent),
            Component::Normal(name) => Some(Part::Name(name.to_owned())),
            Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// `path`, every symlink met while resolving it (each as the path where the link lies), and the
/// path it finally resolves to, all absolute.
fn resolution(path: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::from([path.to_path_buf()]);
    let mut rest = parts(path);
    let mut at = PathBuf::from("/");
    let mut hops = 0;
    while let Some(part) = rest.pop_front() {
        match part {
            Part::Root => at = PathBuf::from("/"),
            Part::Parent => {
                at.pop();
            }
            Part::Name(name) => {
                let next = at.join(name);
                match std::fs::read_link(&next) {
                    Ok(target) if hops < MAX_HOPS => {
                        hops += 1;
                        found.insert(next);
                        let mut followed = parts(&target);
                        followed.extend(rest);
                        rest = followed;
                    }
                    _ => at = next,
                }
            }
        }
    }
    found.insert(at);
    found
}

/// Whether an event kind may leave new content under a name.
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
