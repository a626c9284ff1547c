//! The TCP front end (SPEC 1, 4, 9; `spillway serve`), in the pieces a shard keeps per
//! connection:
//!
//! - [`protocol`]: the wire format, the frames a client and the server exchange, specified
//!   for clients in any language in `docs/PROTOCOL.md`;
//! - [`egress`]: flow control of a connection's reply stream (SPEC 4): the bounded send
//!   buffer, the Normal / Throttled / Paused / Dropping states its fill puts the client in,
//!   the drop policies, and the health verdict by drop rate.
//!
//! - [`server`]: the TCP server that uses them: one mio event loop per shard, run from the
//!   shard loop by a [`server::TcpFrontEnd`] wrapped around the user's handler.
//!
//! The first two are plain data structures with time passed in, each tested on its own; each
//! of the three is a module of one file per concept.

pub mod egress;
pub mod protocol;
pub mod server;
