//! Timeouts given in seconds as Python numbers.

use std::time::Duration;

use crate::errors::{self, Result};

/// Longest timeout accepted (a year): beyond it `Instant + Duration` could overflow.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;

/// `seconds` as a duration: finite, not negative, at most a year.
pub fn seconds(seconds: f64, what: &str) -> Result<Duration> {
    if !seconds.is_finite() || !(0.0..=MAX_SECONDS).contains(&seconds) {
        return Err(errors::invalid_argument(format!(
            "{what} must be a number of seconds between 0 and {MAX_SECONDS}, got {seconds}"
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Like [`seconds`], with `None` passed through.
pub fn optional(value: Option<f64>, what: &str) -> Result<Option<Duration>> {
    value.map(|s| seconds(s, what)).transpose()
}
