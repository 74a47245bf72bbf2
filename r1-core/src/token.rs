//! The loopback bearer token: 32 bytes from the OS CSPRNG as 64 lowercase hex chars.
//!
//! `Debug` and `Display` never show the value; use [`Token::expose`] where the secret
//! must leave the process (discovery file, `Authorization` header).

use std::fmt;

use rand::TryRngCore;
use subtle::ConstantTimeEq;

use crate::error::{Error, ErrorKind, Result};

/// A bearer secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// 32 fresh bytes from the operating system's CSPRNG, hex encoded.
    pub fn generate() -> Result<Token> {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut bytes)
            .map_err(|e| Error::new(ErrorKind::Io, format!("the OS random source failed: {e}")))?;
        Ok(Token(hex::encode(bytes)))
    }

    /// A token given by the operator (`--token`, `--token-file`). It travels in a
    /// WebSocket subprotocol, so it must be 32..=512 chars of `[A-Za-z0-9._~-]`
    /// (browsers reject `+ / =` there).
    pub fn parse(s: &str) -> Result<Token> {
        let s = s.trim();
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
        if s.len() < 32 || s.len() > 512 || !ok_chars {
            return Err(Error::invalid_params(
                "a token must be 32 to 512 characters of letters, digits and . _ ~ - (generate one with `openssl rand -hex 32`)",
            ));
        }
        Ok(Token(s.to_owned()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &str) -> bool {
        let a = self.0.as_bytes();
        let b = presented.as_bytes();
        // Length is not secret (always 64 for generated tokens).
        a.len() == b.len() && bool::from(a.ct_eq(b))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl serde::Serialize for Token {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Token(s))
    }
}

/// `n` random bytes as lowercase hex (ids, epochs, nonces).
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_hex_and_distinct() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_eq!(a.expose().len(), 64);
        assert!(
            a.expose()
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn debug_redacts() {
        let t = Token::generate().unwrap();
        let d = format!("{t:?}");
        assert!(!d.contains(t.expose()));
        assert!(d.contains("redacted"));
    }

    #[test]
    fn matches_is_exact() {
        let t = Token::generate().unwrap();
        assert!(t.matches(t.expose()));
        let mut wrong = t.expose().to_owned();
        wrong.replace_range(63..64, if wrong.ends_with('0') { "1" } else { "0" });
        assert!(!t.matches(&wrong));
        assert!(!t.matches(""));
        assert!(!t.matches(&t.expose()[..63]));
    }

    #[test]
    fn parse_rejects_short_and_unsafe_chars() {
        assert!(Token::parse("short").is_err());
        assert!(Token::parse(&"a+".repeat(20)).is_err());
        assert!(Token::parse(&"ab".repeat(20)).is_ok());
    }
}
