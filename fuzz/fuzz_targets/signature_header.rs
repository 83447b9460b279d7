//! Signature checking never panics on any header or body, and accepts only the real signature.
#![no_main]

use crm::security::signature::{sign, verify};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map(|b| *b as usize % (data.len().max(1))).unwrap_or(0);
    let (header, body) = data.split_at(split.min(data.len()));
    let header = String::from_utf8_lossy(header);
    let secret = b"fuzzing-secret-0123456789";
    if verify(Some(&header), body, secret, None).is_some() {
        let real = sign(secret, body);
        let given = header.trim().trim_start_matches("sha256=").to_ascii_lowercase();
        assert_eq!(given, real, "only the true signature verifies");
    }
    let real = sign(secret, body);
    assert!(verify(Some(&real), body, secret, None).is_some());
});
