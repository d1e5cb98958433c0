//! Runs the socket examples as processes, on loopback: echo server and client over TCP v4,
//! v6 and Unix; 1 GiB through the echo server to a slow reader with bounded server memory;
//! running out of descriptors and recovering; the chat server with three clients; socat (a
//! peer we did not write) as client of the echo server and as echo server for the client.
//!
//! The examples are built in release mode once (`cargo build --release --examples`), so the
//! big transfer takes seconds even when the tests themselves are built in debug mode.
//! `WEIR_ECHO_BYTES` changes the size of the big transfer (default 1 GiB).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a single wait may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// The release build of `name` (built once for all tests).
fn example(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(manifest)
            .args(["build", "--release", "--example", "echo_server"])
            .args(["--example", "echo_client", "--example", "chat_server"])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the examples failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join("target"));
        let target = if target.is_absolute() {
            target
        } else {
            manifest.join(target)
        };
        target.join("release").join("examples")
    });
    dir.join(name)
}

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a server example through `sh -c` (for `ulimit`), waits for `listening on ADDR`
/// and returns the process, the address, and its stdout.
fn start_server(name: &str, address: &str, shell_prefix: &str) -> (Process, String, ChildStdout) {
    let script = format!("{shell_prefix} exec \"$0\" \"$1\"");
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .arg(example(name))
        .arg(address)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start server");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("read the server's first line");
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (Process(child), address, reader.into_inner())
}

/// Runs `echo_client ADDR` with `input` on stdin and returns its stdout.
fn run_client(address: &str, input: Vec<u8>) -> Vec<u8> {
    let mut command = Command::new(example("echo_client"));
    command.arg(address);
    run_with_input(command, input)
}

/// Runs `command` with `input` fed to its stdin (from another thread, so that a command
/// writing while it reads cannot block on us) and returns its stdout once it exited well.
fn run_with_input(mut command: Command, input: Vec<u8>) -> Vec<u8> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|err| panic!("start {command:?}: {err}"));
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut output)
        .unwrap();
    feeder.join().unwrap().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{command:?} failed: {status}");
    output
}

/// Byte `i` of the test pattern.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn pattern_bytes(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(start + i)).collect()
}

/// Resident memory of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start with the state, field 3.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn echo_example_over_tcp_v4() {
    let (_server, address, _out) = start_server("echo_server", "127.0.0.1:0", "");
    let input = pattern_bytes(0, 3 << 20);
    assert!(run_client(&address, input.clone()) == input);
}

#[test]
fn echo_example_over_tcp_v6() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipping: no IPv6 loopback here");
        return;
    }
    let (_server, address, _out) = start_server("echo_server", "[::1]:0", "");
    assert!(address.starts_with("[::1]:"), "{address}");
    let input = pattern_bytes(5, 1 << 20);
    assert!(run_client(&address, input.clone()) == input);
}

#[test]
fn echo_example_over_unix() {
    let path = std::env::temp_dir().join(format!("weir-echo-example-{}", std::process::id()));
    let (_server, address, _out) =
        start_server("echo_server", &format!("unix:{}", path.display()), "");
    assert_eq!(address, format!("unix:{}", path.display()));
    let input = pattern_bytes(9, 1 << 20);
    assert!(run_client(&address, input.clone()) == input);
    let _ = std::fs::remove_file(&path);
}

#[test]
fn echo_client_reaches_localhost_by_name() {
    let (_server, address, _out) = start_server("echo_server", "127.0.0.1:0", "");
    let port = address.rsplit_once(':').unwrap().1;
    let output = run_client(&format!("localhost:{port}"), b"by name\n".to_vec());
    assert_eq!(output, b"by name\n");
}

