//! r1-py: the `r1` Python package (DESIGN §11), as the extension module `r1._r1`.
//!
//! `python/r1/__init__.py` re-exports the curated surface; `_r1.pyi` types it.
//! Modules: [`errors`] (the exception tree and the one `ErrorKind` mapping, plus the
//! panic boundary every entry point runs in), [`convert`] (JSON ↔ Python),
//! [`discovery`] (`r1.discover`), [`client`] (`r1.dial`, `r1.Client`), [`journal`] (`r1.Journal`), [`daemon`]
//! (`r1.Daemon`), [`timeout`] (seconds → `Duration`).
//!
//! Every blocking call releases the GIL (`py.detach`), and every iterator that waits
//! does so in short slices with `py.check_signals()` between them, so other Python
//! threads run and Ctrl-C works.

pub mod client;
pub mod convert;
pub mod daemon;
pub mod discovery;
pub mod errors;
pub mod journal;
pub mod timeout;

use pyo3::prelude::*;

/// The extension module (`r1._r1`).
#[pymodule(name = "_r1")]
mod r1_module {
    #[pymodule_export]
    use crate::client::{Client, Subscription, dial};
    #[pymodule_export]
    use crate::daemon::{_stop_all_daemons, Daemon};
    #[pymodule_export]
    use crate::discovery::{Discovery, discover};
    #[pymodule_export]
    use crate::errors::{_error_for_kind, _panic};
    #[pymodule_export]
    use crate::journal::{Journal, JournalFollow};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", r1_core::VERSION)?;
        crate::errors::register(m)
    }
}
