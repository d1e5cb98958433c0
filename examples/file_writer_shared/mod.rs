//! What the four file-writer examples share: where to write, how to report, and (for the chain
//! and writer examples) a consumer that writes what it receives into a file.
#![allow(dead_code)]

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use weir::io::{ByteConsumer, ConsumerRef, Credit, Ending, Link, LinkSlot};
use weir::reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, Token};

/// The message of the Versile documentation's examples.
pub(crate) const MESSAGE: &[u8] = b"Knights who say Ni!";

/// The file to write: the first argument, or a temporary file (kept until the guard drops).
pub(crate) fn target() -> io::Result<(PathBuf, Option<tempfile::NamedTempFile>)> {
    match std::env::args_os().nth(1) {
        Some(path) => Ok((PathBuf::from(path), None)),
        None => {
            let temp = tempfile::NamedTempFile::new()?;
            Ok((temp.path().to_path_buf(), Some(temp)))
        }
    }
}

/// Prints what the file holds now.
pub(crate) fn report(path: &std::path::Path) -> io::Result<()> {
    let written = std::fs::read(path)?;
    println!(
        "wrote {} bytes to {}: {:?}",
        written.len(),
        path.display(),
        String::from_utf8_lossy(&written)
    );
    Ok(())
}

/// What a [`FileConsumer`] reports at the end: bytes written and how the stream ended.
pub(crate) type Outcome = io::Result<(usize, Ending)>;

/// How many bytes a [`FileConsumer`] buffers before it stops granting credit.
const WINDOW: usize = 4096;

/// A consumer that writes what it receives into a file, as the reactor finds the file
/// writable (a regular file always is).
///
/// It is both a `ByteConsumer` (the chain side) and a `ByteHandle` (the reactor side): it
/// starts writing when data arrives, stops when its buffer is empty, and reports the outcome
/// on a channel once the stream has ended and everything is written.
pub(crate) struct FileConsumer {
    /// The reactor everything runs on.
    reactor: Reactor,
    /// This consumer, to register itself as a handle.
    me: Weak<FileConsumer>,
    /// The link to the producer.
    slot: LinkSlot,
    /// File, buffer and flags.
    state: Mutex<FileState>,
    /// Where the outcome goes.
    done: Mutex<Option<mpsc::Sender<Outcome>>>,
}

/// Mutable part of a [`FileConsumer`].
struct FileState {
    /// The file; `None` once closed.
    file: Option<File>,
    /// Received, not yet written.
    pending: Vec<u8>,
    /// The registration while writing.
    token: Option<Token>,
    /// The end of the stream, once it came.
    ending: Option<Ending>,
    /// Bytes written so far.
    written: usize,
}

impl FileConsumer {
    /// A consumer writing into `file`; the outcome (bytes written and the ending) arrives on
    /// the returned channel.
    pub(crate) fn new(
        reactor: &Reactor,
        file: File,
    ) -> (Arc<FileConsumer>, mpsc::Receiver<Outcome>) {
        let (tx, rx) = mpsc::channel();
        let consumer = Arc::new_cyclic(|me| FileConsumer {
            reactor: reactor.clone(),
            me: me.clone(),
            slot: LinkSlot::new(),
            state: Mutex::new(FileState {
                file: Some(file),
                pending: Vec::new(),
                token: None,
                ending: None,
                written: 0,
            }),
            done: Mutex::new(Some(tx)),
        });
        (consumer, rx)
    }

    /// This consumer as a chain element.
    pub(crate) fn consumer(self: &Arc<Self>) -> ConsumerRef {
        self.clone()
    }

    /// Writes what the file takes now (Versile `write_some`).
    fn write_some(&self, state: &mut FileState) -> io::Result<usize> {
        let Some(file) = state.file.as_mut() else {
            return Ok(0);
        };
        let n = file.write(&state.pending)?;
        state.pending.drain(..n);
        state.written += n;
        Ok(n)
    }

    /// Asks the reactor for writability (Versile `start_writing`).
    fn start_writing(&self, state: &mut FileState) -> io::Result<()> {
        if state.token.is_some() {
            return Ok(());
        }
        let (Some(file), Some(me)) = (state.file.as_ref(), self.me.upgrade()) else {
            return Ok(());
        };
        let token = self
            .reactor
            .register(file.as_fd(), Interest::WRITE, me)
            .map_err(io::Error::other)?;
        state.token = Some(token);
        Ok(())
    }

    /// Withdraws from the reactor (Versile `stop_writing`).
    fn stop_writing(&self, state: &mut FileState) {
        if let Some(token) = state.token.take() {
            self.reactor.deregister(token);
        }
    }

    /// Closes the file and reports, once.
    fn finish(&self, outcome: io::Result<Ending>) {
        let written = {
            let mut state = self.state.lock();
            self.stop_writing(&mut state);
            state.file = None;
            state.written
        };
        if let Some(done) = self.done.lock().take() {
            let _ = done.send(outcome.map(|ending| (written, ending)));
        }
    }

    /// Credit: what was received plus the free part of the window.
    fn credit(&self, link: &Link) -> Credit {
        let pending = self.state.lock().pending.len();
        link.window(WINDOW.saturating_sub(pending) as u64)
    }
}

impl ByteConsumer for FileConsumer {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.slot
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        self.credit(link)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        let started = {
            let mut state = self.state.lock();
            state.pending.extend_from_slice(&data);
            self.start_writing(&mut state)
        };
        if let Err(err) = started {
            self.finish(Err(err));
        }
        self.credit(link)
    }

    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        let empty = {
            let mut state = self.state.lock();
            state.ending = Some(ending);
            state.pending.is_empty()
        };
        if empty {
            self.finish(Ok(ending));
        }
    }

    fn on_abort(&self) {
        self.finish(Ok(Ending::Lost));
    }
}

impl ByteHandle for FileConsumer {
    fn on_writable(&self) {
        let mut state = self.state.lock();
        if let Err(err) = self.write_some(&mut state) {
            drop(state);
            self.finish(Err(err));
            return;
        }
        if !state.pending.is_empty() {
            return;
        }
        self.stop_writing(&mut state);
        let ending = state.ending;
        drop(state);
        match ending {
            Some(ending) => self.finish(Ok(ending)),
            None => {
                // Room again: let the producer send more.
                if let Some(link) = self.slot.link() {
                    link.grant(self.credit(&link));
                }
            }
        }
    }

    fn on_close(&self, _direction: Direction, reason: CloseReason) {
        self.finish(Err(io::Error::other(format!(
            "closed by the reactor: {reason}"
        ))));
    }
}