/// 1 GiB through the echo server to a client that reads slowly: everything comes back in
/// order, and the server's memory stays bounded: backpressure, not buffering.
#[test]
fn echo_example_slow_reader_keeps_server_memory_bounded() {
    let total: u64 = std::env::var("WEIR_ECHO_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    let (server, address, _out) = start_server("echo_server", "127.0.0.1:0", "");
    let pid = server.0.id();
    let start_rss = rss(pid);
    let started = Instant::now();
    let stream = TcpStream::connect(&address).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut sent = 0u64;
        while sent < total {
            let len = (total - sent).min(256 * 1024) as usize;
            writer.write_all(&pattern_bytes(sent, len)).unwrap();
            sent += len as u64;
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let mut reader = stream;
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        let mut at = 0u64;
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (i, &byte) in buf[..n].iter().enumerate() {
                assert_eq!(
                    byte,
                    pattern(at + i as u64),
                    "byte {} differs",
                    at + i as u64
                );
            }
            at += n as u64;
            r.store(at, Ordering::Relaxed);
            // The deliberately slow reader: the behaviour under test.
            std::thread::sleep(Duration::from_micros(500));
        }
        at
    });
    let mut peak = start_rss;
    while !receiver.is_finished() {
        peak = peak.max(rss(pid));
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {} of {total} bytes after 5 minutes",
            received.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let echoed = receiver.join().unwrap();
    sender.join().unwrap();
    let took = started.elapsed();
    let growth = peak.saturating_sub(start_rss);
    eprintln!(
        "{total} bytes echoed to a slow reader in {took:?}; server RSS {} KiB at start, \
         peak growth {} KiB",
        start_rss / 1024,
        growth / 1024
    );
    assert_eq!(echoed, total);
    assert!(growth < 64 << 20, "server memory grew by {growth} bytes");
}

/// Under `ulimit -n 40` the echo server runs out of descriptors: it backs off without
/// spinning (little CPU time), logs it, and serves again once connections close.
#[test]
fn echo_example_survives_running_out_of_descriptors() {
    let (server, address, _out) = start_server("echo_server", "127.0.0.1:0", "ulimit -n 40;");
    let pid = server.0.id();
    let cpu_before = cpu_ticks(pid);
    // More connections than the server can accept; the kernel completes them all (backlog).
    let mut held: Vec<TcpStream> = (0..60)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    // The first ones are served.
    held[0].write_all(b"first").unwrap();
    let mut buf = [0; 5];
    held[0].read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"first");
    // Let the server sit out of descriptors for a while (back-off doubles up to 1 s).
    let stuck = Instant::now();
    while stuck.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let spent = cpu_ticks(pid) - cpu_before;
    let hz = 100; // USER_HZ on Linux
    assert!(
        spent < hz / 2,
        "the server used {spent} ticks of CPU while out of descriptors: it spins"
    );
    // Close them all; a new connection is served again.
    for stream in &mut held {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    held.clear();
    let mut fresh = TcpStream::connect(&address).unwrap();
    fresh.set_read_timeout(Some(DEADLINE)).unwrap();
    fresh.write_all(b"again").unwrap();
    fresh.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"again");
    drop(fresh);
    // It said what happened, on stderr.
    let mut server = server;
    server.0.kill().unwrap();
    let mut log = String::new();
    server
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(log.contains("out of resources"), "stderr: {log}");
}

/// Reads one line from `reader`, without its newline.
fn line(reader: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.ends_with('\n'), "incomplete line {line:?}");
    line.pop();
    line
}

