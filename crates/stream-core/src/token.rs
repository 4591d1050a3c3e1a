//! Signed stream tokens: how a browser's `EventSource`, which cannot send headers, proves which
//! user it streams for.
//!
//! A token is `v1.<key id>.<expiry>.<user, base64url>.<HMAC-SHA256, base64url>`. The MAC covers
//! the version, key id, expiry, user and channel, so a token is good for one channel only; the
//! channel itself is not in the token but in the URL it is used with. Verification runs in
//! constant time. Keys rotate: sign with the current key, and keep the previous ones for
//! verification until their tokens have expired.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::TryRngCore;
use sha2::Sha256;

use crate::ids::{ChannelId, UserId};

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused. Web adapters answer all of them with 403.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format.
    #[error("malformed stream token")]
    Malformed,
    /// Signed with a key this server does not have.
    #[error("stream token signed with an unknown key")]
    UnknownKey,
    /// The signature does not match (tampered, or made for another channel).
    #[error("stream token signature does not match this channel")]
    BadSignature,
    /// Past its expiry.
    #[error("stream token expired")]
    Expired,
}

#[derive(Clone)]
struct Key {
    id: String,
    secret: Vec<u8>,
}

/// Signs and verifies stream tokens.
#[derive(Clone)]
pub struct StreamTokenSigner {
    current: Key,
    previous: Vec<Key>,
}

impl std::fmt::Debug for StreamTokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTokenSigner")
            .field("key_id", &self.current.id)
            .finish_non_exhaustive()
    }
}

