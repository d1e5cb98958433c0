//! The file writer of the Versile documentation with a `ByteWriter`: the message is written
//! into the writer (from the main thread) and flows to the consumer that writes the file.
//!
//! ```text
//!  main thread ──write / end_write──▶ ByteWriter ──link──▶ FileConsumer ──▶ file
//! ```
//!
//! ```text
//! cargo run --example file_writer_bytewriter [PATH]
//! ```

use std::fs::OpenOptions;
use std::time::Duration;

use weir::io::{attach, ByteWriter, Ending};
use weir::reactor::Reactor;

#[path = "file_writer_shared/mod.rs"]
mod shared;

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
    let writer = ByteWriter::new(&reactor, 1024);
    writer.write(shared::MESSAGE)?;
    writer.end_write(Ending::Completed);
    attach(&writer.producer(), &consumer.consumer())?;
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
