//! The reactor: one loop over epoll, its timers and its queue of calls.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use slab::Slab;

use crate::handle::{ByteHandle, CloseReason, Direction, Interest};
use crate::poller::{Poller, Ready};
use crate::timer::{Call, Timer, TimerQueue};
use crate::ReactorError;

/// Not yet run.
const IDLE: u8 = 0;
/// The loop is running.
const RUNNING: u8 = 1;
/// The loop has returned; it cannot run again.
const FINISHED: u8 = 2;

/// Rounds of calls one loop turn runs: calls queued by the calls of one round run in the
/// next, up to this many, before the loop looks for I/O again. A chain of deferred steps (a
/// delivery that queues a write, whose end queues a credit grant) then finishes in one turn
/// instead of costing a poll per step, and a call that queues itself still cannot starve I/O.
const CALL_ROUNDS: usize = 8;

thread_local! {
    /// Address of the `Shared` whose loop runs on this thread, or 0.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// A handle to one reactor: a loop that dispatches descriptor readiness, timers and calls, all
/// on one thread.
///
/// `Reactor` is `Send + Sync + Clone`; every clone refers to the same loop. Versile's
/// `VFDWaitReactor` (with `IVCoreReactor`, `IVDescriptorReactor` and `IVTimeReactor`).
///
/// # Methods by kind
///
/// - Running: [`new`](Self::new), [`run`](Self::run) (on the calling thread),
///   [`start`](Self::start) (on a new thread), [`stop`](Self::stop),
///   [`is_reactor_thread`](Self::is_reactor_thread).
/// - Calls: [`call`](Self::call) (always deferred, first in, first out),
///   [`execute`](Self::execute) (now when already on the reactor thread),
///   [`schedule`](Self::schedule) (after a delay, cancellable through [`Timer`]).
/// - Descriptors: [`register`](Self::register), [`set_interest`](Self::set_interest),
///   [`deregister`](Self::deregister).
///
/// # Threading
///
/// Every method can be called from any thread. Calls, timers and handle callbacks always run on
/// the reactor thread. Wake-ups from other threads are coalesced: a burst of calls costs at most
/// one wake-up of the loop and never blocks the caller.
///
/// # Stopping
///
/// [`stop`](Self::stop) makes the loop return after the batch of events it is handling. Then
/// every registered handle gets [`ByteHandle::on_close`] with [`CloseReason::Stopped`] (so that
/// descriptors are closed and nothing leaks), and pending calls and timers are dropped without
/// running. A stop requested before the loop runs makes [`run`](Self::run) return at once.
/// After the loop has returned, calls and timers are dropped silently and registering fails
/// with [`ReactorError::Stopped`].
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
/// use weir_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// let thread = reactor.start()?;
/// let (tx, rx) = mpsc::channel();
/// reactor.schedule(Duration::from_millis(5), move || tx.send("tick").unwrap());
/// assert_eq!(rx.recv().unwrap(), "tick");
/// reactor.stop();
/// thread.join()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "VFDWaitReactor")]
#[doc(alias = "VReactor")]
#[doc(alias = "IVCoreReactor")]
#[doc(alias = "IVDescriptorReactor")]
#[doc(alias = "IVTimeReactor")]
#[derive(Clone)]
pub struct Reactor {
    /// State shared by every clone and the loop.
    shared: Arc<Shared>,
}

/// A registration of a descriptor with a reactor, returned by [`Reactor::register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Token {
    /// Slot in the registry.
    index: u32,
    /// Distinguishes successive registrations of the same slot.
    generation: u32,
}

impl Token {
    /// The key given to the poller.
    fn key(self) -> u64 {
        u64::from(self.generation) << 32 | u64::from(self.index)
    }

    /// The token a poller key stands for.
    fn from_key(key: u64) -> Token {
        Token {
            index: key as u32,
            generation: (key >> 32) as u32,
        }
    }
}

/// The reactor thread started by [`Reactor::start`].
#[derive(Debug)]
pub struct ReactorThread {
    /// The thread running the loop.
    thread: thread::JoinHandle<Result<(), ReactorError>>,
}

impl ReactorThread {
    /// Waits for the loop to return (after [`Reactor::stop`]).
    ///
    /// # Errors
    ///
    /// The loop's own error, or [`ReactorError::Panicked`] if the thread panicked.
    pub fn join(self) -> Result<(), ReactorError> {
        self.thread.join().map_err(|_| ReactorError::Panicked)?
    }
}

