//! The TLS examples run as processes on loopback: the echo server against `openssl s_client`
//! and GnuTLS's `gnutls-cli`, the client against `openssl s_server` and `gnutls-serv` (with a
//! TLS 1.3 key update from either end), and the two examples against each other. GnuTLS is a TLS implementation of its own, so those
//! tests are not OpenSSL talking to itself.

#[path = "../tls/tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{lines, pki, wait_for, ChildGuard, SServer};

/// The examples, built once per test binary with the same profile as this test, into a
/// target directory of their own (the outer cargo may still hold the main one).
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // .../target/<profile>/deps/tls_examples-<hash>
        let profile_dir = exe.parent().unwrap().parent().unwrap();
        let target = profile_dir.parent().unwrap().join("tls-examples");
        let release = profile_dir.file_name().unwrap() == "release";
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "-p", "weir", "--example", "tls_echo_server"])
            .args(["--example", "tls_client"])
            .env("CARGO_TARGET_DIR", &target);
        if release {
            command.arg("--release");
        }
        let status = command.status().expect("cargo runs");
        assert!(status.success(), "building the examples failed");
        target
            .join(if release { "release" } else { "debug" })
            .join("examples")
    });
    dir.join(name)
}

/// Writes `bytes` to the file `name` in `dir`; returns its path.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

/// Writes the test certificates into `dir`: (ca.pem, localhost.pem, localhost-key.pem).
fn write_certificates(dir: &Path) -> (String, String, String) {
    (
        write_file(dir, "ca.pem", &pki().ca.cert_pem),
        write_file(dir, "localhost.pem", &pki().localhost.cert_pem),
        write_file(dir, "localhost-key.pem", &pki().localhost.key_pem),
    )
}

/// Writes the test client certificate and its key into `dir`: (client.pem, client-key.pem).
fn write_client_certificate(dir: &Path) -> (String, String) {
    (
        write_file(dir, "client.pem", &pki().client.cert_pem),
        write_file(dir, "client-key.pem", &pki().client.key_pem),
    )
}

/// Starts the echo server example on an ephemeral port; returns it and its address.
fn start_echo_server(cert: &str, key: &str) -> (ChildGuard, String) {
    start_echo_server_with(cert, key, &[], &[])
}

/// As [`start_echo_server`], with these extra arguments and environment variables.
fn start_echo_server_with(
    cert: &str,
    key: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ChildGuard, String) {
    let mut child = ChildGuard(
        Command::new(example("tls_echo_server"))
            .args(["127.0.0.1:0", cert, key])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let text = wait_for(&lines(stdout), "listening on");
    let address = text
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {text:?}"))
        .to_string();
    (child, address)
}

/// Starts the client example.
fn start_client(target: &str, ca: Option<&str>) -> ChildGuard {
    start_client_with(target, ca, &[])
}

/// As [`start_client`], with these extra arguments.
fn start_client_with(target: &str, ca: Option<&str>, args: &[&str]) -> ChildGuard {
    let mut command = Command::new(example("tls_client"));
    command.arg(target);
    if let Some(ca) = ca {
        command.args(["--ca", ca]);
    }
    command.args(args);
    ChildGuard(
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Writes `data` to the child's standard input and closes it (for a TLS client, the end of
/// its input: close_notify follows), reads its standard output to the end, and waits for it.
fn pipe_through(child: &mut ChildGuard, data: &[u8]) -> (std::process::ExitStatus, Vec<u8>) {
    let mut stdin = child.0.stdin.take().unwrap();
    let input = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let mut stdout = child.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).unwrap();
        out
    });
    let status = child.wait();
    feeder.join().unwrap();
    (status, reader.join().unwrap())
}

/// Writes `line` and a newline to the child's standard input and waits until its standard
/// output has it back; otherwise ends the child and panics with what it printed.
fn expect_echo(child: &mut ChildGuard, line: &str) {
    let echoed = lines(child.0.stdout.take().unwrap());
    send_line(child, line);
    let text = wait_for(&echoed, line);
    if !text.contains(line) {
        child.close_stdin();
        child.wait();
        panic!("the child printed {text:?}: {}", child.stderr());
    }
}

