//! Runs `examples/exec_server.rs` as a process and talks to it over loopback TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Upper bound for any single wait.
const LIMIT: Duration = Duration::from_secs(60);

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the example (cargo does not build examples for `--test` runs) and returns its path.
fn example_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--example", "exec_server"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the example failed");
    // This test runs from <target>/<profile>/deps/; the example is in <target>/<profile>/examples/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    profile_dir.join("examples").join("exec_server")
}

/// Starts the server with `command` and returns it with its address.
fn start(command: &[&str]) -> (Server, String) {
    let mut child = Command::new(example_binary())
        .arg("127.0.0.1:0")
        .arg("--")
        .args(command)
        .stdout(Stdio::piped())
        .spawn()
        .expect("the example starts");
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (server, address)
}

/// Sends `input`, shuts down writing, returns everything received until the server closes.
fn exchange(address: &str, input: &[u8]) -> Vec<u8> {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(LIMIT)).unwrap();
    stream.set_write_timeout(Some(LIMIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let input = input.to_vec();
    // Write from a thread: the server reads only as fast as the child and we take output.
    let sender = std::thread::spawn(move || {
        writer.write_all(&input).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut output = Vec::new();
    (&stream).read_to_end(&mut output).unwrap();
    sender.join().unwrap();
    output
}

#[test]
fn exec_server_runs_tr_per_connection() {
    let (_server, address) = start(&["tr", "a-z", "A-Z"]);
    let input: Vec<u8> = b"knights who say ni! "
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    let expected = input.to_ascii_uppercase();
    // Two connections at once, each with its own child.
    let a = {
        let address = address.clone();
        let input = input.clone();
        std::thread::spawn(move || exchange(&address, &input))
    };
    let b = exchange(&address, b"spam");
    assert_eq!(b, b"SPAM");
    let a = a.join().unwrap();
    assert_eq!(a.len(), expected.len());
    assert!(a == expected, "bytes differ");
}

#[test]
fn exec_server_runs_cat() {
    let (_server, address) = start(&["cat"]);
    let input: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let output = exchange(&address, &input);
    assert!(output == input, "cat changed the bytes");
}
