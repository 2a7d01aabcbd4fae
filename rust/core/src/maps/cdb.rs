//! The constant database format of D. J. Bernstein, as tinycdb and Postfix's `cdb:` use it:
//! a 2048-byte header of 256 (position, slot count) pairs, the records `klen dlen key data`,
//! then 256 open-addressing hash tables of (hash, record position) slots. All integers are
//! little-endian u32, so one file holds at most 4 GiB.
//!
//! Writes go to a temporary file beside the target, are fsynced and renamed over it, so a
//! reader (which maps the file once) sees the old table or the new one, never a mixture.

use super::Fold;
use crate::{CoreError, CoreResult};
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const HEADER: usize = 2048;
/// Keys looked up together by `query_lines` (enough misses in flight to fill the CPU's
/// queue of outstanding loads).
const WARM_BATCH: usize = 16;

/// The cdb hash: `h = 5381; h = (h * 33) ^ byte`.
pub fn cdb_hash(key: &[u8]) -> u32 {
    key.iter().fold(5381u32, |h, &b| {
        (h.wrapping_shl(5).wrapping_add(h)) ^ u32::from(b)
    })
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn too_big() -> CoreError {
    CoreError::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        "cdb file would exceed 4 GiB",
    ))
}

/// Serialises records into the cdb format in memory; `finish` returns the file image.
pub struct CdbBuilder {
    out: Vec<u8>,
    slots: Vec<(u32, u32)>,
}

impl Default for CdbBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl CdbBuilder {
    pub fn new() -> Self {
        CdbBuilder {
            out: vec![0; HEADER],
            slots: Vec::new(),
        }
    }

    /// A builder with room for about `bytes` of records and `records` records.
    pub fn with_capacity(bytes: usize, records: usize) -> Self {
        let mut out = Vec::with_capacity(HEADER + bytes + records * 24);
        out.resize(HEADER, 0);
        CdbBuilder {
            out,
            slots: Vec::with_capacity(records),
        }
    }

    pub fn add(&mut self, key: &[u8], value: &[u8]) -> CoreResult<()> {
        self.add_hashed(key, value, cdb_hash(key)).map(|_| ())
    }

    /// Adds a record whose key hash the caller has computed; returns its position.
    pub fn add_hashed(&mut self, key: &[u8], value: &[u8], hash: u32) -> CoreResult<u32> {
        let pos = u32::try_from(self.out.len()).map_err(|_| too_big())?;
        let klen = u32::try_from(key.len()).map_err(|_| too_big())?;
        let dlen = u32::try_from(value.len()).map_err(|_| too_big())?;
        put_u32(&mut self.out, klen);
        put_u32(&mut self.out, dlen);
        self.out.extend_from_slice(key);
        self.out.extend_from_slice(value);
        self.slots.push((hash, pos));
        Ok(pos)
    }

    /// The key of the record at `pos` (a position `add_hashed` returned).
    pub fn key_at(&self, pos: u32) -> &[u8] {
        let pos = pos as usize;
        let klen = u32::from_le_bytes([
            self.out[pos],
            self.out[pos + 1],
            self.out[pos + 2],
            self.out[pos + 3],
        ]) as usize;
        &self.out[pos + 8..pos + 8 + klen]
    }

    pub fn finish(self) -> CoreResult<Vec<u8>> {
        Ok(self.finish_inner(false)?.unwrap_or_default())
    }

    /// As `finish`, but `None` when two records have the same key. Duplicates are found
    /// while the hash tables are filled, one small table at a time, which is much cheaper
    /// than a set of every key on the side.
    pub fn finish_if_unique(self) -> CoreResult<Option<Vec<u8>>> {
        self.finish_inner(true)
    }