fn key_id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl StreamTokenSigner {
    /// A signer with one key, id `k1`.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            current: Key {
                id: "k1".into(),
                secret: secret.into(),
            },
            previous: Vec::new(),
        }
    }

    /// A signer with a random 32-byte key (tokens die with the process).
    pub fn random() -> Self {
        let mut secret = vec![0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut secret)
            .expect("the OS has randomness");
        Self::new(secret)
    }

    /// A signer whose current key has this id (1 to 32 bytes of `A-Z a-z 0-9 _ -`).
    ///
    /// # Panics
    /// On an invalid key id.
    pub fn with_key(key_id: &str, secret: impl Into<Vec<u8>>) -> Self {
        assert!(key_id_ok(key_id), "invalid stream token key id {key_id:?}");
        Self {
            current: Key {
                id: key_id.into(),
                secret: secret.into(),
            },
            previous: Vec::new(),
        }
    }

    /// Rotates: `key_id`/`secret` signs from now on; the old current key still verifies.
    ///
    /// # Panics
    /// On an invalid key id.
    #[must_use]
    pub fn rotate(mut self, key_id: &str, secret: impl Into<Vec<u8>>) -> Self {
        assert!(key_id_ok(key_id), "invalid stream token key id {key_id:?}");
        let old = std::mem::replace(
            &mut self.current,
            Key {
                id: key_id.into(),
                secret: secret.into(),
            },
        );
        self.previous.retain(|k| k.id != key_id);
        self.previous.insert(0, old);
        self
    }

    fn mac(key: &Key, expiry: u64, user: &str, channel: &ChannelId) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&key.secret).expect("HMAC takes any key length");
        for part in ["v1", &key.id, &expiry.to_string(), user, channel.as_str()] {
            mac.update(&(part.len() as u32).to_be_bytes());
            mac.update(part.as_bytes());
        }
        mac
    }

    /// A token for `user` on `channel`, valid for `ttl`.
    pub fn sign(&self, user: &UserId, channel: &ChannelId, ttl: Duration) -> String {
        let expiry = (SystemTime::now() + ttl)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.sign_with_expiry(user, channel, expiry)
    }

    /// A token with an explicit expiry (Unix seconds). Mostly for tests.
    pub fn sign_with_expiry(&self, user: &UserId, channel: &ChannelId, expiry_unix: u64) -> String {
        let tag = Self::mac(&self.current, expiry_unix, user.as_str(), channel)
            .finalize()
            .into_bytes();
        format!(
            "v1.{}.{}.{}.{}",
            self.current.id,
            expiry_unix,
            URL_SAFE_NO_PAD.encode(user.as_str()),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// Checks `token` for `channel` and returns its user.
    pub fn verify(&self, token: &str, channel: &ChannelId) -> Result<UserId, TokenError> {
        let mut parts = token.split('.');
        let (Some("v1"), Some(key_id), Some(expiry), Some(user), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        // Only the decimal form the signer writes: `u64::from_str` would also take `+123` and
        // `0123`, and a token must verify only as it was made.
        if !expiry.bytes().all(|b| b.is_ascii_digit()) || (expiry.len() > 1 && expiry.starts_with('0')) {
            return Err(TokenError::Malformed);
        }
        let expiry: u64 = expiry.parse().map_err(|_| TokenError::Malformed)?;
        let user = URL_SAFE_NO_PAD.decode(user).map_err(|_| TokenError::Malformed)?;
        let user = String::from_utf8(user).map_err(|_| TokenError::Malformed)?;
        let user = UserId::new(&user).map_err(|_| TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TokenError::Malformed)?;
        let key = std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == key_id)
            .ok_or(TokenError::UnknownKey)?;
        Self::mac(key, expiry, user.as_str(), channel)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if now >= expiry {
            return Err(TokenError::Expired);
        }
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (UserId, ChannelId) {
        (UserId::new("alice").unwrap(), ChannelId::new("chan1").unwrap())
    }

    #[test]
    fn a_token_verifies_for_its_channel_only() {
        let (user, channel) = ids();
        let signer = StreamTokenSigner::new(b"secret".to_vec());
        let token = signer.sign(&user, &channel, Duration::from_secs(60));
        assert_eq!(signer.verify(&token, &channel), Ok(user));
        let other = ChannelId::new("chan2").unwrap();
        assert_eq!(signer.verify(&token, &other), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampering_expiry_and_garbage_are_refused() {
        let (user, channel) = ids();
        let signer = StreamTokenSigner::new(b"secret".to_vec());
        let expired = signer.sign_with_expiry(&user, &channel, 1);
        assert_eq!(signer.verify(&expired, &channel), Err(TokenError::Expired));
        let token = signer.sign(&user, &channel, Duration::from_secs(60));
        let mallory = URL_SAFE_NO_PAD.encode("mallory");
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("v1.{}.{}.{}.{}", parts[1], parts[2], mallory, parts[4]);
        assert_eq!(signer.verify(&forged, &channel), Err(TokenError::BadSignature));
        let later = format!("v1.{}.{}.{}.{}", parts[1], u64::MAX, parts[3], parts[4]);
        assert_eq!(signer.verify(&later, &channel), Err(TokenError::BadSignature));
        for junk in ["", "v1", "v2.k1.1.YQ.YQ", "v1.k1.x.YQ.YQ", "v1.k1.1.YQ.YQ.extra"] {
            assert_eq!(signer.verify(junk, &channel), Err(TokenError::Malformed), "{junk}");
        }
        // Another spelling of the same expiry is not the token the signer made.
        for expiry in [
            format!("+{}", parts[2]),
            format!("0{}", parts[2]),
            format!("00{}", parts[2]),
        ] {
            let respelled = format!("v1.{}.{}.{}.{}", parts[1], expiry, parts[3], parts[4]);
            assert_eq!(
                signer.verify(&respelled, &channel),
                Err(TokenError::Malformed),
                "{respelled}"
            );
        }
        let stranger = StreamTokenSigner::new(b"other".to_vec());
        assert_eq!(stranger.verify(&token, &channel), Err(TokenError::BadSignature));
    }

    #[test]
    fn rotation_keeps_old_tokens_valid() {
        let (user, channel) = ids();
        let old = StreamTokenSigner::new(b"one".to_vec());
        let token = old.sign(&user, &channel, Duration::from_secs(60));
        let rotated = old.rotate("k2", b"two".to_vec());
        assert_eq!(rotated.verify(&token, &channel), Ok(user.clone()));
        let fresh = rotated.sign(&user, &channel, Duration::from_secs(60));
        assert!(fresh.starts_with("v1.k2."));
        let only_new = StreamTokenSigner::with_key("k2", b"two".to_vec());
        assert_eq!(only_new.verify(&token, &channel), Err(TokenError::UnknownKey));
    }
}
