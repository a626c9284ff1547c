//! How a run divides its connections, and with them its offered rate, among several
//! targets (`loadgen --target tcp://A --target tcp://B --split 70,30`): [`ConnectionSplit`].
//!
//! Target `i` of weights `w` gets `w_i / Σw` of the connections, rounded by largest
//! remainder so that the counts add up, and every target at least one. Each connection keeps
//! the per-connection rate of the open-loop schedule, so the offered rate splits the same
//! way.
//!
//! The connection ids are dealt out interleaved, each target's spread evenly over
//! `0..connections` (the next id goes to the target whose next connection is furthest
//! behind its even spacing `(k + 1/2) × connections / count`). The open-loop schedule sends
//! message `k` on connection `k mod n`, so every target then receives its share of each
//! round spread over the round instead of in one burst, and a phase that uses only the
//! first `n` connections (a lead-in with fewer) is still split in nearly the same
//! proportions.

use std::num::NonZeroU32;

/// A split that cannot be made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SplitError {
    /// No targets to split among.
    NoTargets,
    /// Fewer connections than targets: some target would get none.
    TooFewConnections {
        /// Connections to split.
        connections: u32,
        /// Targets to split them among.
        targets: usize,
    },
}

impl core::fmt::Display for SplitError {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NoTargets => write!(formatter, "a split needs at least one target"),
            Self::TooFewConnections {
                connections,
                targets,
            } => write!(
                formatter,
                "{connections} connections cannot be split among {targets} targets: each needs at least one"
            ),
        }
    }
}

impl std::error::Error for SplitError {}

/// Which target each of a run's connections goes to.
///
/// ```
/// use std::num::NonZeroU32;
/// use spillway_loadgen::split::ConnectionSplit;
///
/// let weights = [70, 20, 10].map(|weight| NonZeroU32::new(weight).unwrap());
/// let split = ConnectionSplit::new(&weights, 10).unwrap();
/// assert_eq!(split.connections_of(0), 7);
/// assert_eq!(split.connections_of(1), 2);
/// assert_eq!(split.connections_of(2), 1);
/// // Interleaved: the first target does not take the first seven ids.
/// assert_eq!(split.target_of(2), Some(1));
/// assert_eq!(split.target_of(9), Some(0));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSplit {
    weights: Vec<NonZeroU32>,
    /// Connections per target, in target order; they add up to `target_of.len()`.
    counts: Vec<u32>,
    /// Per connection id, the index of its target (`0..weights.len()`).
    target_of: Vec<u32>,
}

impl ConnectionSplit {
    /// `connections` connections split among `weights.len()` targets by their weights.
    ///
    /// # Errors
    /// When there are no weights, or fewer connections than weights.
    pub fn new(weights: &[NonZeroU32], connections: u32) -> Result<Self, SplitError> {
        if weights.is_empty() {
            return Err(SplitError::NoTargets);
        }
        if (connections as usize) < weights.len() {
            return Err(SplitError::TooFewConnections {
                connections,
                targets: weights.len(),
            });
        }
        let counts = counts_by_largest_remainder(weights, connections);
        let target_of = interleave(&counts, connections);
        Ok(Self {
            weights: weights.to_vec(),
            counts,
            target_of,
        })
    }

    /// `connections` connections split evenly among `targets` targets (every weight 1).
    ///
    /// # Errors
    /// As [`ConnectionSplit::new`].
    pub fn even(targets: usize, connections: u32) -> Result<Self, SplitError> {
        Self::new(&vec![NonZeroU32::MIN; targets], connections)
    }

    /// How many targets.
    pub fn targets(&self) -> usize {
        self.weights.len()
    }

    /// The targets' weights, in target order.
    pub fn weights(&self) -> &[NonZeroU32] {
        &self.weights
    }

    /// All connections together.
    pub fn connections(&self) -> u32 {
        self.target_of.len() as u32
    }

    /// Connections of target `target` (0 for an index past the last).
    pub fn connections_of(&self, target: usize) -> u32 {
        self.counts.get(target).copied().unwrap_or(0)
    }

    /// Connections of target `target` among the first `connections` ids (a phase that uses
    /// only those).
    pub fn connections_of_first(&self, target: usize, connections: u32) -> u32 {
        let first = (connections as usize).min(self.target_of.len());
        self.target_of[..first]
            .iter()
            .filter(|&&of| of as usize == target)
            .count() as u32
    }

    /// The target of connection `connection`; `None` past the last connection.
    #[inline]
    pub fn target_of(&self, connection: u64) -> Option<usize> {
        let index = usize::try_from(connection).ok()?;
        self.target_of.get(index).map(|&target| target as usize)
    }
}

