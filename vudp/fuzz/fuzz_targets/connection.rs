//! The core's datagram input, driven by a script of raw, mutated and replayed datagrams.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = weir_vudp::fuzzing::connection_input(data);
});
