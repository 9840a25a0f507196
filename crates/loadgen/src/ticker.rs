//! A precise wake-up for the open loop's sender. Tokio's timer has a resolution of 1 ms, so a
//! sender that only sleeps on it sends up to a millisecond late, and since latency runs from the
//! intended send time, that would be the load generator's own lateness showing as the server's
//! latency (about 1.5 ms at p99 on a 2-core machine, most of a 2 ms budget above a 50 ms agent).
//!
//! The ticker is one extra thread that sleeps (`nanosleep`, about 50 µs of timer slack) until
//! the due time the sender published, then wakes the sender through a [`Notify`]; it rests at
//! least [`TICK_REST`] between wake-ups and re-reads the due time at least every [`TICK_IDLE`].
//! It does nothing else: everything else stays on the load generator's one thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::limits::{TICK_IDLE, TICK_REST};

/// No wake-up wanted.
const NONE: u64 = u64::MAX;

struct Shared {
    epoch: Instant,
    /// Wake the sender at this many ns after `epoch` ([`NONE`]: not needed).
    due_ns: AtomicU64,
    wake: Notify,
    stop: AtomicBool,
}

/// The ticker thread; dropping it stops the thread.
pub struct Ticker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Ticker {
    /// Starts the thread; times are offsets from `epoch`.
    pub fn start(epoch: Instant) -> Result<Ticker, String> {
        let shared = Arc::new(Shared {
            epoch,
            due_ns: AtomicU64::new(NONE),
            wake: Notify::new(),
            stop: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("load-tick".into())
            .spawn({
                let shared = shared.clone();
                move || tick(&shared)
            })
            .map_err(|e| format!("cannot start the ticker thread: {e}"))?;
        Ok(Ticker {
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a wake-up at `due` (offset from the epoch), replacing the previous one.
    pub fn wake_at(&self, due: Duration) {
        let ns = u64::try_from(due.as_nanos()).unwrap_or(NONE - 1);
        self.shared.due_ns.store(ns, Ordering::Release);
    }

    /// Completes at the wake-up asked for (or at once if one is pending from before).
    pub async fn woken(&self) {
        self.shared.wake.notified().await;
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn tick(shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        let due = shared.due_ns.load(Ordering::Acquire);
        if due == NONE {
            std::thread::sleep(TICK_IDLE);
            continue;
        }
        let now = shared.epoch.elapsed();
        let due_at = Duration::from_nanos(due);
        if due_at > now {
            std::thread::sleep((due_at - now).min(TICK_IDLE));
            continue;
        }
        // Due: wake the sender once for this due time (it publishes the next one).
        if shared
            .due_ns
            .compare_exchange(due, NONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            shared.wake.notify_one();
            std::thread::sleep(TICK_REST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakes_after_the_due_time_and_stops_when_dropped() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let epoch = Instant::now();
        let ticker = Ticker::start(epoch).unwrap();
        let due = Duration::from_millis(20);
        ticker.wake_at(due);
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), ticker.woken())
                .await
                .expect("woken");
        });
        // Never early; how late is a matter of the machine's load, not checked here.
        assert!(epoch.elapsed() >= due);
        drop(ticker); // joins the thread
    }
}
