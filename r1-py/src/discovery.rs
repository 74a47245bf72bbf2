//! `r1.Discovery` and `r1.discover()` (DESIGN §3, §8).

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use r1_core::discovery as core_discovery;

use crate::errors::guard;

/// The parsed, validated contents of a daemon's ``daemon.json``.
///
/// Attributes: ``pid``, ``version``, ``protocol_version``, ``instance_id``,
/// ``sock_path`` (``None`` with ``--no-unix``), ``host`` and ``port`` (``None`` with
/// ``--no-tcp``), ``token`` (the master bearer token: keep it secret), ``started_at``
/// (RFC 3339 UTC). ``repr()`` never shows the token.
#[pyclass(module = "r1", frozen, get_all, eq)]
#[derive(Clone, PartialEq)]
pub struct Discovery {
    /// The daemon's process id.
    pub pid: u32,
    /// The daemon's r1 version.
    pub version: String,
    /// The JSON-RPC protocol version it speaks.
    pub protocol_version: u32,
    /// A fresh 128-bit hex id per daemon start.
    pub instance_id: String,
    /// The unix socket path, if the daemon listens on one.
    pub sock_path: Option<String>,
    /// The loopback host, if the daemon listens on TCP.
    pub host: Option<String>,
    /// The loopback port, if the daemon listens on TCP.
    pub port: Option<u16>,
    /// The master bearer token.
    pub token: String,
    /// RFC 3339 UTC start time.
    pub started_at: String,
}

impl Discovery {
    /// From the core type.
    pub fn from_core(d: &core_discovery::Discovery) -> Discovery {
        Discovery {
            pid: d.pid,
            version: d.version.clone(),
            protocol_version: d.protocol_version,
            instance_id: d.instance_id.clone(),
            sock_path: d.sock_path.as_ref().map(|p| p.display().to_string()),
            host: d.host.clone(),
            port: d.port,
            token: d.token.expose().to_owned(),
            started_at: d.started_at.clone(),
        }
    }
}

#[pymethods]
impl Discovery {
    /// Every field as a plain ``dict`` (including ``token``).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("pid", self.pid)?;
        d.set_item("version", &self.version)?;
        d.set_item("protocol_version", self.protocol_version)?;
        d.set_item("instance_id", &self.instance_id)?;
        d.set_item("sock_path", &self.sock_path)?;
        d.set_item("host", &self.host)?;
        d.set_item("port", self.port)?;
        d.set_item("token", &self.token)?;
        d.set_item("started_at", &self.started_at)?;
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let r = |v: Bound<'_, PyAny>| -> PyResult<String> { Ok(v.repr()?.to_string()) };
        Ok(format!(
            "r1.Discovery(pid={}, version={}, protocol_version={}, instance_id={}, sock_path={}, host={}, port={}, token=<redacted>, started_at={})",
            self.pid,
            r(self.version.clone().into_pyobject(py)?.into_any())?,
            self.protocol_version,
            r(self.instance_id.clone().into_pyobject(py)?.into_any())?,
            r(self.sock_path.clone().into_pyobject(py)?.into_any())?,
            r(self.host.clone().into_pyobject(py)?.into_any())?,
            r(self.port.into_pyobject(py)?.into_any())?,
            r(self.started_at.clone().into_pyobject(py)?.into_any())?,
        ))
    }
}

/// Reads and validates the discovery file of ``home`` (default: ``$R1_HOME``, else
/// ``~/.r1``). Never starts a daemon and never connects.
///
/// Raises ``DaemonNotFound`` when there is no discovery file, it is malformed, or it
/// is stale (its pid is not running); ``UnsafeDiscovery`` when it is a symlink, owned
/// by someone else, or readable by group/other.
#[pyfunction]
#[pyo3(signature = (home = None))]
pub fn discover(py: Python<'_>, home: Option<PathBuf>) -> PyResult<Discovery> {
    guard(|| {
        let d = py.detach(|| r1_core::client::discover(home.as_deref()))?;
        Ok(Discovery::from_core(&d))
    })
}
