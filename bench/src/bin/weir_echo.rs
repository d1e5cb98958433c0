//! weir's echo server for the benchmark: every connection's producer feeds its own consumer.
//!
//! `weir_echo ADDR` prints `listening on ADDR` and serves until killed.

use weir_io::attach;
use weir_reactor::Reactor;
use weir_sock::{AgentConfig, ListenOptions, Listener};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()?;
    let reactor = Reactor::new()?;
    let r = reactor.clone();
    let listener = Listener::bind(
        &reactor,
        &address,
        ListenOptions::default(),
        move |accepted| match accepted.into_agent(&r, AgentConfig::default()) {
            Ok(agent) => {
                let pair = agent.io_pair();
                if let Err(err) = attach(&pair.producer, &pair.consumer) {
                    eprintln!("attach failed: {err}");
                }
            }
            Err(err) => eprintln!("agent failed: {err}"),
        },
    )?;
    println!("listening on {}", listener.local_address());
    reactor.run()?;
    Ok(())
}
