//! A client for the wire protocol of `spillway serve` (`docs/PROTOCOL.md`), with the sender
//! side of SPEC 6.
//!
//! - [`Client`]: one blocking TCP connection, in protocol version 2 (or 1, when asked:
//!   [`ClientConfig::protocol_version`]), each Reply handed over with the handler's response
//!   or error text ([`ClientReply`]): the handshake, [`Client::submit`],
//!   [`Client::next_event`], [`Client::ping`], [`Client::cancel`] and [`Client::close`] (a
//!   half-close that collects the remaining Replies). It follows the checklist of
//!   `docs/PROTOCOL.md` section 11: it never sends a frame over the server's limit, keeps
//!   at most `send_buffer_replies` Submits in flight, matches Replies by id, follows the
//!   flow signals, and closes after an Error or a violation by the server.
//! - [`Client::send_with_backpressure`]: submit, wait for that message's Reply, and retry
//!   refusals and sheds with exponential backoff and full jitter ([`backoff_delay`]: base
//!   100 ms, at most 50 retries, both settable in [`BackoffConfig`]), never sooner than
//!   the refusal's `retry_after_ns`; then give up with [`ClientError::GaveUp`]. Counted in
//!   [`BackpressureStats`]: waits, successes after waiting, failures.
//! - [`FlowState`]: what Throttle, Pause and Resume mean for the next Submit
//!   (`docs/PROTOCOL.md` section 9), as plain data with the clock passed in.
//! - [`LoadAdaptation`]: dynamic rate limiting by CPU load (SPEC 6): the load per core,
//!   sampled every 5 s, picks the batch size and the wait between batches
//!   ([`pace_for_load`]), which [`Client::send_batch_adaptive`] applies.
//!
//! The pure pieces ([`FlowState`], [`backoff_delay`], [`SplitMix64`], [`pace_for_load`],
//! [`load_percent_per_core`]) do no I/O and read no clock, so a client with its own event
//! loop (the load generator's, on mio) can reuse them.

mod connection;
mod error;
mod flow;
mod load;

pub use crate::backoff::{
    backoff_delay, BackoffConfig, BackpressureStats, RandomSource, SplitMix64,
};
pub use connection::{
    AdaptiveBatch, Client, ClientConfig, ClientEvent, ClientReply, CloseReport, SubmitRequest,
};
pub use error::{ClientError, OutcomeText};
pub use flow::FlowState;
pub use load::{
    load_percent_per_core, pace_for_load, LoadAdaptation, LoadConfig, LoadSource, Pace, SystemLoad,
};
