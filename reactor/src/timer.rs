//! Scheduled calls: a binary heap ordered by deadline, then by insertion order.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// A boxed call that runs once on the reactor thread.
pub(crate) type Call = Box<dyn FnOnce() + Send + 'static>;

const PENDING: u8 = 0;
const CANCELLED: u8 = 1;
const STARTED: u8 = 2;

/// A handle to a call scheduled with [`Reactor::schedule`](crate::Reactor::schedule).
///
/// Cancelling works from any thread, is idempotent and never panics. A call cancelled before
/// the reactor starts it never runs; in particular a call cancelled on the reactor thread never
/// runs. Cancelling drops the call, and what it captured, at once on the cancelling thread: a
/// long timeout cancelled early holds nothing until its deadline. Dropping the handle does
/// **not** cancel the call.
#[doc(alias = "VScheduledCall")]
#[doc(alias = "IVScheduledCall")]
#[derive(Clone)]
pub struct Timer {
    /// Shared with the heap entry.
    shared: Arc<Scheduled>,
}

/// What a [`Timer`] and its heap entry share.
struct Scheduled {
    /// `PENDING`, `CANCELLED` or `STARTED`: decides whether cancel or start wins.
    state: AtomicU8,
    /// The call, until the winner of `state` takes it.
    call: Mutex<Option<Call>>,
}

impl Scheduled {
    /// Moves the state from pending to `to`; on success, returns the call.
    fn take(&self, to: u8) -> Option<Call> {
        self.state
            .compare_exchange(PENDING, to, AtomicOrdering::AcqRel, AtomicOrdering::Acquire)
            .ok()?;
        self.call.lock().take()
    }

    /// Whether the call is still waiting to run.
    fn is_pending(&self) -> bool {
        self.state.load(AtomicOrdering::Acquire) == PENDING
    }
}

impl Timer {
    /// Cancels the call. Returns `true` if this call stopped it from running, `false` if it had
    /// already started, run or been cancelled.
    pub fn cancel(&self) -> bool {
        self.shared.take(CANCELLED).is_some()
    }

    /// Whether the call is still waiting to run.
    pub fn is_pending(&self) -> bool {
        self.shared.is_pending()
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.shared.state.load(AtomicOrdering::Acquire) {
            PENDING => "pending",
            CANCELLED => "cancelled",
            _ => "started",
        };
        f.debug_struct("Timer").field("state", &state).finish()
    }
}

/// One pending call in the heap.
struct Entry {
    /// When the call becomes due.
    deadline: Instant,
    /// Insertion number: breaks ties so that equal deadlines run first-in, first-out.
    seq: u64,
    /// The call, shared with the [`Timer`] handle.
    shared: Arc<Scheduled>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline && self.seq == other.seq
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that the max-heap pops the earliest deadline (then the lowest `seq`).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deadline, other.seq).cmp(&(self.deadline, self.seq))
    }
}

/// The reactor's pending calls.
///
/// Cancelled entries stay in the heap until they reach the top or until they outnumber the
/// live ones, when the heap is rebuilt; so schedule/cancel churn cannot grow it without bound.
#[derive(Default)]
pub(crate) struct TimerQueue {
    /// Pending calls, earliest first.
    heap: BinaryHeap<Entry>,
    /// The next insertion number.
    next_seq: u64,
}

impl TimerQueue {
    /// Adds a call; returns its handle and whether it is now the earliest deadline.
    pub(crate) fn push(&mut self, deadline: Instant, call: Call) -> (Timer, bool) {
        self.compact_if_needed();
        let shared = Arc::new(Scheduled {
            state: AtomicU8::new(PENDING),
            call: Mutex::new(Some(call)),
        });
        let seq = self.next_seq;
        self.next_seq += 1;
        let earliest = self.heap.peek().is_none_or(|top| deadline < top.deadline);
        self.heap.push(Entry {
            deadline,
            seq,
            shared: shared.clone(),
        });
        (Timer { shared }, earliest)
    }

    /// The earliest deadline of a call that is still pending.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(top) = self.heap.peek() {
            if top.shared.is_pending() {
                return Some(top.deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Removes every call due at `now` and returns those not cancelled, in run order.
    ///
    /// Each returned call has been marked started, so a cancel racing from another thread can
    /// no longer stop it.
    pub(crate) fn pop_due(&mut self, now: Instant, out: &mut Vec<Call>) {
        while self.heap.peek().is_some_and(|top| top.deadline <= now) {
            // The loop condition just saw a top entry.
            let Some(entry) = self.heap.pop() else { break };
            out.extend(entry.shared.take(STARTED));
        }
    }

    /// Number of entries in the heap, cancelled ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every pending call without running it.
    pub(crate) fn clear(&mut self) {
        for entry in self.heap.drain() {
            drop(entry.shared.take(CANCELLED));
        }
    }

    /// Rebuilds the heap without cancelled entries once they are the majority.
    fn compact_if_needed(&mut self) {
        let len = self.heap.len();
        if len < 1024 || !len.is_power_of_two() {
            return;
        }
        let live = self.heap.iter().filter(|e| e.shared.is_pending()).count();
        if live * 2 < len {
            self.heap.retain(|e| e.shared.is_pending());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[test]
    fn equal_deadlines_pop_in_insertion_order() {
        let mut q = TimerQueue::default();
        let t = Instant::now();
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        for i in 0..10 {
            let order = order.clone();
            q.push(t, Box::new(move || order.lock().push(i)));
        }
        let mut due = Vec::new();
        q.pop_due(t, &mut due);
        due.into_iter().for_each(|c| c());
        assert_eq!(*order.lock(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn cancel_and_clear_drop_the_call_and_its_captures_at_once() {
        let mut q = TimerQueue::default();
        let t = Instant::now() + Duration::from_secs(3600);
        let captured = Arc::new(());
        let held = captured.clone();
        let (timer, _) = q.push(t, Box::new(move || drop(held)));
        assert_eq!(Arc::strong_count(&captured), 2);
        assert!(timer.cancel());
        assert_eq!(Arc::strong_count(&captured), 1, "dropped by the cancel");
        let held = captured.clone();
        let (timer, _) = q.push(t, Box::new(move || drop(held)));
        q.clear();
        assert_eq!(Arc::strong_count(&captured), 1, "dropped by the clear");
        assert!(!timer.is_pending());
        assert!(!timer.cancel());
    }

    #[test]
    fn cancelled_calls_are_skipped_and_compacted() {
        let mut q = TimerQueue::default();
        let t = Instant::now() + Duration::from_secs(60);
        let ran = Arc::new(AtomicUsize::new(0));
        for _ in 0..5000 {
            let ran = ran.clone();
            let (timer, _) = q.push(
                t,
                Box::new(move || _ = ran.fetch_add(1, AtomicOrdering::Relaxed)),
            );
            assert!(timer.cancel());
            assert!(!timer.cancel(), "cancel is idempotent");
        }
        assert!(q.len() < 2100, "heap was compacted, len {}", q.len());
        assert_eq!(q.next_deadline(), None);
        let mut due = Vec::new();
        q.pop_due(t, &mut due);
        assert!(due.is_empty());
    }
}
