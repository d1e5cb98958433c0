//! Benchmarks for weir (not published), and the pieces their binaries share.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};

/// Echoes `total` bytes through one TCP connection to `address`: a thread writes 64 KiB at a
/// time and then shuts its half down, this thread reads everything back.
///
/// # Errors
///
/// A socket error, or fewer than `total` bytes coming back.
pub fn bulk_echo(address: SocketAddr, total: usize) -> io::Result<()> {
    let stream = TcpStream::connect(address)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = stream;
    let sender = std::thread::spawn(move || -> io::Result<()> {
        let chunk = vec![0xa5_u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            writer.write_all(&chunk[..n])?;
            sent += n;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0;
    while got < total {
        match reader.read(&mut buf)? {
            0 => break,
            n => got += n,
        }
    }
    sender
        .join()
        .map_err(|_| io::Error::other("writer panicked"))??;
    if got == total {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "bulk: {got} of {total} bytes came back"
        )))
    }
}
