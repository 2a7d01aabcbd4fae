//! Reading segments back: recovery scans and single-record reads.
//!
//! # What a scan skips, and why it is reported
//!
//! A writer appends each batch with one `write` and makes it durable with one `fdatasync`
//! before it acknowledges any record of it, and it never writes again into a segment once
//! its process is gone (a new process starts a new segment). So a crash can only leave one
//! batch half-written, the last of its writer's newest segment: a record cut short by the
//! end of the file, or one whose checksum fails because some of its blocks never reached
//! the disk (blocks that were never written read back as zeros). Such a torn tail was never
//! acknowledged, and dropping it loses nothing.
//!
//! The format cannot prove it, though: the same bytes are what a committed record looks like
//! after a file system truncated the file or zeroed its last blocks, and a committed record
//! whose bytes were damaged later and happen to be the last ones before the preallocated
//! zeros fails its checksum just like a torn write. The scan therefore reports a tail it
//! cannot read, as [`ScanReport::tail`], as it reports damage in the middle, and leaves the
//! decision to its caller, who knows whether the segment's writer is still appending (then
//! the tail is a commit in progress, read again later) or gone (then it is reported and its
//! bytes kept: a record that may have been acknowledged is never dropped without a word).
//! Only zeros after the last good record (preallocated space a crash exposed) are no damage.
//!
//! After a damaged record the scan goes on at the next good record: where the damaged
//! record's length says it ends if a good record starts there, else at the first offset
//! where a whole record with a valid checksum starts. One bad length field thus costs one
//! record, not the rest of the segment.

use super::{HEADER, MAX_RECORD};
use crate::{CoreError, CoreResult};
use std::fs;
use std::path::Path;

/// Bytes a scan could not read as a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Where the damaged bytes start (the header of the record that fails its checks).
    pub offset: u64,
    /// How many bytes, up to the next good record (or the last non-zero byte of the file).
    pub len: u64,
    /// Why the record at `offset` was refused.
    pub why: String,
}

/// What a scan of one segment found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Every good record: (offset of its header, payload).
    pub records: Vec<(u64, Vec<u8>)>,
    /// Damaged bytes with no good record after them: a torn write (never acknowledged), a
    /// commit still in progress, or a committed record damaged since; see the module docs.
    pub tail: Option<Damage>,
    /// Damaged records with good records after them: written, and damaged since.
    pub corrupt: Vec<Damage>,
}

fn header(data: &[u8], at: usize) -> Option<(usize, u32)> {
    let h = data.get(at..at + HEADER)?;
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
    Some((len, crc))
}

/// Scans a segment file from the start.
pub fn scan(path: &Path) -> CoreResult<ScanReport> {
    let data = fs::read(path)?;
    Ok(scan_bytes(&data))
}

/// Scans a segment file from `start`, the end of a record an earlier scan returned: a
/// reader following a segment that is still growing reads only what is new, not the whole
/// file again. Offsets in the report are the file's.
pub fn scan_from(path: &Path, start: u64) -> CoreResult<ScanReport> {
    use std::io::{Read, Seek, SeekFrom};
    if start == 0 {
        return scan(path);
    }
    let mut f = fs::File::open(path)?;
    f.seek(SeekFrom::Start(start))?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    let mut report = scan_bytes(&data);
    for (offset, _) in &mut report.records {
        *offset += start;
    }
    for damage in report.corrupt.iter_mut().chain(report.tail.as_mut()) {
        damage.offset += start;
    }
    Ok(report)
}

/// Checks the record whose header is at `at`: its length, or why it is refused.
fn check(data: &[u8], at: usize) -> Result<usize, String> {
    let Some((len, crc)) = header(data, at) else {
        return Err("record header cut short by the end of the file".to_string());
    };
    if len == 0 {
        return Err("empty record".to_string());
    }
    if len > MAX_RECORD {
        return Err(format!("record length {len} too large"));
    }
    let Some(payload) = data.get(at + HEADER..at + HEADER + len) else {
        return Err(format!(
            "record cut short by the end of the file ({} of {len} bytes)",
            data.len() - at - HEADER
        ));
    };
    if crc32c::crc32c(payload) != crc {
        return Err("bad checksum".to_string());
    }
    Ok(len)
}

/// The length up to the last non-zero byte. Up to 64 KiB of zeros end a live segment and
/// a refresh reads them each time: they are skipped a word at a time.
fn used_len(data: &[u8]) -> usize {
    let mut end = data.len();
    while end >= 8 && data[end - 8..end] == [0u8; 8] {
        end -= 8;
    }
    data[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1)
}

/// Scans segment contents (the file's bytes).
pub fn scan_bytes(data: &[u8]) -> ScanReport {
    let mut report = ScanReport::default();
    // Zeros after the last non-zero byte are the zeros a writer writes ahead, or the
    // unwritten blocks of a torn write: not records, and nothing of anyone's.
    let used = used_len(data);
    let mut at = 0usize;
    while at < used {
        let why = match check(data, at) {
            Ok(len) => {
                report
                    .records
                    .push((at as u64, data[at + HEADER..at + HEADER + len].to_vec()));
                at += HEADER + len;
                continue;
            }
            Err(why) => why,
        };
        let claimed = header(data, at)
            .map(|(len, _)| at + HEADER + len)
            .filter(|&end| end < used && check(data, end).is_ok());
        let next = claimed.or_else(|| (at + 1..used).find(|&p| check(data, p).is_ok()));
        let damage = Damage {
            offset: at as u64,
            len: (next.unwrap_or(used) - at) as u64,
            why,
        };
        match next {
            Some(next) => {
                report.corrupt.push(damage);
                at = next;
            }
            None => {
                report.tail = Some(damage);
                break;
            }
        }
    }
    report
}

/// Reads and checks the one record whose header is at `offset`. A file too short for the
/// record, or a record failing its checks, is `Corrupt`; any other failure (EIO, EISDIR,
/// EMFILE) stays `Io`: it may go away, and the message must not be given up for it.
pub fn read_record(path: &Path, offset: u64) -> CoreResult<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let short = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            CoreError::Corrupt(format!("{}: short record at {offset}", path.display()))
        }
        _ => CoreError::Io(e),
    };
    let mut f = fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut h = [0u8; HEADER];
    f.read_exact(&mut h).map_err(short)?;
    let (len, crc) = header(&h, 0).unwrap_or((0, 0));
    if len > MAX_RECORD {
        return Err(CoreError::Corrupt(format!(
            "{}: record length {len} too large at {offset}",
            path.display()
        )));
    }
    let mut payload = vec![0u8; len];
    f.read_exact(&mut payload).map_err(short)?;
    if crc32c::crc32c(&payload) != crc {
        return Err(CoreError::Corrupt(format!(
            "{}: bad checksum at {offset}",
            path.display()
        )));
    }
    Ok(payload)
}
