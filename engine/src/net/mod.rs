//! The TCP front end (SPEC 1, `spillway serve`). So far only its wire format,
//! [`protocol`]: the frames a client and the server exchange, specified for clients in any
//! language in `docs/PROTOCOL.md`. The server that speaks it comes next.

pub mod protocol;
