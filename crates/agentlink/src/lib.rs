//! Connections to external agents, sans-IO: the agent protocol v2 as turnstile speaks it
//! (handshake with capabilities, configure, multiplexed calls by correlation id, cancel, health,
//! metrics, config updates, flow control) and the per-agent pool of connections with reconnect
//! backoff.
//!
//! It owns protocol state only. It must not touch sockets or clocks: bytes read from a socket go
//! in through [`Link::handle_data`], bytes to write come out of [`Link::output`]; the shard owns
//! the sockets (on its io_uring ring) and passes `now` in.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod limits;
mod link;
mod pool;

pub use link::{
    CancelWhy, Capabilities, EventSet, Interest, Link, LinkError, LinkEvent, read_capabilities,
};
pub use pool::{Pool, Slot};
