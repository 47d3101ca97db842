//! Retry-safe writes: an `Idempotency-Key` names one write of one caller, and
//! a repeat of that write gets the first one's answer instead of a second
//! effect (the IETF httpapi draft "The Idempotency-Key HTTP Header Field").
//! docs/api.md says what a client sees; the store keeps the answer in the
//! same transaction as the write.

use crate::error::ApiError;

/// A valid key: 1 to 255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &[u8]) -> Result<Self, ApiError> {
        let printable = raw.iter().all(|byte| (0x20..=0x7e).contains(byte));
        if raw.is_empty() || raw.len() > Self::MAX_LEN || !printable {
            return Err(ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 printable ASCII characters",
            ));
        }
        // Printable ASCII is UTF-8.
        Ok(Self(String::from_utf8_lossy(raw).into_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One keyed write: the caller's key and what the request was, so that a
/// repeat can be told from another request under the same key.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    /// `METHOD path\n` + the body: hashed (SHA-256, by Postgres) into the
    /// record's fingerprint.
    pub request: Vec<u8>,
}

impl Idempotency {
    pub fn new(key: IdempotencyKey, method: &str, path: &str, body: &[u8]) -> Self {
        let mut request = Vec::with_capacity(method.len() + path.len() + 2 + body.len());
        request.extend_from_slice(method.as_bytes());
        request.push(b' ');
        request.extend_from_slice(path.as_bytes());
        request.push(b'\n');
        request.extend_from_slice(body);
        Self { key, request }
    }
}

/// A write's answer as it is kept and replayed: status, body and the two
/// headers that carry state (`Location`, `ETag`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub status: u16,
    /// JSON, or empty (204).
    pub body: Vec<u8>,
    pub location: Option<String>,
    pub etag: Option<String>,
}

/// A write's answer, and whether it is a replay of an earlier request's.
#[derive(Debug)]
pub struct Answer {
    pub recorded: Recorded,
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_1_to_255_printable_ascii_characters() {
        // Arrange
        let longest = "k".repeat(255);
        let too_long = "k".repeat(256);

        // Act and assert
        for good in [
            "a",
            "8e0f5c1a-7d2b-4c3e-9f10-2a3b4c5d6e7f",
            "with space ~!",
            &longest,
        ] {
            assert_eq!(
                IdempotencyKey::parse(good.as_bytes()).unwrap().as_str(),
                good
            );
        }
        for bad in [
            &b""[..],
            too_long.as_bytes(),
            b"tab\there",
            b"new\nline",
            "é".as_bytes(),
            b"\x7f",
        ] {
            let error = IdempotencyKey::parse(bad).unwrap_err();
            assert_eq!(error.code(), "invalid_idempotency_key", "{bad:?}");
            assert_eq!(error.status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn the_request_names_method_path_and_body() {
        // Act
        let keyed = Idempotency::new(
            IdempotencyKey::parse(b"k").unwrap(),
            "PUT",
            "/users/1",
            b"{}",
        );

        // Assert
        assert_eq!(keyed.request, b"PUT /users/1\n{}");
    }
}
