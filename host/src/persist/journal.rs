//! The journal: every event the app handles, with what the guest read from its clocks and
//! random source, and every swap and rollback, in order (the format is in
//! [`hotswap_abi::persist`]). A writer thread appends them with group commit: one `fdatasync`
//! for everything that arrived while the last one ran, and only then releases the replies
//! that wait on those records.

use super::StateDir;
use crate::actor::Input;
use crate::control::Response;
use crate::guest::tape::Read;
use anyhow::Context as _;
use hotswap_abi::http;
use hotswap_abi::persist::{JOURNAL_MAGIC, JOURNAL_VERSION};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A segment is closed and a new one begun past this size.
const SEGMENT_BYTES: u64 = 64 << 20;

/// The most bytes of records one group commit writes (more wait for the next).
const BATCH_BYTES: usize = 16 << 20;

/// The bytes before a segment's first record: magic and format version.
const SEGMENT_HEADER: usize = 12;

/// A segment grows by this much at a time, written as zeros and synced ahead of the records
/// that overwrite them: an `fdatasync` that does not change the file's size need not commit
/// its metadata (on ext4 here: 105 µs instead of 180 µs per sync, measured with 100-byte
/// appends). A record's length is never 0, so the zeros after the last one end the segment.
const GROW_BY: u64 = 4 << 20;

/// One journal record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// An event the app handled, and what the guest read while handling it.
    Input {
        /// The event.
        input: Input,
        /// The guest's clock and random reads, in order.
        reads: Vec<Read>,
    },
    /// A committed swap (module hashes as 64 hex digits).
    Swap {
        /// The module swapped out.
        from: String,
        /// The module swapped in.
        to: String,
    },
    /// The swap at this sequence number was rolled back.
    Rollback {
        /// The swap's sequence number.
        swap: u64,
    },
}

/// A record and its sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// Its place in the journal, from 1.
    pub seq: u64,
    /// What happened.
    pub record: Record,
}

/// Bytes as MessagePack bin, for `#[serde(with = ...)]`.
pub mod bin {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes bytes as bin.
    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    /// Reads bin (or a str) as bytes.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        hotswap_abi::http::Bytes::deserialize(deserializer).map(|b| b.0)
    }
}

/// What a record's durability releases: a reply held until the record is on disk.
pub enum Release {
    /// A line for stdout.
    Stdout(Vec<u8>),
    /// An HTTP response.
    Http(tokio::sync::oneshot::Sender<http::Response>, http::Response),
    /// A control client's answer.
    Control(mpsc::Sender<Response>, Response),
    /// Nothing waits (a tick).
    Nothing,
    /// Someone waits for everything written so far to be on disk.
    Synced(mpsc::Sender<()>),
}

impl Release {
    /// Sends the reply (stdout lines to `stdout`); only writing to `stdout` can fail.
    pub(crate) fn release(self, stdout: &mut impl std::io::Write) -> std::io::Result<()> {
        match self {
            Release::Stdout(line) => return stdout.write_all(&line),
            Release::Http(reply, response) => {
                let _ = reply.send(response);
            }
            Release::Control(reply, response) => {
                let _ = reply.send(response);
            }
            Release::Nothing => {}
            Release::Synced(done) => {
                let _ = done.send(());
            }
        }
        Ok(())
    }
}

/// The journal writer's counters, for `hotswap status` and the metrics.
#[derive(Clone, Debug)]
pub struct Synced {
    /// Records on disk.
    pub records: u64,
    /// `fdatasync` calls.
    pub fsyncs: u64,
    /// The last one's duration.
    pub last_fsync: Duration,
    /// The longest one.
    pub max_fsync: Duration,
    /// The first failure to write or sync: no reply is released after it.
    pub error: Option<String>,
    /// Every fsync's duration.
    pub fsync_seconds: crate::metrics::Histogram,
}

impl Default for Synced {
    fn default() -> Self {
        Synced {
            records: 0,
            fsyncs: 0,
            last_fsync: Duration::ZERO,
            max_fsync: Duration::ZERO,
            error: None,
            fsync_seconds: crate::metrics::Histogram::fsync(),
        }
    }
}

/// Appends records from the app's thread; a thread of its own writes and syncs them.
pub struct JournalWriter {
    tx: mpsc::Sender<(u64, Vec<u8>, Release)>,
    /// What has been synced.
    pub synced: Arc<Mutex<Synced>>,
}