/// State shared by every handle to one reactor.
struct Shared {
    /// The OS poller; thread-safe.
    poller: Poller,
    /// `IDLE`, `RUNNING` or `FINISHED`.
    phase: AtomicU8,
    /// Set by [`Reactor::stop`].
    stop_requested: AtomicBool,
    /// A wake-up is on its way to the loop; further ones can be skipped.
    wake_pending: AtomicBool,
    /// Calls waiting for the loop, first in, first out.
    calls: Mutex<VecDeque<Call>>,
    /// Scheduled calls.
    timers: Mutex<TimerQueue>,
    /// Registered descriptors.
    registry: Mutex<Registry>,
}

/// Registered descriptors and the ones the poller cannot report on.
#[derive(Default)]
struct Registry {
    /// One entry per registration.
    entries: Slab<Entry>,
    /// Next generation number for a new registration.
    next_generation: u32,
    /// Indices of entries served without the poller (hung up or unpollable): they are ready
    /// on every loop turn while their interest is set.
    always_ready: Vec<usize>,
    /// Registrations whose interest changed on the reactor thread since the loop last told
    /// the poller (see [`Reactor::set_interest`]).
    changed: Vec<Token>,
}

/// One registered descriptor.
struct Entry {
    /// The descriptor; owned by the handle, which deregisters before closing it.
    fd: RawFd,
    /// Generation of this registration (see [`Token`]).
    generation: u32,
    /// What the handle asks for.
    interest: Interest,
    /// What the poller was last told to watch for.
    polled_interest: Interest,
    /// Whether the entry is in [`Registry::changed`].
    changed: bool,
    /// Whether the poller watches the descriptor (false once hung up, or for regular files).
    polled: bool,
    /// The handle to call.
    handle: Arc<dyn ByteHandle>,
}

impl Reactor {
    /// Creates a reactor that is not yet running.
    ///
    /// # Errors
    ///
    /// The OS refused to create the poller.
    pub fn new() -> io::Result<Reactor> {
        Ok(Reactor {
            shared: Arc::new(Shared {
                poller: Poller::new()?,
                phase: AtomicU8::new(IDLE),
                stop_requested: AtomicBool::new(false),
                wake_pending: AtomicBool::new(false),
                calls: Mutex::new(VecDeque::new()),
                timers: Mutex::new(TimerQueue::default()),
                registry: Mutex::new(Registry::default()),
            }),
        })
    }

    /// Runs the loop on the calling thread until [`stop`](Self::stop).
    ///
    /// # Errors
    ///
    /// [`ReactorError::AlreadyRunning`] if the loop runs or has run already (a reactor runs
    /// once), or [`ReactorError::Io`] if waiting on the poller failed.
    pub fn run(&self) -> Result<(), ReactorError> {
        self.claim()?;
        self.run_claimed()
    }

    /// Runs the loop on a new thread named `weir-reactor`.
    ///
    /// # Errors
    ///
    /// [`ReactorError::AlreadyRunning`] as for [`run`](Self::run), or [`ReactorError::Io`] if
    /// the thread could not be spawned.
    pub fn start(&self) -> Result<ReactorThread, ReactorError> {
        self.claim()?;
        let reactor = self.clone();
        let spawned = thread::Builder::new()
            .name("weir-reactor".into())
            .spawn(move || reactor.run_claimed());
        match spawned {
            Ok(thread) => Ok(ReactorThread { thread }),
            Err(err) => {
                self.shared.phase.store(FINISHED, Ordering::Release);
                Err(ReactorError::Io(err))
            }
        }
    }

