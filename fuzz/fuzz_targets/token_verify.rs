//! Token verification against fixed keys: never panics, and accepts a string only if it is exactly
//! the token one of the keys signs for that user and expiry. The seed corpus holds real tokens of
//! these keys (`docs/fuzzing.md`), so mutations of valid tokens are explored.
//!
//! Input starting with `#sign ` is instead `#sign <expiry> <user>`: it is signed, then must verify
//! (or be expired) and verify for its channel only.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use stream_core::{ChannelId, StreamTokenSigner, TokenError, UserId};

const OLD_SECRET: &[u8] = b"fuzz secret one";
const NEW_SECRET: &[u8] = b"fuzz secret two";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let signer = StreamTokenSigner::with_key("k1", OLD_SECRET).rotate("k2", NEW_SECRET);
    let channel = ChannelId::new("chan").expect("valid");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();

    if let Some(rest) = text.strip_prefix("#sign ") {
        let Some((expiry, user)) = rest.split_once(' ') else {
            return;
        };
        let (Ok(expiry), Ok(user)) = (expiry.parse::<u64>(), UserId::new(user)) else {
            return;
        };
        let token = signer.sign_with_expiry(&user, &channel, expiry);
        let want = if now >= expiry {
            Err(TokenError::Expired)
        } else {
            Ok(user)
        };
        assert_eq!(signer.verify(&token, &channel), want, "{token}");
        let other = ChannelId::new("other").expect("valid");
        assert_eq!(signer.verify(&token, &other), Err(TokenError::BadSignature), "{token}");
        return;
    }

    let Ok(user) = signer.verify(text, &channel) else {
        return;
    };
    let expiry: u64 = text
        .split('.')
        .nth(2)
        .and_then(|e| e.parse().ok())
        .expect("a verified token has an expiry");
    let old = StreamTokenSigner::with_key("k1", OLD_SECRET).sign_with_expiry(&user, &channel, expiry);
    let new = StreamTokenSigner::with_key("k2", NEW_SECRET).sign_with_expiry(&user, &channel, expiry);
    assert!(
        text == old || text == new,
        "{text:?} verified as {user:?} but the signer makes {old:?} / {new:?}"
    );
});
