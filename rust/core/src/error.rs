//! The one error type of the core. Every fallible core call returns it; the
//! Python glue maps it once (`rust/py/src/error.rs`).

use std::fmt;
use std::io;

/// Errors from the core, by what the caller must do about them.
#[derive(Debug)]
pub enum CoreError {
    /// An operating-system error; the kind decides the Python `OSError` subclass.
    Io(io::Error),
    /// Input that does not parse (a table line, a record): Postfix would warn or refuse.
    Syntax(String),
    /// Stored data that fails its checks (bad CRC, bad framing): goes to `corrupt`.
    Corrupt(String),
    /// A request that names something that does not exist (a queue ID, a table key).
    NotFound(String),
}

pub type CoreResult<T> = Result<T, CoreError>;

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Io(e) => write!(f, "{e}"),
            CoreError::Syntax(m) | CoreError::Corrupt(m) | CoreError::NotFound(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CoreError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for CoreError {
    fn from(e: io::Error) -> Self {
        CoreError::Io(e)
    }
}
