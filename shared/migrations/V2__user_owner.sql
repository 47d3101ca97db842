-- Access control: the subject (the token's `sub` claim) of the caller that
-- created each user. Callers without the users/admin scope reach only the
-- users they own. Rows created before this migration have no owner, so only
-- admins reach them (docs/access-control.md): give them owners with an
-- UPDATE if their creators should keep them.
ALTER TABLE users ADD COLUMN owner text;