impl JournalWriter {
    /// Starts the writer, appending to the newest segment (or a new one beginning at
    /// `next_seq`).
    pub fn start(dir: Arc<StateDir>, next_seq: u64) -> anyhow::Result<JournalWriter> {
        let segment = Segment::open(&dir, next_seq)?;
        let (tx, rx) = mpsc::channel();
        let synced = Arc::new(Mutex::new(Synced::default()));
        let stats = synced.clone();
        std::thread::Builder::new()
            .name("hotswap-journal".into())
            .spawn(move || write_loop(dir, segment, rx, stats))?;
        Ok(JournalWriter { tx, synced })
    }

    /// Appends a record; `release` happens once it is on disk.
    pub fn append(&self, entry: &Entry, release: Release) {
        let body = hotswap_msgpack::to_vec(entry).unwrap_or_default();
        let mut framed = Vec::with_capacity(body.len() + 8);
        framed.extend_from_slice(&(body.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        framed.extend_from_slice(&body);
        let _ = self.tx.send((entry.seq, framed, release));
    }

    /// Waits until everything appended so far is on disk.
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send((0, Vec::new(), Release::Synced(done))).is_ok() {
            let _ = wait.recv();
        }
    }
}

/// The segment being appended to.
struct Segment {
    file: File,
    /// Where the next record goes: the end of the last one.
    len: u64,
    /// The file's size (zeros past `len`).
    allocated: u64,
}

impl Segment {
    /// The newest segment if its last record is `next_seq - 1`; otherwise a new one beginning
    /// at `next_seq` (a run without `--durable` moved the record numbers on, and its final
    /// snapshot covers the gap: appending after the gap would make the whole segment unreadable
    /// past it).
    fn open(dir: &StateDir, next_seq: u64) -> anyhow::Result<Segment> {
        let mut all = segments(dir);
        while let Some((first, path)) = all.pop_if(|(first, _)| *first > next_seq) {
            // Records the state does not include (an empty segment a restore went past):
            // appending before them would put the journal out of order.
            dir.quarantine(
                &path,
                &format!("begins at record {first}, after the state's {next_seq}"),
            );
        }
        let Some((first, path)) = all.pop() else {
            return Segment::create(dir, next_seq);
        };
        let bytes = super::read_file(&path, super::MAX_FILE)?;
        let Some((good, last)) = segment_end(&bytes) else {
            return Segment::create(dir, next_seq);
        };
        if last.unwrap_or(first.saturating_sub(1)) + 1 != next_seq {
            return Segment::create(dir, next_seq);
        }
        let file = File::options()
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Segment {
            file,
            len: good as u64,
            allocated: bytes.len() as u64,
        })
    }

    fn create(dir: &StateDir, first_seq: u64) -> anyhow::Result<Segment> {
        let path = dir.sub("journal").join(format!("{first_seq:020}.log"));
        let mut file = File::options()
            .create_new(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        file.write_all(&JOURNAL_MAGIC)?;
        file.write_all(&JOURNAL_VERSION.to_le_bytes())?;
        let mut segment = Segment {
            file,
            len: SEGMENT_HEADER as u64,
            allocated: SEGMENT_HEADER as u64,
        };
        segment.grow(0)?;
        segment.file.sync_all()?;
        super::sync_dir(&dir.sub("journal"))?;
        Ok(segment)
    }

    /// Makes room for `more` bytes past `len`, writing zeros `GROW_BY` at a time.
    fn grow(&mut self, more: u64) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt as _;
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        while self.len + more > self.allocated || self.allocated == SEGMENT_HEADER as u64 {
            let end = self.allocated + GROW_BY;
            while self.allocated < end {
                self.file.write_all_at(&ZEROS, self.allocated)?;
                self.allocated += ZEROS.len() as u64;
            }
        }
        Ok(())
    }
}

fn write_loop(
    dir: Arc<StateDir>,
    mut segment: Segment,
    rx: mpsc::Receiver<(u64, Vec<u8>, Release)>,
    synced: Arc<Mutex<Synced>>,
) {
    while let Ok(first) = rx.recv() {
        let mut bytes = first.1.len();
        let mut batch = vec![first];
        // Bounded, so that a segment never grows far past `SEGMENT_BYTES`.
        while bytes < BATCH_BYTES
            && let Ok(next) = rx.try_recv()
        {
            bytes += next.1.len();
            batch.push(next);
        }
        let mut stats = synced.lock().unwrap_or_else(|e| e.into_inner());
        if stats.error.is_some() {
            // After a failed write the journal has a gap: a record written after it could not
            // be replayed, so nothing more is acknowledged.
            continue;
        }
        let result = write_batch(&dir, &mut segment, &batch);
        match result {
            Ok(took) => {
                stats.records += batch.iter().filter(|(seq, ..)| *seq > 0).count() as u64;
                stats.fsyncs += 1;
                stats.last_fsync = took;
                stats.max_fsync = stats.max_fsync.max(took);
                stats.fsync_seconds.observe(took);
            }
            Err(e) => {
                // Nothing in this batch is acknowledged: its replies are dropped, which tells
                // each client that its request failed.
                crate::text::log(format_args!(
                    "cannot write the journal: {e:#}; no event is acknowledged from now on: stop \
                     the host and start it again (what was acknowledged is on disk)"
                ));
                stats.error = Some(format!("{e:#}"));
                continue;
            }
        }
        drop(stats);
        let mut stdout = std::io::stdout().lock();
        for (.., release) in batch {
            // A reader gone from stdout takes nothing from the other replies.
            let _ = release.release(&mut stdout);
        }
        let _ = stdout.flush();
    }
}

