//! Who is calling, and what they may do. docs/access-control.md is the
//! model; here are its two rules:
//!
//! - an operation needs its OAuth scope ([`Scope`]), else 403;
//! - without `users/admin` a caller reaches only the users it created;
//!   anyone else's user is answered exactly as if it did not exist (404).
//!
//! API Gateway verifies the token; the functions read the verified claims
//! from the event (`http::caller`), never a token.

use crate::error::ApiError;

/// The scopes of this API, as the authorizer's tokens carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `users/read`: find.
    Read,
    /// `users/write`: create, update, delete.
    Write,
    /// `users/admin`: list, and every user instead of one's own.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "users/read",
            Self::Write => "users/write",
            Self::Admin => "users/admin",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A verified caller: its subject (the token's `sub`) and its scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    subject: String,
    scopes: u8,
}

impl Caller {
    /// The caller `subject` with every scope of `granted` that this API
    /// knows (others are ignored). `None` for an empty subject.
    pub fn new<'a>(subject: &str, granted: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let subject = subject.trim();
        if subject.is_empty() {
            return None;
        }
        let scopes = granted
            .into_iter()
            .flat_map(|scope| {
                Scope::ALL
                    .into_iter()
                    .filter(move |known| known.as_str() == scope)
            })
            .fold(0, |bits, scope| bits | scope.bit());
        Some(Self {
            subject: subject.to_owned(),
            scopes,
        })
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes & scope.bit() != 0
    }

    /// 403 unless the caller has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }

    /// Whether the caller may see a user owned by `owner` (`None`: a user
    /// from before access control, which only admins reach).
    pub fn may_see(&self, owner: Option<&str>) -> bool {
        self.has(Scope::Admin) || owner == Some(self.subject.as_str())
    }

    /// The owner a write must match: `None` for an admin (any user).
    pub fn owner_filter(&self) -> Option<&str> {
        (!self.has(Scope::Admin)).then_some(self.subject.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_keeps_the_scopes_of_this_api_and_ignores_others() {
        // Act
        let caller = Caller::new(" ada ", ["openid", "users/read", "users/readx"]).unwrap();

        // Assert
        assert_eq!(caller.subject(), "ada");
        assert!(caller.has(Scope::Read));
        assert!(!caller.has(Scope::Write) && !caller.has(Scope::Admin));
        assert_eq!(caller.require(Scope::Write).unwrap_err().status(), 403);
        assert!(Caller::new("  ", ["users/admin"]).is_none());
    }

    #[test]
    fn without_admin_a_caller_sees_and_writes_only_its_own_users() {
        // Arrange
        let owner = Caller::new("ada", ["users/read"]).unwrap();
        let admin = Caller::new("root", ["users/read", "users/admin"]).unwrap();

        // Act and assert
        assert!(owner.may_see(Some("ada")));
        assert!(!owner.may_see(Some("bob")));
        assert!(!owner.may_see(None), "rows without an owner are for admins");
        assert_eq!(owner.owner_filter(), Some("ada"));
        assert!(admin.may_see(Some("bob")) && admin.may_see(None));
        assert_eq!(admin.owner_filter(), None);
    }
}
