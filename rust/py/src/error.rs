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
                let msg = io.to_string();
                let errno = io.raw_os_error();
                match io.kind() {
                    std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
                    std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(msg),
                    std::io::ErrorKind::AlreadyExists => PyFileExistsError::new_err(msg),
                    _ => match errno {
                        Some(n) => PyOSError::new_err((n, msg)),
                        None => PyOSError::new_err(msg),
                    },
                }
            }
            CoreError::Syntax(m) => PyValueError::new_err(m),
            CoreError::Corrupt(m) => CorruptError::new_err(m),
            CoreError::NotFound(m) => PyKeyError::new_err(m),
        }
    }
}
