//! The key protocol, pure: the key format, the stored values and the
//! commands and scripts that move a key between them. docs/cache.md says why
//! these states make a stale read after an acknowledged write impossible.
//!
//! One key per user, `{CACHE_KEY_PREFIX}:v5:user:{id}`, whose value starts
//! with a one-byte tag: docs/cache.md, "Keys and their states".

use redis::{Cmd, Script};
use std::sync::LazyLock;
use std::time::Duration;
use uuid::Uuid;

/// Version of the entry format; part of every key, so changing the format
/// never makes a new deployment read entries written by an old one.
const FORMAT_VERSION: &str = "v5";

/// The format before this one: `v{version}:{owner length}:{owner}{body}`,
/// no times, no refresh marker; leases, negative entries and guards as
/// now. Every invalidation voids the user's key in this format too, so the
/// version before this one, still serving during a gradual deployment,
/// answers nothing a write through this one replaced. A format change sets
/// it to the old [`FORMAT_VERSION`]: docs/cache.md, "Key format version and
/// deployments".
const PREVIOUS_FORMAT_VERSION: &str = "v4";

/// The format after this one, whatever it will hold: every invalidation
/// voids the user's key in it too, so that once a version with that format
/// serves beside this one, this one's writes void its entries. What it
/// requires of that format: keys laid out as now, and a guard that still
/// reads `w` + writer tokens (the release script keeps such a guard and
/// deletes anything else).
const NEXT_FORMAT_VERSION: &str = "v6";

/// A user: `v{stored ms}:{fresh ms}:{version}:{owner length}:{owner}{body}`.
const VALUE: u8 = b'v';
/// A user being refreshed: `r{lease deadline ms}:{token}` + the user's value.
pub(crate) const REFRESHING: u8 = b'r';
/// The length of a token after its tag (`lease.rs`).
pub const TOKEN_LEN: usize = 24;
/// No such user.
const NEGATIVE: u8 = b'n';
/// A fill lease: `l{token}`.
pub const LEASE: u8 = b'l';
/// Writes in progress: `w{writer tokens}`.
const WRITING: u8 = b'w';

/// The part of every key before the user's id.
pub(crate) fn key_prefix(configured: &str) -> String {
    format!("{configured}:{FORMAT_VERSION}:user:")
}

/// [`key_prefix`] in the formats before and after this one, which every
/// invalidation voids too.
pub(crate) fn other_key_prefixes(configured: &str) -> [String; 2] {
    [PREVIOUS_FORMAT_VERSION, NEXT_FORMAT_VERSION]
        .map(|format| format!("{configured}:{format}:user:"))
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

/// Compare-and-set (Redis 7 has no native command for it): only if the
/// value is still `ARGV[1]`, stores `ARGV[2]` for `ARGV[3]` ms (`0`: keeping
/// the key's expiry), or deletes the key when `ARGV[2]` is empty. A fill is
/// lease -> entry; taking over an unreadable entry is entry -> lease; taking
/// a refresh lease is entry -> marked entry; giving a lease back is lease ->
/// nothing, or marked entry -> entry.
pub const COMPARE_AND_SET_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
  elseif ARGV[3] == '0' then
    redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  else
    redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  end
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

/// `EVALSHA` of `script` on `key`, its arguments to follow: a script call
/// that can go in a pipeline (a `ScriptInvocation` cannot), which runs it
/// and loads it when the server does not have it
/// (`connection.rs`, `Redis::run_replicated`).
pub(crate) fn evalsha(script: &Script, key: &str) -> Cmd {
    let mut call = redis::cmd("EVALSHA");
    call.arg(script.get_hash()).arg(1).arg(key);
    call
}

/// What a key that is not empty holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    /// A user, checked to be a user's body.
    User(Cached),
    NotFound,
    /// Another caller holds the fill lease.
    Filling,
    Writing,
    /// Anything else: an old format, a manual edit, a bug.
    Unreadable(Vec<u8>),
}

/// A stored user and its times, with the value as read: taking or giving
/// back a refresh lease compares the whole value.
#[derive(Debug, PartialEq, Eq)]
pub struct Cached {
    pub version: i64,
    pub owner: Option<String>,
    /// When it was filled, in ms since the epoch (the filler's clock).
    pub stored_ms: u64,
    /// Until when it is fresh, in ms since the epoch.
    pub fresh_until_ms: u64,
    /// The deadline of a refresh lease on it, if it has one.
    pub refreshing_until_ms: Option<u64>,
    /// The whole value: an optional refresh marker, the entry, its body.
    pub(crate) value: Vec<u8>,
    /// Where the entry starts (after a refresh marker).
    pub(crate) entry_start: usize,
    pub(crate) body_start: usize,
}

