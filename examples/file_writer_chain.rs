//! The file writer of the Versile documentation as a producer/consumer chain: a `ByteSource`
//! emits "Knights who say Ni!" and ends; a consumer writes what it receives into a file.
//!
//! ```text
//!  ByteSource(message) ──link──▶ FileConsumer ──reactor: on_writable──▶ file
//! ```
//!
//! ```text
//! cargo run --example file_writer_chain [PATH]
//! ```

use std::fs::OpenOptions;
use std::time::Duration;

use bytes::Bytes;
use weir::io::{attach, ByteSource, Ending, Produce, SourceHooks};
use weir::reactor::Reactor;

#[path = "file_writer_shared/mod.rs"]
mod shared;

/// Emits a message, then the end (Versile's `MessageSender`).
struct MessageSender(Bytes);

impl SourceHooks for MessageSender {
    fn produce(&mut self, max: usize) -> Produce {
        if self.0.is_empty() {
            return Produce::End(Ending::Completed);
        }
        let n = max.min(self.0.len());
        Produce::Data(self.0.split_to(n))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (path, _temp) = shared::target()?;
    let reactor = Reactor::new()?;
    let thread = reactor.start()?;
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let (consumer, finished) = shared::FileConsumer::new(&reactor, file);
    let producer = ByteSource::new(&reactor, MessageSender(Bytes::from_static(shared::MESSAGE)));
    attach(&producer.producer(), &consumer.consumer())?;
    let (written, ending) = finished.recv_timeout(Duration::from_secs(10))??;
    assert_eq!(
        (written, ending),
        (shared::MESSAGE.len(), Ending::Completed)
    );
    reactor.stop();
    thread.join()?;
    shared::report(&path)?;
    Ok(())
}
