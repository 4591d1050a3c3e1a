//! Validated identifiers: the only way a channel, user or lease name reaches a key or an SSE line.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string was refused as an identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    /// The string was empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which identifier ("channel id", "user id", ...).
        kind: &'static str,
    },
    /// The string was longer than allowed.
    #[error("{kind} is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Which identifier.
        kind: &'static str,
        /// The length given.
        len: usize,
        /// The maximum length.
        max: usize,
    },
    /// The string held a character outside the allowed set.
    #[error("{kind} contains {found:?} at byte {at}; allowed are {allowed}")]
    BadChar {
        /// Which identifier.
        kind: &'static str,
        /// The first offending character.
        found: char,
        /// Its byte offset.
        at: usize,
        /// A description of the allowed set.
        allowed: &'static str,
    },
}

fn validate(
    kind: &'static str,
    s: &str,
    max: usize,
    allowed: &'static str,
    ok: fn(u8) -> bool,
) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId::Empty { kind });
    }
    if s.len() > max {
        return Err(InvalidId::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    if let Some((at, found)) = s.char_indices().find(|&(_, c)| !c.is_ascii() || !ok(c as u8)) {
        return Err(InvalidId::BadChar {
            kind,
            found,
            at,
            allowed,
        });
    }
    Ok(())
}

macro_rules! validated_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $max:expr, $allowed:literal, $ok:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// The longest accepted value, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `s` and wraps it.
            pub fn new(s: impl AsRef<str>) -> Result<Self, InvalidId> {
                let s = s.as_ref();
                validate($kind, s, $max, $allowed, $ok)?;
                Ok(Self(s.into()))
            }

            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = InvalidId;
            fn try_from(s: &str) -> Result<Self, Self::Error> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::new(&*s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn channel_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn user_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@' | b'+')
}

validated_id!(
    /// A channel name: 1 to 128 bytes of `A-Z a-z 0-9 _ -`.
    ///
    /// No colon, brace, space or line break can appear, so a channel id is safe inside a Redis key
    /// (and its Cluster hash tag), a URL path segment, and an SSE field.
    ChannelId,
    "channel id",
    128,
    "A-Z a-z 0-9 _ -",
    channel_char
);

validated_id!(
    /// A user name for leases and channel ownership: 1 to 128 bytes of `A-Z a-z 0-9 _ - . @ +`.
    UserId,
    "user id",
    128,
    "A-Z a-z 0-9 _ - . @ +",
    user_char
);

validated_id!(
    /// A lease handle, made by a [`LeaseStore`](crate::LeaseStore): 1 to 64 bytes of `A-Z a-z 0-9 _ -`.
    LeaseId,
    "lease id",
    64,
    "A-Z a-z 0-9 _ -",
    channel_char
);

impl ChannelId {
    /// A fresh, unique channel id (a ULID: 26 characters, sortable by creation time).
    pub fn generate() -> Self {
        Self(ulid::Ulid::new().to_string().into())
    }
}

impl LeaseId {
    /// A fresh, unique lease id (a ULID).
    pub fn generate() -> Self {
        Self(ulid::Ulid::new().to_string().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_accept_the_closed_set() {
        assert!(ChannelId::new("deploy_01-ABC").is_ok());
        assert_eq!(ChannelId::generate().as_str().len(), 26);
    }

    #[test]
    fn channel_ids_refuse_everything_else() {
        for bad in ["", "a b", "a:b", "a{b}", "a\nb", "a\rb", "é", "a/b", "a.b"] {
            assert!(ChannelId::new(bad).is_err(), "{bad:?} was accepted");
        }
        let long = "a".repeat(129);
        assert_eq!(
            ChannelId::new(&long),
            Err(InvalidId::TooLong {
                kind: "channel id",
                len: 129,
                max: 128
            })
        );
        let err = ChannelId::new("a\nb").unwrap_err().to_string();
        assert!(err.contains("channel id") && err.contains("'\\n'"), "{err}");
    }

    #[test]
    fn user_ids_allow_emails_but_not_key_syntax() {
        assert!(UserId::new("ada.lovelace+test@example.org").is_ok());
        for bad in ["", "a}b", "a{b", "a:b", "a b", "a\0"] {
            assert!(UserId::new(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn ids_deserialize_through_validation() {
        let ok: ChannelId = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(ok.as_str(), "abc");
        assert!(serde_json::from_str::<ChannelId>("\"a\\nb\"").is_err());
    }
}
