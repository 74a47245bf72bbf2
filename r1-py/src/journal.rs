//! `r1.Journal`: read a session journal with no daemon (DESIGN §5), built on
//! [`r1_core::journal::Reader`].

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyType;
use r1_core::journal::{RawRecord, Reader};

use crate::convert;
use crate::errors::{self, Result, guard, lock};
use crate::timeout;

/// How long one GIL-free wait inside `follow()` lasts before the iterator takes the
/// GIL back to run signal handlers: Ctrl-C is seen within this.
const FOLLOW_SLICE: Duration = Duration::from_millis(100);

/// A session journal (``journal.ndjson``) read directly from disk; works with no
/// daemon and while a daemon appends.
///
/// Iterating yields each record as a ``dict`` (``v``, ``seq``, ``crc``, ``at``,
/// ``kind``, ``data``) from the current position to the end, like a file: a second
/// loop continues where the first stopped. ``since(seq)`` repositions, ``follow()``
/// waits for new records, ``verify()`` scans the whole file. A bad line raises
/// ``JournalCorrupt`` naming the line; a file of a newer format ``ProtocolError``.
/// Usable as a context manager (closes the file on exit).
#[pyclass(module = "r1", frozen)]
pub struct Journal {
    path: PathBuf,
    /// `None` once closed. A mutex (not `&mut self`) so two threads sharing a
    /// journal wait for each other instead of getting pyo3's "already borrowed".
    reader: Mutex<Option<Reader>>,
}

impl Journal {
    /// Runs `f` on the open reader, without the GIL.
    fn with_reader<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Reader) -> r1_core::Result<T> + Send,
    ) -> Result<T> {
        py.detach(|| {
            let mut guard = lock(&self.reader);
            match guard.as_mut() {
                Some(r) => f(r).map_err(errors::Error::from),
                None => Err(errors::closed(format!(
                    "journal {} is closed",
                    self.path.display()
                ))),
            }
        })
    }
}

fn record_to_py(py: Python<'_>, raw: &RawRecord) -> Result<Py<PyAny>> {
    Ok(convert::to_py(py, &raw.to_value()?)?.unbind())
}

#[pymethods]
impl Journal {
    /// Opens the journal at ``path`` (``str`` or ``os.PathLike``). Raises
    /// ``NotFoundError`` if it does not exist, ``IoError`` if it cannot be read.
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Journal> {
        guard(|| {
            let reader = py.detach(|| Reader::open(&path))?;
            Ok(Journal {
                path,
                reader: Mutex::new(Some(reader)),
            })
        })
    }

    /// The journal's path.
    #[getter]
    fn path(&self) -> String {
        self.path.display().to_string()
    }

    /// Repositions so the next record has ``seq > since_seq`` (``0``: the start),
    /// by bisecting the file (no full scan). Returns the journal itself, so
    /// ``for rec in r1.Journal(p).since(41)`` yields seq 42 on.
    fn since<'py>(slf: Bound<'py, Self>, seq: i128) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        guard(|| {
            let seq = convert::uint(seq, "seq", u64::MAX)?;
            slf.get().with_reader(py, |r| r.seek(seq))?;
            Ok(slf.clone())
        })
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        guard(|| match self.with_reader(py, |r| r.next_record())? {
            Some(raw) => Ok(Some(record_to_py(py, &raw)?)),
            None => Ok(None),
        })
    }

    /// Scans the whole file (independent of the position) and returns the report
    /// ``{"records", "last_seq", "pending_bytes", "damage": None}``. When a line is
    /// bad, raises ``JournalCorrupt`` whose ``report`` holds the same dict with
    /// ``damage = {"line", "offset", "reason"}``. ``pending_bytes`` counts an
    /// incomplete last line (a writer mid-append), which is not damage.
    fn verify(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let report = self.with_reader(py, |r| r.verify())?;
            let value = serde_json::to_value(&report).map_err(r1_core::Error::from)?;
            let dict = convert::to_py(py, &value)?;
            let Some(damage) = &report.damage else {
                return Ok(dict.unbind());
            };
            let err = r1_core::Error::new(
                r1_core::ErrorKind::JournalDamaged,
                damage.to_error(&self.path).message(),
            )
            .with_data(value);
            let pyerr = errors::core_to_pyerr(py, &err);
            pyerr.value(py).setattr("report", dict)?;
            Err(errors::Error::Py(pyerr))
        })
    }

    /// An iterator over the records from the current position on, waiting for new
    /// ones as they are appended. With ``timeout=None`` it runs until interrupted
    /// (Ctrl-C raises ``KeyboardInterrupt`` within ~0.1 s); with a number it stops
    /// after ``timeout`` seconds pass with no new record. A truncation or
    /// replacement of the file raises ``ClosedError``. The GIL is released while
    /// waiting.
    #[pyo3(signature = (timeout = None))]
    fn follow(slf: Bound<'_, Self>, timeout: Option<f64>) -> PyResult<JournalFollow> {
        guard(|| {
            Ok(JournalFollow {
                journal: slf.clone().unbind(),
                timeout: timeout::optional(timeout, "timeout")?,
            })
        })
    }

    /// Closes the file; later reads raise ``ClosedError``. Idempotent.
    fn close(&self, py: Python<'_>) {
        let reader = py.detach(|| lock(&self.reader).take());
        drop(reader);
    }

    /// Whether :meth:`close` was called.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.reader).is_none()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (_exc_type = None, _exc = None, _tb = None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: Option<Bound<'_, PyType>>,
        _exc: Option<Bound<'_, PyAny>>,
        _tb: Option<Bound<'_, PyAny>>,
    ) -> bool {
        self.close(py);
        false
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let path = self.path.display().to_string().into_pyobject(py)?.repr()?;
        Ok(format!("r1.Journal({path})"))
    }
}

/// The iterator returned by :meth:`Journal.follow`.
#[pyclass(module = "r1", frozen)]
pub struct JournalFollow {
    journal: Py<Journal>,
    timeout: Option<Duration>,
}

#[pymethods]
impl JournalFollow {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        guard(|| {
            let journal = self.journal.bind(py).get();
            let deadline = self.timeout.map(|t| Instant::now() + t);
            loop {
                let slice = match deadline {
                    Some(d) => {
                        let left = d.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            return Ok(None);
                        }
                        left.min(FOLLOW_SLICE)
                    }
                    None => FOLLOW_SLICE,
                };
                if let Some(raw) = journal.with_reader(py, |r| r.next_wait(slice))? {
                    return Ok(Some(record_to_py(py, &raw)?));
                }
                py.check_signals()?;
            }
        })
    }
}
