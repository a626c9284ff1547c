//! Rate limits on log events (issue 15): nothing is logged per message, and an event that a
//! hostile or slow client can cause thousands of times a second (a protocol violation, a
//! dropped reply, a flapping breaker) is told at most `burst` times per interval; what is
//! held back is counted and told in one summary when the interval has passed, with the
//! count and the latest one as an example. Counts are exact: every occurrence recorded is in
//! exactly one event's `count`.
//!
//! A [`LogLimit`] is plain data owned by one thread (a shard, the control thread), one per
//! kind of event. It never reads a clock: its caller passes the time it already has (a
//! shard's turn time), so recording costs an add and a compare, and no system call.
//! Held-back occurrences go out at the caller's next [`LogLimit::flush`] after the
//! interval (from its timer), or at [`LogLimit::take`] when it stops.

/// One second, the usual interval.
pub(crate) const SECOND_NS: u64 = 1_000_000_000;

/// The rate limit of one kind of event: at most `burst` events per `interval_ns`, each
/// carrying the occurrences held back before it.
#[derive(Clone, Debug)]
pub(crate) struct LogLimit<E> {
    interval_ns: u64,
    burst: u32,
    /// The current window ends here; a record at or after it opens a new one.
    window_end_ns: u64,
    /// Events told in the current window.
    told: u32,
    /// Occurrences recorded and not told yet.
    pending: u64,
    /// The latest of them (`Some` exactly when `pending > 0`).
    example: Option<E>,
}

/// An event to log: `count` occurrences, described by `example`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Told<E> {
    /// Occurrences this event stands for: the one recorded (or, for a summary, the latest
    /// held back) and every one held back before it.
    pub(crate) count: u64,
    /// The occurrence to describe.
    pub(crate) example: E,
}

impl<E> LogLimit<E> {
    /// At most `burst` events (at least 1) per `interval_ns`.
    pub(crate) const fn new(interval_ns: u64, burst: u32) -> Self {
        Self {
            interval_ns,
            burst: if burst == 0 { 1 } else { burst },
            window_end_ns: 0,
            told: 0,
            pending: 0,
            example: None,
        }
    }

    /// At most one event per second.
    pub(crate) const fn per_second() -> Self {
        Self::new(SECOND_NS, 1)
    }

    /// Counts `count` occurrences at `now_ns`, described by `example`. Returns the event
    /// to log now, if the window has room for one: it carries these occurrences and those
    /// held back before them. Otherwise they are held back for a later event.
    #[inline]
    pub(crate) fn record(&mut self, now_ns: u64, count: u64, example: E) -> Option<Told<E>> {
        self.pending += count;
        if now_ns >= self.window_end_ns {
            self.window_end_ns = now_ns.saturating_add(self.interval_ns);
            self.told = 0;
        }
        if self.told < self.burst {
            self.told += 1;
            self.example = None;
            return Some(Told {
                count: core::mem::take(&mut self.pending),
                example,
            });
        }
        self.example = Some(example);
        None
    }

    /// The summary of what was held back, once the window it was held back in has passed
    /// (it counts as the new window's first event). For the owner's timer.
    pub(crate) fn flush(&mut self, now_ns: u64) -> Option<Told<E>> {
        if self.pending == 0 || now_ns < self.window_end_ns {
            return None;
        }
        self.window_end_ns = now_ns.saturating_add(self.interval_ns);
        self.told = 1;
        self.take()
    }

    /// The summary of what was held back, now, whatever the time: when the owner stops.
    pub(crate) fn take(&mut self) -> Option<Told<E>> {
        let example = self.example.take()?;
        Some(Told {
            count: core::mem::take(&mut self.pending),
            example,
        })
    }

    /// Occurrences held back, not told yet.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> u64 {
        self.pending
    }
}

/// Counts by name for a log field, as `name=count` pairs apart by spaces, leaving out the
/// zeros (`-` when every count is zero): written only when the event is, with no allocation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counts<'a>(pub(crate) &'a [(&'static str, u64)]);

