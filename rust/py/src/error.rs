//! The one mapping from `CoreError` to Python exceptions.

use oxipost_core::CoreError;
use pyo3::exceptions::{
    PyFileExistsError, PyFileNotFoundError, PyKeyError, PyOSError, PyPermissionError, PyValueError,
};
use pyo3::prelude::*;

pyo3::create_exception!(
    _core,
    CorruptError,
    pyo3::exceptions::PyException,
    "Stored data failed its checks (bad CRC, framing or content)."
);

/// Wraps `CoreError` so the glue can implement the foreign `From` for `PyErr`.
pub struct PyCoreError(pub CoreError);

impl From<CoreError> for PyCoreError {
    fn from(e: CoreError) -> Self {
        PyCoreError(e)
    }
}

impl From<PyCoreError> for PyErr {
    fn from(PyCoreError(e): PyCoreError) -> PyErr {
        match e {
            CoreError::Io(io) => {
                let errno = io.raw_os_error();
                // Python's OSError(errno, strerror) form, so callers print the C library's
                // words as Postfix does, without Rust's " (os error N)" suffix.
                let msg = io.to_string();
                let strerror = match errno {
                    Some(n) => msg
                        .strip_suffix(&format!(" (os error {n})"))
                        .unwrap_or(&msg)
                        .to_string(),
                    None => msg.clone(),
                };
                match (io.kind(), errno) {
                    (std::io::ErrorKind::NotFound, Some(n)) => {
                        PyFileNotFoundError::new_err((n, strerror))
                    }
                    (std::io::ErrorKind::PermissionDenied, Some(n)) => {
                        PyPermissionError::new_err((n, strerror))
                    }
                    (std::io::ErrorKind::AlreadyExists, Some(n)) => {
                        PyFileExistsError::new_err((n, strerror))
                    }
                    (std::io::ErrorKind::NotFound, None) => PyFileNotFoundError::new_err(msg),
                    (std::io::ErrorKind::PermissionDenied, None) => PyPermissionError::new_err(msg),
                    (std::io::ErrorKind::AlreadyExists, None) => PyFileExistsError::new_err(msg),
                    (_, Some(n)) => PyOSError::new_err((n, strerror)),
                    (_, None) => PyOSError::new_err(msg),
                }
            }
            CoreError::Syntax(m) => PyValueError::new_err(m),
            CoreError::Corrupt(m) => CorruptError::new_err(m),
            CoreError::NotFound(m) => PyKeyError::new_err(m),
        }
    }
}
