//! A data shard: the state of the connections it owns ([`connections`]), its pending work
//! ([`queue`]), the admission pipeline and handler runs over them ([`core`]), and the thread
//! that drives it from its rings.

pub(crate) mod commands;
pub(crate) mod connections;
pub(crate) mod core;
pub(crate) mod deferred;
pub mod handler;
pub(crate) mod queue;
pub(crate) mod run;
pub(crate) mod shared;
pub(crate) mod thread;
