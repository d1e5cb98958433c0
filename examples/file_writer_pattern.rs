//! The file writer of the Versile documentation in the read/write pattern: the handle has
//! `write_some`, `start_writing` and `stop_writing` methods, and `on_writable` is written with
//! them.
//!
//! ```text
//! cargo run --example file_writer_pattern [PATH]
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::{mpsc, Arc, Weak};

use parking_lot::Mutex;
use weir::reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, Token};

#[path = "file_writer_shared/mod.rs"]
mod shared;

/// A writer in the Versile `IVByteOutput` pattern.
struct TmpWriter {
    /// The reactor it registers with.
    reactor: Reactor,
    /// Itself, to register.
    me: Weak<TmpWriter>,
    /// The file; `None` once closed.
    file: Mutex<Option<File>>,
    /// What is left to write.
    message: Mutex<&'static [u8]>,
    /// The registration while writing.
    token: Mutex<Option<Token>>,
    /// Told when the file is closed.
    done: mpsc::Sender<Result<(), String>>,
}

impl TmpWriter {
    /// Writes what the file takes now.
    fn write_some(&self, data: &[u8]) -> io::Result<usize> {
        match self.file.lock().as_mut() {
            Some(file) => file.write(data),
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Asks the reactor to call `on_writable`.
    fn start_writing(&self) -> io::Result<()> {
        let file = self.file.lock();
        let (Some(file), Some(me)) = (file.as_ref(), self.me.upgrade()) else {
            return Ok(());
        };
        let mut token = self.token.lock();
        if token.is_none() {
            *token = Some(
                self.reactor
                    .register(file.as_fd(), Interest::WRITE, me)
                    .map_err(io::Error::other)?,
            );
        }
        Ok(())
    }

    /// Stops the calls.
    fn stop_writing(&self) {
        if let Some(token) = self.token.lock().take() {
            self.reactor.deregister(token);
        }
    }

    /// Stops writing and closes the file (in that order).
    fn close(&self, outcome: Result<(), String>) {
        self.stop_writing();
        if self.file.lock().take().is_some() {
            let _ = self.done.send(outcome);
        }
    }
}

impl ByteHandle for TmpWriter {
    fn on_writable(&self) {
        let message = *self.message.lock();
        match self.write_some(message) {
            Ok(n) => {
                let rest = &message[n..];
                *self.message.lock() = rest;
                if rest.is_empty() {
                    self.close(Ok(()));
                }
            }
            Err(err) => self.close(Err(err.to_string())),
        }
    }

    fn on_close(&self, _direction: Direction, reason: CloseReason) {
        self.close(Err(format!("closed: {reason}")));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (path, _temp) = shared::target()?;
    let reactor = Reactor::new()?;
    let thread = reactor.start()?;
    let (done, finished) = mpsc::channel();
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let writer = Arc::new_cyclic(|me| TmpWriter {
        reactor: reactor.clone(),
        me: me.clone(),
        file: Mutex::new(Some(file)),
        message: Mutex::new(shared::MESSAGE),
        token: Mutex::new(None),
        done,
    });
    writer.start_writing()?;
    finished.recv_timeout(std::time::Duration::from_secs(10))??;
    reactor.stop();
    thread.join()?;
    shared::report(&path)?;
    Ok(())
}
