//! The activity writer's overflow file: where events go when its queue is full.
//!
//! An append-only NDJSON file, one event per line, with the event's id, so replaying a
//! line that was already written (after a crash, or a deadline that passed mid-replay)
//! adds no row. Its size is bounded (`WriterConfig::spill_max_bytes`); beyond it the
//! writer drops and counts (`reason="spill_full"`).
//!
//! Writers (`ActivityWriter::record`, on the hot path, only when the queue is full)
//! append one line with one `write(2)` under a `std` mutex, never held across an
//! `.await`. No `fsync`: an appended line survives the process being killed (it is in
//! the OS page cache), not an OS crash or power loss. The writer task is the only
//! reader: it reads complete lines below the committed length through its own handle,
//! and once every line has been replayed it truncates the file (running) or removes it
//! (clean shutdown).
//!
//! A file left by an earlier process (killed, or shut down past its deadline) is
//! picked up at start and replayed. A line cut short by a kill mid-append is closed
//! with a newline at start, fails to parse, and is counted as lost
//! (`reason="spill_corrupt"`).
//!
//! One process per path: two writers sharing a spill file would replay each other's
//! lines (harmlessly, ids are unique) but also truncate each other's unread lines.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use teamhub_protocol::{TeamId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::activity::ActivityEvent;

/// One line of the file. `metadata` is the event's JSON text as a JSON *string*, so it
/// round-trips byte for byte (raw JSON may contain newlines between tokens).
#[derive(Serialize)]
struct LineOut<'a> {
    id: Uuid,
    team: &'a str,
    user: &'a str,
    action: &'a str,
    resource_type: Option<&'a str>,
    resource_id: Option<&'a str>,
    metadata: &'a str,
    ip: Option<IpAddr>,
    user_agent: Option<&'a str>,
    /// Microseconds since the Unix epoch (events carry microsecond precision).
    created_at_us: i64,
}

#[derive(Deserialize)]
struct LineIn {
    id: Uuid,
    team: String,
    user: String,
    action: String,
    resource_type: Option<String>,
    resource_id: Option<String>,
    metadata: String,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
    created_at_us: i64,
}

pub(crate) fn encode(event: &ActivityEvent) -> Vec<u8> {
    let line = LineOut {
        id: event.id,
        team: event.team.as_str(),
        user: event.user.as_str(),
        action: &event.action,
        resource_type: event.resource_type.as_deref(),
        resource_id: event.resource_id.as_deref(),
        metadata: event.metadata.get(),
        ip: event.ip,
        user_agent: event.user_agent.as_deref(),
        // Every OffsetDateTime (years -9999..=9999) fits: about 3.2e17 microseconds.
        created_at_us: (event.created_at.unix_timestamp_nanos() / 1_000) as i64,
    };
    // Serialising plain strings, numbers and a Uuid into a Vec cannot fail.
    let mut bytes = serde_json::to_vec(&line).expect("spill line serialises");
    bytes.push(b'\n');
    bytes
}

pub(crate) fn decode(line: &[u8]) -> Result<ActivityEvent, String> {
    let l: LineIn = serde_json::from_slice(line).map_err(|e| e.to_string())?;
    let created_at = OffsetDateTime::from_unix_timestamp_nanos(i128::from(l.created_at_us) * 1_000)
        .map_err(|e| e.to_string())?;
    Ok(ActivityEvent {
        id: l.id,
        team: TeamId::try_from(l.team).map_err(|e| e.to_string())?,
        user: UserId::try_from(l.user).map_err(|e| e.to_string())?,
        action: l.action,
        resource_type: l.resource_type,
        resource_id: l.resource_id,
        metadata: RawValue::from_string(l.metadata).map_err(|e| e.to_string())?,
        ip: l.ip,
        user_agent: l.user_agent,
        created_at,
    })
}

/// Why an event could not be appended.
#[derive(Debug)]
pub(crate) enum AppendError {
    /// The file would exceed its bound.
    Full,
    /// The writer finished draining the spill (shutdown); nothing is replayed any more.
    Closed,
    /// Creating or writing the file failed.
    Io(io::Error),
}

struct AppendState {
    /// Opened (and created) on the first append.
    file: Option<File>,
    closed: bool,
}

