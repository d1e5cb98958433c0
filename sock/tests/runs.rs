//! A run of chunks (`Link::deliver_chunks`) reaches the socket as few vectored writes, not a
//! write per chunk, and arrives whole and in order.

mod common;

use std::io::{self, IoSlice, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::Running;
use weir_io::{attach, ByteWriter, Ending, Peer};
use weir_reactor::Direction;
use weir_sock::{AgentConfig, Descriptors, StreamAgent, StreamIo};

/// A Unix socket that counts the vectored writes made on it.
struct Counting {
    socket: UnixStream,
    writes: Arc<AtomicUsize>,
}

impl StreamIo for Counting {
    fn read(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        Ok(rustix::io::read(
            &self.socket,
            rustix::buffer::spare_capacity(buf),
        )?)
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(rustix::io::writev(&self.socket, bufs)?)
    }

    fn descriptors(&self) -> Descriptors<'_> {
        Descriptors::Shared(std::os::fd::AsFd::as_fd(&self.socket))
    }

    fn shutdown(&self, direction: Direction) -> io::Result<()> {
        let how = match direction {
            Direction::Input => std::net::Shutdown::Read,
            Direction::Output => std::net::Shutdown::Write,
            Direction::Both => std::net::Shutdown::Both,
        };
        self.socket.shutdown(how)
    }

    fn peer(&self) -> Peer {
        Peer::Pipe
    }
}

#[test]
fn a_run_of_small_writes_goes_out_in_a_few_vectored_writes() {
    let running = Running::new();
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let writes = Arc::new(AtomicUsize::new(0));
    let agent = StreamAgent::new(
        &running.reactor,
        Counting {
            socket: ours,
            writes: writes.clone(),
        },
        AgentConfig::default(),
    )
    .unwrap();

    // 640 writes of 10 bytes, all buffered before the writer is attached: its first delivery
    // is one run.
    let writer = ByteWriter::new(&running.reactor, 1 << 20);
    let mut expected = Vec::new();
    for i in 0..640u32 {
        let chunk: Vec<u8> = (0..10).map(|j| (i * 10 + j) as u8).collect();
        expected.extend_from_slice(&chunk);
        writer.write(Bytes::from(chunk)).unwrap();
    }
    writer.end_write(Ending::Completed);
    attach(&writer.producer(), &agent.io_pair().consumer).unwrap();

    let mut received = Vec::new();
    theirs.read_to_end(&mut received).unwrap();
    assert_eq!(received, expected, "every byte, in order");
    // 64 buffers per vectored write: 10 for the run, whatever the socket takes at once.
    let calls = writes.load(Ordering::SeqCst);
    assert!(calls <= 12, "{calls} writes for a run of 640 chunks");
}
