//! The activity journal: every accepted event is appended to a local file before
//! [`crate::ActivityWriter::record`] returns, so a process that is killed (`SIGKILL`, the
//! OOM killer) loses no event it acknowledged: the next writer started on the same path
//! replays what the journal holds, and ids make the rows that were already written no-ops.
//!
//! Why it is built this way:
//!
//! - **One `write(2)` per event, no `fsync`.** A killed process's writes are in the page
//!   cache and survive it; an OS crash or power loss is not covered (that would cost an
//!   `fsync` per event on the hot path).
//! - **Journal order is queue order.** The append and the hand-over to the writer's queue
//!   happen under one lock, so the events the task has committed are always a prefix of
//!   the journal (minus those that went to the spill file, which is durable too). The
//!   task reports the sequence number of the last event it committed; everything up to
//!   it is in the database or the spill.
//! - **Two segments.** The journal writes to one file until it passes [`ROTATE_BYTES`],
//!   then seals it and writes to the other. A sealed segment is deleted as soon as its
//!   last event is committed, so the journal stays a few MiB under any load instead of
//!   growing while events keep arriving.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Size at which the current segment is sealed and the other one started.
pub(crate) const ROTATE_BYTES: u64 = 4 << 20;

struct State {
    file: File,
    /// Which of the two segment paths `file` is.
    segment: usize,
    bytes: u64,
    /// Sequence number of the next event.
    next_seq: u64,
    /// The sealed segment and the sequence number of its last event.
    sealed: Option<(usize, u64)>,
}

pub(crate) struct Journal {
    paths: [PathBuf; 2],
    state: Mutex<State>,
}

impl Journal {
    /// Opens the journal beside `base` (`<base>.journal.0` and `.1`), returning what an
    /// earlier process left in it (raw lines, for the caller to replay) and starting
    /// empty.
    pub(crate) fn open(base: &Path) -> io::Result<(Journal, Vec<u8>)> {
        let paths = [0, 1].map(|i| {
            let mut name = base.as_os_str().to_owned();
            name.push(format!(".journal.{i}"));
            PathBuf::from(name)
        });
        let mut leftover = Vec::new();
        for path in &paths {
            match File::open(path) {
                Ok(mut f) => {
                    f.read_to_end(&mut leftover)?;
                    // A line cut short by a kill must not glue onto the next segment's.
                    if !leftover.is_empty() && !leftover.ends_with(b"\n") {
                        leftover.push(b'\n');
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&paths[0])?;
        match std::fs::remove_file(&paths[1]) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok((
            Journal {
                paths,
                state: Mutex::new(State {
                    file,
                    segment: 0,
                    bytes: 0,
                    next_seq: 1,
                    sealed: None,
                }),
            },
            leftover,
        ))
    }

    /// Appends `line` (one encoded event, ending in a newline) and, under the same lock,
    /// runs `then` with the event's sequence number (the hand-over to the queue). When
    /// the write fails `then` gets 0 (not journaled; the error is logged): the event
    /// goes on without the protection rather than being lost now.
    pub(crate) fn append<T>(&self, line: &[u8], then: impl FnOnce(u64) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = state.file.write_all(line) {
            // A partial line may be there now: cut it, so the next one starts clean.
            let bytes = state.bytes;
            let _ = state.file.set_len(bytes);
            tracing::error!(path = %self.paths[state.segment].display(), error = %e, "cannot append to the activity journal");
            return then(0);
        }
        state.bytes += line.len() as u64;
        let seq = state.next_seq;
        state.next_seq += 1;
        let handed = then(seq);
        if state.bytes >= ROTATE_BYTES && state.sealed.is_none() {
            let next = 1 - state.segment;
            match OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.paths[next])
            {
                Ok(file) => {
                    state.sealed = Some((state.segment, seq));
                    state.file = file;
                    state.segment = next;
                    state.bytes = 0;
                }
                // Keep writing where we are; the next append tries again.
                Err(e) => {
                    tracing::warn!(path = %self.paths[next].display(), error = %e, "cannot start a new activity journal segment")
                }
            }
        }
        handed
    }

    /// Every event up to sequence number `seq` is in the database or the spill file: a
    /// sealed segment that ends at or before it is no longer needed.
    pub(crate) fn durable_through(&self, seq: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((segment, last)) = state.sealed
            && seq >= last
        {
            if let Err(e) = std::fs::remove_file(&self.paths[segment]) {
                tracing::warn!(path = %self.paths[segment].display(), error = %e, "cannot remove a settled activity journal segment");
            }
            state.sealed = None;
        }
    }

    /// Everything accepted is written (a clean shutdown): the journal is removed.
    pub(crate) fn clear(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let _ = state.file.set_len(0);
        for path in &self.paths {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_come_back_and_settled_segments_go() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("activity.spill");
        let (j, left) = Journal::open(&base).unwrap();
        assert!(left.is_empty());
        let line = vec![b'x'; 1 << 20];
        let mut line = line;
        line.push(b'\n');
        let mut last = 0;
        for _ in 0..5 {
            last = j.append(&line, |seq| seq);
        }
        assert_eq!(last, 5);
        // The first segment was sealed at its fourth event (4 MiB).
        assert!(j.paths[0].exists() && j.paths[1].exists());
        j.durable_through(3);
        assert!(
            j.paths[0].exists(),
            "event 4 of the sealed segment is not settled"
        );
        j.durable_through(4);
        assert!(!j.paths[0].exists(), "a settled segment is removed");
        drop(j);

        // A kill: the next open hands back what the journal held, and starts empty.
        let (j, left) = Journal::open(&base).unwrap();
        assert_eq!(left.len(), line.len());
        j.append(b"y\n", |_| ());
        j.clear();
        let (_j, left) = Journal::open(&base).unwrap();
        assert!(left.is_empty(), "a cleared journal hands back nothing");
    }
}
