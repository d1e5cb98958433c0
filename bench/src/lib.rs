//! Benchmarks for weir (not published), and the pieces their binaries share.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// One server under test: a binary of this package in its own process, pinned to CPU 0
/// (with `taskset`, where it works).
#[derive(Debug)]
pub struct Server {
    /// Label in the tables.
    pub name: &'static str,
    /// The process.
    child: Child,
    /// Where it listens.
    pub address: SocketAddr,
}

impl Server {
    /// Starts `binary` (a file next to the running benchmark) with the arguments `args` and
    /// `127.0.0.1:0`, and waits for its `listening on ADDR` line.
    ///
    /// # Errors
    ///
    /// The process could not start, or its first line was not `listening on ADDR`.
    pub fn start(name: &'static str, binary: &str, args: &[&OsStr]) -> io::Result<Server> {
        let path = std::env::current_exe()?.with_file_name(binary);
        let mut command = if taskset_works() {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("0").arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let mut child = command
            .args(args)
            .arg("127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let address = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| io::Error::other(format!("{name}: unexpected first line {line:?}")))?;
        Ok(Server {
            name,
            child,
            address,
        })
    }

    /// CPU time of the server so far, all its threads, to the nanosecond (the first field
    /// of each thread's `/proc/PID/task/TID/schedstat`; `/proc/PID/stat` counts 10 ms ticks,
    /// too coarse for one round).
    pub fn cpu_time(&self) -> Duration {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()));
        let nanos: u64 = tasks
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Duration::from_nanos(nanos)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `taskset` can pin processes here.
pub fn taskset_works() -> bool {
    Command::new("taskset")
        .args(["-c", "0", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Pins all this process's threads, and the threads and processes it starts from now on, to
/// `cpu` (the servers get CPU 0, load generators CPU 1); false where `taskset` fails.
pub fn pin_self(cpu: usize) -> bool {
    Command::new("taskset")
        .args([
            "-a",
            "-cp",
            &cpu.to_string(),
            &std::process::id().to_string(),
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The median of `values` (NaN for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median of the ratios `a[i] / b[i]` of runs made next to each other.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    median(a.iter().zip(b).map(|(a, b)| a / b).collect())
}

/// Runs `rounds` rounds of weir's `weir` and its peer's `peer` (either may be absent),
/// alternating which goes first; returns each side's results in round order. Runs next to
/// each other in time make pairs for [`paired_ratio`], so a burst of load from another tenant
/// of the machine spoils one pair instead of tilting a whole row.
pub fn alternate<T>(
    rounds: u64,
    mut weir: Option<impl FnMut() -> T>,
    mut peer: Option<impl FnMut() -> T>,
) -> (Vec<T>, Vec<T>) {
    let (mut w, mut p) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Each run leaves the allocator and the CPU caches in a different state for the next.
        let weir_first = round % 2 == 0;
        for weirs_turn in [weir_first, !weir_first] {
            match (weirs_turn, &mut weir, &mut peer) {
                (true, Some(run), _) => w.push(run()),
                (false, _, Some(run)) => p.push(run()),
                _ => {}
            }
        }
    }
    (w, p)
}

/// [`alternate`] over two servers, weir's (`servers[0]`) and its peer's, with a `run` that can
/// fail: each side's results in round order, or the first error.
pub fn alternate_servers<T>(
    rounds: u64,
    servers: &[Server; 2],
    run: impl Fn(&Server) -> io::Result<T>,
) -> io::Result<[Vec<T>; 2]> {
    let (weir, peer) = alternate(rounds, Some(|| run(&servers[0])), Some(|| run(&servers[1])));
    Ok([
        weir.into_iter().collect::<io::Result<_>>()?,
        peer.into_iter().collect::<io::Result<_>>()?,
    ])
}
