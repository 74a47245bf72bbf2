//! Small statistics over samples.

use std::time::Duration;

/// Sorted samples in microseconds.
#[derive(Debug, Clone)]
pub struct Samples {
    us: Vec<f64>,
}

impl Samples {
    /// From durations.
    pub fn from_durations(d: &[Duration]) -> Samples {
        let mut us: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        Samples { us }
    }

    /// The `p`-th percentile (0..=100), nearest rank.
    pub fn pct(&self, p: f64) -> f64 {
        if self.us.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.us.len() as f64).ceil() as usize;
        self.us[rank.clamp(1, self.us.len()) - 1]
    }

    /// Median (µs).
    pub fn p50(&self) -> f64 {
        self.pct(50.0)
    }

    /// 99th percentile (µs).
    pub fn p99(&self) -> f64 {
        self.pct(99.0)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.us.len()
    }
}

/// Median of a few durations, in milliseconds.
pub fn median_ms(d: &[Duration]) -> f64 {
    Samples::from_durations(d).p50() / 1000.0
}