    fn finish_inner(mut self, unique: bool) -> CoreResult<Option<Vec<u8>>> {
        let mut counts = [0usize; 256];
        for &(h, _) in &self.slots {
            counts[(h & 255) as usize] += 1;
        }
        // Group the slots by table (a counting sort keeps insertion order within a table,
        // which is the order lookups must find duplicates in).
        let mut starts = [0usize; 257];
        for i in 0..256 {
            starts[i + 1] = starts[i] + counts[i];
        }
        let mut grouped = vec![(0u32, 0u32); self.slots.len()];
        let mut fill = starts;
        for &(h, p) in &self.slots {
            let t = (h & 255) as usize;
            grouped[fill[t]] = (h, p);
            fill[t] += 1;
        }
        let mut header = Vec::with_capacity(HEADER);
        let mut table: Vec<(u32, u32)> = Vec::new();
        for t in 0..256 {
            let entries = &grouped[starts[t]..starts[t + 1]];
            let nslots = entries.len() * 2;
            let tpos = u32::try_from(self.out.len()).map_err(|_| too_big())?;
            put_u32(&mut header, tpos);
            put_u32(&mut header, u32::try_from(nslots).map_err(|_| too_big())?);
            table.clear();
            table.resize(nslots, (0, 0));
            for &(h, p) in entries {
                let mut i = ((h >> 8) as usize) % nslots;
                while table[i].1 != 0 {
                    if unique && table[i].0 == h && self.key_at(table[i].1) == self.key_at(p) {
                        return Ok(None);
                    }
                    i = (i + 1) % nslots;
                }
                table[i] = (h, p);
            }
            for &(h, p) in &table {
                put_u32(&mut self.out, h);
                put_u32(&mut self.out, p);
            }
        }
        u32::try_from(self.out.len()).map_err(|_| too_big())?;
        self.out[..HEADER].copy_from_slice(&header);
        Ok(Some(self.out))
    }
}

/// Writes `image` to `path` atomically: temporary file in the same directory, fsync, rename,
/// fsync of the directory.
pub fn write_file_atomically(path: &Path, image: &[u8]) -> CoreResult<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| CoreError::Syntax(format!("{}: not a file name", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(image)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    Ok(result?)
}

/// A read-only memory map of a cdb file.
pub struct CdbReader {
    ptr: *const u8,
    len: usize,
    /// Which key form this file uses, learnt from the first hit as Postfix's dict_cdb does
    /// (TRY0NULL / TRY1NULL): 0 unknown, 1 without the NUL, 2 with it.
    nul_style: std::sync::atomic::AtomicU8,
}

// SAFETY: the mapping is read-only and private to this value; nothing mutates it.
unsafe impl Send for CdbReader {}
// SAFETY: as above: shared reads of immutable memory.
unsafe impl Sync for CdbReader {}

impl Drop for CdbReader {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: ptr/len come from a successful mmap in `open` and are unmapped once.
            unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
        }
    }
}

fn corrupt(path: &Path) -> CoreError {
    CoreError::Corrupt(format!("{}: not a cdb file", path.display()))
}

