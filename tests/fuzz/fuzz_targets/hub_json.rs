//! Fuzzes the `json` hub protocol and the handshake; see the checks in `src/lib.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::protocol::Protocol;

fuzz_target!(|data: &[u8]| {
    switchboard_fuzz::check_hub_input(Protocol::Json, data);
});
