//! The OS poller: level-triggered epoll, woken from other threads through an eventfd.
//!
//! A loop turn costs one `epoll_wait`, plus one `read` of the eventfd when another thread woke
//! the loop. (The `polling` crate, used before, re-armed a timerfd and its notifier around
//! every wait: four more system calls per turn, paid on every message of a ping-pong.)
//! `rustix` gives safe wrappers of the system calls; what is left here is the mapping of
//! interest and readiness flags.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{eventfd, EventfdFlags, Timespec};

/// Key of the wake-up eventfd. A registration key reaches it only with generation and slot
/// index both `u32::MAX`; the registry refuses that index.
pub(crate) const WAKE_KEY: u64 = u64::MAX;

/// Events taken from the kernel per wait; more stay queued for the next turn.
const EVENTS_PER_WAIT: usize = 1024;

/// One readiness report.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ready {
    /// The key the descriptor was registered with.
    pub(crate) key: u64,
    /// Readable, or an error or hang-up that a read will report.
    pub(crate) read: bool,
    /// Writable, or an error or hang-up that a write will report.
    pub(crate) write: bool,
    /// `EPOLLERR`.
    pub(crate) error: bool,
    /// `EPOLLHUP`.
    pub(crate) hang_up: bool,
}

/// An epoll instance and the eventfd that interrupts its wait.
#[derive(Debug)]
pub(crate) struct Poller {
    /// The epoll descriptor.
    epoll: OwnedFd,
    /// Non-blocking eventfd, registered level-triggered under [`WAKE_KEY`].
    wake: OwnedFd,
}

impl Poller {
    /// A new epoll instance with its wake-up eventfd registered.
    pub(crate) fn new() -> io::Result<Poller> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &wake, EventData::new_u64(WAKE_KEY), EventFlags::IN)?;
        Ok(Poller { epoll, wake })
    }

    /// Watches `fd` for what `read` and `write` ask, level-triggered. Errors and hang-ups are
    /// reported whatever the interest.
    pub(crate) fn add(
        &self,
        fd: BorrowedFd<'_>,
        key: u64,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        epoll::add(&self.epoll, fd, EventData::new_u64(key), flags(read, write))?;
        Ok(())
    }

    /// Changes what `fd` is watched for.
    pub(crate) fn modify(
        &self,
        fd: BorrowedFd<'_>,
        key: u64,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        epoll::modify(&self.epoll, fd, EventData::new_u64(key), flags(read, write))?;
        Ok(())
    }

    /// Stops watching `fd`.
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(&self.epoll, fd)?;
        Ok(())
    }

    /// Waits until something is ready, the timeout passes (`None`: no timeout; the kernel
    /// counts whole milliseconds) or [`notify`](Self::notify) is called, and appends the
    /// reports to `ready`. `raw` is scratch space kept by the caller between waits. A wake-up
    /// is consumed here and not reported.
    pub(crate) fn wait(
        &self,
        raw: &mut Vec<epoll::Event>,
        ready: &mut Vec<Ready>,
        timeout: Option<Duration>,
    ) -> io::Result<()> {
        raw.clear();
        raw.reserve(EVENTS_PER_WAIT);
        let timeout = timeout.map(|t| Timespec {
            tv_sec: t.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: t.subsec_nanos().into(),
        });
        epoll::wait(&self.epoll, spare_capacity(raw), timeout.as_ref())?;
        for event in raw.iter() {
            let key = event.data.u64();
            let flags = event.flags;
            if key == WAKE_KEY {
                self.clear_wake();
                continue;
            }
            ready.push(Ready {
                key,
                read: flags.intersects(
                    EventFlags::IN | EventFlags::PRI | EventFlags::HUP | EventFlags::ERR,
                ),
                write: flags.intersects(EventFlags::OUT | EventFlags::HUP | EventFlags::ERR),
                error: flags.contains(EventFlags::ERR),
                hang_up: flags.contains(EventFlags::HUP),
            });
        }
        Ok(())
    }

    /// Interrupts the current or next [`wait`](Self::wait). Callers coalesce: one pending
    /// wake-up is enough.
    pub(crate) fn notify(&self) -> io::Result<()> {
        match rustix::io::write(&self.wake, &1u64.to_ne_bytes()) {
            // The counter is full: a wake-up is pending anyway.
            Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Resets the eventfd counter so that the level-triggered wake-up stops reporting.
    fn clear_wake(&self) {
        let mut counter = [0u8; 8];
        // EAGAIN: another wait already read it. Nothing else can fail on our own eventfd.
        let _ = rustix::io::read(&self.wake, &mut counter);
    }
}

/// The epoll flags for an interest.
fn flags(read: bool, write: bool) -> EventFlags {
    let mut flags = EventFlags::empty();
    if read {
        flags |= EventFlags::IN | EventFlags::PRI;
    }
    if write {
        flags |= EventFlags::OUT;
    }
    flags
}
