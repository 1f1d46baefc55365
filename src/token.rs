//! Single-use tokens for the links the box mails (verification, password,
//! invitation, choosing another uid) and for console forms: 32 random
//! bytes from the OS, hex in the link; only their SHA-256 is stored.

use sha2::{Digest, Sha256};

/// Random bytes for tokens; tests may pass a fixed source.
pub type Random = fn(&mut [u8]);

/// The OS random source.
pub fn os_random(buf: &mut [u8]) {
    // A failing getrandom means a broken system; a zeroed token would be a
    // security bug, so stop.
    if let Err(e) = getrandom::fill(buf) {
        panic!("the OS random source failed: {e}");
    }
}

/// `(plain, hash)`: the plain token goes into the link, only the hash is kept.
pub fn new_token(random: Random) -> (String, String) {
    let mut bytes = [0u8; 32];
    random(&mut bytes);
    let plain: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let hash = hash_token(&plain);
    (plain, hash)
}

pub fn hash_token(plain: &str) -> String {
    Sha256::digest(plain.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