    /// Asks the loop to return after its current batch of events. Works from any thread,
    /// before the loop runs too, and more than once.
    pub fn stop(&self) {
        self.shared.stop_requested.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether the loop is running now.
    pub fn is_running(&self) -> bool {
        self.shared.phase.load(Ordering::Acquire) == RUNNING
    }

    /// Whether the loop has returned.
    pub fn is_finished(&self) -> bool {
        self.shared.phase.load(Ordering::Acquire) == FINISHED
    }

    /// Whether the caller runs on this reactor's thread, inside its loop.
    pub fn is_reactor_thread(&self) -> bool {
        CURRENT.with(|c| c.get()) == self.id()
    }

    /// Queues `f` to run on the reactor thread, after everything queued before it.
    ///
    /// Always deferred, also when called on the reactor thread: `f` runs after the callback
    /// or call that queued it has returned. A loop turn runs the calls queued before it, then
    /// those they queue, a few rounds deep, before it looks for I/O again, so a call that
    /// queues itself cannot starve I/O. After the loop has finished, `f` is dropped without
    /// running.
    #[doc(alias = "call_when_running")]
    pub fn call(&self, f: impl FnOnce() + Send + 'static) {
        if self.is_finished() {
            return;
        }
        self.shared.calls.lock().push_back(Box::new(f));
        if !self.is_reactor_thread() {
            self.wake();
        }
    }

    /// Runs `f` now if called on the reactor thread, else queues it as [`call`](Self::call)
    /// does.
    pub fn execute(&self, f: impl FnOnce() + Send + 'static) {
        if self.is_reactor_thread() {
            f();
        } else {
            self.call(f);
        }
    }

    /// Runs `f` on the reactor thread once `delay` has passed on the monotonic clock.
    ///
    /// Calls with equal deadlines run in the order they were scheduled. A call never runs
    /// early; how late it runs depends on the load of the loop. The returned [`Timer`] cancels
    /// it from any thread.
    #[doc(alias = "cg_schedule")]
    pub fn schedule(&self, delay: Duration, f: impl FnOnce() + Send + 'static) -> Timer {
        let deadline = Instant::now() + delay;
        let (timer, earliest) = self.shared.timers.lock().push(deadline, Box::new(f));
        if earliest && !self.is_reactor_thread() {
            self.wake();
        }
        timer
    }

    /// Registers `handle` to be called when `fd` is ready as `interest` asks.
    ///
    /// The handle keeps owning `fd` and must [`deregister`](Self::deregister) before closing
    /// it. A descriptor the poller cannot watch (a regular file) is accepted and always ready.
    ///
    /// # Errors
    ///
    /// [`ReactorError::Stopped`] after the loop has finished, [`ReactorError::Io`] if the
    /// poller refused the descriptor.
    #[doc(alias = "add_reader")]
    #[doc(alias = "add_writer")]
    pub fn register(
        &self,
        fd: BorrowedFd<'_>,
        interest: Interest,
        handle: Arc<dyn ByteHandle>,
    ) -> Result<Token, ReactorError> {
        use std::os::fd::AsRawFd;
        if self.is_finished() {
            return Err(ReactorError::Stopped);
        }
        let mut registry = self.shared.registry.lock();
        let generation = registry.next_generation;
        registry.next_generation = generation.wrapping_add(1);
        let vacant = registry.entries.vacant_entry();
        // Index `u32::MAX` is left out so that no key equals the poller's wake-up key.
        let index = u32::try_from(vacant.key())
            .ok()
            .filter(|&index| index != u32::MAX)
            .ok_or_else(|| {
                ReactorError::Io(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "too many registrations",
                ))
            })?;
        let token = Token { index, generation };
        // The handle owns `fd` and promises (see `ByteHandle`, "Dropping") to deregister it
        // before closing it, so the entry's raw descriptor stays valid while registered.
        let added = self
            .shared
            .poller
            .add(fd, token.key(), interest.read, interest.write);
        let polled = match added {
            Ok(()) => true,
            // epoll refuses regular files: they never block, so they are always ready.
            Err(err) if err.raw_os_error() == Some(libc_eperm()) => false,
            Err(err) => return Err(ReactorError::Io(err)),
        };
        vacant.insert(Entry {
            fd: fd.as_raw_fd(),
            generation,
            interest,
            polled_interest: interest,
            changed: false,
            polled,
            handle,
        });
        if !polled {
            registry.always_ready.push(index as usize);
            drop(registry);
            if !self.is_reactor_thread() {
                self.wake();
            }
        }
        Ok(token)
    }

