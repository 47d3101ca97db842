//! The key protocol, pure: the key format, the stored values and the
//! commands and scripts that move a key between them. docs/cache.md says why
//! these states make a stale read after an acknowledged write impossible.
//!
//! One key per user, `{CACHE_KEY_PREFIX}:v4:user:{id}`, whose value starts
//! with a one-byte tag: docs/cache.md, "Keys and their states".

use redis::{Cmd, Script};
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// Version of the entry format; part of every key, so changing the format
/// never makes a new deployment read entries written by an old one.
const FORMAT_VERSION: &str = "v4";

/// A user: `v{version}:{owner length}:{owner}{body}`.
const VALUE: u8 = b'v';
/// No such user.
const NEGATIVE: u8 = b'n';
/// A fill lease: `l{token}`.
pub(crate) const LEASE: u8 = b'l';
/// Writes in progress: `w{writer tokens}`.
const WRITING: u8 = b'w';

/// The part of every key before the user's id.
pub(crate) fn key_prefix(configured: &str) -> String {
    format!("{configured}:{FORMAT_VERSION}:user:")
}

/// `prefix` + the id, hyphenated and lower case.
pub(crate) fn key(prefix: &str, id: Uuid) -> String {
    let mut key = String::with_capacity(prefix.len() + 36);
    key.push_str(prefix);
    key.push_str(id.as_hyphenated().encode_lower(&mut Uuid::encode_buffer()));
    key
}

/// The lookup: returns the value, or takes the lease (`token`, for
/// `lease_ms`) and returns nil when the key is absent, so a hit and a miss
/// cost one round trip each. `SET key token NX GET PX ms` does this in one
/// native command (Redis 7.0 or later, Valkey; ElastiCache 7 and Serverless),
/// about 1 µs cheaper per hit than the same read in a Lua script.
pub fn lookup_command(key: &str, token: &[u8], lease_ms: u64) -> Cmd {
    let mut lookup = redis::cmd("SET");
    lookup
        .arg(key)
        .arg(token)
        .arg("NX")
        .arg("GET")
        .arg("PX")
        .arg(lease_ms);
    lookup
}

/// Compare-and-set (Redis 7 has no native command for it): stores `ARGV[2]`
/// for `ARGV[3]` ms only if the value is still `ARGV[1]`. A fill is lease ->
/// entry; taking over an unreadable entry is entry -> lease.
pub const COMPARE_AND_SET_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0";
pub(crate) static COMPARE_AND_SET: LazyLock<Script> =
    LazyLock::new(|| Script::new(COMPARE_AND_SET_SCRIPT));

/// Adds the writer token `ARGV[1]` to the key's guard (`w` + tokens), which
/// replaces any entry or lease, and sets its expiry to `ARGV[2]` ms. Adding a
/// token that is there already changes nothing, so a retried call is harmless.
pub const GUARD_SCRIPT: &str = "local v = redis.call('GET', KEYS[1])
local w = 'w'
if v and string.sub(v, 1, 1) == 'w' then w = v end
if not string.find(w, ARGV[1], 2, true) then w = w .. ARGV[1] end
redis.call('SET', KEYS[1], w, 'PX', ARGV[2])
return 1";
pub(crate) static GUARD: LazyLock<Script> = LazyLock::new(|| Script::new(GUARD_SCRIPT));

/// Takes the writer token `ARGV[1]` out of the key's guard. Other writers'
/// tokens keep the key guarded (same expiry); without any, or when the key
/// holds no guard at all (it expired), the key is deleted, so the next find
/// reads the committed row. Idempotent too.
pub const RELEASE_SCRIPT: &str = "local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 1) == 'w' then
  local first, last = string.find(v, ARGV[1], 2, true)
  if first then v = string.sub(v, 1, first - 1) .. string.sub(v, last + 1) end
  if #v > 1 then
    redis.call('SET', KEYS[1], v, 'KEEPTTL')
    return 0
  end
end
redis.call('DEL', KEYS[1])
return 1";
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(RELEASE_SCRIPT));

/// What a key that is not empty holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A user's version and response body, checked to be a user's body.
    User {
        version: i64,
        owner: Option<String>,
        body: Vec<u8>,
    },
    NotFound,
    /// Another caller holds the fill lease.
    Filling,
    Writing,
    /// Anything else: an old format, a manual edit, a bug.
    Unreadable(Vec<u8>),
}

/// Reads a stored value.
pub(crate) fn decode(mut value: Vec<u8>) -> Stored {
    match value.first() {
        Some(&VALUE) => match split_header(&value) {
            Some((version, owner, start)) if crate::user::is_user_body(&value[start..]) => {
                let owner = owner.map(str::to_owned);
                value.drain(..start);
                Stored::User {
                    version,
                    owner,
                    body: value,
                }
            }
            _ => Stored::Unreadable(value),
        },
        Some(&NEGATIVE) if value.len() == 1 => Stored::NotFound,
        Some(&LEASE) => Stored::Filling,
        Some(&WRITING) => Stored::Writing,
        _ => Stored::Unreadable(value),
    }
}