/// What [`Spill::read_chunk`] found.
pub(crate) struct Chunk {
    pub(crate) events: Vec<ActivityEvent>,
    /// Lines that did not decode (a line cut short by a kill, or edited by hand).
    pub(crate) corrupt: u64,
    /// Offset just past the last line read: pass it to [`Spill::consumed`] once
    /// `events` are stored.
    pub(crate) end: u64,
}

pub(crate) struct Spill {
    path: PathBuf,
    max_bytes: u64,
    state: Mutex<AppendState>,
    /// Bytes of complete lines in the file. Changed under `state`'s lock; read without.
    len: AtomicU64,
    /// Bytes already replayed. Only the writer task changes it.
    read: AtomicU64,
}

impl Spill {
    /// Opens the spill at `path`, picking up a file an earlier process left. Returns the
    /// spill and how many lines (events) that file holds.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> io::Result<(Spill, u64)> {
        let mut file = None;
        let mut len = 0;
        let mut lines = 0;
        match OpenOptions::new().read(true).append(true).open(path) {
            Ok(mut f) => {
                len = f.metadata()?.len();
                if len > 0 {
                    let mut last = [0u8];
                    f.seek(SeekFrom::Start(len - 1))?;
                    f.read_exact(&mut last)?;
                    if last[0] != b'\n' {
                        // Cut short by a kill mid-append: close the line, so it is one
                        // corrupt line and later appends start clean.
                        f.write_all(b"\n")?;
                        len += 1;
                    }
                    f.seek(SeekFrom::Start(0))?;
                    let mut reader = BufReader::new(&f);
                    let mut buf = Vec::new();
                    while reader.read_until(b'\n', &mut buf)? > 0 {
                        lines += 1;
                        buf.clear();
                    }
                }
                file = Some(f);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let spill = Spill {
            path: path.to_owned(),
            max_bytes,
            state: Mutex::new(AppendState {
                file,
                closed: false,
            }),
            len: AtomicU64::new(len),
            read: AtomicU64::new(0),
        };
        Ok((spill, lines))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file (replayed lines included, until it is truncated).
    pub(crate) fn bytes(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Appends one event as one line. Synchronous: one `write(2)`, no `fsync`.
    pub(crate) fn append(&self, event: &ActivityEvent) -> Result<(), AppendError> {
        let line = encode(event);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.closed {
            return Err(AppendError::Closed);
        }
        let len = self.len.load(Ordering::Acquire);
        if len + line.len() as u64 > self.max_bytes {
            return Err(AppendError::Full);
        }
        let file = match &mut state.file {
            Some(file) => file,
            slot @ None => slot.insert(
                OpenOptions::new()
                    .create(true)
                    .read(true)
                    .append(true)
                    .open(&self.path)
                    .map_err(AppendError::Io)?,
            ),
        };
        if let Err(e) = file.write_all(&line) {
            // A partial line may be in the file now: cut it off, so the next append
            // starts a clean line. If even that fails, later lines may be unreadable
            // (counted as corrupt when replayed).
            let _ = file.set_len(len);
            return Err(AppendError::Io(e));
        }
        self.len.store(len + line.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Offset up to which lines have been replayed.
    pub(crate) fn replayed(&self) -> u64 {
        self.read.load(Ordering::Acquire)
    }

    /// Whether lines remain to be replayed.
    pub(crate) fn pending(&self) -> bool {
        self.len.load(Ordering::Acquire) > self.read.load(Ordering::Acquire)
    }

    /// Reads up to `max` events after the replayed ones. Blocking file I/O of at most
    /// `max` lines: called by the writer task only.
    pub(crate) fn read_chunk(&self, max: usize) -> io::Result<Chunk> {
        let start = self.read.load(Ordering::Acquire);
        let len = self.len.load(Ordering::Acquire);
        let mut chunk = Chunk {
            events: Vec::new(),
            corrupt: 0,
            end: start,
        };
        if start >= len {
            return Ok(chunk);
        }
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start))?;
        // Only bytes below `len` are complete lines; an append may be under way past it.
        let mut reader = BufReader::new(file.take(len - start));
        let mut line = Vec::new();
        while chunk.events.len() < max.max(1) {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            chunk.end += n as u64;
            match decode(line.strip_suffix(b"\n").unwrap_or(&line)) {
                Ok(event) => chunk.events.push(event),
                Err(e) => {
                    chunk.corrupt += 1;
                    tracing::error!(
                        path = %self.path.display(),
                        offset = chunk.end - n as u64,
                        error = %e,
                        "unreadable line in the activity spill file; that event is lost"
                    );
                }
            }
        }
        Ok(chunk)
    }

    /// Marks everything before `end` as replayed. When that is the whole file, empties
    /// it, so a spill that keeps up stays small.
    pub(crate) fn consumed(&self, end: u64) -> io::Result<()> {
        self.read.store(end, Ordering::Release);
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.len.load(Ordering::Acquire) == end
            && end > 0
            && let Some(file) = &state.file
        {
            // Appends use O_APPEND, so they continue at the new end (0).
            file.set_len(0)?;
            self.len.store(0, Ordering::Release);
            self.read.store(0, Ordering::Release);
        }
        Ok(())
    }

    /// If every line has been replayed: refuses further appends and removes the file
    /// (`true`). Otherwise `false`: an append came in, replay it first.
    pub(crate) fn finish(&self) -> io::Result<bool> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.len.load(Ordering::Acquire) > self.read.load(Ordering::Acquire) {
            return Ok(false);
        }
        state.closed = true;
        state.file = None;
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> ActivityEvent {
        ActivityEvent::new(TeamId::new("t").unwrap(), UserId::new("u").unwrap(), "x")
            .with_metadata(RawValue::from_string(format!("{{\n \"i\": {i}\n}}")).unwrap())
            .with_resource("doc", "d\n1")
            .with_client(Some("2001:db8::1".parse().unwrap()), Some("ua ✓".into()))
    }

    fn same(a: &ActivityEvent, b: &ActivityEvent) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.metadata.get(), b.metadata.get());
        assert_eq!(
            (
                &a.team,
                &a.user,
                &a.action,
                &a.resource_type,
                &a.resource_id
            ),
            (
                &b.team,
                &b.user,
                &b.action,
                &b.resource_type,
                &b.resource_id
            )
        );
        assert_eq!(
            (a.ip, &a.user_agent, a.created_at),
            (b.ip, &b.user_agent, b.created_at)
        );
    }

    #[test]
    fn lines_round_trip_and_truncate_when_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.ndjson");
        let (spill, recovered) = Spill::open(&path, 1 << 20).unwrap();
        assert_eq!(recovered, 0);
        assert!(!path.exists(), "created lazily");
        let events: Vec<ActivityEvent> = (0..5).map(event).collect();
        for e in &events {
            spill.append(e).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5, "one line per event: {text}");

        let first = spill.read_chunk(3).unwrap();
        assert_eq!((first.events.len(), first.corrupt), (3, 0));
        spill.consumed(first.end).unwrap();
        assert!(spill.pending());
        let rest = spill.read_chunk(10).unwrap();
        assert_eq!(rest.events.len(), 2);
        for (a, b) in first.events.iter().chain(&rest.events).zip(&events) {
            same(a, b);
        }
        spill.consumed(rest.end).unwrap();
        assert!(!spill.pending());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "truncated");
        assert!(spill.finish().unwrap());
        assert!(!path.exists(), "removed");
        assert!(matches!(spill.append(&events[0]), Err(AppendError::Closed)));
    }

    #[test]
    fn bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.ndjson");
        let one = encode(&event(0)).len() as u64;
        let (spill, _) = Spill::open(&path, one * 2).unwrap();
        spill.append(&event(0)).unwrap();
        spill.append(&event(1)).unwrap();
        assert!(matches!(spill.append(&event(2)), Err(AppendError::Full)));
        assert_eq!(spill.bytes(), one * 2);
    }

    #[test]
    fn leftover_file_with_a_torn_line_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spill.ndjson");
        let events: Vec<ActivityEvent> = (0..3).map(event).collect();
        let mut bytes: Vec<u8> = events.iter().flat_map(encode).collect();
        let torn = encode(&event(9));
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();

        let (spill, recovered) = Spill::open(&path, 1 << 20).unwrap();
        assert_eq!(recovered, 4);
        spill.append(&event(4)).unwrap();
        let chunk = spill.read_chunk(100).unwrap();
        assert_eq!(chunk.corrupt, 1);
        assert_eq!(chunk.events.len(), 4);
        for (a, b) in chunk.events.iter().zip(&events) {
            same(a, b);
        }
    }
}
