//! Human output: tables, relative times, and how a session's records look in a
//! terminal. `--json` output never goes through here.

use std::io::Write;

use r1_core::client::Event;
use serde_json::Value;

/// A left-aligned table with a header row; the last column is not padded.
pub fn table(out: &mut impl Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let last = cells.len().saturating_sub(1);
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i == last {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<width$}  ", width = widths[i]));
            }
        }
        s.trim_end().to_owned()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// `3 minutes ago`, `just now`, `2 days ago` for an RFC 3339 time.
pub fn ago(rfc3339: &str) -> String {
    let Some(t) = r1_core::time_fmt::parse(rfc3339) else {
        return "unknown".to_owned();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds();
    if secs < 0 {
        return "in the future".to_owned();
    }
    let (n, unit) = match secs {
        0..=9 => return "just now".to_owned(),
        10..=59 => (secs, "second"),
        60..=3599 => (secs / 60, "minute"),
        3600..=86_399 => (secs / 3600, "hour"),
        _ => (secs / 86_400, "day"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// `1h 2m 3s` for an uptime.
pub fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s}s"),
        _ => format!("{h}h {m}m"),
    }
}

/// A path with the user's home shown as `~`.
pub fn tilde(path: &std::path::Path) -> String {
    if let Some(home) = dirs_home()
        && let Ok(rest) = path.strip_prefix(&home)
    {
        return format!("~/{}", rest.display());
    }
    path.display().to_string()
}

fn dirs_home() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(std::path::PathBuf::from)
}

/// How a record reads in a terminal: output text as is (stderr to stderr), a
/// command as `$ cmd`, its end as `[exit 0 · 12 ms]`. Returns true for
/// `session.ended`.
pub fn render_event(
    out: &mut impl Write,
    err: &mut impl Write,
    ev: &Event,
) -> std::io::Result<bool> {
    let d = &ev.data;
    match ev.kind.as_str() {
        "session.delta" => {
            let text = d.get("text").and_then(Value::as_str).unwrap_or_default();
            if d.get("stream").and_then(Value::as_str) == Some("stderr") {
                err.write_all(text.as_bytes())?;
                err.flush()?;
            } else {
                out.write_all(text.as_bytes())?;
            }
        }
        "tool.start" => {
            let cmd = d
                .pointer("/args/cmd")
                .and_then(Value::as_str)
                .unwrap_or_default();
            writeln!(out, "$ {cmd}")?;
        }
        "tool.end" => {
            let ms = d.get("duration_ms").and_then(Value::as_u64).unwrap_or(0);
            let status = if d.get("interrupted").and_then(Value::as_bool) == Some(true) {
                "interrupted".to_owned()
            } else if let Some(code) = d.get("exit_code").and_then(Value::as_i64) {
                format!("exit {code}")
            } else if let Some(sig) = d.get("signal").and_then(Value::as_str) {
                format!("killed by {sig}")
            } else {
                "failed".to_owned()
            };
            writeln!(out, "[{status} · {ms} ms]")?;
        }
        "session.paused" => writeln!(
            out,
            "[paused by {}]",
            d.get("by").and_then(Value::as_str).unwrap_or("user")
        )?,
        "session.resumed" => writeln!(out, "[resumed]")?,
        "session.reattached" => writeln!(out, "[reattached after a daemon restart]")?,
        "session.ended" => {
            writeln!(
                out,
                "[session ended: {}]",
                d.get("reason").and_then(Value::as_str).unwrap_or("unknown")
            )?;
            out.flush()?;
            return Ok(true);
        }
        "user.input" | "session.created" => {}
        other => writeln!(out, "[{other}] {}", d)?,
    }
    out.flush()?;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut out = Vec::new();
        table(
            &mut out,
            &["ID", "STATE"],
            &[
                vec!["a".into(), "running".into()],
                vec!["longer".into(), "ended".into()],
            ],
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "ID      STATE\na       running\nlonger  ended\n"
        );
    }

    #[test]
    fn ago_words() {
        let t = |secs: i64| {
            r1_core::time_fmt::format_seconds(
                time::OffsetDateTime::now_utc() - time::Duration::seconds(secs),
            )
        };
        assert_eq!(ago(&t(0)), "just now");
        assert_eq!(ago(&t(180)), "3 minutes ago");
        assert_eq!(ago(&t(60)), "1 minute ago");
        assert_eq!(ago(&t(7200)), "2 hours ago");
        assert_eq!(ago("garbage"), "unknown");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(5), "5s");
        assert_eq!(duration(65), "1m 5s");
        assert_eq!(duration(3725), "1h 2m");
    }
}
