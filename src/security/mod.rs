//! Pure security primitives: password hashing, secret comparison, webhook signatures, tokens.

pub mod password;
pub mod signature;
pub mod tokens;

use rand::{distributions::Alphanumeric, Rng, RngCore};
use subtle::ConstantTimeEq;

/// 32 random bytes as hex: the format the guide asks for every secret.
pub fn random_secret_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// A password a person can type, with about 119 bits of entropy.
pub fn random_password() -> String {
    rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}

/// Compares two secrets without leaking, through timing, how much of them matched.
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
