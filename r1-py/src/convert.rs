//! JSON ↔ Python values: `dict`/`list`/`str`/`int`/`float`/`bool`/`None`.
//!
//! To Python is total. From Python accepts exactly what JSON can hold (tuples become
//! arrays, `str` subclasses and `int` subclasses are fine) and names the first value
//! it cannot convert by its path (`params['env']['X']: ...`), as
//! [`r1.InvalidArgument`](crate::errors).

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use crate::errors::{self, Result};

/// Nesting deeper than this is refused: it also stops a self-referencing list from
/// recursing until the stack overflows. serde_json's parser has the same limit.
const MAX_DEPTH: usize = 128;

/// A JSON value as a Python object.
pub fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => number_to_py(py, n)?,
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, item) in map {
                dict.set_item(k, to_py(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

fn number_to_py<'py>(py: Python<'py>, n: &Number) -> PyResult<Bound<'py, PyAny>> {
    if let Some(i) = n.as_i64() {
        Ok(i.into_pyobject(py)?.into_any())
    } else if let Some(u) = n.as_u64() {
        Ok(u.into_pyobject(py)?.into_any())
    } else {
        // Without serde_json's arbitrary_precision every other number is an f64.
        Ok(PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any())
    }
}

/// A Python object as JSON; `what` names it in errors (`params`, `env` …).
pub fn from_py(obj: &Bound<'_, PyAny>, what: &str) -> Result<Value> {
    let mut path = what.to_owned();
    from_py_at(obj, &mut path, 0)
}

fn from_py_at(obj: &Bound<'_, PyAny>, path: &mut String, depth: usize) -> Result<Value> {
    if depth > MAX_DEPTH {
        return Err(errors::invalid_argument(format!(
            "{path}: nested more than {MAX_DEPTH} levels deep (or refers to itself); JSON cannot hold it"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // bool before int: `bool` is a subclass of `int`.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(errors::invalid_argument(format!(
            "{path}: integer {} does not fit in 64 bits; JSON numbers here are 64-bit",
            obj.str().map(|s| s.to_string()).unwrap_or_default()
        )));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| errors::invalid_argument(format!("{path}: {v} is not a JSON number")));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Value::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = Map::new();
        for (k, v) in d.iter() {
            let Ok(key) = k.cast::<PyString>() else {
                return Err(errors::invalid_argument(format!(
                    "{path}: key {} is a {}, not a str; JSON object keys are strings",
                    k.repr().map(|s| s.to_string()).unwrap_or_default(),
                    type_name(&k)
                )));
            };
            let key = key.to_cow()?.into_owned();
            let len = path.len();
            path.push_str(&format!("[{key:?}]"));
            let value = from_py_at(&v, path, depth + 1)?;
            path.truncate(len);
            map.insert(key, value);
        }
        return Ok(Value::Object(map));
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        let mut items = Vec::new();
        for (i, item) in obj.try_iter()?.enumerate() {
            let len = path.len();
            path.push_str(&format!("[{i}]"));
            items.push(from_py_at(&item?, path, depth + 1)?);
            path.truncate(len);
        }
        return Ok(Value::Array(items));
    }
    Err(errors::invalid_argument(format!(
        "{path}: object of type {} is not JSON-serialisable (use dict, list, str, int, float, bool or None)",
        type_name(obj)
    )))
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// An integer argument checked against `0..=max`, so a negative seq or an
/// out-of-range port is an `r1.InvalidArgument` naming the argument (pyo3's own
/// unsigned extraction would raise a bare `OverflowError`). Arguments arrive as
/// `i128` so every `u64` fits; wrong types are still pyo3's `TypeError`.
pub fn uint(value: i128, what: &str, max: u64) -> Result<u64> {
    u64::try_from(value)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| {
            errors::invalid_argument(format!("{what} must be between 0 and {max}, got {value}"))
        })
}

/// A TCP port argument (`0` = ephemeral), as [`uint`] does for counts.
pub fn port(value: i128, what: &str) -> Result<u16> {
    u16::try_from(value).map_err(|_| {
        errors::invalid_argument(format!("{what} must be between 0 and 65535, got {value}"))
    })
}
