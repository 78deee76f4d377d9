//! Secrets derived from the proxy's master secret: login passwords of the
//! view-set roles, their SCRAM verifiers, and the keys of the keyed masks.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const SCRAM_ITERATIONS: u32 = 4096;

/// HMAC-SHA-256 of `message` under `key`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of every length, so new_from_slice cannot fail.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn derive(secret: &[u8], label: &str, name: &str) -> [u8; 32] {
    hmac_sha256(secret, format!("pgveil/{label}/{name}").as_bytes())
}

/// The backend password of login role `role`, derived from the master secret.
pub fn login_password(secret: &[u8], role: &str) -> String {
    URL_SAFE_NO_PAD.encode(derive(secret, "login-password", role))
}

/// The SCRAM-SHA-256 verifier of `role`'s password, with a salt derived from
/// the secret so that applying twice stores the same verifier.
pub fn scram_verifier(secret: &[u8], role: &str) -> String {
    let password = login_password(secret, role);
    let salt = &derive(secret, "scram-salt", role)[..16];
    let salted = pbkdf2_sha256(password.as_bytes(), salt, SCRAM_ITERATIONS);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${SCRAM_ITERATIONS}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &block);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        for (o, x) in out.iter_mut().zip(u.iter()) {
            *o ^= x;
        }
    }
    out
}

/// The key of the keyed masks (`pseudonym`, `noise`) of one view set.
pub fn mask_key(secret: &[u8], view_set: &str, purpose: &str) -> [u8; 32] {
    derive(secret, &format!("mask-key/{purpose}"), view_set)
}

/// HMAC inner and outer padded keys (64 bytes each): stored in the private
/// table so the views compute HMAC-SHA-256 with the built-in `sha256()`.
pub fn hmac_pads(key: &[u8; 32]) -> (Vec<u8>, Vec<u8>) {
    let mut ipad = vec![0x36u8; 64];
    let mut opad = vec![0x5cu8; 64];
    for (i, k) in key.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    (ipad, opad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_reproduce_hmac() {
        let key = mask_key(b"secret", "analytics", "pseudonym");
        let (ipad, opad) = hmac_pads(&key);
        let inner = Sha256::digest([ipad.as_slice(), b"customer_id:42"].concat());
        let outer = Sha256::digest([opad.as_slice(), inner.as_slice()].concat());
        assert_eq!(outer.as_slice(), hmac_sha256(&key, b"customer_id:42"));
    }

    #[test]
    fn passwords_differ_per_role_and_secret() {
        let a = login_password(b"s1", "veil_standard");
        assert_eq!(a, login_password(b"s1", "veil_standard"));
        assert_ne!(a, login_password(b"s2", "veil_standard"));
        assert_ne!(a, login_password(b"s1", "veil_personal"));
        assert_eq!(a.len(), 43);
    }

    #[test]
    fn pbkdf2_matches_rfc7914_vector() {
        // RFC 7914 section 11: PBKDF2-HMAC-SHA256("passwd", "salt", 1).
        let out = pbkdf2_sha256(b"passwd", b"salt", 1);
        assert_eq!(out[..8], [0x55, 0xac, 0x04, 0x6e, 0x56, 0xe3, 0x08, 0x9f]);
    }

    #[test]
    fn verifier_is_stable() {
        let v = scram_verifier(b"s", "veil_x");
        assert_eq!(v, scram_verifier(b"s", "veil_x"));
        assert!(v.starts_with("SCRAM-SHA-256$4096:"));
    }
}
