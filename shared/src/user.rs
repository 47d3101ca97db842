//! The user resource and its validated input.
//!
//! Parse, don't validate: `UserEmail` and `UserName` can only be built through
//! `parse`, so a value of `NewUser` is known good everywhere after the handler.
//! The wire types are separate: `UserPayload` is what a client may send (unknown
//! and server-managed fields are refused), `User` is what the API answers.

use crate::config::Limits;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A stored user, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// Incremented by every write; sent as the `ETag`, not in the body.
    #[serde(skip)]
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The subject of the caller that created it (`None`: created before
    /// access control). Not in the body: it decides who may see the user.
    #[serde(skip)]
    pub owner: Option<String>,
}

/// Whether `body` is a [`User`] as the API serializes it: how the cache
/// tells a usable entry from one to replace (a manual edit, a bug). Borrows
/// instead of building a `User`, since it runs on every cache hit; the test
/// below keeps its fields those of `User`.
pub fn is_user_body(body: &[u8]) -> bool {
    use std::borrow::Cow;
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape<'a> {
        id: Uuid,
        #[serde(borrow)]
        email: Cow<'a, str>,
        #[serde(borrow)]
        name: Cow<'a, str>,
        #[serde(borrow)]
        created_at: Cow<'a, str>,
        #[serde(borrow)]
        updated_at: Cow<'a, str>,
    }
    serde_json::from_slice::<Shape>(body).is_ok()
}

/// The body of `POST /users` and `PUT /users/{id}`, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPayload {
    pub email: String,
    pub name: String,
}

/// A validated create or replace command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUser {
    pub email: UserEmail,
    pub name: UserName,
}

impl NewUser {
    pub fn parse(payload: UserPayload, limits: &Limits) -> Result<Self, ApiError> {
        Ok(Self {
            email: UserEmail::parse(&payload.email, limits.email_max_chars)?,
            name: UserName::parse(&payload.name, limits.name_max_chars)?,
        })
    }
}

/// An email address: syntactically valid, trimmed, at most the configured length.
/// Uniqueness is case-insensitive and enforced by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEmail(String);

impl UserEmail {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, ApiError> {
        let email = raw.trim();
        let invalid = |why: &str| ApiError::bad_request("invalid_email", format!("email {why}"));
        if email.is_empty() {
            return Err(invalid("must not be empty"));
        }
        if email.chars().count() > max_chars {
            return Err(invalid(&format!("must be at most {max_chars} characters")));
        }
        // The crate accepts quoted local parts and display names; an account
        // email is a plain `local@domain` with a dotted domain. It also lets
        // Unicode spaces (U+00A0, U+2000, U+3000) through in the local part,
        // which would allow invisible look-alikes of an address.
        let plain = !email.contains(['"', '<', '>', '[', ']'])
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && email
                .rsplit_once('@')
                .is_some_and(|(_, domain)| domain.contains('.') && !domain.ends_with('.'));
        if !plain || !email_address::EmailAddress::is_valid(email) {
            return Err(invalid("is not a valid address"));
        }
        Ok(Self(email.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A display name: trimmed, non-empty, no control characters, bounded length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName(String);

impl UserName {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, ApiError> {
        let name = raw.trim();
        let invalid = |why: String| ApiError::bad_request("invalid_name", format!("name {why}"));
        if name.is_empty() {
            return Err(invalid("must not be empty".into()));
        }
        if name.chars().count() > max_chars {
            return Err(invalid(format!("must be at most {max_chars} characters")));
        }
        if name.chars().any(char::is_control) {
            return Err(invalid("must not contain control characters".into()));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_emails_are_trimmed_and_kept_as_written() {
        for (raw, kept) in [
            ("ada@example.com", "ada@example.com"),
            (
                "  Ada.Lovelace+x@Example.co.uk ",
                "Ada.Lovelace+x@Example.co.uk",
            ),
            ("o'brien@example.ie", "o'brien@example.ie"),
        ] {
            assert_eq!(UserEmail::parse(raw, 254).unwrap().as_str(), kept);
        }
    }

    #[test]
    fn invalid_emails_are_rejected_with_a_bad_request() {
        let too_long = format!("{}@example.com", "a".repeat(250));
        for raw in [
            "",
            "   ",
            "not-an-email",
            "@example.com",
            "ada@",
            "ada@localhost",
            "ada@example.",
            "ada lovelace@example.com",
            "\"ada\"@example.com",
            "Ada <ada@example.com>",
            "ada@[127.0.0.1]",
            "ada@exa\u{0}mple.com",
            "a\u{2000}@example.com",
            "ada\u{a0}lovelace@example.com",
            "ada\u{3000}@example.com",
            "a@b@example.com",
            too_long.as_str(),
        ] {
            let error = UserEmail::parse(raw, 254).unwrap_err();
            assert_eq!(error.code(), "invalid_email", "{raw:?}");
            assert_eq!(error.status(), 400);
        }
    }

    #[test]
    fn valid_names_are_trimmed() {
        assert_eq!(
            UserName::parse(" Ada King ", 200).unwrap().as_str(),
            "Ada King"
        );
        assert_eq!(UserName::parse("李小龍", 3).unwrap().as_str(), "李小龍");
    }

    #[test]
    fn invalid_names_are_rejected_with_a_bad_request() {
        for (raw, max) in [
            ("", 200),
            (" \t\n", 200),
            ("abcd", 3),
            ("Ada\u{7}", 200),
            ("Ada\nKing", 200),
        ] {
            let error = UserName::parse(raw, max).unwrap_err();
            assert_eq!(error.code(), "invalid_name", "{raw:?}");
        }
    }

    #[test]
    fn a_serialized_user_is_a_user_body_and_anything_else_is_not() {
        // Arrange
        let user = User {
            id: Uuid::now_v7(),
            email: "ada@example.com".into(),
            name: "Ada \"the Countess\"".into(),
            version: 3,
            created_at: OffsetDateTime::now_utc(),
            updated_at: OffsetDateTime::now_utc(),
            owner: Some("ada".into()),
        };
        let body = serde_json::to_vec(&user).unwrap();
        let mut fields: serde_json::Value = serde_json::from_slice(&body).unwrap();
        fields["extra"] = true.into();
        let extra = serde_json::to_vec(&fields).unwrap();
        fields.as_object_mut().unwrap().remove("extra");
        fields.as_object_mut().unwrap().remove("name");
        let missing = serde_json::to_vec(&fields).unwrap();

        // Act and assert
        assert!(is_user_body(&body));
        assert!(!is_user_body(&extra), "an unknown field");
        assert!(!is_user_body(&missing), "a missing field");
        assert!(!is_user_body(b"{}"));
        assert!(!is_user_body(b"not json"));
    }

    #[test]
    fn payload_refuses_unknown_and_server_managed_fields() {
        for body in [
            r#"{"email":"a@example.com","name":"A","admin":true}"#,
            r#"{"email":"a@example.com","name":"A","id":"0190f0c2-1111-7000-8000-000000000009"}"#,
            r#"{"email":"a@example.com","name":"A","created_at":"2024-01-01T00:00:00Z"}"#,
            r#"{"email":"a@example.com"}"#,
            r#"{"email":1,"name":"A"}"#,
        ] {
            assert!(serde_json::from_str::<UserPayload>(body).is_err(), "{body}");
        }
    }
}
