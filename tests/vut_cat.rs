//! The `vut_cat` example: two processes on loopback pipe files to each other.

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Builds the example (same profile and target directory as this test) and returns its path.
fn build_vut_cat() -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--quiet", "-p", "weir", "--example", "vut_cat"])
        .arg("--message-format=json")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stderr(Stdio::inherit());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(out.status.success(), "building vut_cat failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| {
            l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"name\":\"vut_cat\"")
        })
        .expect("cargo reported the vut_cat artifact");
    let key = "\"executable\":\"";
    let start = line.find(key).expect("artifact has an executable") + key.len();
    let end = start + line[start..].find('"').expect("closing quote");
    PathBuf::from(&line[start..end])
}

/// A free UDP port on loopback (released right away; the race with other programs is
/// harmless here).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind")
}

/// Deterministic pseudo-random bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A started `vut_cat` whose output is being read (a full pipe would stall it).
struct Running {
    child: Child,
    stdout: std::thread::JoinHandle<Vec<u8>>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

/// Reads `pipe` to its end on a thread.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for a `vut_cat` with a deadline; kills it after the deadline.
fn wait(running: Running, limit: Duration) -> Output {
    let Running {
        mut child,
        stdout,
        stderr,
    } = running;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = stderr.join().unwrap_or_default();
            panic!(
                "vut_cat did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// Starts one `vut_cat` with `input` written to its standard input from a thread.
fn spawn(
    exe: &PathBuf,
    bind: u16,
    peer: u16,
    secret: &str,
    peer_secret: &str,
    input: Vec<u8>,
) -> Running {
    let mut child = Command::new(exe)
        .args(["--bind", &format!("127.0.0.1:{bind}")])
        .args(["--peer", &format!("127.0.0.1:{peer}")])
        .args(["--secret", secret, "--peer-secret", peer_secret])
        .args(["--linger-ms", "300"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vut_cat");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Dropping stdin closes it: end of input.
    });
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    Running {
        child,
        stdout,
        stderr,
    }
}

#[test]
fn vut_cat_pipes_files_both_ways() {
    let exe = build_vut_cat();
    let (port_a, port_b) = (free_port(), free_port());
    let (secret_a, secret_b) = (
        "a1a2a3a4a5a6a7a8a9aaabacadaeafb0",
        "0102030405060708090a0b0c0d0e0f10",
    );
    let a_input = data(3 << 20, 1);
    let b_input = data(1 << 20, 2);
    let a = spawn(&exe, port_a, port_b, secret_a, secret_b, a_input.clone());
    let b = spawn(&exe, port_b, port_a, secret_b, secret_a, b_input.clone());
    let a = wait(a, Duration::from_secs(60));
    let b = wait(b, Duration::from_secs(60));
    let stderr = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(a.status.success(), "A failed: {}", stderr(&a));
    assert!(b.status.success(), "B failed: {}", stderr(&b));
    assert!(b.stdout == a_input, "B's output differs from A's input");
    assert!(a.stdout == b_input, "A's output differs from B's input");
}

#[test]
fn vut_cat_one_side_silent() {
    let exe = build_vut_cat();
    let (port_a, port_b) = (free_port(), free_port());
    let (secret_a, secret_b) = (
        "00112233445566778899aabbccddeeff",
        "ffeeddccbbaa99887766554433221100",
    );
    let a_input = data(200_000, 3);
    let a = spawn(&exe, port_a, port_b, secret_a, secret_b, a_input.clone());
    let b = spawn(&exe, port_b, port_a, secret_b, secret_a, Vec::new());
    let a = wait(a, Duration::from_secs(60));
    let b = wait(b, Duration::from_secs(60));
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    assert!(b.stdout == a_input);
    assert!(a.stdout.is_empty());
}

#[test]
fn vut_cat_wrong_secret_fails() {
    let exe = build_vut_cat();
    let (port_a, port_b) = (free_port(), free_port());
    // The handshake times out after 10 s (the default) on both sides.
    let a = spawn(&exe, port_a, port_b, "aaaa", "bbbb", b"hello".to_vec());
    let b = spawn(&exe, port_b, port_a, "bbbb", "cccc", b"hello".to_vec());
    let a = wait(a, Duration::from_secs(60));
    let b = wait(b, Duration::from_secs(60));
    assert!(!a.status.success());
    assert!(!b.status.success());
    let stderr = String::from_utf8_lossy(&a.stderr);
    assert!(stderr.contains("handshake timed out"), "{stderr}");
}
