//! `oxipost._core.spool`: segment writers with group commit, and segment scans.
//!
//! Payloads are copied once into the writer's queue (the committer thread owns them);
//! the GIL is released for scans and reads.

#[pyo3::pymodule(submodule)]
pub mod spool {
    use crate::error::PyCoreError;
    use oxipost_core::spool as core;
    use pyo3::prelude::*;
    use pyo3::types::PyBytes;
    use std::path::PathBuf;
    use std::sync::Mutex;

    type Completion = (u64, u64, u64, Option<(i32, String)>);

    fn convert(c: core::Completion) -> Completion {
        match c.result {
            Ok(loc) => (c.ticket, loc.seq, loc.offset, None),
            Err(e) => (c.ticket, 0, 0, Some(e)),
        }
    }

    /// A segment writer: `submit` queues a record for the next group commit;
    /// `poll` returns `(ticket, seq, offset, error)` for every record committed (or failed)
    /// since the last poll; `fileno()` becomes readable when there are some.
    #[pyclass(frozen, module = "oxipost._core.spool")]
    pub struct Writer {
        inner: Mutex<Option<core::Writer>>,
        event_fd: i32,
    }

    #[pymethods]
    impl Writer {
        #[new]
        #[pyo3(signature = (directory, name, seq, segment_limit, owner=None))]
        fn new(
            py: Python<'_>,
            directory: PathBuf,
            name: &str,
            seq: u64,
            segment_limit: u64,
            owner: Option<(u32, u32)>,
        ) -> Result<Self, PyCoreError> {
            let w = py
                .detach(|| core::Writer::open_owned(&directory, name, seq, segment_limit, owner))?;
            let event_fd = w.event_fd();
            Ok(Writer {
                inner: Mutex::new(Some(w)),
                event_fd,
            })
        }

        fn submit(&self, payload: &[u8]) -> PyResult<u64> {
            let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(w) => Ok(w.submit(payload.to_vec())),
                None => Err(pyo3::exceptions::PyValueError::new_err("writer is closed")),
            }
        }

        /// The least seconds between the starts of two commits (records nobody waits on
        /// share an fdatasync); 0 commits as soon as anything is pending.
        fn set_linger(&self, seconds: f64) {
            let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = guard.as_ref() {
                w.set_linger(std::time::Duration::from_secs_f64(seconds.max(0.0)));
            }
        }

        fn fileno(&self) -> i32 {
            self.event_fd
        }

        fn poll(&self) -> Vec<Completion> {
            let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(w) => w.poll().into_iter().map(convert).collect(),
                None => Vec::new(),
            }
        }

        /// Blocks (without the GIL) until `ticket` has completed.
        fn wait(&self, py: Python<'_>, ticket: u64) -> Vec<Completion> {
            let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(w) => py
                    .detach(|| w.wait(ticket))
                    .into_iter()
                    .map(convert)
                    .collect(),
                None => Vec::new(),
            }
        }

        fn close(&self, py: Python<'_>) {
            let taken = self.inner.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(mut w) = taken {
                py.detach(|| w.close());
            }
        }
    }

    /// Scans a segment from `start` (0, or the end of a record an earlier scan returned):
    /// `(records [(offset, payload)], tail or None, corrupt [damage])`, each damage
    /// `(offset, length, why)`: the tail has no good record after it (see the core's docs).
    #[pyfunction]
    #[pyo3(signature = (path, start = 0))]
    #[allow(clippy::type_complexity)]
    fn scan<'py>(
        py: Python<'py>,
        path: PathBuf,
        start: u64,
    ) -> Result<
        (
            Vec<(u64, Bound<'py, PyBytes>)>,
            Option<(u64, u64, String)>,
            Vec<(u64, u64, String)>,
        ),
        PyCoreError,
    > {
        let report = py.detach(|| core::scan_from(&path, start))?;
        let records = report
            .records
            .iter()
            .map(|(off, p)| (*off, PyBytes::new(py, p)))
            .collect();
        let damage = |d: core::Damage| (d.offset, d.len, d.why);
        Ok((
            records,
            report.tail.map(damage),
            report.corrupt.into_iter().map(damage).collect(),
        ))
    }

    /// Reads the record whose header is at `offset`; CorruptError if it fails its checks.
    #[pyfunction]
    fn read_record<'py>(
        py: Python<'py>,
        path: PathBuf,
        offset: u64,
    ) -> Result<Bound<'py, PyBytes>, PyCoreError> {
        let payload = py.detach(|| core::read_record(&path, offset))?;
        Ok(PyBytes::new(py, &payload))
    }

    /// One payload framed as it is stored (for tests and tools that build segments).
    #[pyfunction]
    fn frame<'py>(py: Python<'py>, payload: &[u8]) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &core::frame(payload))
    }
}
