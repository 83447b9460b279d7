//! Any webhook body, signed or not, parses into an event or fails with a message; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = crm::http::webhooks::payload::parse(data) {
        assert!(!e.to_string().is_empty());
    }
});