/// Writes a batch of framed records and syncs them; how long the sync took.
fn write_batch(
    dir: &StateDir,
    segment: &mut Segment,
    batch: &[(u64, Vec<u8>, Release)],
) -> anyhow::Result<Duration> {
    if segment.len > SEGMENT_BYTES
        && let Some((seq, ..)) = batch.iter().find(|(seq, ..)| *seq > 0)
    {
        *segment = Segment::create(dir, *seq)?;
    }
    let bytes: Vec<u8> = batch
        .iter()
        .flat_map(|(_, framed, _)| framed.iter().copied())
        .collect();
    segment
        .grow(bytes.len() as u64)
        .context("cannot grow the journal")?;
    std::os::unix::fs::FileExt::write_all_at(&segment.file, &bytes, segment.len)
        .context("cannot append to the journal")?;
    segment.len += bytes.len() as u64;
    let started = Instant::now();
    segment
        .file
        .sync_data()
        .context("cannot sync the journal")?;
    Ok(started.elapsed())
}

/// The journal segments, oldest first, with the sequence number each begins at.
pub fn segments(dir: &StateDir) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir.sub("journal"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            Some((name.strip_suffix(".log")?.parse().ok()?, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// Every record on disk, in order. A segment whose end is torn or corrupt is copied into
/// `quarantine/` and cut back to its last good record; the journal ends there.
pub fn read_all(dir: &StateDir) -> anyhow::Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::new();
    let all = segments(dir);
    for (at, (_, path)) in all.iter().enumerate() {
        let bytes = super::read_file(path, super::MAX_FILE)?;
        // A gap between segments is allowed (a run without `--durable` came between them):
        // the restore checks that the records after its snapshot follow on.
        let (good, why) = parse_segment(&bytes, None, &mut entries);
        if let Some(why) = why {
            let newer = all.len() - at - 1;
            if newer > 0 {
                // A crash cuts short only the segment being written, the newest.
                anyhow::bail!(
                    "journal segment {} {why}, and {newer} newer segment(s) follow it: that is \
                     damage, not a write cut short by a crash, and cutting the journal there \
                     would drop the records after it. Nothing was changed; to restore without \
                     them, move that segment and the newer ones out of {}",
                    path.display(),
                    dir.sub("journal").display()
                );
            }
            set_aside_tail(dir, path, good, &why)?;
            for (_, later) in &all[at + 1..] {
                dir.quarantine(later, "follows a torn journal segment");
            }
            break;
        }
    }
    Ok(entries)
}

/// The events in a journal segment's bytes, in order (its swaps and rollbacks left out): an
/// event script for `hotswap test`.
pub fn inputs_of_segment(bytes: &[u8]) -> anyhow::Result<Vec<Input>> {
    let mut entries = Vec::new();
    if let (_, Some(why)) = parse_segment(bytes, None, &mut entries) {
        anyhow::bail!("the segment {why}");
    }
    Ok(entries
        .into_iter()
        .filter_map(|e| match e.record {
            Record::Input { input, .. } => Some(input),
            _ => None,
        })
        .collect())
}

/// The last `n` events on disk (or all there are), oldest first, for a trial. Read only: a
/// segment being written may end in a record cut short, and the events before it count.
pub fn last_inputs(dir: &StateDir, n: usize) -> anyhow::Result<Vec<Input>> {
    let mut newest_first: Vec<Vec<Input>> = Vec::new();
    let mut count = 0;
    for (_, path) in segments(dir).iter().rev() {
        if count >= n {
            break;
        }
        let bytes = super::read_file(path, super::MAX_FILE)?;
        let mut entries = Vec::new();
        let _ = parse_segment(&bytes, None, &mut entries);
        let inputs: Vec<Input> = (entries.into_iter())
            .filter_map(|e| match e.record {
                Record::Input { input, .. } => Some(input),
                _ => None,
            })
            .collect();
        count += inputs.len();
        newest_first.push(inputs);
    }
    let mut all: Vec<Input> = newest_first.into_iter().rev().flatten().collect();
    all.drain(..all.len().saturating_sub(n));
    Ok(all)
}

/// Reads a segment's records into `entries`; how many bytes were good, and why the rest was not.
fn parse_segment(
    bytes: &[u8],
    mut last: Option<u64>,
    entries: &mut Vec<Entry>,
) -> (usize, Option<String>) {
    if bytes.len() < SEGMENT_HEADER || bytes[..8] != JOURNAL_MAGIC {
        return (0, Some("has no journal header".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != JOURNAL_VERSION {
        return (
            0,
            Some(format!(
                "is format version {version}; this host reads {JOURNAL_VERSION}"
            )),
        );
    }
    let mut at = SEGMENT_HEADER;
    loop {
        let (body, next) = match next_frame(bytes, at) {
            Ok(Some(frame)) => frame,
            Ok(None) => return (at, None),
            Err(why) => return (at, Some(why.into())),
        };
        let entry: Entry = match hotswap_msgpack::from_slice(body) {
            Ok(entry) => entry,
            Err(e) => return (at, Some(format!("has a record that does not decode: {e}"))),
        };
        if last.is_some_and(|last| entry.seq != last + 1) {
            return (
                at,
                Some(format!(
                    "skips from record {} to {}",
                    last.unwrap_or(0),
                    entry.seq
                )),
            );
        }
        last = Some(entry.seq);
        entries.push(entry);
        at = next;
    }
}

/// The record framed at `at`: its body and where the next one begins; `None` at the end (the
/// end of the file, or the zeros a segment grows by).
fn next_frame(bytes: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, &'static str> {
    if bytes[at..].iter().all(|&b| b == 0) {
        return Ok(None);
    }
    let frame = bytes.get(at..at + 8).ok_or("ends in a torn record")?;
    let len = u32::from_le_bytes(frame[..4].try_into().expect("4 bytes")) as usize;
    let body = bytes
        .get(at + 8..at + 8 + len)
        .ok_or("ends in a torn record")?;
    if crc32fast::hash(body).to_le_bytes() != frame[4..8] {
        return Err("has a record whose checksum does not match");
    }
    Ok(Some((body, at + 8 + len)))
}

/// Where a segment's records end and the last one's sequence number, without decoding the
/// others; `None` if the segment is not whole (a restore sets such a segment aside first).
fn segment_end(bytes: &[u8]) -> Option<(usize, Option<u64>)> {
    if bytes.len() < SEGMENT_HEADER
        || bytes[..8] != JOURNAL_MAGIC
        || bytes[8..12] != JOURNAL_VERSION.to_le_bytes()
    {
        return None;
    }
    let (mut at, mut last) = (SEGMENT_HEADER, None);
    while let Some((body, next)) = next_frame(bytes, at).ok()? {
        (at, last) = (next, Some(body));
    }
    let seq = match last {
        Some(body) => Some(hotswap_msgpack::from_slice::<Entry>(body).ok()?.seq),
        None => None,
    };
    Some((at, seq))
}

/// Copies a segment into `quarantine/` and cuts it back to its first `good` bytes.
fn set_aside_tail(
    dir: &StateDir,
    path: &std::path::Path,
    good: usize,
    why: &str,
) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let copy = super::unused(&dir.sub("quarantine"), &format!("{name}.torn"));
    std::fs::copy(path, &copy).with_context(|| format!("cannot set {} aside", path.display()))?;
    File::open(&copy)?.sync_all()?;
    super::sync_dir(&dir.sub("quarantine"))?;
    crate::text::log(format_args!(
        "journal {} {why}; a copy is at {}, and the journal ends at its last good record",
        path.display(),
        copy.display()
    ));
    let file = File::options().write(true).open(path)?;
    if good < SEGMENT_HEADER {
        drop(file);
        std::fs::remove_file(path)?;
    } else {
        file.set_len(good as u64)?;
        file.sync_all()?;
    }
    super::sync_dir(&dir.sub("journal"))
}

/// Deletes the segments whose every record is at or before `seq` (never the newest).
pub fn prune(dir: &StateDir, seq: u64) {
    let all = segments(dir);
    for pair in all.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= seq + 1 {
            let _ = std::fs::remove_file(path);
        }
    }
}
