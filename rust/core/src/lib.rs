//! oxipost-core: the parts of the MTA whose speed decides throughput.
//!
//! This crate knows nothing of Python; `rust/py` wraps it as `oxipost._core`.
//! Each area mirrors a Postfix role: `spool` (the queue), `sched` (qmgr's
//! scheduler), `maps` (dict_*), `mailbox` (local/virtual delivery writes).

pub mod error;
pub mod event;
pub mod fault;

pub use error::{CoreError, CoreResult};

/// The cargo profile this crate was built with; benchmarks refuse a debug build.
pub const BUILD_PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};
pub mod mailbox;
pub mod maps;
pub mod sched;
pub mod spool;
#[cfg(test)]
pub(crate) mod testdir;