#[test]
fn echo_server_example_against_openssl_s_client() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (_server, address) = start_echo_server(&cert, &key);
    let mut client = ChildGuard(
        Command::new("openssl")
            .args(["s_client", "-connect", &address, "-servername", "localhost"])
            .args([
                "-CAfile",
                &ca,
                "-verify_return_error",
                "-quiet",
                "-no_ign_eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the openssl command line tool is needed"),
    );
    // Not a line starting with Q, R or K: s_client reads those as commands.
    expect_echo(&mut client, "hello from s_client");
    client.close_stdin();
    let status = client.wait();
    assert!(status.success(), "s_client: {}", client.stderr());
}

/// A TLS 1.3 key update from the client in the middle of a connection: s_client updates its
/// keys and asks the server to update its own (`K`); the echo goes on, and s_client (`-msg`)
/// sees the server's KeyUpdate before the next echo.
#[test]
fn echo_server_example_answers_a_key_update_from_openssl_s_client() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (_server, address) = start_echo_server(&cert, &key);
    let (mut client, client_out) = start_s_client_echoing(&address, &ca, &[]);
    // Alone in its read, as s_client wants a command.
    send_line(&mut client, "K");
    let update = "TLS 1.3, Handshake [length 0005], KeyUpdate";
    let sent = format!(">>> {update}");
    let text = wait_for(&client_out, &sent);
    assert!(text.contains(&sent), "s_client printed {text}");
    send_line(&mut client, "2 after the update");
    let text = wait_for(&client_out, "2 after the update");
    let answered = text.find(&format!("<<< {update}"));
    let echo = text.find("2 after the update");
    assert!(echo.is_some(), "s_client printed {text}");
    assert!(
        answered.is_some_and(|at| at < echo.unwrap()),
        "s_client printed {text}"
    );
}

/// A renegotiation the client asks for (TLS 1.2, `R`) is refused at once with a
/// no_renegotiation warning, OpenSSL's default for servers: not left unanswered.
#[test]
fn echo_server_example_answers_a_renegotiation_from_openssl_s_client() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (_server, address) = start_echo_server(&cert, &key);
    let (mut client, client_out) = start_s_client_echoing(&address, &ca, &["-tls1_2"]);
    send_line(&mut client, "R");
    let refusal = "<<< TLS 1.2, Alert [length 0002], warning no_renegotiation";
    let text = wait_for(&client_out, refusal);
    assert!(text.contains(refusal), "s_client printed {text}");
}

/// Starts `openssl s_client -msg EXTRA` against the echo server example at `address`
/// (trusting `ca`) and sees a line echoed; returns it and its standard output's lines.
fn start_s_client_echoing(
    address: &str,
    ca: &str,
    extra: &[&str],
) -> (ChildGuard, std::sync::mpsc::Receiver<String>) {
    let mut client = ChildGuard(
        Command::new("openssl")
            .args(["s_client", "-connect", address, "-servername", "localhost"])
            .args(["-CAfile", ca, "-verify_return_error", "-msg"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the openssl command line tool is needed"),
    );
    let client_out = lines(client.0.stdout.take().unwrap());
    // Not a line starting with a letter: s_client may take that as a command.
    send_line(&mut client, "1 before");
    let text = wait_for(&client_out, "1 before");
    assert!(text.contains("1 before"), "s_client printed {text}");
    (client, client_out)
}

/// Writes `line` and a newline to the child's standard input.
fn send_line(child: &mut ChildGuard, line: &str) {
    let stdin = child.0.stdin.as_mut().unwrap();
    stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
    stdin.flush().unwrap();
}

/// TLS 1.1 is refused with a protocol_version alert, also where OpenSSL's configuration
/// would allow it. Debian's allows nothing below 1.2, so both processes run without one
/// (`OPENSSL_CONF=/dev/null`) and s_client lowers its security level so that it may offer
/// 1.1: a server that took 1.1 would fail later, for want of a signature algorithm, with an
/// internal_error alert.
#[test]
fn echo_server_example_refuses_tls11() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = write_certificates(dir.path());
    let no_config = [("OPENSSL_CONF", "/dev/null")];
    let (_server, address) = start_echo_server_with(&cert, &key, &[], &no_config);
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &address, "-tls1_1"])
        .args(["-cipher", "DEFAULT:@SECLEVEL=0"])
        .envs(no_config)
        .stdin(Stdio::null())
        .output()
        .expect("the openssl command line tool is needed");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("alert protocol version"), "{stderr}");
}