/// Each target's share of `connections`, `connections × w_i / Σw` rounded by largest
/// remainder (ties to the earlier target), then raised to one for any target left at none,
/// taken from the target with the most. Needs `connections >= weights.len() >= 1`.
fn counts_by_largest_remainder(weights: &[NonZeroU32], connections: u32) -> Vec<u32> {
    // Σw of up to `usize` weights of at most u32::MAX fits a u64 for any realistic count of
    // targets, and `connections × w_i` fits a u64 (both factors are u32).
    let total: u64 = weights.iter().map(|weight| u64::from(weight.get())).sum();
    let quotas: Vec<(u64, u64)> = weights
        .iter()
        .map(|weight| {
            let share = u64::from(connections) * u64::from(weight.get());
            (share / total, share % total)
        })
        .collect();
    // Each floor is at most `connections`, a u32.
    let mut counts: Vec<u32> = quotas.iter().map(|&(floor, _)| floor as u32).collect();
    let given: u32 = counts.iter().sum();
    let mut by_remainder: Vec<usize> = (0..weights.len()).collect();
    by_remainder.sort_by(|&a, &b| quotas[b].1.cmp(&quotas[a].1).then(a.cmp(&b)));
    for &target in by_remainder.iter().take((connections - given) as usize) {
        counts[target] += 1;
    }
    while let Some(empty) = counts.iter().position(|&count| count == 0) {
        // There are at least as many connections as targets, so while one has none another
        // has two or more.
        let richest = (0..counts.len())
            .max_by_key(|&target| (counts[target], std::cmp::Reverse(target)))
            .expect("at least one target");
        counts[richest] -= 1;
        counts[empty] += 1;
    }
    counts
}

/// Deals `connections` ids out to targets with `counts` connections each, each target's
/// ids spread evenly: id `j` goes to the target whose next connection's ideal position
/// `(given + 1/2) × connections / count` is smallest (ties to the earlier target).
fn interleave(counts: &[u32], connections: u32) -> Vec<u32> {
    let mut given = vec![0u32; counts.len()];
    let mut target_of = Vec::with_capacity(connections as usize);
    for _ in 0..connections {
        // Positions compared by cross-multiplication: (2a + 1) / c, scaled, in u64.
        let next = (0..counts.len())
            .filter(|&target| given[target] < counts[target])
            .min_by(|&a, &b| {
                let position_a = (2 * u64::from(given[a]) + 1) * u64::from(counts[b]);
                let position_b = (2 * u64::from(given[b]) + 1) * u64::from(counts[a]);
                position_a.cmp(&position_b).then(a.cmp(&b))
            })
            .expect("the counts add up to the connections");
        given[next] += 1;
        target_of.push(next as u32);
    }
    target_of
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(weights: &[u32]) -> Vec<NonZeroU32> {
        weights
            .iter()
            .map(|&weight| NonZeroU32::new(weight).unwrap())
            .collect()
    }

    fn counts(split: &ConnectionSplit) -> Vec<u32> {
        (0..split.targets())
            .map(|target| split.connections_of(target))
            .collect()
    }

    #[test]
    fn counts_follow_the_weights_and_add_up() {
        let split = ConnectionSplit::new(&weights(&[70, 20, 10]), 15_000).unwrap();
        assert_eq!(counts(&split), [10_500, 3_000, 1_500]);
        assert_eq!(split.connections(), 15_000);
        // 100 / 3 = 33.33 each: the first target takes the one left over.
        let split = ConnectionSplit::even(3, 100).unwrap();
        assert_eq!(counts(&split), [34, 33, 33]);
        // 7 × 1/6 = 1.17, 7 × 5/6 = 5.83: largest remainder gives the second target 6.
        let split = ConnectionSplit::new(&weights(&[1, 5]), 7).unwrap();
        assert_eq!(counts(&split), [1, 6]);
    }

    #[test]
    fn every_target_gets_at_least_one_connection() {
        let split = ConnectionSplit::new(&weights(&[1_000, 1, 1]), 3).unwrap();
        assert_eq!(counts(&split), [1, 1, 1]);
        let split = ConnectionSplit::new(&weights(&[1_000, 1, 1]), 10).unwrap();
        assert_eq!(counts(&split), [8, 1, 1]);
        assert_eq!(
            ConnectionSplit::new(&weights(&[1, 1, 1]), 2),
            Err(SplitError::TooFewConnections {
                connections: 2,
                targets: 3
            })
        );
        assert_eq!(ConnectionSplit::new(&[], 2), Err(SplitError::NoTargets));
        let text = SplitError::TooFewConnections {
            connections: 2,
            targets: 3,
        }
        .to_string();
        assert!(
            text.contains("2 connections") && text.contains("3 targets"),
            "{text}"
        );
    }

    #[test]
    fn ids_are_interleaved_so_that_every_prefix_keeps_the_proportions() {
        let split = ConnectionSplit::new(&weights(&[75, 25]), 1_000).unwrap();
        for connection in 0..1_000 {
            assert!(split.target_of(connection).is_some());
        }
        assert_eq!(split.target_of(1_000), None);
        // Any prefix is within one connection of its share.
        for first in 1..=1_000u32 {
            let of_first = split.connections_of_first(1, first);
            let ideal = f64::from(first) / 4.0;
            assert!(
                (f64::from(of_first) - ideal).abs() <= 1.0,
                "first {first}: {of_first} vs {ideal}"
            );
        }
        assert_eq!(split.connections_of_first(0, 1_000), 750);
        assert_eq!(split.connections_of_first(0, 5_000), 750);
        // A round of the open-loop schedule (message k on connection k mod n) gives the
        // smaller target one message in four, never a run of more than one in a row.
        let mut run = 0;
        for connection in 0..1_000 {
            if split.target_of(connection) == Some(1) {
                run += 1;
                assert!(run <= 1, "connection {connection}");
            } else {
                run = 0;
            }
        }
    }

    #[test]
    fn one_target_takes_every_connection() {
        let split = ConnectionSplit::even(1, 5).unwrap();
        assert_eq!(counts(&split), [5]);
        assert!((0..5).all(|connection| split.target_of(connection) == Some(0)));
    }
}