    /// Changes what a registration asks for.
    ///
    /// From another thread the poller is told at once. On the reactor thread the loop tells it
    /// before it next waits for readiness, so that the changes of one turn cost one system
    /// call at most, and none when the registration goes in the same turn (the handle is
    /// never called for an interest it has dropped: the loop checks each report against the
    /// current interest). If the poller then refuses, the registration is closed with
    /// [`CloseReason::Error`].
    ///
    /// # Errors
    ///
    /// [`ReactorError::NotRegistered`] for a token that was deregistered, [`ReactorError::Io`]
    /// if the poller failed (from another thread).
    #[doc(alias = "start_reading")]
    #[doc(alias = "stop_reading")]
    #[doc(alias = "start_writing")]
    #[doc(alias = "stop_writing")]
    pub fn set_interest(&self, token: Token, interest: Interest) -> Result<(), ReactorError> {
        let mut registry = self.shared.registry.lock();
        let entry = registry.lookup(token).ok_or(ReactorError::NotRegistered)?;
        if entry.interest == interest {
            return Ok(());
        }
        entry.interest = interest;
        if entry.polled && self.is_reactor_thread() {
            if !entry.changed {
                entry.changed = true;
                registry.changed.push(token);
            }
        } else if entry.polled {
            // SAFETY: the entry is registered, so its handle has not closed the descriptor.
            let fd = unsafe { BorrowedFd::borrow_raw(entry.fd) };
            self.shared
                .poller
                .modify(fd, token.key(), interest.read, interest.write)?;
            entry.polled_interest = interest;
        } else if !interest.is_none() && !self.is_reactor_thread() {
            drop(registry);
            self.wake();
        }
        Ok(())
    }

    /// Removes a registration; the handle is not called again once this returns on the
    /// reactor thread (a callback already running on the reactor thread may still finish when
    /// called from another thread). Deregistering twice is harmless.
    #[doc(alias = "remove_reader")]
    #[doc(alias = "remove_writer")]
    pub fn deregister(&self, token: Token) {
        let mut registry = self.shared.registry.lock();
        if let Some(entry) = registry.remove(token) {
            drop(registry);
            self.shared.unpoll(&entry);
        }
    }

    /// Number of registered descriptors.
    pub fn registered(&self) -> usize {
        self.shared.registry.lock().entries.len()
    }

    /// Identity of this reactor for the thread-local check.
    fn id(&self) -> usize {
        Arc::as_ptr(&self.shared) as usize
    }

    /// Moves the reactor from idle to running, or fails.
    fn claim(&self) -> Result<(), ReactorError> {
        self.shared
            .phase
            .compare_exchange(IDLE, RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|_| ReactorError::AlreadyRunning)
    }

    /// Wakes the loop if no wake-up is on its way already.
    fn wake(&self) {
        if !self.shared.wake_pending.swap(true, Ordering::AcqRel) {
            // A failed notify leaves the loop to its next timeout; nothing better to do.
            if let Err(err) = self.shared.poller.notify() {
                tracing::error!(%err, "reactor wake-up failed");
            }
        }
    }

    /// The loop, once claimed.
    fn run_claimed(&self) -> Result<(), ReactorError> {
        let previous = CURRENT.with(|c| c.replace(self.id()));
        let result = Loop::new(self.clone()).run();
        self.shutdown();
        CURRENT.with(|c| c.set(previous));
        result
    }

    /// Closes every registered handle and drops pending calls and timers.
    fn shutdown(&self) {
        self.shared.phase.store(FINISHED, Ordering::Release);
        let entries: Vec<Entry> = {
            let mut registry = self.shared.registry.lock();
            registry.always_ready.clear();
            registry.entries.drain().collect()
        };
        for entry in entries {
            self.shared.unpoll(&entry);
            guarded("closing a handle at stop", || {
                entry.handle.on_close(Direction::Both, CloseReason::Stopped)
            });
        }
        self.shared.timers.lock().clear();
        let calls = std::mem::take(&mut *self.shared.calls.lock());
        drop(calls);
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let phase = match self.shared.phase.load(Ordering::Acquire) {
            IDLE => "idle",
            RUNNING => "running",
            _ => "finished",
        };
        f.debug_struct("Reactor")
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// Takes a removed entry's descriptor out of the poller.
    fn unpoll(&self, entry: &Entry) {
        if entry.polled {
            // SAFETY: the handle deregisters before it closes the descriptor, so `fd` is
            // still open here.
            let fd = unsafe { BorrowedFd::borrow_raw(entry.fd) };
            if let Err(err) = self.poller.delete(fd) {
                tracing::debug!(%err, fd = entry.fd, "poller delete failed");
            }
        }
    }
}

impl Registry {
    /// The entry `token` refers to, if it is still registered.
    fn lookup(&mut self, token: Token) -> Option<&mut Entry> {
        self.entries
            .get_mut(token.index as usize)
            .filter(|entry| entry.generation == token.generation)
    }