/// Where OpenSSL's configuration asks for TLS 1.3 at least, the server keeps to it: a TLS 1.2
/// client is refused, a TLS 1.3 one served.
#[test]
fn echo_server_example_keeps_a_configured_tls13_minimum() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let config = write_file(
        dir.path(),
        "tls13-only.cnf",
        b"openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = tls\n\
          [tls]\nMinProtocol = TLSv1.3\n",
    );
    let env = [("OPENSSL_CONF", config.as_str())];
    let (_server, address) = start_echo_server_with(&cert, &key, &[], &env);
    let s_client = |version: &str| {
        Command::new("openssl")
            .args(["s_client", "-connect", &address, version, "-brief"])
            .args(["-CAfile", &ca, "-verify_return_error"])
            .stdin(Stdio::null())
            .output()
            .expect("the openssl command line tool is needed")
    };
    let refused = s_client("-tls1_2");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("alert protocol version"), "{stderr}");
    let served = s_client("-tls1_3");
    let stderr = String::from_utf8_lossy(&served.stderr);
    assert!(stderr.contains("Protocol version: TLSv1.3"), "{stderr}");
}

#[test]
fn client_example_against_openssl_s_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let SServer {
        child: mut server,
        port,
        lines: server_out,
    } = SServer::start(
        &["-cert", &cert, "-key", &key, "-naccept", "1"],
        Stdio::piped(),
    );

    let mut client = start_client(&format!("localhost:{port}"), Some(&ca));
    let client_out = lines(client.0.stdout.take().unwrap());
    let stdin = client.0.stdin.as_mut().unwrap();
    stdin.write_all(b"from weir\n").unwrap();
    stdin.flush().unwrap();
    let text = wait_for(&server_out, "from weir");
    assert!(text.contains("from weir"), "s_server got {text:?}");

    let server_in = server.0.stdin.as_mut().unwrap();
    server_in.write_all(b"from s_server\n").unwrap();
    server_in.flush().unwrap();
    let text = wait_for(&client_out, "from s_server");
    assert!(text.contains("from s_server"), "client got {text:?}");

    // End of input: close_notify; s_server answers with its own and the client exits 0.
    client.close_stdin();
    let status = client.wait();
    assert!(status.success(), "tls_client: {}", client.stderr());
}

/// A TLS 1.3 key update in the middle of a connection: s_server updates its keys and asks the
/// client to update its own (`K`); data flows both ways afterwards, and s_server sees the
/// client's KeyUpdate before the client's next data.
#[test]
fn client_example_answers_a_key_update_from_openssl_s_server() {
    let update = "TLS 1.3, Handshake [length 0005], KeyUpdate";
    client_example_through_an_s_server_command(
        &[],
        "K",
        &format!(">>> {update}"),
        Some(&format!("<<< {update}")),
    );
}

/// A TLS 1.2 renegotiation asked for by the server (`R`, a HelloRequest): the client goes
/// through a second handshake in the middle of the connection, and data flows both ways
/// afterwards.
#[test]
fn client_example_renegotiates_when_openssl_s_server_asks() {
    // The client's Finished of the second handshake: it has gone through it.
    let finished = "<<< TLS 1.2, Handshake [length 0010], Finished";
    client_example_through_an_s_server_command(&["-tls1_2"], "R", finished, None);
}

/// The client example against `openssl s_server -msg EXTRA`: a line from the client, then the
/// s_server `command`; once s_server has printed `done`, a line each way, and s_server must
/// have printed `answered` (if given) before the client's second line.
fn client_example_through_an_s_server_command(
    extra: &[&str],
    command: &str,
    done: &str,
    answered: Option<&str>,
) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let mut args = vec!["-cert", &cert, "-key", &key, "-naccept", "1", "-msg"];
    args.extend_from_slice(extra);
    let SServer {
        child: mut server,
        port,
        lines: server_out,
    } = SServer::start(&args, Stdio::piped());
    let mut client = start_client(&format!("localhost:{port}"), Some(&ca));
    let client_out = lines(client.0.stdout.take().unwrap());

    send_line(&mut client, "1 before");
    let text = wait_for(&server_out, "1 before");
    assert!(text.contains("1 before"), "s_server got {text:?}");
    // s_server takes a read of its input as a command only if it is the command alone: the
    // next line waits until the command's work is done.
    send_line(&mut server, command);
    let text = wait_for(&server_out, done);
    assert!(text.contains(done), "s_server printed {text}");
    send_line(&mut server, "2 from s_server");
    let text = wait_for(&client_out, "2 from s_server");
    assert!(text.contains("2 from s_server"), "client got {text:?}");
    send_line(&mut client, "3 after");
    let text = wait_for(&server_out, "3 after");
    let reply = text.find("3 after");
    assert!(reply.is_some(), "s_server printed {text}");
    if let Some(answered) = answered {
        let seen = [text.find(answered), reply];
        assert!(
            seen[0] < seen[1] && seen[0].is_some(),
            "s_server printed {text}"
        );
    }

    client.close_stdin();
    let status = client.wait();
    assert!(status.success(), "tls_client: {}", client.stderr());
}

