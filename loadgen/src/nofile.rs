//! The descriptor limit a run with many sockets needs: one descriptor per connection plus
//! [`NOFILE_SPARE`], found with `getrlimit(RLIMIT_NOFILE)` and raised as far as the hard
//! limit allows, or refused with the numbers and the fix. The TCP client and the tokio
//! twin of `spillway-bench` (`baseline-serve`) both start here.

use std::fmt;
use std::io;

use anyhow::Context;

/// File descriptors kept free beyond one per connection: the epoll instance, stdio, the
/// probe and anything else the process opens.
pub const NOFILE_SPARE: u64 = 64;

/// The descriptor limits of this process, as `getrlimit(RLIMIT_NOFILE)` gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimits {
    /// The soft limit, which `open`, `socket` and `accept` are held to.
    pub soft: u64,
    /// The hard limit: the most an unprivileged process may raise the soft limit to.
    pub hard: u64,
}

/// The hard descriptor limit is lower than a run needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileTooLow {
    /// What the run needs: one per connection plus [`NOFILE_SPARE`].
    pub needed: u64,
    /// The connections asked for.
    pub connections: u64,
    /// The hard limit found.
    pub hard: u64,
}

impl fmt::Display for NofileTooLow {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{} connections need {} file descriptors ({} + {NOFILE_SPARE} spare), but the hard \
             limit on open files (RLIMIT_NOFILE) is {}: raise it to at least {} (`ulimit -Hn {}` \
             as root before starting, `LimitNOFILE={}` in a systemd unit, or a `nofile` line in \
             /etc/security/limits.conf), or use fewer connections (--connections {})",
            self.connections,
            self.needed,
            self.connections,
            self.hard,
            self.needed,
            self.needed,
            self.needed,
            self.hard.saturating_sub(NOFILE_SPARE),
        )
    }
}

impl std::error::Error for NofileTooLow {}

/// Decides the soft descriptor limit for `connections` sockets: `Ok(None)` when the soft
/// limit already suffices, `Ok(Some(soft))` with the soft limit to set (the need, at most
/// the hard limit), or the error to report when even the hard limit is too low. Pure: the
/// caller reads and sets the limits ([`raise_nofile_limit`]).
pub fn check_nofile_limit(
    connections: u64,
    limits: NofileLimits,
) -> Result<Option<u64>, NofileTooLow> {
    let needed = connections.saturating_add(NOFILE_SPARE);
    if limits.hard < needed {
        return Err(NofileTooLow {
            needed,
            connections,
            hard: limits.hard,
        });
    }
    if limits.soft >= needed {
        return Ok(None);
    }
    Ok(Some(needed.min(limits.hard)))
}

/// This process's descriptor limits.
pub fn nofile_limits() -> io::Result<NofileLimits> {
    // The rlimit crate wraps getrlimit/setrlimit safely: no `unsafe` here for a call that
    // buys no speed.
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    Ok(NofileLimits { soft, hard })
}

/// Raises this process's soft descriptor limit so that `connections` sockets (plus
/// [`NOFILE_SPARE`]) fit, as far as the hard limit allows; fails with [`NofileTooLow`]'s
/// message when the hard limit is too low. Returns the limits in force afterwards.
pub fn raise_nofile_limit(connections: u64) -> anyhow::Result<NofileLimits> {
    let limits = nofile_limits().context("reading RLIMIT_NOFILE")?;
    let Some(soft) = check_nofile_limit(connections, limits)? else {
        return Ok(limits);
    };
    rlimit::setrlimit(rlimit::Resource::NOFILE, soft, limits.hard).with_context(|| {
        format!(
            "raising the soft limit on open files from {} to {soft} (hard limit {})",
            limits.soft, limits.hard
        )
    })?;
    Ok(NofileLimits {
        soft,
        hard: limits.hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(soft: u64, hard: u64) -> NofileLimits {
        NofileLimits { soft, hard }
    }

    #[test]
    fn the_soft_limit_is_raised_to_the_need_within_the_hard_limit() {
        assert_eq!(
            check_nofile_limit(15_000, limits(1_024, 20_000)),
            Ok(Some(15_064))
        );
        assert_eq!(check_nofile_limit(15_000, limits(20_000, 20_000)), Ok(None));
        assert_eq!(check_nofile_limit(100, limits(1_024, 4_096)), Ok(None));
        assert_eq!(
            check_nofile_limit(19_936, limits(1_024, 20_000)),
            Ok(Some(20_000))
        );
        assert_eq!(
            check_nofile_limit(15_000, limits(1_024, u64::MAX)),
            Ok(Some(15_064))
        );
    }

    #[test]
    fn a_hard_limit_too_low_is_refused_with_both_numbers_and_the_fix() {
        let error = check_nofile_limit(15_000, limits(1_024, 4_096)).unwrap_err();
        assert_eq!(
            error,
            NofileTooLow {
                needed: 15_064,
                connections: 15_000,
                hard: 4_096
            }
        );
        let text = error.to_string();
        assert!(
            text.contains("15000 connections need 15064 file descriptors"),
            "{text}"
        );
        assert!(
            text.contains("hard limit on open files (RLIMIT_NOFILE) is 4096"),
            "{text}"
        );
        assert!(text.contains("ulimit -Hn 15064"), "{text}");
        assert!(text.contains("--connections 4032"), "{text}");
        // One short of the spare is still refused.
        assert!(check_nofile_limit(19_937, limits(20_000, 20_000)).is_err());
    }
}