    /// Removes and returns the entry `token` refers to.
    fn remove(&mut self, token: Token) -> Option<Entry> {
        let index = token.index as usize;
        self.lookup(token)?;
        self.always_ready.retain(|&i| i != index);
        Some(self.entries.remove(index))
    }
}

/// `EPERM`, which epoll answers for descriptors it cannot watch.
fn libc_eperm() -> i32 {
    1
}

/// Runs `f`, logging and swallowing a panic. Returns whether it completed.
fn guarded(what: &str, f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => true,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("non-string panic");
            tracing::error!(panic = message, "panic in {what}; the reactor carries on");
            false
        }
    }
}

/// The loop's private state.
struct Loop {
    /// The reactor's shared state.
    shared: Arc<Shared>,
    /// Scratch space for the kernel's events.
    raw: Vec<rustix::event::epoll::Event>,
    /// Readiness from one wait, then from the always-ready entries.
    ready: Vec<Ready>,
    /// Calls taken from the queue for one turn.
    calls: VecDeque<Call>,
    /// Timers due in one turn.
    due: Vec<Call>,
}

impl Loop {
    /// A loop for `reactor`.
    fn new(reactor: Reactor) -> Loop {
        Loop {
            shared: reactor.shared.clone(),
            raw: Vec::new(),
            ready: Vec::new(),
            calls: VecDeque::new(),
            due: Vec::new(),
        }
    }

    /// Turns until a stop is requested.
    fn run(mut self) -> Result<(), ReactorError> {
        while !self.shared.stop_requested.load(Ordering::Acquire) {
            self.tell_poller_changes();
            let timeout = self.timeout();
            self.ready.clear();
            if let Err(err) = self
                .shared
                .poller
                .wait(&mut self.raw, &mut self.ready, timeout)
            {
                if err.kind() != io::ErrorKind::Interrupted {
                    return Err(ReactorError::Io(err));
                }
            }
            self.shared.wake_pending.store(false, Ordering::Release);
            self.add_always_ready();
            self.dispatch_ready();
            if self.shared.stop_requested.load(Ordering::Acquire) {
                break;
            }
            self.run_timers();
            self.run_calls();
        }
        Ok(())
    }

    /// Tells the poller the interest changes made on this thread since the last wait;
    /// closes a registration the poller refuses.
    fn tell_poller_changes(&mut self) {
        let mut refused = Vec::new();
        {
            let mut registry = self.shared.registry.lock();
            let mut changed = std::mem::take(&mut registry.changed);
            for token in changed.drain(..) {
                let Some(entry) = registry.lookup(token) else {
                    continue;
                };
                entry.changed = false;
                let interest = entry.interest;
                if !entry.polled || interest == entry.polled_interest {
                    continue;
                }
                // SAFETY: the entry is registered, so its handle has not closed the descriptor.
                let fd = unsafe { BorrowedFd::borrow_raw(entry.fd) };
                match self
                    .shared
                    .poller
                    .modify(fd, token.key(), interest.read, interest.write)
                {
                    Ok(()) => entry.polled_interest = interest,
                    Err(err) => {
                        tracing::warn!(%err, fd = entry.fd, "poller refused an interest change");
                        refused.push(token);
                    }
                }
            }
            // Keep the allocation for the next turn.
            registry.changed = changed;
        }
        for token in refused {
            self.close_entry(token, CloseReason::Error);
        }
    }

    /// How long the next wait may block.
    fn timeout(&mut self) -> Option<Duration> {
        if !self.shared.calls.lock().is_empty() || self.has_always_ready_interest() {
            return Some(Duration::ZERO);
        }
        let deadline = self.shared.timers.lock().next_deadline()?;
        let left = deadline.saturating_duration_since(Instant::now());
        // Round up to whole milliseconds: the poller's resolution. Waking early would spin.
        let millis = left.as_nanos().div_ceil(1_000_000);
        Some(Duration::from_millis(
            u64::try_from(millis).unwrap_or(u64::MAX),
        ))
    }

    /// Whether some descriptor outside the poller wants a call now.
    fn has_always_ready_interest(&self) -> bool {
        let registry = self.shared.registry.lock();
        registry.always_ready.iter().any(|&i| {
            registry
                .entries
                .get(i)
                .is_some_and(|e| !e.interest.is_none())
        })
    }

