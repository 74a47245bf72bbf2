//! The result table: one [`Row`] per measurement, printed as a Markdown table and
//! written as JSON (`bench-results.json`).
//!
//! JSON shape (one object):
//!
//! ```json
//! {"v":1,"size":"full","started_at":"…","machine":{"nproc":2,"cpu":"…","kernel":"…"},
//!  "rows":[{"id":"1a","measurement":"…","value":41.2,"unit":"µs","floor":30.1,
//!           "floor_name":"NDJSON echo (unix)","ratio":1.37,"ratio_unit":"× floor",
//!           "target":"≤ 2× floor","status":"met","note":null}]}
//! ```
//!
//! `status` is `met`, `missed`, `info` (a number with no target of its own), or
//! `not measured: <reason>` (never a made-up number: `value` is then null).

use std::fmt::Write as _;

use serde::Serialize;

/// Whether a row met its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// The target was met.
    Met,
    /// The target was missed.
    Missed,
    /// A supporting number with no target of its own.
    Info,
    /// Not measured, and why.
    NotMeasured(String),
    /// The measurement failed (the run exits non-zero).
    Failed(String),
}

impl Status {
    fn as_string(&self) -> String {
        match self {
            Status::Met => "met".into(),
            Status::Missed => "missed".into(),
            Status::Info => "info".into(),
            Status::NotMeasured(r) => format!("not measured: {r}"),
            Status::Failed(r) => format!("failed: {r}"),
        }
    }

    /// `met` when `ok`, else `missed`.
    pub fn from_bool(ok: bool) -> Status {
        if ok { Status::Met } else { Status::Missed }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// `1a`, `5b` …: the measurement number of the brief and a letter.
    pub id: String,
    /// What was measured.
    pub measurement: String,
    /// The value (None when not measured).
    pub value: Option<f64>,
    /// Its unit.
    pub unit: String,
    /// The floor or peer measured in the same run, if any.
    pub floor: Option<f64>,
    /// What the floor is.
    pub floor_name: String,
    /// value / floor, always (a throughput ≥ 0.7× floor, a latency ≤ 2× floor).
    pub ratio: Option<f64>,
    /// How to read `ratio`.
    pub ratio_unit: String,
    /// The target, in words.
    pub target: String,
    /// Met or not.
    pub status: Status,
    /// Anything a reader needs to interpret the number.
    pub note: Option<String>,
}

impl Row {
    /// A row with a value and nothing else yet.
    pub fn new(id: &str, measurement: &str, value: f64, unit: &str) -> Row {
        Row {
            id: id.into(),
            measurement: measurement.into(),
            value: Some(value),
            unit: unit.into(),
            floor: None,
            floor_name: String::new(),
            ratio: None,
            ratio_unit: String::new(),
            target: String::new(),
            status: Status::Info,
            note: None,
        }
    }

    /// A row that could not be measured.
    pub fn not_measured(id: &str, measurement: &str, target: &str, reason: &str) -> Row {
        Row {
            id: id.into(),
            measurement: measurement.into(),
            value: None,
            unit: String::new(),
            floor: None,
            floor_name: String::new(),
            ratio: None,
            ratio_unit: String::new(),
            target: target.into(),
            status: Status::NotMeasured(reason.into()),
            note: None,
        }
    }

    /// A row whose measurement failed.
    pub fn failed(id: &str, measurement: &str, err: &anyhow::Error) -> Row {
        let mut r = Row::not_measured(id, measurement, "", "");
        r.status = Status::Failed(format!("{err:#}"));
        r
    }

    /// Sets the floor and `ratio = value / floor`.
    pub fn floor(mut self, name: &str, floor: f64) -> Row {
        self.floor = Some(floor);
        self.floor_name = name.into();
        if let Some(v) = self.value
            && floor > 0.0
        {
            self.ratio = Some(v / floor);
            self.ratio_unit = "× floor".into();
        }
        self
    }

    /// Sets the target text and status.
    pub fn target(mut self, target: &str, ok: bool) -> Row {
        self.target = target.into();
        self.status = Status::from_bool(ok);
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = Some(note.into());
        self
    }
}

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `nproc`.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// `uname -r`.
    pub kernel: String,
    /// Total memory (MiB).
    pub mem_mib: u64,
}

impl Machine {
    /// Reads the facts from /proc.
    pub fn detect() -> Machine {
        let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |s| s.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024);
        Machine {
            nproc,
            cpu,
            kernel,
            mem_mib,
        }
    }
}

#[derive(Serialize)]
struct JsonRow<'a> {
    id: &'a str,
    measurement: &'a str,
    value: Option<f64>,
    unit: &'a str,
    floor: Option<f64>,
    floor_name: &'a str,
    ratio: Option<f64>,
    ratio_unit: &'a str,
    target: &'a str,
    status: String,
    note: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    v: u32,
    size: &'a str,
    started_at: &'a str,
    elapsed_s: f64,
    machine: &'a Machine,
    rows: Vec<JsonRow<'a>>,
}

/// Renders the JSON document.
pub fn to_json(
    rows: &[Row],
    machine: &Machine,
    size: &str,
    started_at: &str,
    elapsed_s: f64,
) -> anyhow::Result<String> {
    let doc = JsonReport {
        v: 1,
        size,
        started_at,
        elapsed_s: round(elapsed_s, 1),
        machine,
        rows: rows
            .iter()
            .map(|r| JsonRow {
                id: &r.id,
                measurement: &r.measurement,
                value: r.value.map(sig),
                unit: &r.unit,
                floor: r.floor.map(sig),
                floor_name: &r.floor_name,
                ratio: r.ratio.map(|x| round(x, 3)),
                ratio_unit: &r.ratio_unit,
                target: &r.target,
                status: r.status.as_string(),
                note: r.note.as_deref(),
            })
            .collect(),
    };
    Ok(serde_json::to_string_pretty(&doc)? + "\n")
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

/// Four significant digits (enough for any of these numbers).
fn sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let mag = x.abs().log10().floor() as i32;
    round(x, (3 - mag).max(0))
}

/// A number for humans: thousands separators for big ones, 3 significant digits
/// for small ones.
pub fn human(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x.abs() >= 10_000.0 {
        let n = x.round() as i64;
        let s = n.abs().to_string();
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 { format!("-{out}") } else { out }
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The Markdown table (also what the terminal shows).
pub fn to_markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| # | measurement | value | floor / peer | ratio | target | result |\n");
    s.push_str("|---|---|---:|---|---:|---|---|\n");
    for r in rows {
        let value = match r.value {
            Some(v) => format!("{} {}", human(v), r.unit),
            None => "—".into(),
        };
        let floor = match r.floor {
            Some(f) => format!("{}: {} {}", r.floor_name, human(f), r.unit),
            None if !r.floor_name.is_empty() => r.floor_name.clone(),
            None => "—".into(),
        };
        let ratio = match r.ratio {
            Some(x) if x >= 0.1 => format!("{x:.2}×"),
            Some(x) => format!("{x:.4}×"),
            None => "—".into(),
        };
        let mut result = r.status.as_string();
        if let Some(n) = &r.note {
            let _ = write!(result, " ({n})");
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.id,
            r.measurement,
            value,
            floor,
            ratio,
            if r.target.is_empty() {
                "—"
            } else {
                &r.target
            },
            result.replace('|', "/")
        );
    }
    s
}
