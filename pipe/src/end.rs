//! [`PipeReader`] and [`PipeWriter`]: the two ends of an OS pipe, non-blocking, and [`pipe`]
//! to make a pair.

use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::buffer::spare_capacity;
use rustix::pipe::PipeFlags;

use crate::fd::End;

/// The read end of an OS pipe (or of any readable descriptor: a terminal, a file), in
/// non-blocking mode.
///
/// Versile `VPipeReader`. On its own it is a plain descriptor with [`try_read`](Self::try_read);
/// a [`PipeIo`](crate::PipeIo) puts it under a [`StreamAgent`](weir_sock::StreamAgent), which
/// registers it with the reactor and reads it as downstream credit allows.
///
/// Dropping it closes the descriptor.
#[doc(alias = "VPipeReader")]
pub struct PipeReader {
    /// The descriptor.
    pub(crate) end: End,
}

/// The write end of an OS pipe (or of any writable descriptor), in non-blocking mode.
///
/// Versile `VPipeWriter`. Writing to a pipe whose read end has closed fails with `EPIPE`
/// ([`io::ErrorKind::BrokenPipe`]) instead of raising `SIGPIPE`, **as long as the process
/// ignores `SIGPIPE`**, which the Rust runtime arranges before `main` (a program built with
/// `-Zon-broken-pipe=kill`, or one that resets the signal, would be killed instead). Pipes
/// have no `MSG_NOSIGNAL`.
///
/// Dropping it closes the descriptor; the reader then sees end of file.
#[doc(alias = "VPipeWriter")]
pub struct PipeWriter {
    /// The descriptor.
    pub(crate) end: End,
}

/// A new pipe: what is written to the [`PipeWriter`] is read from the [`PipeReader`]. Both
/// ends are non-blocking and close-on-exec.
///
/// # Errors
///
/// The OS refused (e.g. too many open files).
///
/// # Examples
///
/// ```
/// let (reader, writer) = weir_pipe::pipe()?;
/// assert_eq!(writer.try_write(b"Ni!")?, 3);
/// let mut buf = [0; 8];
/// assert_eq!(reader.try_read(&mut buf)?, 3);
/// assert_eq!(&buf[..3], b"Ni!");
/// assert_eq!(reader.try_read(&mut buf).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn pipe() -> io::Result<(PipeReader, PipeWriter)> {
    let (read, write) = rustix::pipe::pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
    Ok((PipeReader::new(read)?, PipeWriter::new(write)?))
}

impl PipeReader {
    /// Takes a readable descriptor (e.g. a `std::process::ChildStdout`) and sets it
    /// non-blocking.
    ///
    /// `O_NONBLOCK` belongs to the open file description, which is shared with every
    /// duplicate of the descriptor, also in other processes.
    ///
    /// # Errors
    ///
    /// `fcntl` failed (e.g. not a descriptor).
    pub fn new(fd: impl Into<OwnedFd>) -> io::Result<PipeReader> {
        Ok(PipeReader {
            end: End::new(fd.into(), false)?,
        })
    }

    /// A duplicate of this process's standard input, set non-blocking.
    ///
    /// Closing the reader closes only the duplicate: descriptor 0 stays open for the rest of
    /// the process. `O_NONBLOCK` is set on the open file description, which the standard input
    /// shares with the parent (a shell, a terminal): while the reader lives, others reading
    /// that description see `EAGAIN` too. The original flags are put back when the reader is
    /// closed or dropped. A standard input redirected from a regular file works as well: the
    /// reactor treats regular files as always ready.
    ///
    /// # Errors
    ///
    /// Duplicating or `fcntl` failed.
    pub fn stdin() -> io::Result<PipeReader> {
        let fd = rustix::io::fcntl_dupfd_cloexec(io::stdin().as_fd(), 3)?;
        Ok(PipeReader {
            end: End::new(fd, true)?,
        })
    }