impl Cached {
    /// The response body, ready to send.
    pub fn body(&self) -> &[u8] {
        &self.value[self.body_start..]
    }

    /// The version, the owner and the response body, without copying it.
    pub fn into_parts(mut self) -> (i64, Option<String>, Vec<u8>) {
        self.value.drain(..self.body_start);
        (self.version, self.owner, self.value)
    }
}

/// Reads a stored value.
pub fn decode(value: Vec<u8>) -> Stored {
    match value.first() {
        Some(&VALUE | &REFRESHING) => match decode_user(&value) {
            Some(parts) if crate::user::is_user_body(&value[parts.body_start..]) => {
                Stored::User(Cached {
                    version: parts.version,
                    owner: parts.owner.map(str::to_owned),
                    stored_ms: parts.stored_ms,
                    fresh_until_ms: parts.fresh_until_ms,
                    refreshing_until_ms: parts.refreshing_until_ms,
                    entry_start: parts.entry_start,
                    body_start: parts.body_start,
                    value,
                })
            }
            _ => Stored::Unreadable(value),
        },
        Some(&NEGATIVE) if value.len() == 1 => Stored::NotFound,
        Some(&LEASE) => Stored::Filling,
        Some(&WRITING) => Stored::Writing,
        _ => Stored::Unreadable(value),
    }
}

/// The parts of a user's value, borrowed from it (see [`Cached`]).
struct UserParts<'a> {
    stored_ms: u64,
    fresh_until_ms: u64,
    refreshing_until_ms: Option<u64>,
    entry_start: usize,
    version: i64,
    body_start: usize,
    owner: Option<&'a str>,
}

fn decode_user(value: &[u8]) -> Option<UserParts<'_>> {
    let (refreshing_until_ms, entry_start) = if value.first() == Some(&REFRESHING) {
        let (until, token_start) = number_before_colon(value, 1)?;
        (Some(u64::try_from(until).ok()?), token_start + TOKEN_LEN)
    } else {
        (None, 0)
    };
    if value.get(entry_start) != Some(&VALUE) {
        return None;
    }
    let (stored, rest) = number_before_colon(value, entry_start + 1)?;
    let (fresh, rest) = number_before_colon(value, rest)?;
    let (version, owner, body_start) = split_header(value, rest)?;
    let stored_ms = u64::try_from(stored).ok()?;
    let fresh_until_ms = stored_ms.checked_add(u64::try_from(fresh).ok()?)?;
    Some(UserParts {
        stored_ms,
        fresh_until_ms,
        refreshing_until_ms,
        entry_start,
        version,
        body_start,
        owner,
    })
}

/// `v{stored ms}:{fresh ms}:{version}:{owner length}:{owner}{body}`, the
/// stored form of a user; a user without an owner has length 0.
pub fn encode_user(
    stored_ms: u64,
    fresh_ms: u64,
    version: i64,
    owner: Option<&str>,
    body: &[u8],
) -> Vec<u8> {
    let owner = owner.unwrap_or_default();
    let header = format!(
        "{}{stored_ms}:{fresh_ms}:{version}:{}:",
        char::from(VALUE),
        owner.len()
    );
    let mut value = Vec::with_capacity(header.len() + owner.len() + body.len());
    value.extend_from_slice(header.as_bytes());
    value.extend_from_slice(owner.as_bytes());
    value.extend_from_slice(body);
    value
}

/// `entry` (a user's value without a marker) marked as being refreshed
/// under `token` until `until_ms`.
pub fn encode_refreshing(until_ms: u64, token: &[u8; TOKEN_LEN], entry: &[u8]) -> Vec<u8> {
    let header = format!("{}{until_ms}:", char::from(REFRESHING));
    let mut value = Vec::with_capacity(header.len() + TOKEN_LEN + entry.len());
    value.extend_from_slice(header.as_bytes());
    value.extend_from_slice(token);
    value.extend_from_slice(entry);
    value
}

/// The stored form of "no such user".
pub fn encode_not_found() -> Vec<u8> {
    vec![NEGATIVE]
}

/// The version and owner of `{version}:{owner length}:{owner}{body}` from
/// `start` on, and where its body starts.
fn split_header(value: &[u8], start: usize) -> Option<(i64, Option<&str>, usize)> {
    let (version, rest) = number_before_colon(value, start)?;
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
mod tests;
