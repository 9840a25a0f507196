//! [`Timer`]: runs closures after a delay on one background thread, for replies given later
//! (`timer.after(d, move || reply.allow())`) without blocking the connection's reader.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::limits::TIMER_TASKS_MAX;

type Task = Box<dyn FnOnce() + Send>;

struct Entry {
    due: Instant,
    seq: u64,
    task: Task,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

#[derive(Default)]
struct Queue {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    closed: bool,
}

struct Inner {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Tasks run outside the lock, so a poisoned lock still holds a valid queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One thread running closures at their due time, in due order. Cheap to clone (all clones
/// share the thread); the thread ends when the last clone is dropped, after running what is
/// still queued.
#[derive(Clone)]
pub struct Timer {
    inner: Arc<Inner>,
    _owner: Arc<Owner>,
}

/// Closes the queue when the last [`Timer`] clone goes.
struct Owner(Arc<Inner>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.wake.notify_all();
    }
}

impl Timer {
    /// Starts the timer thread.
    pub fn new() -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        });
        let worker = inner.clone();
        thread::Builder::new()
            .name("agent-timer".into())
            .spawn(move || run(&worker))?;
        Ok(Timer {
            _owner: Arc::new(Owner(inner.clone())),
            inner,
        })
    }

    /// Runs `task` after `delay`. With [`TIMER_TASKS_MAX`] tasks already queued it runs now,
    /// on the caller's thread: a reply given early beats one lost.
    pub fn after(&self, delay: Duration, task: impl FnOnce() + Send + 'static) {
        let mut q = self.inner.lock();
        if q.heap.len() >= TIMER_TASKS_MAX {
            drop(q);
            task();
            return;
        }
        q.seq += 1;
        let entry = Entry {
            due: Instant::now() + delay,
            seq: q.seq,
            task: Box::new(task),
        };
        let first = q.heap.peek().is_none_or(|Reverse(e)| entry.due < e.due);
        q.heap.push(Reverse(entry));
        drop(q);
        if first {
            self.inner.wake.notify_one();
        }
    }

    /// Tasks waiting.
    pub fn pending(&self) -> usize {
        self.inner.lock().heap.len()
    }
}

fn run(inner: &Inner) {
    let mut q = inner.lock();
    loop {
        let now = Instant::now();
        match q.heap.peek() {
            Some(Reverse(e)) if e.due <= now || q.closed => {
                if let Some(Reverse(e)) = q.heap.pop() {
                    drop(q);
                    // A panicking task must not stop the others.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(e.task));
                    q = inner.lock();
                }
            }
            Some(Reverse(e)) => {
                let wait = e.due - now;
                q = inner
                    .wake
                    .wait_timeout(q, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            None if q.closed => return,
            None => q = inner.wake.wait(q).unwrap_or_else(PoisonError::into_inner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_in_due_order() {
        let t = Timer::new().unwrap();
        let (tx, rx) = mpsc::channel();
        for (ms, v) in [(60u64, 3), (0, 1), (30, 2)] {
            let tx = tx.clone();
            t.after(Duration::from_millis(ms), move || tx.send(v).unwrap());
        }
        t.after(Duration::ZERO, || panic!("a panicking task"));
        let got: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(got, [1, 2, 3]);
        assert_eq!(t.pending(), 0);
    }
}