impl core::fmt::Display for Counts<'_> {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut any = false;
        for (name, count) in self.0.iter().filter(|(_, count)| *count > 0) {
            if any {
                formatter.write_str(" ")?;
            }
            write!(formatter, "{name}={count}")?;
            any = true;
        }
        if !any {
            formatter.write_str("-")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Sums what `told` says, and counts the events.
    fn tally<E>(told: impl IntoIterator<Item = Told<E>>) -> (u64, usize) {
        told.into_iter().fold((0, 0), |(count, events), told| {
            (count + told.count, events + 1)
        })
    }

    #[test]
    fn a_burst_is_one_event_then_one_summary_with_the_rest() {
        let mut limit = LogLimit::per_second();
        let mut told = Vec::new();
        // 10,000 occurrences within 10 ms.
        for index in 0..10_000u64 {
            told.extend(limit.record(index * 1_000, 1, index));
        }
        assert_eq!(
            told,
            [Told {
                count: 1,
                example: 0
            }]
        );
        assert_eq!(limit.pending(), 9_999);
        // Not before the second has passed.
        assert_eq!(limit.flush(999 * MS), None);
        let summary = limit.flush(SECOND_NS).expect("the second has passed");
        assert_eq!(
            summary,
            Told {
                count: 9_999,
                example: 9_999
            }
        );
        assert_eq!(limit.pending(), 0);
        assert_eq!(limit.flush(10 * SECOND_NS), None);
        assert_eq!(limit.take(), None);
    }

    #[test]
    fn counts_are_exact_over_a_long_flood() {
        let mut limit = LogLimit::per_second();
        let mut told = Vec::new();
        let mut recorded = 0u64;
        // 20 s of 3 occurrences every 100 us, with a flush every ms (a shard's timer).
        let mut now_ns = 0;
        while now_ns < 20 * SECOND_NS {
            told.extend(limit.record(now_ns, 3, now_ns));
            recorded += 3;
            if now_ns % MS == 0 {
                told.extend(limit.flush(now_ns));
            }
            now_ns += 100_000;
        }
        told.extend(limit.take());
        let (count, events) = tally(told.iter().copied());
        assert_eq!(count, recorded);
        // One event a second, plus the last summary.
        assert!((20..=21).contains(&events), "{events} events");
    }

    #[test]
    fn a_burst_allowance_tells_each_until_it_is_spent() {
        let mut limit = LogLimit::new(SECOND_NS, 3);
        let told: Vec<_> = (0..5u64)
            .filter_map(|index| limit.record(index, 1, index))
            .collect();
        assert_eq!(tally(told.iter().copied()), (3, 3));
        assert_eq!(limit.pending(), 2);
        // A record in the next window tells itself and what was held back.
        assert_eq!(
            limit.record(SECOND_NS + 4, 1, 9),
            Some(Told {
                count: 3,
                example: 9
            })
        );
        assert_eq!(limit.pending(), 0);
    }

    #[test]
    fn a_summary_uses_up_a_place_in_the_new_window() {
        let mut limit = LogLimit::per_second();
        assert!(limit.record(0, 1, 'a').is_some());
        assert!(limit.record(1, 1, 'b').is_none());
        assert_eq!(
            limit.flush(SECOND_NS),
            Some(Told {
                count: 1,
                example: 'b'
            })
        );
        // The window the summary opened is full: this one waits for the next.
        assert!(limit.record(SECOND_NS + 1, 1, 'c').is_none());
        assert_eq!(
            limit.take(),
            Some(Told {
                count: 1,
                example: 'c'
            })
        );
    }

    #[test]
    fn counts_leave_out_the_zeros() {
        let counts = [("rate_limited", 12), ("queue_full", 0), ("draining", 3)];
        assert_eq!(Counts(&counts).to_string(), "rate_limited=12 draining=3");
        assert_eq!(Counts(&[("rate_limited", 0)]).to_string(), "-");
    }

    #[test]
    fn occurrences_counted_in_bulk_keep_their_count() {
        let mut limit = LogLimit::per_second();
        assert_eq!(
            limit.record(5, 10_000, "bad_magic"),
            Some(Told {
                count: 10_000,
                example: "bad_magic"
            })
        );
        assert!(limit.record(6, 7, "truncated").is_none());
        assert_eq!(limit.take().map(|told| told.count), Some(7));
    }
}
