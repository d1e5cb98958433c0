//! The file writer of the Versile documentation, as a raw `ByteHandle`: the reactor calls
//! `on_writable` and the handle writes "Knights who say Ni!" into a file, then deregisters and
//! closes it.
//!
//! The poller (epoll) refuses regular files; the reactor accepts them anyway and treats them as
//! always ready, as `select` and `poll` do.
//!
//! ```text
//! cargo run --example file_writer_handle [PATH]
//! ```

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{mpsc, Arc};

use parking_lot::Mutex;
use weir::reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, Token};

#[path = "file_writer_shared/mod.rs"]
mod shared;

/// Writes a message into a file whenever the reactor says the file is writable.
struct TmpWriter {
    /// The reactor it is registered with.
    reactor: Reactor,
    /// The file, until the message is written.
    file: Mutex<Option<File>>,
    /// What is left to write.
    message: Mutex<&'static [u8]>,
    /// Our registration, once known.
    token: Mutex<Option<Token>>,
    /// Told when the file is closed.
    done: mpsc::Sender<Result<(), String>>,
}

impl ByteHandle for TmpWriter {
    fn on_writable(&self) {
        let Some(token) = *self.token.lock() else {
            return; // not yet registered: the next turn calls again
        };
        let mut message = self.message.lock();
        let mut file = self.file.lock();
        let Some(f) = file.as_mut() else { return };
        match f.write(&message) {
            Ok(n) => *message = &message[n..],
            Err(err) => {
                let _ = self.done.send(Err(err.to_string()));
                return;
            }
        }
        if message.is_empty() {
            // Deregister before closing the descriptor.
            self.reactor.deregister(token);
            *file = None;
            let _ = self.done.send(Ok(()));
        }
    }

    fn on_close(&self, _direction: Direction, reason: CloseReason) {
        *self.file.lock() = None;
        let _ = self.done.send(Err(format!("closed: {reason}")));
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
    let writer = Arc::new(TmpWriter {
        reactor: reactor.clone(),
        file: Mutex::new(None),
        message: Mutex::new(shared::MESSAGE),
        token: Mutex::new(None),
        done,
    });
    let token = reactor.register(file.as_fd(), Interest::WRITE, writer.clone())?;
    *writer.token.lock() = Some(token);
    *writer.file.lock() = Some(file);
    finished.recv_timeout(std::time::Duration::from_secs(10))??;
    reactor.stop();
    thread.join()?;
    shared::report(&path)?;
    Ok(())
}