impl CdbReader {
    pub fn open(path: &Path) -> CoreResult<CdbReader> {
        use std::os::unix::io::AsRawFd;
        let f = File::open(path)?;
        let len = usize::try_from(f.metadata()?.len()).map_err(|_| corrupt(path))?;
        if len < HEADER {
            return Err(corrupt(path));
        }
        // SAFETY: a private read-only mapping of a file we hold open; the result is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error().into());
        }
        let reader = CdbReader {
            ptr: ptr as *const u8,
            len,
            nul_style: std::sync::atomic::AtomicU8::new(0),
        };
        reader.validate().map_err(|_| corrupt(path))?;
        Ok(reader)
    }

    fn data(&self) -> &[u8] {
        // SAFETY: ptr/len describe a live mapping owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn u32_at(&self, pos: usize) -> Option<u32> {
        let b = self.data().get(pos..pos + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Every header entry must point inside the file: anything else is not a cdb file
    /// (Postfix's "not a cdb file" fatal, instead of wild reads later).
    fn validate(&self) -> Result<(), ()> {
        for t in 0..256 {
            let pos = self.u32_at(t * 8).ok_or(())? as usize;
            let n = self.u32_at(t * 8 + 4).ok_or(())? as usize;
            if pos < HEADER || pos.checked_add(n * 8).ok_or(())? > self.len {
                return Err(());
            }
        }
        Ok(())
    }

    /// The first value stored under `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let h = cdb_hash(key);
        let t = (h & 255) as usize;
        let tpos = self.u32_at(t * 8)? as usize;
        let nslots = self.u32_at(t * 8 + 4)? as usize;
        if nslots == 0 {
            return None;
        }
        let mut slot = ((h >> 8) as usize) % nslots;
        for _ in 0..nslots {
            let spos = tpos + slot * 8;
            let sh = self.u32_at(spos)?;
            let rpos = self.u32_at(spos + 4)? as usize;
            if rpos == 0 {
                return None;
            }
            if sh == h {
                let klen = self.u32_at(rpos)? as usize;
                let dlen = self.u32_at(rpos + 4)? as usize;
                let kstart = rpos + 8;
                let data = self.data();
                if data.get(kstart..kstart + klen)? == key {
                    return data.get(kstart + klen..kstart + klen + dlen);
                }
            }
            slot = (slot + 1) % nslots;
        }
        None
    }

    /// The value for a key as Postfix's readers look it up: as given, or with the C
    /// string's NUL that some writers store; `scratch` holds the NUL form. The value is
    /// what C code sees, without trailing NULs.
    pub fn get_c<'a>(&'a self, key: &[u8], scratch: &mut Vec<u8>) -> Option<&'a [u8]> {
        use std::sync::atomic::Ordering::Relaxed;
        let style = self.nul_style.load(Relaxed);
        let mut found = None;
        if style != 2 {
            found = self.get(key);
            if found.is_some() {
                self.nul_style.store(1, Relaxed);
            }
        }
        if found.is_none() && style != 1 {
            scratch.clear();
            scratch.extend_from_slice(key);
            scratch.push(0);
            found = self.get(scratch);
            if found.is_some() {
                self.nul_style.store(2, Relaxed);
            }
        }
        found.map(|v| {
            let end = v.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            &v[..end]
        })
    }

    /// `postmap -q -`: one key per line of `input` (a trailing CR dropped), folded when
    /// asked; returns `key<TAB>value<LF>` for each key found (`suffix` after the key, as
    /// postalias prints `key:`), and how many were found.
    pub fn query_lines(&self, input: &[u8], fold: Fold, suffix: &[u8]) -> (Vec<u8>, usize) {
        // (the key as given in `input`, the key as looked up in `probes`): folding in
        // Unicode changes a key's length.
        let mut keys = Vec::new();
        let mut folded = Vec::new();
        let mut start = 0;
        while start < input.len() {
            let end = memchr::memchr(b'\n', &input[start..]).map_or(input.len(), |i| start + i);
            let line = &input[start..end];
            let key = start..start + line.strip_suffix(b"\r").map_or(line.len(), |l| l.len());
            let probe = if fold == Fold::Keep {
                key.clone()
            } else {
                let at = folded.len();
                fold.append(&input[key.clone()], &mut folded);
                at..folded.len()
            };
            keys.push((key, probe));
            start = end + 1;
        }
        let probes = if fold == Fold::Keep {
            input
        } else {
            &folded[..]
        };
        let mut out = Vec::new();
        let mut found = 0;
        let mut scratch = Vec::new();
        for chunk in keys.chunks(WARM_BATCH) {
            self.warm(chunk.iter().map(|(_, p)| &probes[p.clone()]));
            for (key, probe) in chunk {
                if let Some(v) = self.get_c(&probes[probe.clone()], &mut scratch) {
                    out.extend_from_slice(&input[key.clone()]);
                    out.extend_from_slice(suffix);
                    out.push(b'\t');
                    out.extend_from_slice(v);
                    out.push(b'\n');
                    found += 1;
                }
            }
        }
        (out, found)
    }

    /// Touches the first hash slot and record of each key before the real lookups: the
    /// loads of a batch are independent, so the CPU overlaps their cache misses instead of
    /// taking them one after another (a big table is far larger than the caches).
    fn warm<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) {
        let mut records = [0usize; WARM_BATCH];
        let mut n = 0;
        let mut sink = 0u32;
        for key in keys {
            let h = cdb_hash(key);
            let t = (h & 255) as usize;
            let (Some(tpos), Some(nslots)) = (self.u32_at(t * 8), self.u32_at(t * 8 + 4)) else {
                continue;
            };
            if nslots == 0 {
                continue;
            }
            let spos = tpos as usize + ((h >> 8) % nslots) as usize * 8;
            if let Some(rpos) = self.u32_at(spos + 4) {
                records[n] = rpos as usize;
                n += 1;
            }
        }
        for &rpos in &records[..n] {
            sink ^= self.u32_at(rpos).unwrap_or(0);
        }
        std::hint::black_box(sink);
    }

    /// Every record in file order (what `postmap -s` prints).
    pub fn items(&self) -> Vec<(&[u8], &[u8])> {
        let end = (0..256)
            .filter_map(|t| self.u32_at(t * 8))
            .min()
            .unwrap_or(HEADER as u32) as usize;
        let data = self.data();
        let mut out = Vec::new();
        let mut pos = HEADER;
        while pos + 8 <= end {
            let (Some(klen), Some(dlen)) = (self.u32_at(pos), self.u32_at(pos + 4)) else {
                break;
            };
            let (klen, dlen) = (klen as usize, dlen as usize);
            let (Some(k), Some(v)) = (
                data.get(pos + 8..pos + 8 + klen),
                data.get(pos + 8 + klen..pos + 8 + klen + dlen),
            ) else {
                break;
            };
            out.push((k, v));
            pos += 8 + klen + dlen;
        }
        out
    }
}
