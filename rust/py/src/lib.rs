//! `oxipost._core`: thin pyo3 glue over `oxipost-core`. One declarative module,
//! one submodule per core area; no logic lives here beyond argument conversion
//! and releasing the GIL around blocking work.

mod error;
mod mailbox;
mod maps;
mod sched;
mod spool;

#[pyo3::pymodule]
mod _core {
    use pyo3::prelude::*;

    #[pymodule_export]
    use crate::error::CorruptError;

    #[pymodule_export]
    use crate::mailbox::mailbox;

    #[pymodule_export]
    use crate::maps::maps;

    #[pymodule_export]
    use crate::spool::spool;

    #[pymodule_export]
    use crate::sched::sched;

    /// "release" or "debug": benchmarks refuse to run on a debug build.
    #[pyfunction]
    fn build_profile() -> &'static str {
        oxipost_core::BUILD_PROFILE
    }
}
