//! The ring's one-shot timer: at most one kernel timeout is armed, for the nearest deadline.
//!
//! Moving the deadline later costs nothing (the armed timeout fires early, is recognised as
//! not yet due, and re-armed); moving it earlier removes the armed timeout and arms a new one.
//! Each armed timeout owns a timespec slot until its completion, so the kernel never reads a
//! timespec we have overwritten (matters with SQPOLL, where submission is asynchronous).

use std::mem::size_of;
use std::time::{Duration, Instant};

use io_uring::opcode;
use io_uring::types::Timespec;

use crate::limits::{TIMER_SLACK_US, TIMER_SLOTS_COUNT};
use crate::mem::KernelMem;
use crate::queue::{Kind, Queue, user_data};

#[derive(Debug, Clone, Copy)]
struct Armed {
    deadline: Instant,
    slot: u16,
    generation: u32,
}

/// Timer state of a ring.
pub(crate) struct Timer {
    desired: Option<Instant>,
    armed: Option<Armed>,
    /// Generation of the timeout occupying each slot.
    slots: [Option<u32>; TIMER_SLOTS_COUNT],
    timespecs: KernelMem,
    next_generation: u32,
}

impl Timer {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self {
            desired: None,
            armed: None,
            slots: [None; TIMER_SLOTS_COUNT],
            timespecs: KernelMem::new(TIMER_SLOTS_COUNT * size_of::<Timespec>())?,
            next_generation: 0,
        })
    }

    /// Sets (or clears) the deadline; takes effect at the next submit.
    pub(crate) fn set(&mut self, deadline: Option<Instant>) {
        self.desired = deadline;
    }

    /// The deadline set, if it has not fired yet.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.desired
    }

    /// Arms, re-arms or removes the kernel timeout so that it fires no later than the deadline.
    pub(crate) fn flush(&mut self, queue: &mut Queue) {
        let Some(want) = self.desired else {
            // A stale armed timeout just fires and is ignored.
            return;
        };
        if let Some(armed) = self.armed {
            if armed.deadline <= want {
                return;
            }
            let remove =
                opcode::TimeoutRemove::new(user_data(Kind::Timer, armed.slot, armed.generation))
                    .build()
                    .user_data(user_data(Kind::TimerRemove, 0, 0));
            // SAFETY: a timeout removal points at no memory.
            if unsafe { queue.push(&remove) }.is_err() {
                return;
            }
            self.armed = None;
        }
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            // Every slot waits for a removal to complete; re-armed after that completion.
            return;
        };
        let generation = self.next_generation;
        let ts = Timespec::from(want.saturating_duration_since(Instant::now()));
        let offset = slot * size_of::<Timespec>();
        let ts_ptr = self
            .timespecs
            .as_ptr()
            .wrapping_add(offset)
            .cast::<Timespec>();
        // SAFETY: the slot is free, so no timeout uses this timespec; the pointer is in bounds
        // and aligned (page-aligned base, array stride).
        unsafe { ts_ptr.write(ts) };
        let slot16 = slot as u16;
        let sqe = opcode::Timeout::new(ts_ptr.cast_const())
            .build()
            .user_data(user_data(Kind::Timer, slot16, generation));
        // SAFETY: the timespec slot stays reserved (not rewritten) until this timeout's
        // completion frees it.
        if unsafe { queue.push(&sqe) }.is_ok() {
            self.slots[slot] = Some(generation);
            self.next_generation = generation.wrapping_add(1);
            self.armed = Some(Armed {
                deadline: want,
                slot: slot16,
                generation,
            });
        }
    }

    /// Handles a timeout completion; returns whether the deadline has been reached.
    pub(crate) fn on_complete(&mut self, slot: u16, generation: u32, result: i32) -> bool {
        let index = usize::from(slot);
        assert!(
            self.slots.get(index) == Some(&Some(generation)),
            "timer completion for slot {slot} generation {generation} not in flight"
        );
        self.slots[index] = None;
        let current = self.armed.is_some_and(|a| a.generation == generation);
        if !current {
            return false;
        }
        self.armed = None;
        if result != -libc::ETIME {
            return false;
        }
        match self.desired {
            Some(want) if want <= Instant::now() + Duration::from_micros(TIMER_SLACK_US) => {
                self.desired = None;
                true
            }
            _ => false,
        }
    }

    /// Never free kernel-shared memory (timeouts may still be in flight).
    pub(crate) fn leak(&mut self) {
        self.timespecs.leak();
    }
}