#[test]
fn chat_example_relays_lines_to_the_other_clients() {
    let (_server, address, _out) = start_server("chat_server", "127.0.0.1:0", "");
    let mut clients = Vec::new();
    for _ in 0..3 {
        let stream = TcpStream::connect(&address).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let welcome = line(&mut reader);
        let peer = welcome
            .strip_prefix("welcome ")
            .unwrap_or_else(|| panic!("unexpected greeting {welcome:?}"))
            .to_owned();
        assert_eq!(peer, format!("tcp:{}", stream.local_addr().unwrap()));
        clients.push((stream, reader, peer));
    }
    // Every line from one client reaches the two others, prefixed with its sender.
    for sender in 0..3 {
        let text = format!("hello from client {sender}");
        clients[sender]
            .0
            .write_all(format!("{text}\r\n").as_bytes())
            .unwrap();
        let expected = format!("{}: {text}", clients[sender].2);
        for (receiver, client) in clients.iter_mut().enumerate() {
            if receiver != sender {
                assert_eq!(line(&mut client.1), expected);
            }
        }
    }
    // A line split across writes arrives whole; the sender never hears itself: each
    // client's next line is the other's message, not its own.
    clients[0].0.write_all(b"split ").unwrap();
    clients[0].0.flush().unwrap();
    clients[0].0.write_all(b"line\n").unwrap();
    clients[1].0.write_all(b"from one\n").unwrap();
    assert_eq!(
        line(&mut clients[1].1),
        format!("{}: split line", clients[0].2)
    );
    assert_eq!(
        line(&mut clients[0].1),
        format!("{}: from one", clients[1].2)
    );
    let c2 = [line(&mut clients[2].1), line(&mut clients[2].1)];
    assert!(
        c2.contains(&format!("{}: split line", clients[0].2)),
        "{c2:?}"
    );
    assert!(
        c2.contains(&format!("{}: from one", clients[1].2)),
        "{c2:?}"
    );
    // A client that leaves is gone for the others; the rest still talk.
    let (gone, _, _) = clients.remove(2);
    drop(gone);
    clients[0].0.write_all(b"still here\n").unwrap();
    assert_eq!(
        line(&mut clients[1].1),
        format!("{}: still here", clients[0].2)
    );
}

/// Fails unless `output` is `input`, saying how much came back.
fn assert_echoed(output: &[u8], input: &[u8]) {
    assert!(
        output == input,
        "{} of {} bytes back",
        output.len(),
        input.len()
    );
}

/// Runs `socat` with `args`, `input` on its stdin, and returns its stdout (CI installs
/// socat).
fn socat(args: &[&str], input: Vec<u8>) -> Vec<u8> {
    let mut command = Command::new("socat");
    command.args(args);
    run_with_input(command, input)
}

/// socat, a client we did not write, through the echo server over TCP and Unix: it sends
/// everything, half-closes, and must get every byte back before the server closes. At most
/// what the way back can hold (the server's 256 KiB write buffer alone): socat's writes
/// block in the loop that reads the echo, so a longer echo could stall socat itself.
#[test]
fn socat_client_through_the_echo_example() {
    let (_server, address, _out) = start_server("echo_server", "127.0.0.1:0", "");
    let input = pattern_bytes(11, 256 << 10);
    // `-t 30`: after its input ends, socat waits up to 30 s (not the default 0.5 s) for the
    // echo to end too; it exits as soon as it does.
    let output = socat(&["-t", "30", "-", &format!("TCP:{address}")], input.clone());
    assert_echoed(&output, &input);

    let path = std::env::temp_dir().join(format!("weir-echo-socat-{}", std::process::id()));
    let (_server, address, _out) =
        start_server("echo_server", &format!("unix:{}", path.display()), "");
    let input = pattern_bytes(12, 256 << 10);
    let target = format!("UNIX-CONNECT:{}", address.strip_prefix("unix:").unwrap());
    let output = socat(&["-t", "30", "-", &target], input.clone());
    assert_echoed(&output, &input);
    let _ = std::fs::remove_file(&path);
}

/// The echo client against an echo server we did not write: socat listening on a Unix
/// socket, each connection's bytes sent back through a pipe. Less than a pipe's capacity:
/// socat writes to its pipe blocking, in the same loop that reads it, so more can deadlock
/// socat itself.
#[test]
fn echo_client_example_against_a_socat_echo_server() {
    let path = std::env::temp_dir().join(format!("weir-socat-echo-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let _server = Process(
        Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", path.display()))
            .arg("PIPE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start socat (CI installs it)"),
    );
    // Listening once a connection goes through (socat binds the path before it listens).
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(&path).is_err() {
        assert!(started.elapsed() < DEADLINE, "socat never listened");
        std::thread::sleep(Duration::from_millis(2));
    }
    let input = pattern_bytes(13, 48 << 10);
    let output = run_client(&format!("unix:{}", path.display()), input.clone());
    assert_echoed(&output, &input);
    let _ = std::fs::remove_file(&path);
}
