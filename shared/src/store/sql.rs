//! The five statements the API sends, as `&'static str`s: no formatting
//! per request.

/// The columns of a [`User`], in `to_user` order; a macro so the statements
/// below are `&'static str` (no formatting per request).
macro_rules! columns {
    () => {
        "id, email, name, version, created_at, updated_at"
    };
}

pub(super) const INSERT: &str = concat!(
    "INSERT INTO users (id, email, name) VALUES ($1, $2, $3) RETURNING ",
    columns!()
);
pub(super) const SELECT: &str = concat!("SELECT ", columns!(), " FROM users WHERE id = $1");
pub(super) const LIST: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM users WHERE id > $1 ORDER BY id LIMIT $2"
);
/// Updates only if the version is one of `$4` (or `$4` is NULL), in one
/// statement: the second branch returns the current row, unchanged, when the
/// precondition failed, and nothing when there is no such user.
pub(super) const UPDATE: &str = concat!(
    "WITH updated AS (UPDATE users SET email = $2, name = $3, version = version + 1, \
     updated_at = now() WHERE id = $1 AND ($4::bigint[] IS NULL OR version = ANY($4)) \
     RETURNING ",
    columns!(),
    ") SELECT *, true FROM updated UNION ALL SELECT ",
    columns!(),
    ", false FROM users WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM updated)"
);
/// Deletes only if the version is one of `$2` (or `$2` is NULL); like UPDATE.
pub(super) const DELETE: &str = "WITH deleted AS (DELETE FROM users WHERE id = $1 \
     AND ($2::bigint[] IS NULL OR version = ANY($2)) RETURNING id) \
     SELECT true FROM deleted UNION ALL \
     SELECT false FROM users WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM deleted)";
