//! `oxipost._core.mailbox`: Maildir and mbox writes for local(8)/virtual(8).
//!
//! Every delivery returns (dsn status, permanent?, text, warning); the GIL
//! is released for the whole write (the message bytes are immutable, so
//! borrowing them while detached is sound).

#[pyo3::pymodule(submodule)]
pub mod mailbox {
    use oxipost_core::mailbox::{self as core, Delivery, Job, MboxLocking};
    use pyo3::exceptions::{PyOSError, PyValueError};
    use pyo3::prelude::*;
    use std::path::Path;
    use std::time::Duration;

    type Outcome = (String, bool, String, String);

    fn outcome(d: Delivery) -> Outcome {
        let p = d.permanent();
        (d.status, p, d.text, d.warning)
    }

    fn ids(uid: Option<u32>, gid: Option<u32>) -> Option<(u32, u32)> {
        uid.map(|u| (u, gid.unwrap_or(u)))
    }

    /// Delivers into the Maildir `path` (tmp → link into new → group syncfs).
    #[pyfunction]
    #[pyo3(signature = (path, prefix, content, hostname, uid=None, gid=None))]
    fn maildir_deliver(
        py: Python<'_>,
        path: &str,
        prefix: &[u8],
        content: &[u8],
        hostname: &str,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Outcome {
        let job = maildir_job(path, prefix, content, hostname, uid, gid);
        outcome(py.detach(|| job.run()))
    }

    /// Appends to the mbox file `path` under the chosen locks.
    #[pyfunction]
    #[pyo3(signature = (path, sender, prefix, content, *, fcntl=true, flock=false,
                        dotlock=true, attempts=20, delay=1.0, stale=500.0,
                        char_devices=false, dotlock_may_fail=false, uid=None, gid=None))]
    #[allow(clippy::too_many_arguments)]
    fn mbox_deliver(
        py: Python<'_>,
        path: &str,
        sender: &str,
        prefix: &[u8],
        content: &[u8],
        fcntl: bool,
        flock: bool,
        dotlock: bool,
        attempts: u32,
        delay: f64,
        stale: f64,
        char_devices: bool,
        dotlock_may_fail: bool,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Outcome {
        let mut how = locking(fcntl, flock, dotlock, attempts, delay, stale);
        how.char_devices = char_devices;
        how.dotlock_may_fail = dotlock_may_fail;
        let job = mbox_job(path, sender, prefix, content, how, uid, gid);
        outcome(py.detach(|| job.run()))
    }

    fn maildir_job(
        path: &str,
        prefix: &[u8],
        content: &[u8],
        hostname: &str,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Job {
        Job::Maildir {
            dir: path.into(),
            prefix: prefix.to_vec(),
            content: content.to_vec(),
            hostname: hostname.into(),
            ids: ids(uid, gid),
        }
    }

    fn mbox_job(
        path: &str,
        sender: &str,
        prefix: &[u8],
        content: &[u8],
        how: MboxLocking,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Job {
        Job::Mbox {
            path: path.into(),
            sender: sender.into(),
            prefix: prefix.to_vec(),
            content: content.to_vec(),
            how,
            ids: ids(uid, gid),
        }
    }

    fn locking(
        fcntl: bool,
        flock: bool,
        dotlock: bool,
        attempts: u32,
        delay: f64,
        stale: f64,
    ) -> MboxLocking {
        MboxLocking {
            fcntl,
            flock,
            dotlock,
            attempts,
            delay: Duration::from_secs_f64(delay.max(0.0)),
            stale: Duration::from_secs_f64(stale.max(0.0)),
            char_devices: false,
            dotlock_may_fail: false,
        }
    }

    /// Mailbox writes for an event loop: `submit_maildir` / `submit_mbox` queue a write
    /// (the same arguments as maildir_deliver / mbox_deliver) and return its ticket;
    /// `fileno()` becomes readable when `poll()` has `(ticket, status, permanent, text)`
    /// outcomes. Maildir writes go in batches that share one sync; at most `threads` mbox
    /// writes and `threads` Maildir batches run at once.
    #[pyclass(frozen, module = "oxipost._core.mailbox")]
    pub struct Pool {
        inner: core::Pool,
    }

    #[pymethods]
    impl Pool {
        #[new]
        fn new(threads: usize) -> PyResult<Self> {
            Ok(Pool {
                inner: core::Pool::new(threads)?,
            })
        }

        #[pyo3(signature = (path, prefix, content, hostname, uid=None, gid=None))]
        fn submit_maildir(
            &self,
            path: &str,
            prefix: &[u8],
            content: &[u8],
            hostname: &str,
            uid: Option<u32>,
            gid: Option<u32>,
        ) -> PyResult<u64> {
            let job = maildir_job(path, prefix, content, hostname, uid, gid);
            Ok(self.inner.submit(job)?)
        }

        #[pyo3(signature = (path, sender, prefix, content, *, fcntl=true, flock=false,
                            dotlock=true, attempts=20, delay=1.0, stale=500.0,
                            char_devices=false, dotlock_may_fail=false, uid=None, gid=None))]
        #[allow(clippy::too_many_arguments)]
        fn submit_mbox(
            &self,
            path: &str,
            sender: &str,
            prefix: &[u8],
            content: &[u8],
            fcntl: bool,
            flock: bool,
            dotlock: bool,
            attempts: u32,
            delay: f64,
            stale: f64,
            char_devices: bool,
            dotlock_may_fail: bool,
            uid: Option<u32>,
            gid: Option<u32>,
        ) -> PyResult<u64> {
            let mut how = locking(fcntl, flock, dotlock, attempts, delay, stale);
            how.char_devices = char_devices;
            how.dotlock_may_fail = dotlock_may_fail;
            let job = mbox_job(path, sender, prefix, content, how, uid, gid);
            Ok(self.inner.submit(job)?)
        }

        fn fileno(&self) -> i32 {
            self.inner.event_fd()
        }

        fn poll(&self) -> Vec<(u64, String, bool, String, String)> {
            self.inner
                .poll()
                .into_iter()
                .map(|(ticket, d)| {
                    let (status, permanent, text, warning) = outcome(d);
                    (ticket, status, permanent, text, warning)
                })
                .collect()
        }

        /// Finishes the writes queued (without the GIL) and stops the threads.
        fn close(&self, py: Python<'_>) {
            py.detach(|| self.inner.close());
        }
    }

    /// Joins a table lookup result onto its base, refusing anything that
    /// leaves it; raises ValueError(status, text) ("4.3.5", ...) when it does.
    #[pyfunction]
    fn resolve_under(py: Python<'_>, base: &str, rel: &str) -> PyResult<String> {
        // A stat per path component: without the GIL, mailbox writes go on meanwhile.
        match py.detach(|| core::resolve_under(Path::new(base), rel)) {
            Ok(p) => Ok(p.to_string_lossy().into_owned()),
            Err(d) => Err(PyValueError::new_err((d.status, d.text))),
        }
    }

    /// An mbox file held for exclusive access (postlock(1)) until `release()`:
    /// opened and locked as a delivery to it would be; OSError(text) with the
    /// delivery's reason ("unable to create lock file ...") when it cannot be.
    #[pyclass(module = "oxipost._core.mailbox")]
    pub struct MboxLock {
        held: Option<core::MboxLock>,
    }

    #[pymethods]
    impl MboxLock {
        #[new]
        #[pyo3(signature = (path, *, fcntl=true, flock=false, dotlock=true, attempts=20,
                            delay=1.0, stale=500.0))]
        #[allow(clippy::too_many_arguments)]
        fn new(
            py: Python<'_>,
            path: &str,
            fcntl: bool,
            flock: bool,
            dotlock: bool,
            attempts: u32,
            delay: f64,
            stale: f64,
        ) -> PyResult<Self> {
            let how = locking(fcntl, flock, dotlock, attempts, delay, stale);
            // The attempts sleep between tries: without the GIL.
            match py.detach(|| core::lock_mbox(Path::new(path), &how)) {
                Ok(held) => Ok(MboxLock { held: Some(held) }),
                Err(d) => Err(PyOSError::new_err(d.text)),
            }
        }

        fn release(&mut self) {
            self.held = None;
        }
    }

    /// The next unique Maildir base name, `time.M<usec>P<pid>Q<n>.host`.
    #[pyfunction]
    fn maildir_unique_name(hostname: &str) -> String {
        core::maildir_unique_name(hostname)
    }
}
