//! Median, min and max over repetitions: what every figure in the report is.
//!
//! Known bias: the median of a handful of repetitions (7 by default) hides a bimodal machine
//! (e.g. a run that shared its core with a build); min and max are reported beside it so that
//! such a spread shows.

/// The median, min and max of a set of samples, plus the samples themselves.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Summary {
    /// The middle sample (mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// Every sample, in the order taken.
    pub samples: Vec<f64>,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none or one is not a number.
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|sample| sample.is_nan()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        Some(Self {
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            samples: samples.to_vec(),
        })
    }

    /// `median [min–max]` with each figure written by `text`, or the one figure when they
    /// agree: how the comparison tables give a repeated measurement.
    pub fn text(&self, text: fn(f64) -> String) -> String {
        if self.min == self.max {
            text(self.median)
        } else {
            format!(
                "{} [{}–{}]",
                text(self.median),
                text(self.min),
                text(self.max)
            )
        }
    }
}

/// `median [min–max]` of `samples`, each figure written by `text`; the one figure when they
/// agree, `n/a` when there is none.
pub fn spread(samples: &[f64], text: fn(f64) -> String) -> String {
    Summary::of(samples).map_or_else(|| "n/a".to_owned(), |summary| summary.text(text))
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn odd_and_even_counts() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        let even = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        assert_eq!(even.samples, [4.0, 1.0, 3.0, 2.0]);
    }

    #[test]
    fn empty_or_nan_is_none() {
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }
}
