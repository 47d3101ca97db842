//! The five statements the API sends, as `&'static str`s: no formatting
//! per request. A write names the owner it must match (`NULL`: any, for an
//! admin), so another caller's user is "no such user" to it, in the same
//! statement and without a second read.

/// The columns of a [`User`](crate::user::User), in `to_user` order.
macro_rules! columns {
    () => {
        "id, email, name, version, created_at, updated_at, owner"
    };
}

pub(super) const INSERT: &str = concat!(
    "INSERT INTO users (id, email, name, owner) VALUES ($1, $2, $3, $4) RETURNING ",
    columns!()
);
pub(super) const SELECT: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
pub(super) const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
);
/// Updates only a user of owner `$5` (any when NULL) whose version is one of
/// `$4` (any when NULL), in one statement: the second branch returns that
/// user's current row, unchanged, when the version did not match, and
/// nothing when there is no such user of that owner.
pub(super) const UPDATE: &str = concat!(
    "WITH updated AS (UPDATE users SET email = $2, name = $3, version = version + 1, \
     updated_at = now() WHERE id = $1 AND ($5::text IS NULL OR owner = $5) \
     AND ($4::bigint[] IS NULL OR version = ANY($4)) RETURNING ",
    columns!(),
    ") SELECT *, true FROM updated UNION ALL SELECT ",
    columns!(),
    ", false FROM users WHERE id = $1 AND ($5::text IS NULL OR owner = $5) \
     AND NOT EXISTS (SELECT 1 FROM updated)"
);
/// Deletes only a user of owner `$3` whose version is one of `$2`; like UPDATE.
pub(super) const DELETE: &str = "WITH deleted AS (DELETE FROM users WHERE id = $1 \
     AND ($3::text IS NULL OR owner = $3) \
     AND ($2::bigint[] IS NULL OR version = ANY($2)) RETURNING id) \
     SELECT true FROM deleted UNION ALL \
     SELECT false FROM users WHERE id = $1 AND ($3::text IS NULL OR owner = $3) \
     AND NOT EXISTS (SELECT 1 FROM deleted)";

/// Takes the key `($1, $2)` for this request (`sha256($3)`) for `$4` ms, in
/// the write's transaction: a new key, or one whose record expired. Returns
/// no row when a live record holds it. A concurrent request with the same key
/// waits here (the unique index) until the first commits or rolls back,
/// bounded by `lock_timeout`.
///
/// In the same statement it removes up to 16 expired records of other keys,
/// oldest first, skipping any another transaction holds: each keyed write
/// clears more than it adds, so expired records never pile up, and no write
/// waits for another's.
pub(super) const CLAIM_KEY: &str = "WITH swept AS (DELETE FROM idempotency_keys \
     WHERE (subject, key) IN (SELECT subject, key FROM idempotency_keys \
     WHERE expires_at <= now() AND NOT (subject = $1 AND key = $2) \
     ORDER BY expires_at LIMIT 16 FOR UPDATE SKIP LOCKED)) \
     INSERT INTO idempotency_keys AS k \
     (subject, key, fingerprint, status, body, expires_at) \
     VALUES ($1, $2, sha256($3), 0, ''::bytea, now() + $4::bigint * interval '1 millisecond') \
     ON CONFLICT (subject, key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, status = 0, \
     body = ''::bytea, location = NULL, etag = NULL, expires_at = EXCLUDED.expires_at \
     WHERE k.expires_at <= now() RETURNING true";
/// Stores the write's answer in the record its transaction claimed.
pub(super) const RECORD_ANSWER: &str = "UPDATE idempotency_keys \
     SET status = $3, body = $4, location = $5, etag = $6 WHERE subject = $1 AND key = $2";
/// The live record of key `($1, $2)`: whether it was for this request
/// (`sha256($3)`), and its answer.
pub(super) const RECORDED_ANSWER: &str = "SELECT fingerprint = sha256($3), status, body, \
     location, etag FROM idempotency_keys \
     WHERE subject = $1 AND key = $2 AND expires_at > now()";
