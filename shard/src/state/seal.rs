//! Secrets at rest in fleet state. Redis is shared infrastructure, not trusted with secrets:
//! the OpenClaw device seed and device token are sealed (ChaCha20-Poly1305) with a key that
//! comes from a Kubernetes Secret (`VOICEBOT_STATE_KEY`), so a reader of Redis — or of its
//! snapshot on disk — learns nothing, and a writer cannot plant an identity of their own.
//!
//! A sealed value is `sealed:v1:<base64url(nonce ‖ ciphertext ‖ tag)>`; the associated data is
//! the value's logical key (`openclaw:device`), so one sealed value cannot stand in for another.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

/// The prefix of a sealed value.
pub const SEALED: &str = "sealed:v1:";

/// Why a stored value could not be opened (never says anything of the value or the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value is sealed and this pod has no key.
    #[error("{0} is sealed but VOICEBOT_STATE_KEY is not set")]
    NoKey(String),
    /// The value does not open with this pod's key (another key, or tampered with).
    #[error("{0} does not open with VOICEBOT_STATE_KEY (sealed with another key, or altered)")]
    WrongKey(String),
    /// Not a sealed value of ours.
    #[error("{0} is not a sealed value")]
    Malformed(String),
}

/// Seals and opens values with the pod's state key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(***)")
    }
}

impl Sealer {
    /// A sealer with the key derived from `secret` (any length; SHA-256 with a domain label).
    pub fn new(secret: &Secret) -> Self {
        let mut h = Sha256::new();
        h.update(b"voicebot fleet-state seal v1\0");
        h.update(secret.expose().trim().as_bytes());
        let key: [u8; 32] = h.finalize().into();
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// `plain` sealed for the logical key `name`.
    pub fn seal(&self, name: &str, plain: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        if getrandom::fill(&mut nonce).is_err() {
            // No OS randomness: a nonce from the clock and a counter is still unique per value.
            let nanos = super::epoch_ms() as u128 * 1_000_000 + u128::from(fastrand::u32(..));
            nonce.copy_from_slice(&nanos.to_le_bytes()[..12]);
        }
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: name.as_bytes(),
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{SEALED}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens `stored`, sealed for `name`.
    pub fn open(&self, name: &str, stored: &str) -> Result<Vec<u8>, SealError> {
        let body = stored
            .strip_prefix(SEALED)
            .ok_or_else(|| SealError::Malformed(name.to_string()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Malformed(name.to_string()))?;
        if bytes.len() < 12 + 16 {
            return Err(SealError::Malformed(name.to_string()));
        }
        let (nonce, sealed) = bytes.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SealError::WrongKey(name.to_string()))
    }
}

/// Whether a stored value is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_and_name_only() {
        let s = Sealer::new(&Secret::new("k1"));
        let sealed = s.seal("openclaw:device", b"the seed");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("the seed"));
        assert_eq!(s.open("openclaw:device", &sealed).unwrap(), b"the seed");
        // Two seals of one value differ (fresh nonce).
        assert_ne!(sealed, s.seal("openclaw:device", b"the seed"));
        // Another key, another name, or a flipped byte: refused.
        let other = Sealer::new(&Secret::new("k2"));
        assert!(matches!(
            other.open("openclaw:device", &sealed),
            Err(SealError::WrongKey(_))
        ));
        assert!(matches!(
            s.open("openclaw:device-token", &sealed),
            Err(SealError::WrongKey(_))
        ));
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed[SEALED.len()..]).unwrap();
        bytes[20] ^= 1;
        let tampered = format!("{SEALED}{}", URL_SAFE_NO_PAD.encode(bytes));
        assert!(s.open("openclaw:device", &tampered).is_err());
        for junk in ["", "sealed:v1:", "sealed:v1:!!", "plain"] {
            assert!(s.open("x", junk).is_err(), "{junk:?}");
        }
        // The errors name the key, never the value.
        let e = other
            .open("openclaw:device", &sealed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("openclaw:device") && !e.contains(&sealed[SEALED.len()..]));
    }
}
