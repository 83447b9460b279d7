//! Money parsing from text and JSON never panics, and what parses prints back to itself.
#![no_main]

use crm::domain::Money;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = Money::parse(text) {
            assert_eq!(Money::parse(&m.to_string()).ok(), Some(m));
            let _ = m.to_json_number();
        }
    }
    if let Ok(m) = serde_json::from_slice::<Money>(data) {
        assert_eq!(Money::parse(&m.to_string()).ok(), Some(m));
    }
});
