//! Packet parsing: any bytes either fail to parse or re-encode to themselves.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir_vudp::fuzzing::parse_packet(data);
});