#[test]
fn client_example_through_echo_server_example_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (_server, address) = start_echo_server(&cert, &key);
    let port = address.rsplit_once(':').unwrap().1;
    let mut client = start_client(&format!("localhost:{port}"), Some(&ca));
    let data = common::pattern(16 * 1024 * 1024, 3);
    let (status, echoed) = pipe_through(&mut client, &data);
    assert!(status.success(), "tls_client: {}", client.stderr());
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "the echo differs from what was sent");
}

/// The echo server example with `--client-ca`: s_client presenting the test client
/// certificate is echoed; s_client presenting none is refused (TLS 1.3's
/// certificate_required alert), and the server prints why.
#[test]
fn echo_server_example_requires_a_client_certificate_from_openssl_s_client() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (client_cert, client_key) = write_client_certificate(dir.path());
    let (mut server, address) = start_echo_server_with(&cert, &key, &["--client-ca", &ca], &[]);
    let server_err = lines(server.0.stderr.take().unwrap());
    let with = ["-cert", client_cert.as_str(), "-key", client_key.as_str()];
    let (mut client, _) = start_s_client_echoing(&address, &ca, &with);
    client.close_stdin();
    client.wait();

    let without = Command::new("openssl")
        .args(["s_client", "-connect", &address, "-servername", "localhost"])
        .args(["-CAfile", &ca, "-verify_return_error"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut without = ChildGuard(without);
    // The server's refusal ends s_client, whose input stays open.
    let status = without.wait();
    let stderr = without.stderr();
    assert!(
        !status.success(),
        "s_client without a certificate was served"
    );
    assert!(
        stderr.contains("alert certificate required"),
        "s_client said {stderr}"
    );
    let text = wait_for(&server_err, "peer sent no certificate");
    assert!(
        text.contains("peer sent no certificate"),
        "server said {text}"
    );
}

/// The client example with `--cert` against `openssl s_server -Verify`: s_server checks the
/// certificate against the test CA and echoes.
#[test]
fn client_example_presents_its_certificate_to_openssl_s_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (client_cert, client_key) = write_client_certificate(dir.path());
    let SServer {
        child: mut server,
        port,
        lines: server_out,
    } = SServer::start(
        &[
            "-cert",
            &cert,
            "-key",
            &key,
            "-naccept",
            "1",
            "-rev",
            "-Verify",
            "1",
            "-CAfile",
            &ca,
            "-verify_return_error",
        ],
        Stdio::piped(),
    );
    let args = ["--cert", client_cert.as_str(), "--key", client_key.as_str()];
    let mut client = start_client_with(&format!("localhost:{port}"), Some(&ca), &args);
    let (status, echoed) = pipe_through(&mut client, b"weir\n");
    assert!(status.success(), "tls_client: {}", client.stderr());
    assert_eq!(echoed, b"riew\n");
    server.wait();
    let stderr = server.stderr();
    // s_server has exited: its output runs to its end, all of it read.
    let out: Vec<String> = server_out.iter().collect();
    let text = format!("{}{stderr}", out.join(""));
    assert!(text.contains("depth=0 CN = weir test client"), "{text}");
}

/// Both examples, the server requiring client certificates: the client with `--cert` gets its
/// echo byte for byte; without, it exits 1 naming the server's alert.
#[test]
fn client_example_needs_its_certificate_for_echo_server_example_with_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (client_cert, client_key) = write_client_certificate(dir.path());
    let (_server, address) = start_echo_server_with(&cert, &key, &["--client-ca", &ca], &[]);
    let target = format!("localhost:{}", address.rsplit_once(':').unwrap().1);

    let args = ["--cert", client_cert.as_str(), "--key", client_key.as_str()];
    let mut client = start_client_with(&target, Some(&ca), &args);
    let data = common::pattern(1024 * 1024, 5);
    let (status, echoed) = pipe_through(&mut client, &data);
    assert!(status.success(), "tls_client: {}", client.stderr());
    assert!(echoed == data, "the echo differs from what was sent");

    let mut client = start_client(&target, Some(&ca));
    let (status, echoed) = pipe_through(&mut client, b"hello\n");
    let stderr = client.stderr();
    assert_eq!(status.code(), Some(1), "tls_client: {stderr}");
    assert!(echoed.is_empty());
    assert!(
        stderr.contains("certificate required"),
        "tls_client: {stderr}"
    );
}

