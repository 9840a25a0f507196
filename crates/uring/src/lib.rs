//! `turnstile-uring`: the io_uring driver of one turnstile shard, and the only crate of the
//! project that contains `unsafe` code.
//!
//! # What it owns
//!
//! A [`Ring`] owns one io_uring instance and everything whose memory the kernel touches while
//! an operation is in flight:
//!
//! - one UDP socket (bound with `SO_REUSEPORT`, so every shard binds the same address),
//!   received with multishot `recvmsg` into a registered provided-buffer ring (GRO batches,
//!   destination address, ECN, kernel drop counter) and sent with `sendmsg` from a fixed pool of
//!   send slots (GSO, source address, ECN);
//! - Unix stream connections for the agent plane (connect, continuous receive, ordered write
//!   queue, close);
//! - one timer (a single kernel timeout for the nearest deadline);
//! - a [`Waker`] (eventfd) so other threads can end a [`Ring::wait`].
//!
//! Every size and count is bounded by a constant in [`limits`]. [`probe`] tells at start-up
//! whether io_uring is usable at all and, if not, why and how to fix it.
//!
//! # What it must not do
//!
//! It knows nothing of QUIC, agents or the wire format: it moves bytes and reports
//! completions. It never blocks except in [`Ring::wait`], never allocates per packet, never
//! grows a buffer, never panics on a kernel or peer result (those become errors or
//! [`RingStats`] counters), and never frees memory the kernel may still use (a ring dropped
//! with operations that will not finish leaks their buffers instead). Every `unsafe` block
//! states why it is sound in a `// SAFETY:` comment.

#![deny(unsafe_op_in_unsafe_fn)]
#![cfg(target_os = "linux")]

mod bufring;
mod cmsg;
pub mod counting;
mod error;
pub mod limits;
mod mem;
mod probe;
pub mod process;
mod queue;
mod ring;
mod send;
mod stats;
mod sys;
mod timer;
mod udp;
mod uds;
mod wake;

#[cfg(test)]
mod tests;

pub use error::{RingError, SendError, UdsError};
pub use probe::{ProbeReport, SetupMode, UringUnavailable, probe};
pub use ring::{Completion, Ring, RingConfig};
pub use stats::RingStats;
pub use udp::UdpRecv;
pub use uds::Token;
pub use wake::Waker;