/// `v{version}:{owner length}:{owner}{body}`, the stored form of a user;
/// a user without an owner has length 0.
pub(crate) fn encode_user(version: i64, owner: Option<&str>, body: &[u8]) -> Vec<u8> {
    let owner = owner.unwrap_or_default();
    let header = format!("{}{version}:{}:", char::from(VALUE), owner.len());
    let mut value = Vec::with_capacity(header.len() + owner.len() + body.len());
    value.extend_from_slice(header.as_bytes());
    value.extend_from_slice(owner.as_bytes());
    value.extend_from_slice(body);
    value
}

/// The stored form of "no such user".
pub(crate) fn encode_not_found() -> Vec<u8> {
    vec![NEGATIVE]
}

/// The version and owner of a `v{version}:{owner length}:{owner}{body}`
/// value, and where its body starts.
fn split_header(value: &[u8]) -> Option<(i64, Option<&str>, usize)> {
    let (version, rest) = number_before_colon(value, 1)?;
    let (length, owner_start) = number_before_colon(value, rest)?;
    let body_start = owner_start.checked_add(usize::try_from(length).ok()?)?;
    let owner = std::str::from_utf8(value.get(owner_start..body_start)?).ok()?;
    Some((version, (!owner.is_empty()).then_some(owner), body_start))
}

/// The decimal number from `start` to the next `:`, and where what follows
/// that colon starts.
fn number_before_colon(value: &[u8], start: usize) -> Option<(i64, usize)> {
    let digits = value.get(start..)?;
    let colon = digits.iter().take(21).position(|&byte| byte == b':')?;
    let number = std::str::from_utf8(&digits[..colon]).ok()?.parse().ok()?;
    Some((number, start + colon + 1))
}

/// Whole milliseconds, at least 1 (Redis refuses an expiry of 0).
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"id":"0190f0c2-1111-7000-8000-000000000001","email":"a@example.com","name":"A","created_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:00:00Z"}"#;

    #[test]
    fn a_user_round_trips_its_version_owner_and_body() {
        for owner in [Some("7d0f3b1e-2c4a"), Some("a:b:c"), None] {
            // Arrange
            let value = encode_user(42, owner, BODY);

            // Act
            let stored = decode(value.clone());

            // Assert
            let length = owner.map_or(0, str::len);
            assert!(
                value.starts_with(format!("v42:{length}:").as_bytes()),
                "{owner:?}"
            );
            assert_eq!(
                stored,
                Stored::User {
                    version: 42,
                    owner: owner.map(str::to_owned),
                    body: BODY.to_vec()
                },
                "{owner:?}"
            );
        }
    }

    #[test]
    fn every_tag_decodes_to_its_state() {
        // Arrange
        let cases: [(&[u8], Stored); 4] = [
            (&encode_not_found(), Stored::NotFound),
            (b"l0123456789", Stored::Filling),
            (b"w", Stored::Writing),
            (b"wtoken1token2", Stored::Writing),
        ];

        // Act and assert
        for (value, expected) in cases {
            assert_eq!(decode(value.to_vec()), expected, "{value:?}");
        }
    }

    #[test]
    fn values_that_are_not_a_user_are_unreadable_and_kept_as_they_are() {
        // Arrange
        let mut not_a_user = b"v1:0:".to_vec();
        not_a_user.extend_from_slice(br#"{"id":1}"#);
        let mut old_format = b"v1:".to_vec();
        old_format.extend_from_slice(BODY);
        let mut owner_too_long = b"v1:999:ada".to_vec();
        owner_too_long.extend_from_slice(BODY);
        let cases: [&[u8]; 11] = [
            b"",
            b"v",
            b"vx:{}",
            b"v:{}",
            b"v1:x:{}",
            &not_a_user,
            &old_format,
            &owner_too_long,
            b"n-extra",
            b"x",
            b"{\"legacy\":true}",
        ];

        // Act and assert
        for value in cases {
            assert_eq!(
                decode(value.to_vec()),
                Stored::Unreadable(value.to_vec()),
                "{value:?}"
            );
        }
    }

    #[test]
    fn keys_carry_the_prefix_the_format_version_and_the_id() {
        // Arrange
        let id = Uuid::parse_str("0190F0C2-1111-7000-8000-000000000001").unwrap();

        // Act
        let key = key(&key_prefix("users-api"), id);

        // Assert
        assert_eq!(
            key,
            "users-api:v4:user:0190f0c2-1111-7000-8000-000000000001"
        );
    }

    #[test]
    fn millis_is_never_zero() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_secs(2)), 2000);
    }
}
