//! 0-RTT, the way turnstile's front door does it.
//!
//! The TLS configuration is the one `turnstile serve` builds (`turnstile_config`: stateful,
//! single-use session tickets in one shared cache, `max_early_data_size = u32::MAX` unless
//! `quic.zero_rtt = false`), so rustls accepts the same early data here. On top of that, quinn's
//! high-level server only hands a connection to the application once the handshake has completed
//! unless it is converted with `Connecting::into_0rtt`; the accept loop does that, so a request
//! that arrived as 0-RTT data is answered right away (0.5-RTT), as turnstile answers it.
//!
//! The same rule as turnstile's then applies to what may be served before the handshake has
//! completed: only replay-safe requests ([`turnstile_frontdoor::replay_safe`], the very function
//! turnstile uses). Any other request read while the connection is still handshaking is answered
//! `notReplaySafe`, with turnstile's message, and the client resends it after the handshake. As
//! in turnstile, the check is made when the request has been read: a replayed 0-RTT flight never
//! completes a handshake (the attacker has no keys), so it is always caught.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};

use turnstile_wire::turnstile_capnp::{ErrorCode, request};
use turnstile_wire::{Message, split_frame};

use crate::answer;

/// The message of the `notReplaySafe` error (the same words as turnstile's front door).
pub const NOT_REPLAY_SAFE_MESSAGE: &str =
    "not replay-safe: this request arrived in 0-RTT; resend it after the handshake";

/// Whether a connection's handshake has completed, asked without waiting.
pub struct Handshake {
    done: AtomicBool,
    /// quinn's signal of the completed handshake, while it has not fired.
    pending: Mutex<Option<quinn::ZeroRttAccepted>>,
}

impl Handshake {
    /// A connection handed over before its handshake completed (`into_0rtt`).
    pub fn pending(accepted: quinn::ZeroRttAccepted) -> Arc<Handshake> {
        Arc::new(Handshake {
            done: AtomicBool::new(false),
            pending: Mutex::new(Some(accepted)),
        })
    }

    /// A connection whose handshake has completed.
    pub fn completed() -> Arc<Handshake> {
        Arc::new(Handshake {
            done: AtomicBool::new(true),
            pending: Mutex::new(None),
        })
    }

    /// True while the handshake has not completed: data read now may be 0-RTT data.
    ///
    /// quinn's connection driver fires the signal as it processes the handshake's completion,
    /// before the stream data of any later packet is handed to readers, so a request read after
    /// the handshake is never taken for early data.
    pub fn is_handshaking(&self) -> bool {
        if self.done.load(Ordering::Acquire) {
            return false;
        }
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(signal) = pending.as_mut() else {
            return false;
        };
        // One poll, outside tokio's cooperative budget (which could otherwise make a fired
        // signal look pending).
        let mut poll_once = tokio::task::unconstrained(signal);
        let mut cx = Context::from_waker(Waker::noop());
        if Pin::new(&mut poll_once).poll(&mut cx).is_ready() {
            *pending = None;
            self.done.store(true, Ordering::Release);
            false
        } else {
            true
        }
    }
}

/// The refusal for a request read from 0-RTT data that is not replay-safe; `None` when the
/// request may be served (or does not parse: the usual answer then says why).
pub fn refusal(stream: &[u8]) -> Option<Vec<u8>> {
    let (frame, _) = split_frame(stream).ok()??;
    let message = Message::parse(frame.kind, frame.payload).ok()?;
    let request = message.root::<request::Owned>().ok()?;
    if turnstile_frontdoor::replay_safe(request) {
        return None;
    }
    Some(answer::error_frame(
        request.get_correlation_id(),
        ErrorCode::NotReplaySafe,
        NOT_REPLAY_SAFE_MESSAGE,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::tests::request_frame;
    use turnstile_wire::turnstile_capnp::response;

    #[test]
    fn replay_safe_requests_are_served_from_0rtt() {
        let echo = request_frame(|mut r| {
            r.set_correlation_id(1);
            r.set_echo(b"x");
            Ok(())
        });
        assert!(refusal(&echo).is_none());
        let decide = request_frame(|mut r| {
            r.set_correlation_id(2);
            r.init_decide().set_route_id("");
            Ok(())
        });
        assert!(refusal(&decide).is_none());
        // Garbage is not refused here: the usual answer reports it as malformed.
        assert!(refusal(b"\x05\x00\x00\x00\x01abc").is_none());
    }

    #[test]
    fn other_requests_in_0rtt_get_not_replay_safe() {
        let task = request_frame(|mut r| {
            r.set_correlation_id(9);
            r.init_task();
            Ok(())
        });
        let refused = refusal(&task).expect("a task is not replay-safe");
        let msg = Message::from_frame_bytes(&refused).expect("one frame");
        let r = msg.root::<response::Owned>().expect("a Response");
        assert_eq!(r.get_correlation_id(), 9);
        match r.which().expect("known member") {
            response::Error(e) => {
                let e = e.expect("error");
                assert_eq!(e.get_code().ok(), Some(ErrorCode::NotReplaySafe));
                assert_eq!(
                    e.get_message().expect("text").to_str().expect("utf-8"),
                    NOT_REPLAY_SAFE_MESSAGE
                );
            }
            _ => panic!("not an error"),
        }
    }

    #[test]
    fn a_completed_handshake_is_not_handshaking() {
        assert!(!Handshake::completed().is_handshaking());
    }
}