    /// Adds readiness reports for the entries served without the poller.
    fn add_always_ready(&mut self) {
        let registry = self.shared.registry.lock();
        for &index in &registry.always_ready {
            if let Some(entry) = registry.entries.get(index) {
                let token = Token {
                    index: index as u32,
                    generation: entry.generation,
                };
                let (read, write) = (entry.interest.read, entry.interest.write);
                if read || write {
                    self.ready.push(Ready {
                        key: token.key(),
                        read,
                        write,
                        error: false,
                        hang_up: false,
                    });
                }
            }
        }
    }

    /// Calls the handles of the collected readiness reports.
    fn dispatch_ready(&mut self) {
        for i in 0..self.ready.len() {
            let ready = self.ready[i];
            let token = Token::from_key(ready.key);
            if ready.error {
                // Bytes that came before the error (a TCP peer's last data, then its reset)
                // are still there to read: a handle that wants to read gets them first, and
                // its read reports the error after them.
                if ready.read {
                    if let Some(handle) = self.handle_for(token, |i| i.read) {
                        guarded("on_readable", || handle.on_readable());
                    }
                }
                self.close_entry(token, CloseReason::Error);
                continue;
            }
            if ready.hang_up {
                self.hang_up(token);
            }
            // Look the entry up before each call: an earlier callback may have removed it.
            if ready.read {
                if let Some(handle) = self.handle_for(token, |i| i.read) {
                    if !guarded("on_readable", || handle.on_readable()) {
                        self.close_entry(token, CloseReason::Lost);
                        continue;
                    }
                }
            }
            if ready.write {
                if let Some(handle) = self.handle_for(token, |i| i.write) {
                    if !guarded("on_writable", || handle.on_writable()) {
                        self.close_entry(token, CloseReason::Lost);
                    }
                }
            }
        }
    }

    /// The handle of a live registration whose interest passes `wants`.
    fn handle_for(
        &self,
        token: Token,
        wants: impl Fn(Interest) -> bool,
    ) -> Option<Arc<dyn ByteHandle>> {
        let mut registry = self.shared.registry.lock();
        registry
            .lookup(token)
            .filter(|e| wants(e.interest))
            .map(|e| e.handle.clone())
    }

    /// Takes a hung-up descriptor out of the poller (level-triggered `EPOLLHUP` would repeat
    /// for ever) and tells its handle that output is closed; input stays readable.
    fn hang_up(&mut self, token: Token) {
        let handle = {
            let mut registry = self.shared.registry.lock();
            let Some(entry) = registry.lookup(token) else {
                return;
            };
            if !entry.polled {
                return;
            }
            entry.polled = false;
            let handle = entry.handle.clone();
            // SAFETY: the entry is registered, so the handle has not closed the descriptor.
            let fd = unsafe { BorrowedFd::borrow_raw(entry.fd) };
            if let Err(err) = self.shared.poller.delete(fd) {
                tracing::debug!(%err, "poller delete after hang-up failed");
            }
            registry.always_ready.push(token.index as usize);
            handle
        };
        if !guarded("on_close", || {
            handle.on_close(Direction::Output, CloseReason::HangUp)
        }) {
            self.close_entry(token, CloseReason::Lost);
        }
    }

    /// Removes a registration and closes both directions of its handle.
    fn close_entry(&mut self, token: Token, reason: CloseReason) {
        let entry = self.shared.registry.lock().remove(token);
        if let Some(entry) = entry {
            self.shared.unpoll(&entry);
            guarded("on_close", || {
                entry.handle.on_close(Direction::Both, reason)
            });
        }
    }

    /// Runs the timers due now, in deadline order.
    fn run_timers(&mut self) {
        let now = Instant::now();
        self.shared.timers.lock().pop_due(now, &mut self.due);
        for call in self.due.drain(..) {
            guarded("a scheduled call", call);
        }
    }

    /// Runs the calls queued before this turn, then the calls they queue, for at most
    /// [`CALL_ROUNDS`] rounds; what is queued after that waits for the next turn.
    fn run_calls(&mut self) {
        for _ in 0..CALL_ROUNDS {
            std::mem::swap(&mut self.calls, &mut *self.shared.calls.lock());
            if self.calls.is_empty() {
                return;
            }
            while let Some(call) = self.calls.pop_front() {
                guarded("a call", call);
                if self.shared.stop_requested.load(Ordering::Acquire) {
                    // Stop takes effect after the current call; later calls are dropped.
                    self.calls.clear();
                    return;
                }
            }
        }
    }
}

impl PartialEq for Reactor {
    /// Two handles are equal when they refer to the same loop.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl Eq for Reactor {}
