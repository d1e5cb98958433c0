//! [`PipeIo`]: a read end and a write end as one [`StreamIo`], for a [`StreamAgent`].

use std::fmt;
use std::io::{self, IoSlice};

use weir_io::Peer;
use weir_reactor::{Direction, Reactor, ReactorError};
use weir_sock::{AgentConfig, Descriptors, StreamAgent, StreamIo};

use crate::{PipeReader, PipeWriter};

/// A pipe pair as a stream: reads come from a [`PipeReader`], writes go to a [`PipeWriter`];
/// either may be missing.
///
/// Put it under a [`StreamAgent`] with [`into_agent`](Self::into_agent): the agent is the
/// same one that serves sockets (Versile's `VPipeAgent` is its `VClientSocketAgent`), with
/// the same credit rules. Shutting down a direction closes that end of the pipe (the agent
/// deregisters it first); dropping the `PipeIo` closes both.
///
/// A write to a pipe whose reader has gone fails with `EPIPE` (never `SIGPIPE`, see
/// [`PipeWriter`]), and so does a readiness report of an error on the write end: the agent
/// closes its output and aborts the chain that feeds it.
#[doc(alias = "VPipeAgent")]
pub struct PipeIo {
    /// Where reads come from.
    reader: Option<PipeReader>,
    /// Where writes go.
    writer: Option<PipeWriter>,
    /// What [`StreamIo::peer`] reports.
    peer: Peer,
}

impl PipeIo {
    /// A stream over `reader` and `writer`, with [`Peer::Pipe`] as its peer.
    pub fn new(reader: Option<PipeReader>, writer: Option<PipeWriter>) -> PipeIo {
        PipeIo {
            reader,
            writer,
            peer: Peer::Pipe,
        }
    }

    /// A stream over duplicates of this process's standard input and output (see
    /// [`PipeReader::stdin`] and [`PipeWriter::stdout`] for the caveats).
    ///
    /// # Errors
    ///
    /// Duplicating a descriptor or setting it non-blocking failed.
    pub fn stdio() -> io::Result<PipeIo> {
        Ok(PipeIo::new(
            Some(PipeReader::stdin()?),
            Some(PipeWriter::stdout()?),
        ))
    }

    /// This stream reporting `peer` (e.g. [`Peer::Process`]).
    #[must_use]
    pub fn with_peer(mut self, peer: Peer) -> PipeIo {
        self.peer = peer;
        self
    }

    /// A [`StreamAgent`] over this stream, registered with `reactor` at once.
    ///
    /// With the default [`AgentConfig`] each direction closes on its own (half-close): end of
    /// file on the reader ends the downstream chain but writing goes on, and the end of the
    /// upstream chain closes the writer but reading goes on. Versile's `VPipeAgent` closed both
    /// when either closed: ask for that with
    /// [`HalfClosePolicy::NO_HALF_CLOSE`](weir_io::HalfClosePolicy::NO_HALF_CLOSE). Either
    /// way, once both directions are closed both descriptors are deregistered, then closed.
    ///
    /// # Errors
    ///
    /// The reactor refused a descriptor (e.g. it has stopped).
    #[doc(alias = "VPipeAgent")]
    pub fn into_agent(
        self,
        reactor: &Reactor,
        config: AgentConfig,
    ) -> Result<StreamAgent, ReactorError> {
        StreamAgent::new(reactor, self, config)
    }
}

impl StreamIo for PipeIo {
    fn read(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match &self.reader {
            Some(reader) => reader.try_read_buf(buf),
            None => Ok(0),
        }
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &self.writer {
            Some(writer) => writer.try_write_vectored(bufs),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        }
    }

    fn descriptors(&self) -> Descriptors<'_> {
        Descriptors::Split {
            input: self.reader.as_ref().map(|r| r.end.borrow()),
            output: self.writer.as_ref().map(|w| w.end.borrow()),
        }
    }

    fn shutdown(&self, direction: Direction) -> io::Result<()> {
        if direction.has_input() {
            if let Some(reader) = &self.reader {
                reader.end.close()?;
            }
        }
        if direction.has_output() {
            if let Some(writer) = &self.writer {
                writer.end.close()?;
            }
        }
        Ok(())
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        // The only error condition a pipe reports is a write end whose reader has gone.
        let broken = self.writer.as_ref().is_some_and(PipeWriter::is_broken);
        Ok(broken.then(|| io::ErrorKind::BrokenPipe.into()))
    }

    fn peer(&self) -> Peer {
        self.peer.clone()
    }
}

impl fmt::Debug for PipeIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipeIo")
            .field("reader", &self.reader)
            .field("writer", &self.writer)
            .field("peer", &self.peer)
            .finish()
    }
}
