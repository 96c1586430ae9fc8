//! Fuzzes the `messagepack` hub protocol, alone and after a JSON handshake; see the checks in
//! `src/lib.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::protocol::Protocol;

fuzz_target!(|data: &[u8]| {
    switchboard_fuzz::check_hub_input(Protocol::MessagePack, data);
});
