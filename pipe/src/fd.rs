//! [`End`]: a pipe descriptor whose number stays open until drop, so that it can be lent out
//! as a [`BorrowedFd`] from `&self` while another `&self` call closes the pipe behind it.
//!
//! This is the crate's only `unsafe` code: one `BorrowedFd::borrow_raw`.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rustix::fs::{Mode, OFlags};

/// One end of a pipe (or any descriptor), non-blocking while we hold it.
///
/// [`close`](Self::close) closes the pipe end without freeing the descriptor *number*: it
/// duplicates `/dev/null` over it (`dup2` closes the old file atomically). The number is freed
/// only on drop, so a `BorrowedFd` lent out from `&self` stays valid for as long as the borrow
/// of `self`, which is what I/O safety asks of it.
#[derive(Debug)]
pub(crate) struct End {
    /// The number `fd` holds; it stays open until `fd` is dropped with `self`.
    raw: RawFd,
    /// The descriptor. Locked only to `dup2` over it; reads and writes go through `raw`.
    fd: Mutex<OwnedFd>,
    /// False once [`close`](Self::close) replaced the pipe end with `/dev/null`.
    open: AtomicBool,
    /// File status flags to put back before the end is closed (the standard streams share
    /// their open file description with other processes).
    restore: Option<OFlags>,
}

impl End {
    /// Takes `fd` and makes it non-blocking. With `restore_flags`, the original flags are put
    /// back when the end is closed or dropped.
    pub(crate) fn new(fd: OwnedFd, restore_flags: bool) -> io::Result<End> {
        let flags = rustix::fs::fcntl_getfl(&fd)?;
        if !flags.contains(OFlags::NONBLOCK) {
            rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
        }
        Ok(End {
            raw: fd.as_raw_fd(),
            fd: Mutex::new(fd),
            open: AtomicBool::new(true),
            restore: (restore_flags && !flags.contains(OFlags::NONBLOCK)).then_some(flags),
        })
    }

    /// Whether the pipe end is still open.
    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The descriptor, for reading, writing and registering; after [`close`](Self::close) it
    /// refers to `/dev/null`.
    pub(crate) fn borrow(&self) -> BorrowedFd<'_> {
        // SAFETY: `self.fd` owns `self.raw` and keeps that number open until `self` is dropped:
        // `close` replaces the file behind the number with `dup2` and never closes the number
        // itself. The returned borrow cannot outlive `&self`, so the number is open for all of
        // its lifetime.
        unsafe { BorrowedFd::borrow_raw(self.raw) }
    }

    /// Closes the pipe end (the far side sees end of file or `EPIPE`), keeping the number
    /// open on `/dev/null` until drop. Closing twice is harmless.
    ///
    /// # Errors
    ///
    /// `/dev/null` could not be opened (e.g. `EMFILE`) or `dup2` failed; the end stays open.
    pub(crate) fn close(&self) -> io::Result<()> {
        let mut fd = self.fd.lock();
        if !self.open.load(Ordering::Acquire) {
            return Ok(());
        }
        self.restore_flags(&fd);
        let null = rustix::fs::open(
            "/dev/null",
            OFlags::RDWR | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::empty(),
        )?;
        // dup2 keeps the close-on-exec flag off on the new number; set it again so that a
        // child spawned later does not inherit `/dev/null` here (harmless, but untidy).
        rustix::io::dup2(&null, &mut fd)?;
        rustix::io::fcntl_setfd(&*fd, rustix::io::FdFlags::CLOEXEC)?;
        self.open.store(false, Ordering::Release);
        Ok(())
    }

    /// Puts the original file status flags back, if asked to at construction.
    fn restore_flags(&self, fd: &OwnedFd) {
        if let Some(flags) = self.restore {
            if let Err(err) = rustix::fs::fcntl_setfl(fd, flags) {
                tracing::debug!(%err, "restoring file status flags failed");
            }
        }
    }
}

impl AsFd for End {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.borrow()
    }
}

impl Drop for End {
    fn drop(&mut self) {
        if self.is_open() {
            self.restore_flags(&self.fd.lock());
        }
    }
}