#[test]
fn client_example_rejects_an_unknown_issuer_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = write_certificates(dir.path());
    let (_server, address) = start_echo_server(&cert, &key);
    let port = address.rsplit_once(':').unwrap().1;
    // No --ca: the test CA is not among the system's roots.
    let mut client = start_client(&format!("localhost:{port}"), None);
    let status = client.wait();
    let stderr = client.stderr();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not issued by a trusted authority"),
        "{stderr}"
    );
}

/// The IPv4 TCP port that process `pid` listens on: its socket inodes, looked up in
/// `/proc/net/tcp` (`gnutls-serv`, told port 0, does not print the port it got).
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        // sl, local address (HEXADDR:HEXPORT), remote address, state (0A: listening), ...,
        // and the inode tenth.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (state, inode) = (*fields.get(3)?, *fields.get(9)?);
        if state != "0A" || !inodes.iter().any(|ours| ours == inode) {
            return None;
        }
        u16::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()
    })
}

/// Starts `gnutls-serv --echo` presenting `cert` on a port the OS picks; returns it and the
/// port once it listens. (Its "listening" line cannot tell: into a pipe, its output is
/// buffered until it exits.)
fn start_gnutls_serv(cert: &str, key: &str) -> (ChildGuard, u16) {
    let mut server = ChildGuard(
        Command::new("gnutls-serv")
            .args(["--echo", "--port", "0", "--x509certfile", cert])
            .args(["--x509keyfile", key])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gnutls-serv command (Debian package gnutls-bin) is needed"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(port) = listening_port(server.0.id()) {
            return (server, port);
        }
        if Instant::now() > deadline || server.0.try_wait().unwrap().is_some() {
            panic!("gnutls-serv did not listen: {}", server.stderr());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The echo server example against GnuTLS's client, with `priority` (a GnuTLS priority
/// string) making it speak `version`: a MiB of arbitrary bytes comes back byte for byte, and
/// the end of the client's input (its close_notify) ends the connection cleanly.
fn echo_server_example_against_gnutls_cli(priority: &str, version: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (_server, address) = start_echo_server(&cert, &key);
    let (host, port) = address.rsplit_once(':').unwrap();
    let log = dir.path().join("gnutls-cli.log");
    let mut client = ChildGuard(
        Command::new("gnutls-cli")
            .args(["--x509cafile", &ca, "--sni-hostname", "localhost"])
            .args(["--verify-hostname", "localhost", "--priority", priority])
            // Its own messages go to the log, so that standard output is the echo alone.
            .arg(format!("--logfile={}", log.display()))
            .args(["--port", port, host])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the gnutls-cli command (Debian package gnutls-bin) is needed"),
    );
    let data = common::pattern(1024 * 1024, 11);
    let (status, echoed) = pipe_through(&mut client, &data);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "gnutls-cli: {} {log}", client.stderr());
    assert!(log.contains("Handshake was completed"), "{log}");
    assert!(
        log.contains(&format!("({version}-")),
        "not {version}: {log}"
    );
    assert_eq!(echoed.len(), data.len(), "{log}");
    assert!(echoed == data, "the echo differs from what was sent");
}

#[test]
fn echo_server_example_against_gnutls_cli_tls13() {
    echo_server_example_against_gnutls_cli("NORMAL", "TLS1.3");
}

#[test]
fn echo_server_example_against_gnutls_cli_tls12() {
    echo_server_example_against_gnutls_cli("NORMAL:-VERS-ALL:+VERS-TLS1.2", "TLS1.2");
}

#[test]
fn client_example_against_gnutls_serv() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = write_certificates(dir.path());
    let (_server, port) = start_gnutls_serv(&cert, &key);
    let mut client = start_client(&format!("localhost:{port}"), Some(&ca));
    expect_echo(&mut client, "from weir to gnutls");
    // End of input: close_notify; gnutls-serv closes too and the client exits 0.
    client.close_stdin();
    let status = client.wait();
    assert!(status.success(), "tls_client: {}", client.stderr());
}
