//! Reading segments back: recovery scans and single-record reads.

use super::{HEADER, MAX_RECORD};
use crate::{CoreError, CoreResult};
use std::fs;
use std::path::Path;

/// What a scan of one segment found.
#[derive(Debug, Default)]
pub struct ScanReport {
    /// Every good record: (offset of its header, payload).
    pub records: Vec<(u64, Vec<u8>)>,
    /// Where a torn tail starts (a write that never completed, so never acknowledged).
    pub torn_at: Option<u64>,
    /// Damaged records that were not at the tail: (offset, why). Their messages go to
    /// `corrupt`; the scan goes on after each one when its length can be trusted.
    pub corrupt: Vec<(u64, String)>,
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
    for (offset, _) in &mut report.corrupt {
        *offset += start;
    }
    if let Some(at) = &mut report.torn_at {
        *at += start;
    }
    Ok(report)
}

/// Scans segment contents (the file's bytes).
pub fn scan_bytes(data: &[u8]) -> ScanReport {
    let mut report = ScanReport::default();
    let mut at = 0usize;
    while at < data.len() {
        let Some((len, crc)) = header(data, at) else {
            report.torn_at = Some(at as u64);
            break;
        };
        if len == 0 && data[at..].iter().all(|&b| b == 0) {
            // Zeros after the last record: preallocated space a crash exposed.
            report.torn_at = Some(at as u64);
            break;
        }
        let end = at + HEADER + len;
        if len > MAX_RECORD {
            report
                .corrupt
                .push((at as u64, format!("record length {len} too large")));
            break;
        }
        if end > data.len() {
            report.torn_at = Some(at as u64);
            break;
        }
        let payload = &data[at + HEADER..end];
        if crc32c::crc32c(payload) != crc {
            let rest_is_blank = data[end..].iter().all(|&b| b == 0);
            if rest_is_blank {
                // The last record of the file did not reach the disk whole: never committed.
                report.torn_at = Some(at as u64);
                break;
            }
            report.corrupt.push((at as u64, "bad checksum".to_string()));
        } else if len == 0 {
            report.corrupt.push((at as u64, "empty record".to_string()));
        } else {
            report.records.push((at as u64, payload.to_vec()));
        }
        at = end;
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
