//! Request signing for the status report (a scheme in the style of GitHub's and Stripe's
//! webhook signatures).
//!
//! When `report.hmac_secret` (or `hmac_secret_file`) is set, every POST carries:
//!
//! ```text
//! X-Brickup-Timestamp: <unix seconds, decimal>
//! X-Brickup-Signature: sha256=<lower-case hex of HMAC-SHA256(secret, "<timestamp>." + body)>
//! ```
//!
//! The signed message is the timestamp's decimal text exactly as sent in the header, one `.`
//! (0x2E), then the raw request body bytes. The key is the secret's UTF-8 bytes. A receiver
//! recomputes the HMAC over the raw body it received (before any JSON parsing), compares it in
//! constant time, and rejects a timestamp more than 300 s from its own clock, which bounds
//! replays. Each retry is signed afresh with a new timestamp.
//!
//! When `report.token` is set, the POST also carries `Authorization: Bearer <token>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::Secret;

pub const TIMESTAMP_HEADER: &str = "X-Brickup-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Brickup-Signature";

/// The `X-Brickup-Signature` value for `body` sent at `timestamp` (unix seconds).
pub fn sign(secret: &Secret, timestamp: u64, body: &[u8]) -> String {
    let mac = mac(secret, timestamp, body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The HMAC state over `"<timestamp>." + body`, for signing and for constant-time verifying.
pub(crate) fn mac(secret: &Secret, timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac() {
        // Reference value from: printf '1700000000.{"a":1}' |
        //   openssl dgst -sha256 -hmac 'k3y' -hex
        let sig = sign(&Secret::new("k3y"), 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(sig, REFERENCE);
    }

    const REFERENCE: &str =
        "sha256=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a";
}
