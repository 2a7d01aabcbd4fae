//! The spool: the queue is a log.
//!
//! Each writer (an smtpd worker, pickup, qmgr) appends records to its own segment files,
//! `<dir>/<writer>-<seq>.seg`. A record is `[u32 length][u32 crc32c][payload]`
//! (little-endian); what the payload means is the caller's business (msgpack from Python).
//!
//! Group commit: callers `submit` records and get a ticket; one committer thread per
//! writer takes everything pending, writes it with one `write`, makes it durable with one
//! `fdatasync`, and reports the tickets as committed (or failed, with the error) through
//! `poll`. It signals an eventfd after each batch so an event loop can watch one file
//! descriptor instead of parking a thread per message.
//!
//! A failed batch is cut off again (`ftruncate` to the last committed length), so nothing
//! of it survives to be mistaken for acknowledged mail; if even that fails, the writer moves
//! to a fresh segment. A panic while a batch is written (a bug; `fault` injects one for the
//! tests) fails that batch the same way, and the committer goes on: without that, its thread
//! would be gone and every caller waiting on a ticket would wait for ever. Recovery (`scan`) reports every damaged record with its bytes' extent,
//! a torn tail apart from damage in the middle (see `scan`'s docs for why the format cannot
//! prove a tail was never acknowledged), and goes on at the next good record.

mod scan;

pub use scan::{read_record, scan, scan_from, Damage, ScanReport};

use crate::event::{signal, EventFd};
use crate::fault::Faults;
use crate::{CoreError, CoreResult};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Header bytes before each payload: length and CRC-32C.
pub const HEADER: usize = 8;
/// The largest payload a record may carry; a larger length field is corruption.
pub const MAX_RECORD: usize = 1 << 30;

/// Frames one payload as it is stored.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    frame_into(&mut out, payload);
    out
}

fn frame_into(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The file name of segment `seq` of `writer`.
pub fn segment_name(writer: &str, seq: u64) -> String {
    format!("{writer}-{seq:08}.seg")
}

/// Where a committed record lives: segment number and byte offset of its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub seq: u64,
    pub offset: u64,
}

/// The outcome of one submitted record.
#[derive(Debug)]
pub struct Completion {
    pub ticket: u64,
    pub result: Result<Location, (i32, String)>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    pending: Vec<(u64, Vec<u8>)>,
    done: VecDeque<Completion>,
    next_ticket: u64,
    closing: bool,
    /// The committer sleeps on `wake`: only then does a submit need to wake it (a notify
    /// is a futex syscall; while the committer is in fdatasync, records just pile up).
    idle: bool,
    /// The least time between the starts of two commits (see [`Writer::set_linger`]).
    linger: Duration,
}

/// A segment writer with its committer thread.
pub struct Writer {
    shared: Arc<Shared>,
    event: EventFd,
    thread: Option<JoinHandle<()>>,
}

/// Zeros written past each batch that ends beyond the zeros already there.
///
/// A batch appended to a file grows its size and fills blocks the file system had only
/// reserved: both are metadata, so its fdatasync commits the file system's journal, and
/// ext4 converts the reserved extent in a kernel worker besides. A batch written over
/// zeros that are already on disk changes neither, and its fdatasync only writes the data
/// (PostgreSQL zero-fills its WAL segments for the same reason). One batch in about forty
/// of smtpd's pays for the next 64 KiB; a reader following the segment reads at most this
/// much of zeros past the last record, which the scan already takes as no record.
const ZEROED_AHEAD: u64 = 64 << 10;

struct Segments {
    dir: PathBuf,
    writer: String,
    seq: u64,
    file: File,
    /// Where the next batch goes: the end of the last committed one.
    len: u64,
    /// The file's size: `len` and the zeros after it.
    zeroed_to: u64,
    limit: u64,
    owner: Option<(u32, u32)>,
    faults: Faults,
}

