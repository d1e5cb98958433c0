//! A TLS echo server: every byte a client sends comes back, encrypted.
//!
//! ```text
//! cargo run --example tls_echo_server -- 127.0.0.1:8443 cert.pem key.pem [--client-ca ca.pem]
//! ```
//!
//! `cert.pem` holds the certificate chain (leaf first), `key.pem` the PKCS#8 private key. The
//! server prints `listening on ADDR` (with the real port when given port 0) and serves until
//! killed. Try it with `openssl s_client -connect ADDR -CAfile ca.pem`.
//!
//! With `--client-ca`, every client must present a certificate issued by a CA in that file
//! (`openssl s_client ... -cert client.pem -key client.key`); a client that fails is refused,
//! and why is printed on standard error.

use std::sync::Arc;

use bytes::Bytes;
use weir::io::{ByteWAgent, ByteWriter, WAgentHooks};
use weir::reactor::Reactor;
use weir::sock::{AgentConfig, ListenOptions};
use weir::tls::net::TlsListener;
use weir::tls::{ClientAuth, TlsIdentity, TlsServerConfig};

/// Writes back what it receives; ends its output when the client's input ends.
struct Echo;

impl WAgentHooks for Echo {
    fn on_data(&mut self, writer: &Arc<ByteWriter>, data: Bytes) {
        // The agent grants its input only the writer's free space: this always fits.
        if let Err(error) = writer.write(data) {
            eprintln!("echo write failed: {error}");
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (address, cert, key, client_ca) = match args.as_slice() {
        [address, cert, key] => (address, cert, key, None),
        [address, cert, key, flag, ca] if flag == "--client-ca" => (address, cert, key, Some(ca)),
        _ => {
            eprintln!("usage: tls_echo_server ADDR CERT.pem KEY.pem [--client-ca CA.pem]");
            std::process::exit(2);
        }
    };
    let identity = TlsIdentity::from_pem_files(cert, key)?;
    let mut config = TlsServerConfig::builder(identity);
    if let Some(ca) = client_ca {
        config = config
            .with_client_auth(ClientAuth::Required)
            .with_client_roots_pem(&std::fs::read(ca)?);
    }
    let config = config.build()?;
    let reactor = Reactor::new()?;
    let r = reactor.clone();
    let listener = TlsListener::bind(
        &reactor,
        &address.parse()?,
        config,
        ListenOptions::default(),
        AgentConfig::default(),
        move |connection| {
            let echo = ByteWAgent::new(&r, 64 * 1024, Echo);
            if let Err(error) = connection.plain.attach(&echo.io_pair()) {
                eprintln!("cannot serve a connection: {error}");
            }
            connection.tls.set_on_event(|event| {
                if let weir::tls::TlsEvent::Failed(error) = event {
                    eprintln!("tls failed: {error}");
                }
            });
        },
    )?;
    println!("listening on {}", listener.local_address());
    reactor.run()?;
    Ok(())
}