    /// Reads into `buf` without blocking: `Ok(0)` is end of file, `WouldBlock` means nothing
    /// to read now.
    ///
    /// # Errors
    ///
    /// `WouldBlock`, or what the OS reports; `NotConnected` once the reader was closed.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.end.is_open() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        Ok(rustix::io::read(self.end.borrow(), buf)?)
    }

    /// Reads without blocking into the spare capacity of `buf` (`capacity() - len()` bytes at
    /// most, never reallocating), appending what it read, and returns how many bytes that was.
    /// `Ok(0)` with spare capacity is end of file. The spare capacity need not be initialised.
    ///
    /// # Errors
    ///
    /// As for [`try_read`](Self::try_read).
    ///
    /// # Examples
    ///
    /// ```
    /// let (reader, writer) = weir_pipe::pipe()?;
    /// writer.try_write(b"Ni!")?;
    /// let mut buf = Vec::with_capacity(64);
    /// assert_eq!(reader.try_read_buf(&mut buf)?, 3);
    /// assert_eq!(buf, b"Ni!");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        if !self.end.is_open() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        Ok(rustix::io::read(self.end.borrow(), spare_capacity(buf))?)
    }

    /// Whether the reader is open (a [`PipeIo`](crate::PipeIo) closes it when input shuts
    /// down).
    pub fn is_open(&self) -> bool {
        self.end.is_open()
    }
}

impl PipeWriter {
    /// Takes a writable descriptor (e.g. a `std::process::ChildStdin`) and sets it
    /// non-blocking (see [`PipeReader::new`] about `O_NONBLOCK`).
    ///
    /// # Errors
    ///
    /// `fcntl` failed (e.g. not a descriptor).
    pub fn new(fd: impl Into<OwnedFd>) -> io::Result<PipeWriter> {
        Ok(PipeWriter {
            end: End::new(fd.into(), false)?,
        })
    }

    /// A duplicate of this process's standard output, set non-blocking.
    ///
    /// The caveats of [`PipeReader::stdin`] apply: closing the writer leaves descriptor 1
    /// open (so the reader at the other end sees end of file only when the process exits or
    /// closes descriptor 1 itself), and `O_NONBLOCK` is shared with the parent until the
    /// writer is closed. Do not mix with `println!`: the two write independently.
    ///
    /// # Errors
    ///
    /// Duplicating or `fcntl` failed.
    pub fn stdout() -> io::Result<PipeWriter> {
        let fd = rustix::io::fcntl_dupfd_cloexec(io::stdout().as_fd(), 3)?;
        Ok(PipeWriter {
            end: End::new(fd, true)?,
        })
    }

    /// Writes from `buf` without blocking; returns how much was written.
    ///
    /// # Errors
    ///
    /// `WouldBlock` when the pipe is full, `BrokenPipe` when the reader is gone,
    /// `NotConnected` once the writer was closed, or what else the OS reports.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    /// Writes from `bufs`, in order, without blocking; returns how much was written.
    ///
    /// # Errors
    ///
    /// As for [`try_write`](Self::try_write).
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if !self.end.is_open() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        Ok(rustix::io::writev(self.end.borrow(), bufs)?)
    }

    /// Whether the writer is open.
    pub fn is_open(&self) -> bool {
        self.end.is_open()
    }

    /// Whether the read end is known to be gone: the descriptor polls `POLLERR`.
    pub(crate) fn is_broken(&self) -> bool {
        use rustix::event::{PollFd, PollFlags};
        if !self.end.is_open() {
            return false;
        }
        let fd = self.end.borrow();
        let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::OUT)];
        let zero = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        matches!(rustix::event::poll(&mut fds, Some(&zero)), Ok(1))
            && fds[0].revents().contains(PollFlags::ERR)
    }
}

impl AsFd for PipeReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.end.borrow()
    }
}

impl AsFd for PipeWriter {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.end.borrow()
    }
}

impl fmt::Debug for PipeReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeReader")
            .field("fd", &self.end.borrow())
            .field("open", &self.end.is_open())
            .finish()
    }
}

impl fmt::Debug for PipeWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeWriter")
            .field("fd", &self.end.borrow())
            .field("open", &self.end.is_open())
            .finish()
    }
}