impl Segments {
    fn open(
        dir: &Path,
        writer: &str,
        seq: u64,
        limit: u64,
        owner: Option<(u32, u32)>,
    ) -> io::Result<Segments> {
        let path = dir.join(segment_name(writer, seq));
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        if let Some((uid, gid)) = owner {
            // SAFETY: fchown on a valid, owned descriptor.
            if unsafe { libc::fchown(file.as_raw_fd(), uid, gid) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let len = file.metadata()?.len();
        // Preallocate so appends rarely wait for block allocation; not every file system can.
        // SAFETY: fallocate on a valid, owned descriptor; KEEP_SIZE leaves the length alone.
        unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_KEEP_SIZE,
                len as libc::off_t,
                limit as libc::off_t,
            );
        }
        sync_dir(dir)?;
        Ok(Segments {
            dir: dir.to_path_buf(),
            writer: writer.to_string(),
            seq,
            file,
            len,
            zeroed_to: len,
            limit,
            owner,
            faults: Faults::from_env(),
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        let mut next = Segments::open(
            &self.dir,
            &self.writer,
            self.seq + 1,
            self.limit,
            self.owner,
        )?;
        next.faults = std::mem::take(&mut self.faults);
        *self = next;
        Ok(())
    }

    /// Writes and syncs one batch; on error, cuts the file back to its committed length.
    fn commit(&mut self, buf: &[u8]) -> io::Result<u64> {
        if self.len > 0 && self.len + buf.len() as u64 > self.limit {
            self.rotate()?;
        }
        let start = self.len;
        let end = start + buf.len() as u64;
        let written = if end > self.zeroed_to {
            let mut ahead = Vec::with_capacity(buf.len() + ZEROED_AHEAD as usize);
            ahead.extend_from_slice(buf);
            ahead.resize(buf.len() + ZEROED_AHEAD as usize, 0);
            self.file
                .write_all_at(&ahead, start)
                .map(|()| self.zeroed_to = end + ZEROED_AHEAD)
        } else {
            self.file.write_all_at(buf, start)
        };
        self.faults.point("spool-commit");
        match written.and_then(|()| self.file.sync_data()) {
            Ok(()) => {
                self.len = end;
                Ok(start)
            }
            Err(e) => {
                self.cut_back();
                Err(e)
            }
        }
    }

    /// Drops whatever a failed batch left after the committed length.
    fn cut_back(&mut self) {
        self.zeroed_to = self.len;
        if self
            .file
            .set_len(self.len)
            .and_then(|()| self.file.sync_data())
            .is_err()
        {
            // The tail may hold part of a failed batch: never append after it.
            let _ = self.rotate();
        }
    }

    /// [`Segments::commit`], a panic inside it reported as the batch's error (the batch
    /// cut back as after a failed write).
    fn commit_contained(&mut self, buf: &[u8]) -> io::Result<u64> {
        match panic::catch_unwind(AssertUnwindSafe(|| self.commit(buf))) {
            Ok(outcome) => outcome,
            Err(cause) => {
                self.cut_back();
                let what = cause
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| cause.downcast_ref::<&str>().copied())
                    .unwrap_or("panic");
                Err(io::Error::other(format!("queue writer failed: {what}")))
            }
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Writer {
    /// Opens (or continues) `writer`'s segments in `dir`, starting at segment `seq`.
    /// `segment_limit` is the size after which a new segment starts.
    pub fn open(dir: &Path, writer: &str, seq: u64, segment_limit: u64) -> CoreResult<Writer> {
        Writer::open_owned(dir, writer, seq, segment_limit, None)
    }

    /// As [`Writer::open`], each segment file handed to `owner` (uid, gid) when it is
    /// created: a root process that queues mail (local(8) forwarding) must leave segments
    /// the queue manager, running as mail_owner, can read.
    pub fn open_owned(
        dir: &Path,
        writer: &str,
        seq: u64,
        segment_limit: u64,
        owner: Option<(u32, u32)>,
    ) -> CoreResult<Writer> {
        if writer.is_empty() || writer.contains('/') {
            return Err(CoreError::Syntax(format!("bad writer name: {writer:?}")));
        }
        fs::create_dir_all(dir)?;
        let mut segments = Segments::open(dir, writer, seq, segment_limit, owner)?;
        let event = EventFd::new()?;
        let event_fd = event.raw();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("spool-{writer}"))
            .spawn(move || committer(&worker, &mut segments, event_fd))?;
        Ok(Writer {
            shared,
            event,
            thread: Some(thread),
        })
    }

    /// Makes the committer wait until `linger` has passed since its previous commit
    /// began before it starts the next, so that records arriving in that time share one
    /// fdatasync. For a writer nobody waits on (qmgr's state journal, whose records guard
    /// no acknowledgement), a commit per record costs disk and CPU and gains nothing.
    pub fn set_linger(&self, linger: Duration) {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.linger = linger;
    }

    /// Queues one payload for the next group commit; returns its ticket.
    pub fn submit(&self, payload: Vec<u8>) -> u64 {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.next_ticket += 1;
        let ticket = st.next_ticket;
        st.pending.push((ticket, payload));
        let idle = st.idle;
        drop(st);
        if idle {
            self.shared.wake.notify_one();
        }
        ticket
    }

    /// The eventfd that becomes readable when completions are waiting.
    pub fn event_fd(&self) -> RawFd {
        self.event.raw()
    }

    /// Takes every completion reported so far (and clears the eventfd).
    pub fn poll(&self) -> Vec<Completion> {
        self.event.clear();
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.done.drain(..).collect()
    }

    /// Blocks until every ticket up to `ticket` has completed; returns their completions.
    pub fn wait(&self, ticket: u64) -> Vec<Completion> {
        let mut out = Vec::new();
        loop {
            out.extend(self.poll());
            if out.iter().any(|c| c.ticket >= ticket) {
                return out;
            }
            self.event.wait(100);
        }
    }

    /// Commits what is pending, stops the committer thread.
    pub fn close(&mut self) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            st.closing = true;
        }
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.close();
    }
}

fn committer(shared: &Shared, segments: &mut Segments, event_fd: RawFd) {
    let mut last_start: Option<Instant> = None;
    loop {
        let batch = {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            while st.pending.is_empty() && !st.closing {
                st.idle = true;
                st = shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.idle = false;
            }
            if st.pending.is_empty() && st.closing {
                return;
            }
            let wait = last_start.map_or(Duration::ZERO, |t| st.linger.saturating_sub(t.elapsed()));
            if !wait.is_zero() && !st.closing {
                drop(st);
                std::thread::sleep(wait);
                st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            }
            last_start = Some(Instant::now());
            std::mem::take(&mut st.pending)
        };
        let mut buf = Vec::with_capacity(batch.iter().map(|(_, p)| p.len() + HEADER).sum());
        let mut offsets = Vec::with_capacity(batch.len());
        for (_, payload) in &batch {
            offsets.push(buf.len() as u64);
            frame_into(&mut buf, payload);
        }
        let outcome = segments.commit_contained(&buf);
        let seq = segments.seq;
        let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
        for ((ticket, _), rel) in batch.iter().zip(offsets) {
            let result = match &outcome {
                Ok(start) => Ok(Location {
                    seq,
                    offset: start + rel,
                }),
                Err(e) => Err((e.raw_os_error().unwrap_or(libc::EIO), e.to_string())),
            };
            st.done.push_back(Completion {
                ticket: *ticket,
                result,
            });
        }
        drop(st);
        signal(event_fd);
    }
}

#[cfg(test)]
mod tests;
